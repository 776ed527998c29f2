"""What validation decided on SST-2 and on every corpus case, recorded so a change of engine
(streaming, batches, hashes) is checked against it: the same verdicts, counts, flagged rows
and reasons, and the same accepted rows.

    python -m tests.data.verdicts   # records tests/data/verdicts.json from the current code

Recorded once from the in-memory implementation (commit 324738f) and compared by
tests/data/test_same_verdicts.py. Only what validation decided is kept (row ids, rule
names, counts, digests), none of SST-2's text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tasks.lib.config import Params, load_params
from tasks.lib.data.readers import DataError
from tests.data.corpus import CASES, STRICT, csv_bytes, good_rows
from tests.support.repo import SST2, deep_merge, repo_params

RECORD = Path(__file__).with_name("verdicts.json")
SST2_DATA = {
    "data": {"source": str(SST2), "labels": ["negative", "positive"], "label_map": {0: "negative", 1: "positive"}}
}
CORPUS_BASE = {"data": {"source": "good.csv"}, "validate": {"min_rows": 50}}


def _digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def fingerprint(params: Params) -> dict[str, Any]:
    """What the last `validate` run in this workspace decided (summary, quarantine, accepted rows)."""
    summary = json.loads((params.path("metrics") / "validate.json").read_text())
    rules = {
        name: {
            "passed": rule["passed"],
            "rows": rule.get("rows"),
            "value": None if rule.get("value") is None else round(rule["value"], 6),
            "examples": _digest(rule.get("examples")),
            "note": rule.get("note"),
        }
        for name, rule in summary["rules"].items()
    }
    quarantined = [json.loads(line) for line in params.path("quarantine").read_text().splitlines()]
    flagged: dict[str, list[str]] = {}
    for record in quarantined:
        for reason in record["reasons"]:
            flagged.setdefault(reason.split(":", 1)[0], []).append(record["row_id"])
    accepted = params.path("validated")
    kept = pd.read_parquet(accepted, columns=["row_id", "label"]) if accepted.exists() else None
    return {
        "passed": summary["passed"],
        "failed_rules": summary["failed_rules"],
        "rows_read": summary["rows_read"],
        "rows_kept": summary["rows_kept"],
        "rows_quarantined": summary["rows_quarantined"],
        "rows_warned": summary["rows_warned"],
        "rules": rules,
        "flagged": {rule: {"rows": len(ids), "ids": _digest(sorted(ids))} for rule, ids in sorted(flagged.items())},
        "reasons": _digest(sorted((r["row_id"], sorted(r["reasons"]), r["kept"]) for r in quarantined)),
        "accepted": None if kept is None else _digest(list(zip(kept["row_id"], kept["label"], strict=True))),
    }


def _configure(workspace: Path, *overrides: dict[str, Any]) -> Params:
    merged = repo_params()
    for override in overrides:
        merged = deep_merge(merged, override)
    (workspace / "params.yaml").write_text(yaml.safe_dump(merged))
    return load_params(workspace)


def _validate(params: Params) -> dict[str, Any]:
    from tasks.stages import ingest, validate

    ingest.run(params)
    with contextlib.suppress(validate.ValidationFailed):
        validate.run(params)
    return fingerprint(params)


def sst2_verdicts(workspace: Path) -> dict[str, Any]:
    """SST-2 (train, dev and the unlabelled test file) with the project's policies: a first run, then a rerun
    against the accepted data (drift measured)."""
    params = _configure(workspace, SST2_DATA)
    return {"sst2 first run": _validate(params), "sst2 rerun": _validate(params)}


def corpus_verdicts(root: Path, *engine: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each corpus case the reader accepts, after a good run, with strict policies and with the project's.

    Args:
        engine: params overrides for the case's run (the good run before it sets the baseline as shipped).
    """
    for case in CASES:
        if case.read_error:
            continue
        for policies, strict in (("strict", STRICT), ("default", {})):
            workspace = root / f"{case.id}-{policies}"
            workspace.mkdir()
            (workspace / "good.csv").write_bytes(csv_bytes(good_rows()))
            _validate(_configure(workspace, CORPUS_BASE))
            for name, content in case.files.items():
                (workspace / name).parent.mkdir(parents=True, exist_ok=True)
                (workspace / name).write_bytes(content)
            source = {"data": {"source": case.source}}
            params = _configure(workspace, CORPUS_BASE, strict, source, case.overrides, *engine)
            try:
                yield f"{case.id} {policies}", _validate(params)
            except DataError as exc:  # a case whose policies the reader enforces
                yield f"{case.id} {policies}", {"read_error": str(exc).replace(str(workspace), "<workspace>")}


def all_verdicts(root: Path) -> dict[str, Any]:
    (root / "sst2").mkdir()
    return {**sst2_verdicts(root / "sst2"), **dict(corpus_verdicts(root / "corpus"))}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "corpus").mkdir()
        RECORD.write_text(json.dumps(all_verdicts(Path(folder)), indent=1, sort_keys=True) + "\n")
    print(f"recorded {RECORD}")


def differences(recorded: dict, now: dict) -> list[str]:
    """One line per workspace whose verdicts differ from the recorded ones."""
    return [
        f"{name}: recorded {json.dumps(recorded.get(name), sort_keys=True)}\n"
        f"  now {json.dumps(now.get(name), sort_keys=True)}"
        for name in sorted(set(recorded) | set(now))
        if recorded.get(name) != now.get(name)
    ]
