"""`textclf feedback export`: the true labels served texts received, as new labelled data.

Joins the feedback log with the prediction log (the texts: monitor.log_text) and writes the
labelled texts as a CSV (a tagger's: JSON Lines of `tokens` and `tags`, the text split into words
the way it was served) into the landing folder, where they go through the same checks as any
new data (`textclf watch` / `textclf service` pick it up, or `textclf ingest-new FILE`):
nothing bypasses validation. Each feedback is exported once: the time of the newest one
exported is kept in paths.monitoring/feedback_exported.json.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params
from tasks.lib.data.sentences import TAGS_FIELD, TOKENS_FIELD
from tasks.lib.inference.onnx_tagger import tagged_words
from tasks.lib.io import read_json, write_json
from tasks.lib.monitoring.prediction_log import FEEDBACK, PREDICTIONS, latest_feedback, log_location, read_log
from tasks.lib.monitoring.review_queue import ReviewError

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
    return joined[["request_id", "index", TEXT, LABEL, "time", *(["entities"] if "entities" in joined else [])]]


def tagged_records(rows: pd.DataFrame) -> list[dict[str, list[str]]]:
    """A tagger's feedback as JSON Lines records (`tokens`, `tags`); a text whose entities do not fall
    on its word boundaries is left out with a warning (its feedback stays in the log: send it again)."""
    records = []
    for row in rows.itertuples():
        try:
            tokens, tags = tagged_words(str(row.text), json.loads(str(row.entities)))
        except ValueError as exc:
            print(f"feedback export: left out request {row.request_id} text {row.index}: {exc}", file=sys.stderr)
            continue
        records.append({TOKENS_FIELD: tokens, TAGS_FIELD: tags})
    return records


def export(params: Params, out: Path | None = None) -> tuple[Path | None, int]:
    """Write the feedback not exported yet as a CSV, a tagger's as JSON Lines (default: a new file in
    paths.landing).

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
    tagger = params.task == "token_classification"
    suffix = "jsonl" if tagger else "csv"
    target = out or params.path("landing") / f"feedback-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")  # the watcher skips dot-files: it sees the file whole
    if tagger:
        if "entities" not in rows or rows["entities"].isna().any():
            raise ReviewError("task is token_classification, but some feedback holds a label, not entities")
        records = tagged_records(rows)
        staging.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        written = len(records)
    else:
        rows[[TEXT, LABEL]].to_csv(staging, index=False)
        written = len(rows)
    os.replace(staging, target)
    write_json(mark_file, {"until": pd.Timestamp(until).isoformat(), "file": str(target), "rows": written})
    return target, written
