import json

import pytest

from tasks.gate import GateRejected, Rule, candidate_rules, choose_variant, render
from tasks.promote import promote
from tasks.registry import Registry, RegistryError

EVALUATE = {"accuracy": 0.90}
EXPORT = {"exported": {"label_agreement": 1.0}, "optimized": {"label_agreement": 1.0}}


def measured(p50_ms: float, per_s: float, agreement: float = 1.0, drop: float = 0.0, size: float = 0.25) -> dict:
    return {"p50_ms": p50_ms, "batch_per_s": per_s, "size_ratio": size, "accuracy_drop_b1": drop,
            "accuracy_drop_batch": drop, "agreement_b1": {"label_agreement": agreement},
            "agreement_batch": {"label_agreement": agreement}}


QUANTIZE = {"models": {"pytorch_fp32": measured(8.0, 150), "fp32": measured(3.0, 400, size=1.0),
                       "int8": measured(1.5, 600, agreement=0.99, drop=0.004),
                       "int8_fast": measured(1.2, 900, agreement=0.93, drop=0.03),
                       "int8_wide": measured(1.4, 950, agreement=0.99, drop=0.002)}}


def test_candidate_rules_pass_and_fail_with_margins(make_params):
    config = make_params().gate
    checked = candidate_rules(config, EVALUATE, EXPORT)
    assert [r.name for r in checked] == ["min_accuracy", "min_onnx_agreement (exported)",
                                         "min_onnx_agreement (optimized)"]
    assert all(r.passed for r in checked)
    worse = candidate_rules(config, {"accuracy": 0.5}, EXPORT)
    failed = [r for r in worse if not r.passed]
    assert [r.name for r in failed] == ["min_accuracy"]
    assert failed[0].margin == pytest.approx(0.5 - config.min_accuracy)
    chosen, variants = choose_variant(config.serving, QUANTIZE)
    text = render(worse, variants, chosen, QUANTIZE, config.serving, {"version": "v0001"}, 0.95)
    assert "REJECTED" in text and "min_accuracy is 0.5000, below 0.7500 by 0.2500" in text


def test_the_fastest_variant_that_passes_is_chosen(make_params):
    serving = make_params({"gate": {"serving": {"min_agreement": 0.97, "max_accuracy_drop": 0.01}}}).gate.serving
    chosen, variants = choose_variant(serving, QUANTIZE)
    # int8_fast is faster but disagrees with PyTorch too often; PyTorch itself is never a candidate.
    assert chosen == "int8_wide" and set(variants) == {"fp32", "int8", "int8_fast", "int8_wide"}
    assert [r.name for r in variants["int8_fast"] if not r.passed] == ["agreement b1", "agreement batch",
                                                                       "accuracy drop b1", "accuracy drop batch"]
    by_throughput = serving.model_copy(update={"prefer": "throughput"})
    assert choose_variant(by_throughput, QUANTIZE)[0] == "int8_wide"
    by_latency_only_int8 = serving.model_copy(update={"max_size_ratio": 0.3})
    quantize = {"models": {k: v for k, v in QUANTIZE["models"].items() if k != "int8_wide"}}
    assert choose_variant(by_latency_only_int8, quantize)[0] == "int8"
    nothing = serving.model_copy(update={"min_agreement": 1.0, "max_size_ratio": 0.3})
    chosen, variants = choose_variant(nothing, QUANTIZE)
    assert chosen is None
    text = render([], variants, chosen, QUANTIZE, nothing, None, None)
    assert "REJECTED" in text and "no serving variant passes gate.serving" in text
    assert "fp32: size ratio is 1.0000, above 0.3000 by 0.7000" in text


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
