"""train -> evaluate -> export -> quantize on a tiny random BERT, through the stage entry points."""

import collections
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from tasks.lib.artifacts import variant_file
from tasks.lib.config import load_params
from tasks.lib.export.variants import QuantizationError
from tasks.lib.inference.onnx_classifier import OnnxClassifier, length_batches
from tasks.stages import (
    augment,
    evaluate,
    export,
    ingest,
    quantize,
    split,
    train,
    validate,
)
from tests.support.repo import REPO, deep_merge, repo_params, tiny_overrides

FFN_OUTPUT = r"layer\.\d+/output/dense/MatMul$"  # the feed-forward output projections


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("stages")
    overrides = deep_merge(
        tiny_overrides(tiny_model_dir),
        {
            "augment": {"synonym": {"ratio": 0.0}, "backtranslation": {"ratio": 0.0}},
            # Every kind of variant, and dynamic int8 restricted to MatMul on the plain graph.
            "quantize": {
                "variants": {
                    **repo_params()["quantize"]["variants"],
                    "int8_matmul": {
                        "kind": "dynamic_int8",
                        "graph": "exported",
                        "per_channel": False,
                        "op_types": ["MatMul"],
                    },
                    "half": {"kind": "fp16", "graph": "optimized"},
                    "pruned_int8": {
                        "kind": "pruned",
                        "graph": "exported",
                        "heads": 0.5,
                        "neurons": 0.5,
                        "calibration_rows": 50,
                        "int8": True,
                    },
                    "openvino_bf16": {"kind": "openvino", "graph": "exported", "precision": "bf16"},
                    "int8_static_ffn_float": {
                        **repo_params()["quantize"]["variants"]["int8_static"],
                        "keep_float": [FFN_OUTPUT],
                    },
                    "int8_nncf": {"kind": "nncf_int8", "graph": "exported", "calibration_rows": 20},
                }
            },
        },
    )
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
    accuracy = pd.read_csv(trained.path("reports") / "train" / "plots" / "metrics" / "eval" / "accuracy.tsv", sep="\t")
    assert len(accuracy) == metrics["epochs_run"] == 2  # one validation per epoch


def test_evaluate_reports_metrics_per_class(trained):
    report = json.loads((trained.path("metrics") / "evaluate.json").read_text())
    assert set(report["per_class"]) == {"negative", "positive"}
    test_rows = len(pd.read_parquet(trained.path("test_split")))
    assert sum(c["support"] for c in report["per_class"].values()) == report["n"] == test_rows > 40
    matrix = np.array(report["confusion_matrix"]["rows_true_cols_pred"])
    assert matrix.sum() == report["n"] and np.trace(matrix) / report["n"] == pytest.approx(report["accuracy"])


def test_onnx_export_has_dynamic_axes_and_both_graphs_match_pytorch(trained):
    import onnx

    graph = onnx.load(str(trained.path("onnx") / export.MODEL_FILE)).graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    parity = json.loads((trained.path("metrics") / "export.json").read_text())
    assert parity["fused_ops"].get("Attention") == 2 and parity["fused_ops"].get("SkipLayerNormalization")
    for name in ("exported", "optimized"):
        assert parity[name]["label_agreement"] == 1.0 and parity[name]["max_abs_logit_diff"] < 1e-3, name
    optimized = {node.op_type for node in onnx.load(str(trained.path("onnx") / export.OPTIMIZED_FILE)).graph.node}
    assert "Attention" in optimized and "Softmax" not in optimized


def test_onnx_model_runs_any_batch_and_length_in_input_order(trained):
    model = OnnxClassifier(trained.path("onnx"), export.MODEL_FILE)
    texts = ["short", "a much longer sentence " * 20, "mid length text here", "x"]
    batched = model.logits(texts, batch_size=2)
    assert batched.shape == (4, 2)
    one_by_one = np.concatenate([model.logits([text], 1) for text in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)  # length batching restores the order
    assert set(model.predict(texts)) <= {"negative", "positive"}


def test_length_batches_group_similar_lengths_and_cover_every_row():
    batches = length_batches([5, 1, 9, 1, 5], 2)
    assert [list(b) for b in batches] == [[1, 3], [0, 4], [2]]


def test_every_variant_is_built_runs_and_is_measured_against_pytorch(trained, tmp_path):
    import onnx
    import onnxruntime as ort

    folder = trained.path("quantized")
    report = json.loads((trained.path("metrics") / "quantize.json").read_text())
    variants = trained.quantize.variants
    assert set(report["models"]) == {"pytorch_fp32", *variants}
    files = {name: variant_file(name, variant.runtime) for name, variant in variants.items()}
    ops = {
        name: {n.op_type for n in onnx.load(str(folder / file)).graph.node}
        for name, file in files.items()
        if file.endswith(".onnx")
    }
    assert {"QAttention", "DynamicQuantizeLinear"} <= ops["int8_dynamic"]
    assert "QuantizeLinear" in ops["int8_static"] and "DequantizeLinear" in ops["int8_static"]
    assert "MatMulInteger" in ops["int8_matmul"] and "QAttention" not in ops["int8_matmul"]
    assert "QuantizeLinear" in ops["int8_nncf"] and "DequantizeLinear" in ops["int8_nncf"]
    # NNCF's activations as uint8: ONNX Runtime computes every quantized MatMul in int8, the query,
    # key and value projections (three readers of one activation) included, none with float weights.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "nncf.optimized.onnx")
    ort.InferenceSession(str(folder / files["int8_nncf"]), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath).graph
    made_by = {output: node.op_type for node in optimized.node for output in node.output}
    weighted = [node for node in optimized.node if node.op_type in ("MatMul", "MatMulIntegerToFloat")]
    assert sum(node.op_type == "MatMulIntegerToFloat" for node in weighted) >= 13  # 2 layers x 6, head
    assert not [n.name for n in weighted if n.op_type == "MatMul" and made_by.get(n.input[1]) == "DequantizeLinear"]
    kept = onnx.load(str(folder / files["int8_static_ffn_float"])).graph
    dequantized = {output for node in kept.node if node.op_type == "DequantizeLinear" for output in node.output}
    quantized_inputs = {
        node.name: any(name in dequantized for name in node.input) for node in kept.node if node.op_type == "MatMul"
    }
    ffn_outputs = [name for name in quantized_inputs if re.search(FFN_OUTPUT, name)]
    assert len(ffn_outputs) == 2 and not any(quantized_inputs[name] for name in ffn_outputs)
    assert sum(quantized_inputs.values()) == len(quantized_inputs) - 2  # every other MatMul is int8
    assert "DynamicQuantizeLinear" in ops["pruned_int8"]
    pruned = onnx.load(str(folder / variant_file("pruned_int8")))
    # Half the heads and feed-forward neurons: of the tiny model's 2 heads of 16 dims a layer, one is
    # left (query, key, value: 32 -> 16; attention output: 16 -> 32), and 64 of its 2 x 64 neurons.
    shapes = collections.Counter(tuple(t.dims) for t in pruned.graph.initializer if len(t.dims) == 2)
    assert shapes[(32, 16)] == 6 and shapes[(16, 32)] == 2 and (32, 96) not in shapes
    feed_forward = [dims[1] for dims in shapes if dims[0] == 32 and dims[1] not in (2, 16, 32)]
    assert len(feed_forward) == 2 and sum(feed_forward) == 64
    half = onnx.load(str(folder / variant_file("half")))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    texts = ["good", "bad and boring"]
    for name, file in files.items():
        model = OnnxClassifier(folder, file)
        assert model.logits(texts).shape == (2, 2) and model.logits(texts).dtype == np.float32, name
        measured = report["models"][name]
        assert measured["p50_ms"] > 0 and measured["batch_per_s"] > 0 and measured["file"] == file
        assert measured["engine"] == model.engine.description
        assert 0 <= measured["agreement_b1"]["label_agreement"] <= 1
        assert 0 <= measured["batch_label_changes"] <= 1
    models = report["models"]
    assert models["fp32"]["agreement_batch"]["max_abs_logit_diff"] < 1e-3
    assert models["fp32"]["batch_label_changes"] == 0 and models["int8_static_ffn_float"]["batch_label_changes"] == 0
    assert models["half"]["agreement_batch"]["max_abs_logit_diff"] < 0.05
    assert models["int8_dynamic"]["size_ratio"] < 0.3 and models["fp32"]["size_ratio"] > 0.9
    # OpenVINO: weights in the .bin beside the .xml (counted in its size), stored as fp16 for bf16.
    assert files["openvino_bf16"] == "model.openvino_bf16.xml" and (folder / "model.openvino_bf16.bin").is_file()
    assert (
        models["openvino_bf16"]["engine"].startswith("openvino ") and 0.4 < models["openvino_bf16"]["size_ratio"] < 0.6
    )
    assert models["openvino_bf16"]["agreement_batch"]["label_agreement"] > 0.95
    assert report["latency_rows"] == report["rows"] == len(pd.read_parquet(trained.path("test_split")))
    assert "| int8_dynamic |" in (trained.path("reports") / "quantize.md").read_text()


def test_a_corrupt_graph_fails_the_variant_by_name(trained, tmp_path):
    from tasks.lib.config import DynamicInt8Variant

    shutil.copytree(trained.path("onnx"), tmp_path / "onnx")
    graph = tmp_path / "onnx" / export.OPTIMIZED_FILE
    graph.write_bytes(graph.read_bytes()[:4000])
    variant = DynamicInt8Variant(kind="dynamic_int8", graph="optimized", per_channel=True, op_types=None)
    with pytest.raises(QuantizationError, match=r"quantize\.variants\.broken \(dynamic_int8 of model\.opt\.onnx\)"):
        quantize.build_variant("broken", variant, tmp_path / "onnx", tmp_path, [])


def test_a_keep_float_pattern_that_finds_no_node_is_an_error_naming_it(trained, tmp_path):
    from tasks.lib.config import StaticInt8Variant

    variant = StaticInt8Variant(
        kind="static_int8",
        graph="exported",
        per_channel=False,
        op_types=["MatMul"],
        calibration_rows=10,
        method="minmax",
        keep_float=[FFN_OUTPUT, typo := r"layer\.\d+/outptu/dense"],
    )
    texts = ["good", "bad and boring"]
    with pytest.raises(QuantizationError, match=re.escape(f"keep_float: {typo!r} finds no node")):
        quantize.build_variant("typo", variant, trained.path("onnx"), tmp_path, texts)
    assert not list(tmp_path.glob("*.onnx"))


def test_nncf_quantizes_without_its_usage_telemetry(trained, tmp_path):
    # Outside pytest and CI, NNCF posts an event per quantization through openvino_telemetry.
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys; from pathlib import Path; from tasks.lib.config import NncfInt8Variant;"
        "from tasks.lib.export.variants import build_variant;"
        "v = NncfInt8Variant(kind='nncf_int8', graph='exported', calibration_rows=4);"
        "build_variant('n', v, Path(sys.argv[1]), Path(sys.argv[2]), ['good', 'bad', 'fine film', 'dull'])"
    )
    env = {**os.environ, "HOME": str(home), "CI": ""}
    args = [sys.executable, "-c", code, str(trained.path("onnx")), str(tmp_path)]
    subprocess.run(args, cwd=REPO, env=env, check=True, timeout=300)
    assert (tmp_path / "model.n.onnx").is_file()
    assert not (home / "intel").exists()


def test_openvino_is_imported_without_its_usage_telemetry(tmp_path):
    # A plain `import openvino` writes a client id under ~/intel and posts an event; ours must not.
    plain, ours = tmp_path / "plain", tmp_path / "ours"
    for home, code in (
        (plain, "import openvino"),
        (ours, "from tasks.lib.inference.onnx_classifier import import_openvino; import_openvino().Core()"),
    ):
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "CI": ""}
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120)
    assert (plain / "intel").exists()  # what the test would see if the guard were gone
    assert not (ours / "intel").exists()
