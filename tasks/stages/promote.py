"""Stage `promote`: make a gated candidate the production model, with its lineage."""

from __future__ import annotations

import logging

from tasks.lib.artifacts import (
    CLASSIFIER_FILE,
    GATE_REPORT_FILE,
    TOKENIZER_FILE,
    GateMetrics,
    Promotion,
    graph_files,
)
from tasks.lib.config import Params
from tasks.lib.stage_runner import run_as_script
from tasks.lib.storage.lineage import lineage, model_card
from tasks.lib.storage.model_card import CARD_FILE
from tasks.lib.storage.registry import Registry, RegistryError

log = logging.getLogger(__name__)


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
    log.info(f"promote: {outcome.version} ({outcome.variant}) {state}")


if __name__ == "__main__":
    run_as_script(run)
