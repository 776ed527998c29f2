"""Serving-variant choice, the registry (stages, rollback, lock, crashes) and the promote stage."""

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.apps.cli import main
from tasks.lib.artifacts import (
    ArtifactError,
    EvaluateMetrics,
    ExportMetrics,
    GateMetrics,
    GateScores,
    GraphParity,
    IngestMetrics,
    QuantizeMetrics,
)
from tasks.lib.evaluation.gate import GateRejected, render
from tasks.lib.evaluation.gate_rules import choose_variant, onnx_rules
from tasks.lib.inference.production_model import load_classifier
from tasks.lib.io import current_umask
from tasks.lib.storage.lineage import registered_variants
from tasks.lib.storage.registry import Registry, RegistryError
from tasks.stages.promote import promote
from tests.support.repo import REPO


def agreeing(share: float) -> dict:
    return {"label_agreement": share, "max_abs_logit_diff": 0.0, "mean_abs_logit_diff": 0.0}


EXPORT = ExportMetrics(
    inputs=["input_ids"],
    opset=17,
    fused_ops={},
    exported=GraphParity(file="model.onnx", size_bytes=1, **agreeing(1.0)),
    optimized=GraphParity(file="model.opt.onnx", size_bytes=1, **agreeing(0.9)),
)


def measured(p50_ms: float, per_s: float, agreement: float = 1.0, drop: float = 0.0, size: float = 0.25) -> dict:
    return {
        "p50_ms": p50_ms,
        "p95_ms": p50_ms * 2,
        "batch_per_s": per_s,
        "speedup_b1": 1.0,
        "speedup_batch": 1.0,
        "size_bytes": int(size * 1e8),
        "size_ratio": size,
        "accuracy_b1": 0.9 - drop,
        "accuracy_batch": 0.9 - drop,
        "accuracy_drop_b1": drop,
        "accuracy_drop_batch": drop,
        "agreement_b1": agreeing(agreement),
        "agreement_batch": agreeing(agreement),
    }


def measurement(models: dict) -> QuantizeMetrics:
    return QuantizeMetrics(rows=100, latency_rows=100, batch_size=32, threads=None, rounds=3, models=models)


QUANTIZE = measurement(
    {
        "pytorch_fp32": measured(8.0, 150),
        "fp32": measured(3.0, 400, size=1.0),
        "int8": measured(1.5, 600, agreement=0.99, drop=0.004),
        "int8_fast": measured(1.2, 900, agreement=0.93, drop=0.03),
        "int8_wide": measured(1.4, 950, agreement=0.99, drop=0.002),
    }
)


def test_a_variant_whose_labels_move_with_the_batch_is_refused_when_answers_must_not(make_params):
    serving = make_params({"gate": {"serving": {"min_agreement": 0.97, "max_accuracy_drop": 0.01}}}).gate.serving
    quantize = measurement(
        {
            "pytorch_fp32": measured(8.0, 150),
            "dynamic": {**measured(1.2, 900), "batch_label_changes": 0.013},
            "static": {**measured(1.5, 600), "batch_label_changes": 0.0},
            "unmeasured": measured(1.0, 990),  # a quantize.json from before the figure
        }
    )
    assert choose_variant(serving, quantize)[0] == "unmeasured"  # null: not checked
    chosen, variants = choose_variant(serving.model_copy(update={"max_batch_label_changes": 0.0}), quantize)
    assert chosen == "static"
    assert [(r.name, r.value) for r in variants["dynamic"] if r.failed] == [("labels moved by batching", 0.013)]
    assert [(r.name, r.value) for r in variants["unmeasured"] if r.failed] == [("labels moved by batching", 1.0)]


def test_a_variant_under_the_served_floor_is_refused_though_within_its_drop(make_params):
    """PyTorch at 0.9015 entity F1 and a drop allowed of 0.003: a floor of 0.900 still refuses 0.8991."""
    serving = make_params({"gate": {"serving": {"max_entity_f1_drop": 0.003, "max_accuracy_drop": 0.01}}}).gate.serving

    def tagger(p50_ms: float, f1_batch: float) -> dict:
        return measured(p50_ms, 100) | {
            "entity_f1_b1": 0.93,
            "entity_f1_batch": f1_batch,
            "entity_f1_drop_b1": 0.0,
            "entity_f1_drop_batch": round(0.9015 - f1_batch, 4),
        }

    quantize = measurement(
        {"pytorch_fp32": tagger(38.0, 0.9015), "fp32": tagger(20.0, 0.9015), "static": tagger(12.0, 0.8991)}
    )
    assert choose_variant(serving, quantize)[0] == "static"  # null: not checked
    chosen, variants = choose_variant(serving.model_copy(update={"min_entity_f1": 0.9}), quantize)
    assert chosen == "fp32"
    assert [(r.name, r.value, r.kind) for r in variants["static"] if r.failed] == [("entity F1 batch", 0.8991, "min")]
    floored = serving.model_copy(update={"min_accuracy": 0.95})  # every variant's accuracy here is 0.9
    assert choose_variant(floored, quantize)[0] is None


def test_onnx_rules_name_the_graph_that_disagrees(make_params):
    rules = onnx_rules(make_params().gate, EXPORT)
    assert [(r.name, r.status) for r in rules] == [
        ("min_onnx_agreement (exported)", "pass"),
        ("min_onnx_agreement (optimized)", "FAIL"),
    ]


def test_the_fastest_variant_that_passes_is_chosen(make_params):
    params = make_params({"gate": {"serving": {"min_agreement": 0.97, "max_accuracy_drop": 0.01}}})
    serving = params.gate.serving
    chosen, variants = choose_variant(serving, QUANTIZE)
    # int8_fast is faster but disagrees with PyTorch too often; PyTorch itself is never a candidate.
    assert chosen == "int8_wide" and set(variants) == {"fp32", "int8", "int8_fast", "int8_wide"}
    assert [r.name for r in variants["int8_fast"] if r.failed] == [
        "agreement b1",
        "agreement batch",
        "accuracy drop b1",
        "accuracy drop batch",
    ]
    assert choose_variant(serving.model_copy(update={"prefer": "throughput"}), QUANTIZE)[0] == "int8_wide"
    quantize = measurement({k: v for k, v in QUANTIZE.models.items() if k != "int8_wide"})
    assert choose_variant(serving.model_copy(update={"max_size_ratio": 0.3}), quantize)[0] == "int8"
    nothing = serving.model_copy(update={"min_agreement": 1.0, "max_size_ratio": 0.3})
    chosen, variants = choose_variant(nothing, QUANTIZE)
    assert chosen is None
    text = render(
        [],
        variants,
        chosen,
        QUANTIZE,
        params.model_copy(update={"gate": params.gate.model_copy(update={"serving": nothing})}),
        None,
        None,
    )
    assert "REJECTED" in text and "no serving variant passes gate.serving" in text
    assert "fp32: size ratio is 1.0000, above 0.3000 by 0.7000" in text


def test_gate_rejected_is_the_report():
    assert str(GateRejected("## Gate: REJECTED")) == "## Gate: REJECTED"


# The registry


def folder_with(tmp_path: Path, name: str, content: bytes) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.onnx").write_bytes(content)
    return folder


@pytest.fixture(params=["local", "s3"])
def registry_location(request, tmp_path) -> Path | str:
    """A registry in a folder, and one in a real S3 server (SeaweedFS): the same promises on both."""
    return tmp_path / "registry" if request.param == "local" else request.getfixturevalue("s3_url")


def test_stages_follow_registration_promotion_and_archiving(tmp_path, registry_location):
    registry = Registry(registry_location)
    assert registry.production() is None and registry.stages() == {}
    v1 = registry.register(folder_with(tmp_path, "a", b"a"), {"model_md5": "a"})
    assert registry.stages() == {v1: "candidate"} and registry.production() is None  # registering is not promoting
    registry.promote(v1, "first")
    v2 = registry.register(folder_with(tmp_path, "b", b"b"), {"model_md5": "b"})
    v3 = registry.register(folder_with(tmp_path, "c", b"c"), {"model_md5": "c"})
    registry.promote(v2, "better")
    registry.archive(v3, "superseded")
    assert registry.stages() == {"v0001": "archived", "v0002": "production", "v0003": "archived"}
    assert registry.find("a") == "v0001" and registry.find("zzz") is None
    with pytest.raises(RegistryError, match="is production"):
        registry.archive(v2, "no")
    with pytest.raises(RegistryError, match="already production"):
        registry.promote(v2, "again")
    with pytest.raises(RegistryError, match="no complete version v0009"):
        registry.promote("v0009", "missing")
    events = [(e["event"], e.get("version") or e.get("to")) for e in registry.events()]
    assert events == [
        ("register", v1),
        ("promote", v1),
        ("register", v2),
        ("register", v3),
        ("promote", v2),
        ("archive", v3),
    ]


def test_a_version_from_a_private_folder_is_readable_by_the_serving_user(tmp_path):
    # A temporary folder is 0700 and its files 0600: copied with their modes, a serving host's own
    # user (the serving image's) could not read the version.
    source = folder_with(tmp_path, "a", b"a")
    source.chmod(0o700)
    for path in source.iterdir():
        path.chmod(0o600)
    registry = Registry(tmp_path / "registry")
    version = registry.versions / registry.register(source, {"model_md5": "a"})
    umask = current_umask()
    assert version.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {path.stat().st_mode & 0o777 for path in version.iterdir()} == {0o666 & ~umask}


def test_rollback_restores_the_previous_production_model_and_records_why(tmp_path, registry_location):
    registry = Registry(registry_location)
    for name in "abc":
        registry.promote(registry.register(folder_with(tmp_path, name, name.encode()), {"model_md5": name}), "ok")
    assert registry.rollback("v0003 misclassifies refunds") == ("v0003", "v0002")
    assert registry.production()["model_md5"] == "b"
    assert registry.rolled_back("v0003")["reason"] == "v0003 misclassifies refunds"
    # Again: past v0002 to v0001, never back to the rolled-back v0003.
    assert registry.rollback("v0002 too") == ("v0002", "v0001")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback("and again")
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.rollback("  ")
    assert registry.stages() == {"v0001": "production", "v0002": "archived", "v0003": "archived"}
    registry.promote("v0003", "the refunds issue was in the data, not the model")  # a person may
    assert registry.rolled_back("v0003") is None and registry.production()["version"] == "v0003"
    assert registry.rollback("explicit", to="v0002") == ("v0003", "v0002")


def test_a_registry_from_before_named_events_still_reads(tmp_path):
    registry = Registry(tmp_path)
    registry.register(folder_with(tmp_path, "a", b"a"), {"model_md5": "a"})
    registry.history.write_text('{"at": "2026-11-01T00:00:00+00:00", "from": null, "to": "v0001", "reason": "x"}\n')
    registry.pointer.write_text('{"version": "v0001"}')
    assert registry.stages() == {"v0001": "production"} and registry.rolled_back("v0001") is None


def test_a_half_copied_version_is_invisible_and_replaced(tmp_path):
    registry = Registry(tmp_path)
    (registry.versions / ".v0001.tmp").mkdir(parents=True)  # a crash during the copy
    (registry.versions / "v0001").mkdir()  # renamed but without its record: not complete
    assert registry.list_versions() == [] and registry.production() is None
    assert registry.register(folder_with(tmp_path, "a", b"a"), {"model_md5": "a"}) == "v0002"


CONCURRENT = """
import sys
from pathlib import Path
from tasks.lib.storage.registry import Registry
registry, folder = Registry(sys.argv[1]), Path(sys.argv[2])
for _ in range(5):
    registry.promote(registry.register(folder, {"model_md5": folder.name}), "race " + folder.name)
"""


def test_concurrent_promotions_are_serialised(tmp_path, registry_location):
    root = registry_location  # on S3, four processes share nothing but the store (and its lease)
    folders = [folder_with(tmp_path, f"m{i}", bytes([i]) * 1000) for i in range(4)]
    processes = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(root), str(f)], cwd=REPO) for f in folders]
    assert [p.wait(timeout=120) for p in processes] == [0] * 4
    registry = Registry(root)
    assert registry.list_versions() == [f"v{i:04d}" for i in range(1, 21)]
    moves = [e for e in registry.events() if e["event"] == "promote"]
    assert len(moves) == 20
    # Each promotion saw the one before it: no two writers interleaved.
    assert all(later["from"] == earlier["to"] for earlier, later in itertools.pairwise(moves))
    assert registry.production()["version"] == moves[-1]["to"]


# The promote stage


def stage_candidate(params, model: Path, model_file: str) -> None:
    """What the stages before promote leave: a quantized folder, data files, metrics and a passed gate."""
    quantized = params.path("quantized")
    shutil.rmtree(quantized, ignore_errors=True)
    quantized.mkdir(parents=True)
    for name in ("tokenizer.json", "classifier.json"):
        shutil.copy(model.parent / name, quantized / name)
    shutil.copy(model, quantized / model_file)
    for name in ("raw", "validated", "augmented", "test_split", "reference"):
        params.path(name).parent.mkdir(parents=True, exist_ok=True)
        params.path(name).write_bytes(name.encode())
    params.path("metrics").mkdir(parents=True, exist_ok=True)
    EvaluateMetrics(
        n=10, accuracy=0.9, macro_f1=0.9, weighted_f1=0.9, ece=0.05, interval={"accuracy": [0.8, 1.0]}
    ).write(params)
    QUANTIZE.write(params)
    IngestMetrics(rows=12, source_rows=10, batches=2, batch_rows=2, data_version="0002-0123456789ab").write(params)
    judged_against = Registry(params.location("registry")).production_version()  # what the gate compared with
    gate = passed_gate(model_file, model_file.split(".")[1])
    gate.model_copy(update={"production_version": judged_against}).write(params)
    params.path("reports").mkdir(parents=True, exist_ok=True)
    (params.path("reports") / "gate.md").write_text("## Gate: PASSED\n")
    GateScores(scopes={}).write(params)


def passed_gate(model_file: str | None, variant: str | None, passed: bool = True) -> GateMetrics:
    return GateMetrics(
        passed=passed,
        serving_variant=variant,
        model_file=model_file,
        production_version=None,
        rules=[],
        variants={},
        overall={"accuracy": {"candidate": 0.9}},
    )


@pytest.fixture
def int8_model(onnx_folder, tmp_path) -> Path:
    """A second, different servable graph: the tiny model quantized to int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = tmp_path / "int8" / "model.onnx"
    target.parent.mkdir()
    quantize_dynamic(onnx_folder / "model.onnx", target, weight_type=QuantType.QInt8)
    for name in ("tokenizer.json", "classifier.json"):
        shutil.copy(onnx_folder / name, target.parent / name)
    return target


def test_promote_refuses_a_failed_gate(make_params):
    params = make_params()
    params.path("metrics").mkdir(parents=True)
    passed_gate(None, None, passed=False).write(params)
    with pytest.raises(RegistryError, match="did not pass"):
        promote(params)
    assert Registry(params.path("registry")).production() is None


def test_a_record_of_the_wrong_shape_names_its_file_and_field(make_params):
    params = make_params()
    params.path("metrics").mkdir(parents=True)
    (params.path("metrics") / "gate.json").write_text(json.dumps({"passed": True, "model_file": "m.onnx"}))
    with pytest.raises(
        ArtifactError,
        match=r"metrics/gate\.json: not a GateMetrics record \(serving_variant: Field "
        r"required; production_version: Field required",
    ):
        promote(params)
    assert Registry(params.path("registry")).production() is None


def test_promote_bootstraps_then_records_lineage_and_the_gate_report(make_params, onnx_folder):
    params = make_params()
    stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
    outcome = promote(params)
    assert outcome.promoted and outcome.version == "v0001" and outcome.previous is None
    record = Registry(params.path("registry")).production()
    assert set(record["data"]) == {"source", "version", "batches", "raw_md5", "validated_md5", "train_md5", "test_md5"}
    assert record["data"]["version"] == "0002-0123456789ab"  # the landing archive folder of the newest data
    assert record["params"]["gate"]["change_test"] == "interval" and record["git_commit"]
    assert (Path(record["path"]) / "gate.md").read_text() == "## Gate: PASSED\n"
    assert (Path(record["path"]) / "reference.parquet").read_bytes() == b"reference"  # the monitoring profile
    assert promote(params).reason == "candidate already serves"


def test_a_rolled_back_model_is_not_promoted_again_by_the_pipeline(make_params, onnx_folder, int8_model):
    params = make_params()
    stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
    promote(params)
    stage_candidate(params, int8_model, "model.int8.onnx")
    assert promote(params).version == "v0002"
    assert main(["--root", str(params.root), "registry", "rollback", "--reason", "complaints about v0002"]) == 0
    again = promote(params)  # what `dvc repro` does next: the pointer is promote's output and changed
    assert not again.promoted and "v0002 was rolled back" in again.reason
    assert "complaints about v0002" in again.reason
    assert Registry(params.path("registry")).production()["version"] == "v0001"


def test_manual_mode_registers_a_candidate_that_a_person_promotes(make_params, onnx_folder, capsys):
    params = make_params({"promote": {"mode": "manual"}})
    stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
    outcome = promote(params)
    assert not outcome.promoted and "registry promote v0001" in outcome.reason
    registry = Registry(params.path("registry"))
    assert registry.stages() == {"v0001": "candidate"} and registry.production() is None
    assert main(["--root", str(params.root), "registry", "promote", "v0001", "--reason", "reviewed"]) == 0
    assert main(["--root", str(params.root), "registry", "list"]) == 0
    listing = capsys.readouterr().out
    assert "v0001    production" in listing and "fp32" in listing
    assert main(["--root", str(params.root), "registry", "archive", "v0001", "--reason", "x"]) == 1
    assert "is production" in capsys.readouterr().err


def test_registry_list_reads_versions_in_object_storage(make_params, onnx_folder, s3_url, capsys, tmp_path):
    """`textclf registry --registry s3://... list` once marked every version damaged (it has no local folder)."""
    params = make_params()
    stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
    assert promote(params.with_registry(s3_url)).promoted
    assert main(["--root", str(params.root), "registry", "--registry", s3_url, "list"]) == 0
    listing = capsys.readouterr().out
    assert "v0001    production" in listing and "fp32" in listing and "damaged" not in listing
    # A serving host: no workspace, no params.yaml; the registry's URL is all it has (it once said
    # "params.yaml: not found").
    host = tmp_path / "serving-host"
    host.mkdir()
    assert main(["--root", str(host), "registry", "--registry", s3_url, "history"]) == 0
    assert '"version": "v0001"' in capsys.readouterr().out


def test_a_verdict_against_another_production_version_is_not_promoted(make_params, onnx_folder, int8_model):
    params = make_params()
    stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
    stale = GateMetrics.read(params)  # judged when there was no production model
    promote(params)
    stage_candidate(params, int8_model, "model.int8.onnx")
    GateMetrics.read(params).model_copy(update={"production_version": stale.production_version}).write(params)
    with pytest.raises(RegistryError, match=r"compared this candidate with production none .* is now v0001"):
        promote(params)
    registry = Registry(params.path("registry"))
    assert registry.list_versions() == ["v0001"] and registry.production_version() == "v0001"


KILLED = """
import os, shutil, signal, sys
from tasks.lib.storage import registry
from tasks.stages import promote
from tasks.lib.config import load_params

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[2] == "before-pointer-switch":
    registry.Registry.set_production = die
else:  # during the copy: after the first file
    copy, calls = shutil.copy2, []
    def copy_then_die(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            die()
        return copy(*args, **kwargs)
    registry.shutil.copy2 = copy_then_die
promote.promote(load_params(sys.argv[1]))
"""


@pytest.mark.parametrize("moment", ["before-pointer-switch", "during-copy"])
def test_a_crash_mid_promotion_leaves_production_serving(make_params, onnx_folder, int8_model, moment):
    params = make_params()
    stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
    promote(params)
    registry = Registry(params.path("registry"))
    pointer = registry.pointer.read_bytes()
    stage_candidate(params, int8_model, "model.int8.onnx")
    killed = subprocess.run([sys.executable, "-c", KILLED, str(params.root), moment], cwd=REPO, check=False)
    assert killed.returncode == -9
    assert registry.pointer.read_bytes() == pointer
    production = registry.production()
    assert production["version"] == "v0001"
    assert load_classifier(Path(production["path"])).predict(["a fine film"])[0] in ("negative", "positive")
    expected = (
        {"v0001": "production", "v0002": "candidate"} if moment == "before-pointer-switch" else {"v0001": "production"}
    )
    assert registry.stages() == expected
    # The next run finishes the job: one new version, no duplicate.
    assert promote(params).version == "v0002"
    assert registry.list_versions() == ["v0001", "v0002"] and registry.production()["model_file"] == "model.int8.onnx"


KILLED_AFTER_SWITCH = """
import os, signal, sys
from tasks.lib.storage import registry
from tasks.stages import promote
from tasks.lib.config import load_params

switch = registry.Registry.set_production
def switch_then_die(*args, **kwargs):
    switch(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # before promotion.json, and so before DVC records the stage
registry.Registry.set_production = switch_then_die
promote.run(load_params(sys.argv[1]))
"""


def test_a_promotion_killed_after_the_pointer_switch_is_repeated_harmlessly(make_params, onnx_folder, int8_model):
    params = make_params()
    stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
    promote(params)
    stage_candidate(params, int8_model, "model.int8.onnx")
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_SWITCH, str(params.root)], cwd=REPO, check=False)
    assert killed.returncode == -9
    registry = Registry(params.path("registry"))
    assert registry.production_version() == "v0002"
    events = registry.events()
    # What the next `dvc repro` / `textclf run` does: dvc.lock has no record of this promote, so it runs again.
    again = promote(params)
    assert not again.promoted and again.version == "v0002" and again.reason == "candidate already serves"
    assert registry.list_versions() == ["v0001", "v0002"] and registry.production_version() == "v0002"
    assert registry.events() == events  # no second promotion in the history


def test_promote_registers_every_variant_that_passed_the_gate(make_params, onnx_folder, int8_model):
    from tasks.lib.artifacts import RuleResult, VariantVerdict
    from tasks.lib.config import OpenVinoVariant
    from tasks.lib.export.variants import build_variant
    from tasks.lib.inference.production_model import ModelLoadError, ProductionModel

    params = make_params()
    stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
    quantized = params.path("quantized")
    shutil.copy(int8_model, quantized / "model.int8_dynamic.onnx")
    shutil.copy(int8_model, quantized / "model.int8_static.onnx")
    openvino = OpenVinoVariant(kind="openvino", graph="exported", precision="f32")
    assert build_variant("openvino_f32", openvino, onnx_folder, quantized, []).name == "model.openvino_f32.xml"
    files = {
        "fp32": "model.fp32.onnx",
        "int8_dynamic": "model.int8_dynamic.onnx",
        "int8_static": "model.int8_static.onnx",
        "openvino_f32": "model.openvino_f32.xml",
    }
    measurement({name: {**measured(1.0, 100), "file": file} for name, file in files.items()}).write(params)
    verdict = {"passed": True, "rules": []}
    failing_rule = RuleResult(
        name="accuracy", value=0.5, threshold=0.6, kind="min", interval=None, status="FAIL", skip=None, margin=-0.1
    )
    failed = VariantVerdict(passed=False, rules=[failing_rule])
    gate = passed_gate("model.fp32.onnx", "fp32").model_copy(
        update={
            "variants": {
                "fp32": VariantVerdict(**verdict),
                "int8_dynamic": VariantVerdict(**verdict),
                "int8_static": failed,
                "openvino_f32": VariantVerdict(**verdict),
            }
        }
    )
    gate.write(params)
    version = promote(params).version
    record = Registry(params.path("registry")).record(version)
    assert record["serving_variants"] == {name: files[name] for name in ("fp32", "int8_dynamic", "openvino_f32")}
    folder = Path(record["path"])
    graphs = {"model.fp32.onnx", "model.int8_dynamic.onnx", "model.openvino_f32.xml", "model.openvino_f32.bin"}
    assert {p.name for p in folder.glob("model.*")} == graphs
    assert set(record["files"]) >= {*graphs, "tokenizer.json", "classifier.json"}
    # The OpenVINO variant serves like the others, and says what runs it.
    model = ProductionModel(params.path("registry"), variant="openvino_f32")
    served = model.predict(["a fine film", "dull"])[1]
    expected = load_classifier(onnx_folder, verify=False, graph_file="model.onnx")
    assert [p.label for p in served] == expected.predict(["a fine film", "dull"])
    assert model.status()["engine"].startswith("openvino ") and model.status()["engine"].endswith(" f32")
    # Its weights are hash-checked like every registered file.
    (folder / "model.openvino_f32.bin").write_bytes(b"not the weights")
    with pytest.raises(ModelLoadError, match=r"model\.openvino_f32\.bin differs"):
        load_classifier(folder)

    only_chosen = make_params({"promote": {"variants": "chosen"}})
    assert registered_variants(only_chosen, gate, "fp32") == {"fp32": "model.fp32.onnx"}


def test_every_version_carries_a_model_card_from_its_records(make_params, onnx_folder, capsys):
    import yaml

    params = make_params()
    stage_candidate(params, onnx_folder / "model.onnx", "model.int8.onnx")
    version = promote(params).version
    card = (params.path("registry") / "versions" / version / "README.md").read_text()
    header, body = card.removeprefix("---\n").split("\n---\n", 1)
    meta = yaml.safe_load(header)
    evaluate = EvaluateMetrics.read(params)
    # The base model's own card gives language and licence; the figures are the metrics files'.
    assert meta["base_model"] == params.train.base_model and meta["license"] == "apache-2.0"
    assert meta["language"] == "en" and meta["pipeline_tag"] == "text-classification"
    assert (
        meta["dataset_hashes"]["validated_md5"]
        == Registry(params.path("registry")).record(version)["data"]["validated_md5"]
    )
    (result,) = meta["model-index"][0]["results"]
    assert {m["name"]: m["value"] for m in result["metrics"]} == {
        "accuracy": evaluate.accuracy,
        "macro_f1": evaluate.macro_f1,
        "weighted_f1": evaluate.weighted_f1,
        "ece": evaluate.ece,
    }
    for section in ("## Intended use", "## Training data", "## Training settings", "## Evaluation", "## Limitations"):
        assert section in body, section
    assert (
        f"| accuracy | {evaluate.accuracy:.4f} | 0.8000 - 1.0000 |" in body and "## The gate's decision: passed" in body
    )
    # The card is hash-checked like every file of the version, and the CLI prints it.
    assert "README.md" in Registry(params.path("registry")).record(version)["files"]
    assert main(["--root", str(params.root), "registry", "show", version]) == 0
    assert capsys.readouterr().out == card
    assert main(["--root", str(params.root), "registry", "show", version, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_md5"]


def test_a_registry_in_object_storage_serves_hosts_without_a_workspace(
    make_params, onnx_folder, int8_model, tmp_path, monkeypatch
):
    """Promote into S3; a serving host with only the URL follows promotions and survives the store going away."""
    from tasks.lib.inference.production_model import ProductionModel
    from tests.support.seaweedfs import SeaweedFS

    server = SeaweedFS(tmp_path / "seaweedfs", bucket="team")
    server.start()
    try:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        url = "s3://team/registry"
        params = make_params({"paths": {"registry": url}})
        stage_candidate(params, onnx_folder / "model.onnx", "model.fp32.onnx")
        assert promote(params).version == "v0001"
        registry = Registry(url)
        assert registry.list_versions() == ["v0001"] and registry.local is None
        # A half-uploaded version (a writer killed before its record) is invisible, and cleared by the next writer.
        registry.store.put("versions/v0002/model.onnx", b"half")
        assert registry.list_versions() == ["v0001"] and registry.production()["version"] == "v0001"

        host = ProductionModel(url, retry=(0.05, 0.2))
        host.registry.cache = tmp_path / "host-cache"  # the serving host's own disk
        assert host.status()["version"] == "v0001" and host.status()["status"] == "ok"
        assert (tmp_path / "host-cache" / "v0001" / "model.fp32.onnx").is_file()

        stage_candidate(params, int8_model, "model.int8_dynamic.onnx")
        assert promote(params).version == "v0002"  # the half-uploaded v0002 was cleared first
        assert host.status()["version"] == "v0002"  # followed without a restart

        server.stop()  # the store goes away: the host keeps answering with what it has
        status = host.status()
        assert status["status"] == "degraded" and status["version"] == "v0002"
        assert "cannot read the production pointer s3://team/registry/production.json" in status["error"]
        assert host.predict(["still here"])[0] == "v0002"
        server.start()
        assert host.status()["status"] == "ok"
    finally:
        server.stop()
