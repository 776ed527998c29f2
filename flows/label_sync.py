"""The labelling flow: push the review queue to Label Studio, pull the finished labels into landing.

Deployment `label-sync` in prefect.yaml, every params.yaml labelling.sync_minutes (`textclf
service` serves it beside the others; `textclf deploy` deploys it). The pulled file lands in
paths.landing, where the watcher checks it and an accepted one triggers retraining like any
file (docs/guides/labelling.md). URL and token: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY in the
worker's environment, or the Secret blocks of labelling.url_block and token_block.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.lib.config import load_params
from tasks.lib.labelling.label_studio import LabelStudio, connection
from tasks.lib.labelling.sync import LabellingError, PullReport, pull, push
from tasks.lib.monitoring.review_queue import NothingServedYet

LABEL_SYNC_FLOW = "textclf-label-sync"


@flow(name=LABEL_SYNC_FLOW, log_prints=True)
def label_sync(root: str = ".", registry: str | None = None) -> PullReport:
    """Push the review queue's new texts, then pull what was annotated since the last pull.

    Before anything was served there is nothing to push: the push is skipped with its reason and
    the pull still runs. `registry` stands for paths.registry (where the prediction log is).
    """
    params = load_params(Path(root).resolve())
    logger = get_run_logger()
    with LabelStudio(connection(params.labelling), params.labelling.timeout_seconds) as studio:
        try:
            pushed, skipped = push(params.with_registry(registry), studio).summary(), False
        except NothingServedYet as exc:
            pushed, skipped = f"label push skipped: {exc}", True
        logger.info(pushed)
        try:
            report = pull(params, studio)
        except LabellingError as exc:
            if not skipped:
                raise
            # Nothing pushed yet, so no project: the first texts served make it.
            report = PullReport(project=0, judged=[], file=None)
            logger.info("label pull skipped: %s", exc)
    logger.info(report.summary())
    create_markdown_artifact(
        key="label-sync", markdown=f"{pushed}\n\n{report.markdown()}", description="Label Studio push and pull"
    )
    return report
