"""The monitoring rules' edge cases (`pytest -k monitor`): what is not judged, not computed, or off, says so."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from tasks.lib.data.demo_data import generate_reviews
from tasks.lib.inference.production_model import Prediction
from tasks.lib.monitoring.prediction_log import PREDICTIONS, Answer, PredictionLog, log_location
from tasks.lib.monitoring.reference_profile import REFERENCE_FILE, ReferenceError, build_profile, write_profile
from tasks.lib.monitoring.traffic_monitor import monitor_traffic
from tasks.lib.storage.registry import Registry

LABELS = ["negative", "positive"]


def register(params, onnx_folder: Path, tiny_model_dir: Path, tmp_path: Path, profile: bool = True) -> None:
    """The tiny model as production, with a reference profile of demo data (or without one)."""
    model = tmp_path / "model"
    shutil.copytree(onnx_folder, model)
    if profile:
        demo = generate_reviews(300, label_noise=0.0, seed=3, labels=tuple(LABELS))
        table = build_profile(demo.iloc[:200], demo.iloc[200:], model, "model.onnx", str(tiny_model_dir))
        write_profile(table, model / REFERENCE_FILE, str(tiny_model_dir))
    registry = Registry(params.path("registry"))
    registry.set_production(registry.register(model, {"model_md5": "tiny", "labels": LABELS}), "test")


def serve_log(params, texts: int) -> None:
    """`texts` answers of v0001 in the prediction log, as `textclf serve` writes them."""
    log = PredictionLog(log_location(params.monitor, params.location("registry"), PREDICTIONS), params.monitor)
    for i in range(texts):
        label = LABELS[i % 2]
        log.record(
            Answer(
                uuid.uuid4().hex,
                time.time(),
                "v0001",
                None,
                [f"text {i}"],
                [Prediction(label, {label: 0.7, LABELS[1 - i % 2]: 0.3})],
            )
        )
    log.close()


def test_monitor_without_texts_reports_the_text_rules_as_not_computed(
    make_params, onnx_folder, tiny_model_dir, tmp_path
):
    params = make_params(
        {
            "monitor": {
                "log_text": False,
                "min_window": 20,
                "rules": {"confidence_shift": {"threshold": 0.15, "policy": "off"}},
            }
        }
    )
    register(params, onnx_folder, tiny_model_dir, tmp_path)
    serve_log(params, 40)
    run, compared = monitor_traffic(params, window_hours=1)
    found = {f.rule: f for f in run.findings}
    assert run.judged and run.predictions == 40
    for rule in ("unknown_tokens", "embedding_drift"):
        assert found[rule].value is None and not found[rule].fired and "monitor.log_text is false" in found[rule].note
    assert found["confidence_shift"].value is None and found["confidence_shift"].note == "off"
    assert found["live_accuracy"].value is None and "fewer than monitor.min_feedback" in found["live_accuracy"].note
    assert found["length_drift"].value is not None and found["label_drift"].value is not None
    assert compared.embedded is None and "not computed" in run.markdown()


def test_monitor_a_quiet_window_is_not_judged(make_params, onnx_folder, tiny_model_dir, tmp_path):
    params = make_params({"monitor": {"min_window": 50}})
    register(params, onnx_folder, tiny_model_dir, tmp_path)
    serve_log(params, 10)
    run, _ = monitor_traffic(params, window_hours=1)
    assert not run.judged and run.findings == [] and "fewer than monitor.min_window (50)" in run.note
    assert "not judged" in run.summary()


def test_monitor_a_version_without_a_reference_profile_is_named(make_params, onnx_folder, tiny_model_dir, tmp_path):
    params = make_params({"monitor": {"min_window": 5}})
    register(params, onnx_folder, tiny_model_dir, tmp_path, profile=False)
    serve_log(params, 10)
    with pytest.raises(ReferenceError, match=r"v0001/reference\.parquet: no reference profile.*promote a new version"):
        monitor_traffic(params, window_hours=1)


def test_monitor_before_the_first_promotion_is_a_skip_with_its_reason_not_a_failure(make_params, capsys):
    """A new team's hourly `monitor` deployment ran red every hour until the first promotion (issue 45, bug 2)."""
    from flows.monitor import monitor
    from tasks.apps.cli import main

    params = make_params()
    state = monitor(root=str(params.root), return_state=True)
    assert state.is_completed() and state.result() is None
    assert main(["--root", str(params.root), "monitor"]) == 0
    assert "monitoring skipped: no production version yet" in capsys.readouterr().out
