"""The served texts a person should label first: `textclf review export`, and `textclf label push`
(docs/guides/labelling.md).

Two kinds, one per distinct text, leaving out those that already have feedback: the texts of
the drifted region (the highest drift scores of the last monitoring run: the served texts most
unlike the training texts; `monitor.review_drifted_share` of the queue) and the least
confident answers (the rest). A CSV whose `text` and (empty) `label` columns are what the
landing folder reads: labelled, the file goes through `textclf ingest-new` like any new data,
validated as usual. A tagger's queue is JSON Lines instead: each text's `tokens` (split the way
it was served) and the `tags` it was answered with, for a person to correct, which is again what
the landing folder reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params
from tasks.lib.data.sentences import TAGS_FIELD, TOKENS_FIELD
from tasks.lib.errors import PipelineError
from tasks.lib.inference.onnx_tagger import tagged_words
from tasks.lib.monitoring.prediction_log import FEEDBACK, PREDICTIONS, log_location, read_log

COLUMNS = ["text", "label", "predicted", "confidence", "reason", "request_id", "index", "version", "time"]


class ReviewError(PipelineError, ValueError):
    """Nothing can be exported; the message says why and what to change."""


class NothingServedYet(ReviewError):
    """The prediction log is empty: no text was served (or logged) yet."""


def review_queue(params: Params, n: int, days: float | None = None) -> pd.DataFrame:
    """The `n` least confident logged answers (within the last `days`), one per text, without feedback.

    Returns:
        COLUMNS, the text's `text_hash` (the prediction log's), and a tagger's served `entities` (JSON).
    """
    registry = params.location("registry")
    location = log_location(params.monitor, registry, PREDICTIONS)
    answers = read_log(location)
    if answers.empty:
        raise NothingServedYet(f"{location}: no logged predictions yet (textclf serve writes them; monitor.log)")
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
    answers = answers.dropna(subset=["text"]).sort_values(["confidence", "time"]).drop_duplicates("text_hash")
    drifted = drifted_region(params, answers, round(n * params.monitor.review_drifted_share))
    rest = answers[~answers["text_hash"].isin(drifted["text_hash"])].head(n - len(drifted))
    chosen = pd.concat([drifted, rest.assign(reason="least confident")], ignore_index=True)
    served = ["entities"] if "entities" in chosen else []  # a tagger's answers, to correct
    return chosen.assign(predicted=chosen["label"], label="")[[*COLUMNS, "text_hash", *served]]


def drifted_region(params: Params, answers: pd.DataFrame, n: int) -> pd.DataFrame:
    """The `n` answers with the highest drift scores of the last monitoring run (none before one ran)."""
    from tasks.lib.monitoring.monitor_report import LATEST
    from tasks.lib.monitoring.traffic_monitor import DRIFTED_FILE

    scores_file = params.path("monitoring") / LATEST / DRIFTED_FILE
    if n == 0 or not scores_file.is_file():
        return answers.head(0).assign(reason="")
    scores = pd.read_parquet(scores_file).dropna(subset=["drift_score"])
    scored = answers.merge(scores[["request_id", "index", "drift_score"]], on=["request_id", "index"])
    top = scored.sort_values("drift_score", ascending=False).head(n)
    return top.assign(reason=[f"drifted region (score {score:.2f})" for score in top["drift_score"]]).drop(
        columns="drift_score"
    )


def export(params: Params, n: int, out: Path | None, days: float | None = None) -> tuple[Path, int]:
    """Write the review queue to `out` (default review.csv, a tagger's review.jsonl); returns the file
    and its number of rows."""
    queue = review_queue(params, n, days)
    tagger = "entities" in queue and bool(queue["entities"].notna().all()) and len(queue) > 0
    out = out or Path("review.jsonl" if tagger else "review.csv")
    if not tagger:
        queue[COLUMNS].to_csv(out, index=False)
        return out, len(queue)
    if out.suffix != ".jsonl":
        raise ReviewError(f"{out}: a tagger's review queue is JSON Lines (tokens and tags to correct): name it .jsonl")
    with out.open("w", encoding="utf-8") as sink:
        for row in queue.to_dict("records"):
            tokens, tags = tagged_words(row["text"], json.loads(row["entities"]))
            extra = {key: row[key] for key in COLUMNS if key not in (TEXT, LABEL)}
            record = {TOKENS_FIELD: tokens, TAGS_FIELD: tags, TEXT: row[TEXT], **extra, "time": str(row["time"])}
            sink.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return out, len(queue)
