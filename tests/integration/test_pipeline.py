"""The whole DAG in a temp copy of the repo: real DVC, real Prefect, real GX and ONNX Runtime."""

import json
from pathlib import Path

import pytest

from tasks.apps.code_deps import check_stages
from tasks.lib.artifacts import graph_files
from tests.support.repo import (
    BIN,
    UP_TO_DATE,
    deep_merge,
    dvc,
    flow,
    ran_stages,
    run,
    set_params,
    tiny_overrides,
)


@pytest.mark.slow
def test_dag_end_to_end_prefect_and_dvc_agree(repo_copy, tiny_model_dir):
    repo = repo_copy
    base = tiny_overrides(tiny_model_dir)
    set_params(repo, base)

    # 1. A Prefect run builds everything and promotes the first model.
    first = flow(repo)
    log = first.stdout + first.stderr
    assert ran_stages(log) == [
        "ingest",
        "validate",
        "split",
        "augment",
        "teacher",  # writes empty outputs: distillation is off
        "train",
        "evaluate",
        "export",
        "quantize",
        "gate",
        "reference",
        "promote",
    ]
    assert "Validation passed: 400 of 400 rows kept" in log and "data_docs/index.html" in log  # the run report
    pointer = repo / "registry" / "production.json"
    assert json.loads(pointer.read_text())["version"] == "v0001"
    record = json.loads((repo / "registry" / "versions" / "v0001" / "version.json").read_text())
    assert record["data"]["validated_md5"] and record["git_commit"] != "unknown"
    assert record["metrics"]["gate"]["passed"] is True
    # The serving variant the gate chose and every other that passed are registered, with what they need.
    gate_verdicts = record["metrics"]["gate"]["variants"]
    assert record["variant"] == record["metrics"]["gate"]["serving_variant"]
    assert set(record["serving_variants"]) == {name for name, verdict in gate_verdicts.items() if verdict["passed"]}
    assert record["serving_variants"][record["variant"]] == record["model_file"]
    version_files = {p.name for p in (repo / "registry" / "versions" / "v0001").iterdir()}
    graphs = {part for file in record["serving_variants"].values() for part in graph_files(file)}  # OpenVINO: .xml+.bin
    assert version_files == {
        *graphs,
        "tokenizer.json",
        "classifier.json",
        "version.json",
        "gate.md",
        "README.md",
        "reference.parquet",
    }
    assert "Serving variants against PyTorch fp32" in log and "**serves**" in log
    curves = run([str(BIN / "prefect"), "artifact", "inspect", "training-curves", "--limit", "1", "-o", "json"], repo)
    assert "reports/train/report.html" in curves.stdout

    # 2. After the Prefect run DVC sees nothing to do; `dvc plots show` draws the training curves.
    assert UP_TO_DATE in dvc(repo, "status").stdout
    plots = json.loads(dvc(repo, "plots", "show", "--json").stdout)["data"]
    assert set(plots) == {"loss", "val_accuracy", "learning_rate", "reports/confusion.csv", "reports/calibration.json"}
    assert all(plots[name][0]["content"]["data"]["values"] for name in ("loss", "val_accuracy", "learning_rate"))
    assert ran_stages(dvc(repo, "repro").stdout) == []

    # 3. A gate threshold re-runs the gate (and promotion) only; production is re-scored.
    set_params(repo, deep_merge(base, {"gate": {"metrics": {"accuracy": {"min": 0.35}}}}))
    assert ran_stages(dvc(repo, "repro").stdout) == ["gate", "reference", "promote"]
    gate = json.loads((repo / "metrics" / "gate.json").read_text())
    assert gate["production_version"] == "v0001"
    assert gate["overall"]["accuracy"]["change"] == 0  # the same model, scored twice
    assert {"accuracy change", "negation: accuracy"} <= {rule["name"] for rule in gate["rules"]}
    assert json.loads((repo / "reports" / "promotion.json").read_text())["promoted"] is False

    # 4. A lost production pointer (fresh clone, wiped registry) makes DVC re-run promotion only.
    pointer.unlink()
    assert ran_stages(dvc(repo, "repro").stdout) == ["promote"]
    assert json.loads(pointer.read_text())["version"] == "v0001"

    # 5. After `dvc repro`, a Prefect run does no stage work.
    again = flow(repo)
    assert ran_stages(again.stdout + again.stderr) == []
    assert UP_TO_DATE in dvc(repo, "status").stdout

    # 6. Editing a shared helper makes exactly the stages that run it stale: dvc.yaml's deps follow the imports.
    for helper, users in (
        (
            "tasks/lib/training/models.py",
            {"validate", "augment", "teacher", "train", "evaluate", "export", "reference", "promote"},
        ),
        ("tasks/lib/data/text.py", {"ingest", "validate", "split", "augment"}),
    ):
        source = repo / helper
        original = source.read_text()
        source.write_text(original + "\n# an edit\n")
        stale = set(json.loads(dvc(repo, "status", "--json").stdout))
        assert stale == users == {stage.name for stage in check_stages(repo) if Path(helper) in stage.runs}, helper
        source.write_text(original)
    assert UP_TO_DATE in dvc(repo, "status").stdout

    # 7. Broken rows fail validate with a readable report; production and good data are untouched.
    production_before = pointer.read_bytes()
    validated = repo / "data" / "validated" / "dataset.parquet"
    validated_before = validated.read_bytes()
    broken = repo / "incoming.csv"
    rows = [f"review {i} was {'good' if i % 2 else 'bad'},{'positive' if i % 2 else 'negative'}" for i in range(120)]
    broken.write_text("text,label\n" + "\n".join([*rows, "   ,positive", "fine film,great"]) + "\n")
    set_params(repo, deep_merge(base, {"data": {"source": "incoming.csv"}}))
    failed = flow(repo, check=False)
    assert failed.returncode == 1
    message = failed.stdout + failed.stderr
    assert "stage 'validate' failed" in message
    assert "text_present: 1 rows (stops the run)" in message and "label_in_set: 1 rows" in message
    assert "incoming.csv:123" in message
    assert pointer.read_bytes() == production_before and validated.read_bytes() == validated_before

    # 8. A candidate that misses a gate rule is rejected with the rule named; production stays.
    set_params(repo, deep_merge(base, {"gate": {"metrics": {"accuracy": {"min": 1.0}}}}))
    rejected = flow(repo, check=False)
    assert rejected.returncode == 1
    message = rejected.stdout + rejected.stderr
    assert "stage 'gate' failed" in message and "Gate: REJECTED" in message
    assert "Failed: accuracy is" in message and "below 1.0000 by" in message
    # The same report is the run's Prefect artifact.
    artifact = run([str(BIN / "prefect"), "artifact", "inspect", "gate-report", "--limit", "1", "-o", "json"], repo)
    assert "Gate: REJECTED" in artifact.stdout and "below 1.0000 by" in artifact.stdout
    assert pointer.read_bytes() == production_before
    # Both failed runs raised a notification; the rejection's title is the gate's headline.
    notes = [json.loads(line) for line in (repo / "logs" / "notifications.jsonl").read_text().splitlines()]
    assert [n["event"] for n in notes] == ["pipeline.failed", "pipeline.failed"]
    assert "stage 'validate' failed" in notes[0]["title"] and "incoming.csv:123" in notes[0]["body"]
    assert "Gate: REJECTED" in notes[1]["title"] and "below 1.0000 by" in notes[1]["body"]
