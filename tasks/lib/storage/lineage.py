"""What produced a registered version: its lineage record (data hashes, params, code, metrics) and
its model card, read from the finished stages' outputs (the promote stage registers them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tasks.lib.artifacts import (
    DataLineage,
    EntityEvaluateMetrics,
    EvaluateMetrics,
    GateMetrics,
    GateScores,
    IngestMetrics,
    Lineage,
    LineageMetrics,
    QuantizeMetrics,
    graph_files,
)
from tasks.lib.config import Params
from tasks.lib.errors import PipelineError
from tasks.lib.io import file_md5, read_json
from tasks.lib.storage.model_card import base_model_metadata
from tasks.lib.storage.model_card import render as render_card
from tasks.lib.training.models import resolve_base_model


def git_commit(root: Path) -> str:
    """HEAD's commit, marked `-dirty` when tracked files differ from it; `unknown` outside git."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def registered_variants(params: Params, gate: GateMetrics, chosen: str) -> dict[str, str]:
    """The variants to register (name -> file): the chosen one, and with `promote.variants: passing`
    every other variant that passed the gate, so a serving host can measure them on its CPU."""
    names = {chosen}
    if params.promote.variants == "passing":
        names |= {name for name, verdict in gate.variants.items() if verdict.passed}
    measured = QuantizeMetrics.read(params).models
    files = {name: measured[name].file for name in sorted(names) if name in measured}
    files[chosen] = gate.model_file
    return {
        name: file
        for name, file in files.items()
        if file and all((params.path("quantized") / part).is_file() for part in graph_files(file))
    }


def lineage(params: Params, gate: GateMetrics, model_file: str, variant: str) -> Lineage:
    """What produced the candidate: the variant the gate chose, data hashes (as in dvc.lock), params, code, metrics."""
    ingest = IngestMetrics.read(params)
    return Lineage(
        model_file=model_file,
        variant=variant,
        serving_variants=registered_variants(params, gate, variant),
        model_md5=file_md5(params.path("quantized") / model_file),
        # The accepted batches of new data it trained on (landing archive folder names) and the data hashes.
        data=DataLineage(
            source=params.data.source,
            version=ingest.data_version,
            batches=ingest.batches,
            raw_md5=file_md5(params.path("raw")),
            validated_md5=file_md5(params.path("validated")),
            train_md5=file_md5(params.path("augmented")),
            test_md5=file_md5(params.path("test_split")),
        ),
        git_commit=git_commit(params.root),
        params=params.model_dump(mode="json", by_alias=True),
        labels=params.data.labels,
        label_set_change=gate.label_set_change,
        metrics=LineageMetrics(
            evaluate=(EntityEvaluateMetrics if params.task == "token_classification" else EvaluateMetrics)
            .read(params)
            .dump(),
            quantize=QuantizeMetrics.read(params).dump(),
            gate=gate,
            gate_scores=GateScores.read(params).scopes,
            train=read_json(train_metrics)
            if (train_metrics := params.path("metrics") / "train.json").exists()
            else None,
        ),
    )


def model_card(version: str, record: Lineage, params: Params) -> str:
    """The version's README.md, with the base model's language and licence where its folder has a card."""
    try:
        base = Path(resolve_base_model(params.train.base_model, params.root))
    except PipelineError:
        base = None  # the card says "unknown"; promotion does not depend on it
    return render_card(version, record, base_model_metadata(base) if base and base.is_dir() else {})
