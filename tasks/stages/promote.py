"""Stage `promote`: make a gated candidate the production model, with its lineage."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tasks.lib.artifacts import (
    CLASSIFIER_FILE,
    GATE_REPORT_FILE,
    TOKENIZER_FILE,
    DataLineage,
    EntityEvaluateMetrics,
    EvaluateMetrics,
    GateMetrics,
    GateScores,
    IngestMetrics,
    Lineage,
    LineageMetrics,
    Promotion,
    QuantizeMetrics,
    graph_files,
)
from tasks.lib.config import Params
from tasks.lib.errors import PipelineError
from tasks.lib.io import file_md5, read_json
from tasks.lib.stage_runner import run_as_script
from tasks.lib.storage.model_card import CARD_FILE, base_model_metadata
from tasks.lib.storage.model_card import render as render_card
from tasks.lib.storage.registry import Registry, RegistryError
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


def promote(params: Params) -> Promotion:
    """Register the serving variant the gate chose and, in `promote.mode: auto`, make it production.

    Not promoted (and said why): the candidate already serves, it was rolled
    back before (a person must promote it by hand), or the mode is manual.
    """
    gate = GateMetrics.read(params)
    if not gate.passed or gate.model_file is None or gate.serving_variant is None:
        raise RegistryError("the gate did not pass for this candidate: refusing to promote")
    registry = Registry(params.location("registry"))
    with registry.locked():
        record = lineage(params, gate, gate.model_file, gate.serving_variant)
        current = registry.production()
        outcome = {
            "promoted": False,
            "variant": record.variant,
            "model_md5": record.model_md5,
            "git_commit": record.git_commit,
            "previous": current["version"] if current else None,
        }
        if current is not None and current.get("model_md5") == record.model_md5:
            return Promotion(**outcome, version=current["version"], reason="candidate already serves")
        judged = gate.production_version
        if outcome["previous"] is not None and judged != outcome["previous"]:
            # Production moved since the gate compared (a person, or a verdict DVC's run-cache restored).
            # With no production at all (a lost pointer) nothing can regress: the candidate is re-pointed.
            raise RegistryError(
                f"the gate compared this candidate with production {judged or 'none (first model)'}, but production "
                f"is now {outcome['previous']}: refusing to promote on a stale verdict; `dvc repro --force gate` "
                "(or `dvc repro --force --downstream gate`) judges it against the current one"
            )
        # The same model may already be registered (production pointer lost or moved by hand).
        version = registry.find(record.model_md5) or registry.register(
            params.path("quantized"),
            record.dump(),
            files=[
                *sorted(
                    {
                        part
                        for file in {*record.serving_variants.values(), record.model_file}
                        for part in graph_files(file)
                    }
                ),
                TOKENIZER_FILE,
                CLASSIFIER_FILE,
            ],
            attachments=[params.path("reports") / GATE_REPORT_FILE, params.path("reference")],
            reason="passed the gate",
            texts=lambda version: {CARD_FILE: model_card(version, record, params)},
        )
        rolled_back = registry.rolled_back(version)
        if rolled_back is not None:
            return Promotion(
                **outcome,
                version=version,
                reason=(
                    f"{version} was rolled back at {rolled_back['at']} ({rolled_back['reason']}); the pipeline does "
                    f"not promote it again: `textclf registry promote {version}` does, if that was wrong"
                ),
            )
        if params.promote.mode == "manual":
            return Promotion(
                **outcome,
                version=version,
                reason=(
                    f"promote.mode is manual: {version} waits as a candidate; `textclf registry promote {version}`"
                ),
            )
        reason = "passed the gate (promote.mode: auto)"
        if record.label_set_change is not None:
            reason += f"; label set changed: {record.label_set_change.describe()} (gate.label_set_change: allow)"
        registry.set_production(version, reason=reason)
    return Promotion(**{**outcome, "promoted": True}, version=version)


def run(params: Params) -> None:
    """Stage entry point: promote and write reports/promotion.json."""
    outcome = promote(params)
    outcome.write(params)
    state = "promoted to production" if outcome.promoted else f"not promoted: {outcome.reason}"
    print(f"promote: {outcome.version} ({outcome.variant}) {state}")


if __name__ == "__main__":
    run_as_script(run)
