"""`textclf feedback export`: the true labels served texts received, as new labelled data.

Joins the feedback log with the prediction log (the texts: monitor.log_text) and writes the
labelled texts as a CSV into the landing folder, where they go through the same checks as any
new data (`textclf watch` / `textclf service` pick it up, or `textclf ingest-new FILE`):
nothing bypasses validation. Each feedback is exported once: the time of the newest one
exported is kept in paths.monitoring/feedback_exported.json.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from tasks.apps.review_queue import ReviewError
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params
from tasks.lib.io import read_json, write_json
from tasks.lib.prediction_log import FEEDBACK, PREDICTIONS, latest_feedback, log_location, read_log

MARK_FILE = "feedback_exported.json"


def labelled_feedback(params: Params, since: datetime | None) -> pd.DataFrame:
    """Feedback newer than `since` with its served text: columns text, label, time (the feedback's)."""
    registry = params.location("registry")
    feedback = read_log(log_location(params.monitor, registry, FEEDBACK))
    if feedback.empty:
        raise ReviewError(f"{log_location(params.monitor, registry, FEEDBACK)}: no feedback yet (POST /feedback)")
    if since is not None:
        feedback = feedback[feedback["time"] > since]
    answers = read_log(log_location(params.monitor, registry, PREDICTIONS))
    if "text" not in answers:
        raise ReviewError(
            "the prediction log holds no texts (monitor.log_text is false), so the feedback has no text to "
            "label; set monitor.log_text: true where the texts may be kept"
        )
    joined = latest_feedback(feedback).merge(
        answers[["request_id", "index", "text"]].dropna(), on=["request_id", "index"], how="inner"
    )
    return joined[[TEXT, LABEL, "time"]]


def export(params: Params, out: Path | None = None) -> tuple[Path | None, int]:
    """Write the feedback not exported yet as a CSV (default: a new file in paths.landing).

    Returns:
        The file written (None when there was nothing new) and its number of rows.
    """
    mark_file = params.path("monitoring") / MARK_FILE
    mark = read_json(mark_file) if mark_file.is_file() else {}
    since = datetime.fromisoformat(mark["until"]) if "until" in mark else None
    rows = labelled_feedback(params, since)
    if rows.empty:
        return None, 0
    until = rows["time"].max()
    target = out or params.path("landing") / f"feedback-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")  # the watcher skips dot-files: it sees the file whole
    rows[[TEXT, LABEL]].to_csv(staging, index=False)
    os.replace(staging, target)
    write_json(mark_file, {"until": pd.Timestamp(until).isoformat(), "file": str(target), "rows": len(rows)})
    return target, len(rows)
