"""The scoring flow: `textclf score` as a Prefect flow, deployment `score` (prefect.yaml).

Parameters: the table (`input`), where its answers go (`output`) and the version (`production`
by default: the version the pointer names when the run starts). params.yaml `score.schedules`
gives the deployment its schedules ("score the new table every night"); any run can also be
started by hand or by an automation with other parameters. A run that finishes, fails or
crashes tells a person (paths.notifications, retrain.notify_block); a failed run started again
with the same parameters resumes after the row groups it stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.states import State

from tasks.lib.config import load_params
from tasks.lib.reporting.notify import notify
from tasks.lib.scoring.model import PRODUCTION
from tasks.lib.scoring.run import ScoreRequest, score_table

SCORE_FLOW = "textclf-score"


def summary(manifest: dict[str, Any], output: str) -> str:
    """The run's outcome in Markdown: rows, version, rows not scored by reason, the output."""
    lines = [
        f"Scored `{manifest['rows']}` rows into `{output}` with {manifest['model']['version']} "
        f"(variant {manifest['model']['variant']}): {manifest['scored']} answered.",
        "",
    ]
    if manifest["not_scored"]:
        lines += ["| not scored because | rows |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in manifest["not_scored"].items()]
    else:
        lines.append("Every row was answered.")
    return "\n".join(lines) + "\n"


def _notify_failure(flow: Any, flow_run: FlowRun, state: State) -> None:
    """Flow hook: a failed or crashed scoring run tells a person."""
    parameters = flow_run.parameters or {}
    name = state.name or state.type.value
    message = state.message or name
    notify(
        load_params(parameters.get("root", ".")),
        f"score.{name.lower()}",
        f"scoring run {flow_run.name} {name}: {parameters.get('input')} -> {parameters.get('output')}",
        message,
    )


@flow(name=SCORE_FLOW, log_prints=True, on_failure=[_notify_failure], on_crashed=[_notify_failure])
def score(input: str, output: str, version: str = PRODUCTION, root: str = ".") -> dict[str, Any]:
    """Score the table `input` into `output` (Parquet, CSV or JSON Lines by its suffix) with `version`.

    Returns:
        The output's manifest (also written beside it as `<output>.manifest.json`).
    """
    params = load_params(Path(root).resolve())
    logger = get_run_logger()
    manifest = score_table(params, ScoreRequest(input, output, version, progress=False), logger.info)
    markdown = summary(manifest, output)
    create_markdown_artifact(key="scoring", markdown=markdown, description=f"Scoring of {input}")
    notify(params, "score.finished", f"scored {input} into {output}: {manifest['rows']} rows", markdown)
    return manifest
