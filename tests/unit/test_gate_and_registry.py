import json

import pytest

from tasks.gate import GateRejected, Rule, render, rules
from tasks.promote import promote
from tasks.registry import Registry, RegistryError

EVALUATE = {"accuracy": 0.90}
EXPORT = {"label_agreement": 1.0}
QUANTIZE = {"accuracy": 0.89, "label_agreement": 0.98}


def test_rules_pass_and_fail_with_margins(make_params):
    config = make_params().gate
    checked = rules(config, EVALUATE, EXPORT, QUANTIZE, production_acc=None)
    assert [r.name for r in checked] == ["min_accuracy", "min_onnx_agreement", "min_int8_agreement",
                                         "max_int8_accuracy_drop"]
    assert all(r.passed for r in checked)
    worse = rules(config, {"accuracy": 0.5}, EXPORT, QUANTIZE, production_acc=0.95)
    failed = {r.name: r for r in worse if not r.passed}
    assert set(failed) == {"min_accuracy", "max_drop_vs_production"}
    assert failed["min_accuracy"].margin == pytest.approx(0.5 - config.min_accuracy)
    text = render(worse, {"version": "v0001"}, 0.95)
    assert "REJECTED" in text and "min_accuracy is 0.5000, below 0.7500 by 0.2500" in text


def test_rule_directions():
    assert Rule("x", 0.5, 0.5, "min").passed and Rule("x", 0.5, 0.5, "max").passed
    assert not Rule("x", 0.6, 0.5, "max").passed and Rule("x", 0.6, 0.5, "max").margin == pytest.approx(-0.1)


def test_registry_versions_and_pointer(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.int8.onnx").write_bytes(b"one")
    registry = Registry(tmp_path / "registry")
    assert registry.production() is None
    v1 = registry.register(model, {"model_md5": "a"})
    registry.set_production(v1, "first")
    v2 = registry.register(model, {"model_md5": "b"})
    assert (v1, v2) == ("v0001", "v0002")
    assert registry.production()["version"] == "v0001"  # registering does not promote
    registry.set_production(v2, "second")
    assert registry.production()["model_md5"] == "b"
    assert registry.find("a") == "v0001" and registry.find("zzz") is None
    history = [json.loads(line) for line in registry.history.read_text().splitlines()]
    assert [(h["from"], h["to"]) for h in history] == [(None, "v0001"), ("v0001", "v0002")]
    with pytest.raises(RegistryError):
        registry.set_production("v0009", "missing")


def test_half_written_version_is_never_production(tmp_path):
    registry = Registry(tmp_path)
    (registry.versions / ".v0001.tmp").mkdir(parents=True)  # a crash during the copy
    assert registry.list_versions() == [] and registry.production() is None


def test_promote_refuses_a_failed_gate(make_params):
    params = make_params()
    params.path("metrics").mkdir(parents=True)
    (params.path("metrics") / "gate.json").write_text(json.dumps({"passed": False}))
    with pytest.raises(RegistryError, match="did not pass"):
        promote(params)
    assert Registry(params.path("registry")).production() is None


def test_gate_rejected_is_the_report():
    assert str(GateRejected("## Gate: REJECTED")) == "## Gate: REJECTED"
