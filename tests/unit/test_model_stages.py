"""train -> evaluate -> export -> quantize on a tiny random BERT, through the stage entry points."""

import json

import numpy as np
import pytest
import yaml

from tasks import augment, evaluate, export, ingest, quantize, split, train, validate
from tasks.config import load_params
from tasks.onnx_model import OnnxClassifier
from tests.conftest import deep_merge, repo_params, tiny_overrides


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("stages")
    overrides = deep_merge(tiny_overrides(tiny_model_dir), {"augment": {"synonym": {"ratio": 0.0},
                                                                         "backtranslation": {"ratio": 0.0}}})
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))
    params = load_params(root)
    for stage in (ingest, validate, split, augment, train, evaluate, export, quantize):
        stage.run(params)
    return params


def test_train_saves_safetensors_tokenizer_and_metrics(trained):
    model = trained.path("model")
    assert (model / "model.safetensors").exists() and (model / "tokenizer.json").exists()
    assert not list(model.glob("*.bin"))
    config = json.loads((model / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    metrics = json.loads((trained.path("metrics") / "train.json").read_text())
    assert metrics["device"] == "cpu" and metrics["steps"] > 0 and 0 <= metrics["best_val_accuracy"] <= 1
    curves = json.loads((trained.path("reports") / "train_curves.json").read_text())
    assert any(c["val_accuracy"] is not None for c in curves)


def test_evaluate_reports_metrics_per_class(trained):
    report = json.loads((trained.path("metrics") / "evaluate.json").read_text())
    assert set(report["per_class"]) == {"negative", "positive"}
    assert sum(c["support"] for c in report["per_class"].values()) == report["n"] == 60
    matrix = np.array(report["confusion_matrix"]["rows_true_cols_pred"])
    assert matrix.sum() == report["n"] and np.trace(matrix) / report["n"] == pytest.approx(report["accuracy"])


def test_onnx_export_has_dynamic_axes_and_matches_pytorch(trained):
    import onnx

    graph = onnx.load(str(trained.path("onnx") / export.MODEL_FILE)).graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    parity = json.loads((trained.path("metrics") / "export.json").read_text())
    assert parity["label_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-3


def test_onnx_model_runs_any_batch_and_length(trained):
    model = OnnxClassifier(trained.path("onnx"), export.MODEL_FILE)
    texts = ["short", "a much longer sentence " * 20, "mid length text here"]
    assert model.logits(texts, batch_size=2).shape == (3, 2)
    assert set(model.predict(texts)) <= {"negative", "positive"}


def test_quantized_model_is_smaller_and_measured(trained):
    report = json.loads((trained.path("metrics") / "quantize.json").read_text())
    assert report["size_ratio_vs_fp32"] < 0.9
    assert 0 <= report["label_agreement"] <= 1 and 0 <= report["accuracy"] <= 1
    folder = trained.path("quantized")
    assert {p.name for p in folder.iterdir()} >= {quantize.INT8_FILE, "tokenizer.json", "classifier.json"}

