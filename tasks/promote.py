"""Stage `promote`: make a gated candidate the production model, with its lineage."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tasks.config import Params
from tasks.gate import SCORES_FILE
from tasks.io import file_md5, read_json, write_json
from tasks.onnx_model import CLASSIFIER_FILE, TOKENIZER_FILE
from tasks.registry import Registry, RegistryError


def git_commit(root: Path) -> str:
    """HEAD's commit, marked `-dirty` when tracked files differ from it; `unknown` outside git."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def lineage(params: Params, gate: dict[str, Any]) -> dict[str, Any]:
    """What produced the candidate: the variant the gate chose, data hashes (as in dvc.lock), params, code, metrics."""
    metrics = params.path("metrics")
    ingest = read_json(metrics / "ingest.json")
    return {
        "model_file": gate["model_file"],
        "variant": gate["serving_variant"],
        "model_md5": file_md5(params.path("quantized") / gate["model_file"]),
        "data": {"source": params.data.source,
                 # The accepted batches of new data it trained on (landing archive folder names).
                 "version": ingest["data_version"], "batches": ingest["batches"],
                 **{f"{name}_md5": file_md5(params.path(path))
                    for name, path in (("raw", "raw"), ("validated", "validated"), ("train", "augmented"),
                                       ("test", "test_split"))}},
        "git_commit": git_commit(params.root),
        "params": params.model_dump(mode="json", by_alias=True),
        "metrics": {**{name: read_json(metrics / f"{name}.json") for name in ("evaluate", "quantize", "gate")},
                    "gate_scores": read_json(params.path("reports") / SCORES_FILE)},
    }


def promote(params: Params) -> dict[str, Any]:
    """Register the serving variant the gate chose and, in `promote.mode: auto`, make it production.

    Not promoted (and said why): the candidate already serves, it was rolled
    back before (a person must promote it by hand), or the mode is manual.
    """
    gate = read_json(params.path("metrics") / "gate.json")
    if not gate.get("passed"):
        raise RegistryError("the gate did not pass for this candidate: refusing to promote")
    registry = Registry(params.path("registry"))
    with registry.locked():
        record = lineage(params, gate)
        current = registry.production()
        outcome = {"promoted": False, "variant": record["variant"], "model_md5": record["model_md5"],
                   "git_commit": record["git_commit"], "previous": current["version"] if current else None}
        if current is not None and current.get("model_md5") == record["model_md5"]:
            return {**outcome, "version": current["version"], "reason": "candidate already serves"}
        # The same model may already be registered (production pointer lost or moved by hand).
        version = registry.find(record["model_md5"]) or registry.register(
            params.path("quantized"), record, files=[record["model_file"], TOKENIZER_FILE, CLASSIFIER_FILE],
            attachments=[params.path("reports") / "gate.md"], reason="passed the gate")
        rolled_back = registry.rolled_back(version)
        if rolled_back is not None:
            return {**outcome, "version": version, "reason": (
                f"{version} was rolled back at {rolled_back['at']} ({rolled_back['reason']}); the pipeline does "
                f"not promote it again: `textclf registry promote {version}` does, if that was wrong")}
        if params.promote.mode == "manual":
            return {**outcome, "version": version, "reason": (
                f"promote.mode is manual: {version} waits as a candidate; `textclf registry promote {version}`")}
        registry.set_production(version, reason="passed the gate (promote.mode: auto)")
    return {**outcome, "promoted": True, "version": version}


def run(params: Params) -> None:
    """Stage entry point: promote and write reports/promotion.json."""
    outcome = promote(params)
    write_json(params.path("reports") / "promotion.json", outcome)
    state = "promoted to production" if outcome["promoted"] else f"not promoted: {outcome['reason']}"
    print(f"promote: {outcome['version']} ({outcome['variant']}) {state}")
