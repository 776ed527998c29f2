"""`textclf review export`: the served texts a person should label first.

The least confident answers of the prediction log, one per distinct text, leaving out those
that already have feedback, as a CSV whose `text` and (empty) `label` columns are what the
landing folder reads: labelled, the file goes through `textclf ingest-new` like any new data,
validated as usual.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.lib.config import Params
from tasks.lib.errors import PipelineError
from tasks.lib.prediction_log import FEEDBACK, PREDICTIONS, log_location, read_log

COLUMNS = ["text", "label", "predicted", "confidence", "request_id", "index", "version", "time"]


class ReviewError(PipelineError, ValueError):
    """Nothing can be exported; the message says why and what to change."""


def review_queue(params: Params, n: int, days: float | None = None) -> pd.DataFrame:
    """The `n` least confident logged answers (within the last `days`), one per text, without feedback."""
    registry = params.location("registry")
    location = log_location(params.monitor, registry, PREDICTIONS)
    answers = read_log(location)
    if answers.empty:
        raise ReviewError(f"{location}: no logged predictions yet (textclf serve writes them; monitor.log)")
    if "text" not in answers:
        raise ReviewError(
            f"{location}: the prediction log holds no texts (monitor.log_text is false), so there is nothing a "
            "person could label; set monitor.log_text: true where the texts may be kept"
        )
    if days is not None:
        answers = answers[answers["time"] >= pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days)]
    feedback = read_log(log_location(params.monitor, registry, FEEDBACK))
    if not feedback.empty:
        known = feedback[["request_id", "index"]].drop_duplicates().assign(_labelled=True)
        answers = answers.merge(known, on=["request_id", "index"], how="left")
        answers = answers[answers["_labelled"].isna()]
    chosen = answers.dropna(subset=["text"]).sort_values(["confidence", "time"]).drop_duplicates("text_hash").head(n)
    return chosen.assign(predicted=chosen["label"], label="")[COLUMNS].reset_index(drop=True)


def export(params: Params, n: int, out: Path, days: float | None = None) -> int:
    """Write the review queue to `out` (CSV); returns its number of rows."""
    queue = review_queue(params, n, days)
    queue.to_csv(out, index=False)
    return len(queue)
