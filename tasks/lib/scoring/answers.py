"""A row group's answers: the columns `textclf score` adds to the kept ones, on either engine.

Per row: the predicted label and its probability (a tagger's: its entities, with character
offsets into the text), the version and variant that answered, and, for a row that was not
scored, why (the predictions are then null). A row group is answered a window of rows at a
time: the window's texts are tokenized together and cut into inference calls of similar length
(tasks.lib.inference.onnx_classifier.length_batches), and the answers go back in input order.
Windows start at multiples of `window` within a row group, and row groups at multiples of
`row_group_rows` within the table, so a resumed run and a Spark executor cut exactly the
batches of an uninterrupted local run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tasks.lib.errors import DataError
from tasks.lib.evaluation.metrics import softmax
from tasks.lib.inference.onnx_classifier import OnnxClassifier
from tasks.lib.inference.onnx_tagger import Tagger
from tasks.lib.inference.production_model import Served

LABEL = "predicted_label"
PROBABILITY = "predicted_probability"
ENTITIES = "predicted_entities"
VERSION = "model_version"
VARIANT = "model_variant"
NOT_SCORED = "not_scored"
ENTITY = pa.struct(
    [("start", pa.int64()), ("end", pa.int64()), ("type", pa.string()), ("score", pa.float64()), ("text", pa.string())]
)


def answer_fields(tagger: bool) -> list[pa.Field]:
    """The columns added after the kept ones, in order."""
    predicted = (
        [pa.field(ENTITIES, pa.list_(ENTITY))]
        if tagger
        else [pa.field(LABEL, pa.string()), pa.field(PROBABILITY, pa.float64())]
    )
    return [
        *predicted,
        pa.field(VERSION, pa.string()),
        pa.field(VARIANT, pa.string()),
        pa.field(NOT_SCORED, pa.string()),
    ]


def output_schema(kept: pa.Schema, tagger: bool, where: str) -> pa.Schema:
    """The output's schema: the kept columns, then the answers.

    Raises:
        DataError: a kept column has the name of an answer column.
    """
    added = answer_fields(tagger)
    clash = [f.name for f in added if f.name in kept.names]
    if clash:
        raise DataError(
            where, f"has a column {clash[0]!r}, which the output adds: leave it out with --keep, or rename it"
        )
    return pa.schema([*kept, *added])


@dataclass
class Part:
    """A row group of the input: its index in the table, the kept columns, each row's text (None: not
    scored) and why not, and the file and line of the first rows not scored."""

    index: int
    kept: pa.Table
    texts: list[str | None]
    reasons: list[str | None]
    examples: list[tuple[str, int, str]] = field(default_factory=list)

    def not_scored(self) -> dict[str, int]:
        """Rows not scored, by reason."""
        counts: dict[str, int] = {}
        for reason in self.reasons:
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))


def _classify(model: OnnxClassifier, texts: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(label index, its probability) per text."""
    probabilities = softmax(model.logits(texts, batch_size))
    best = probabilities.argmax(axis=1)
    return best, probabilities[np.arange(len(best)), best]


def answered(
    model: Served, part: Part, schema: pa.Schema, version: str, variant: str, window: int, batch_size: int
) -> pa.Table:
    """The part's output rows: its kept columns and the model's answer to each row, in input order."""
    rows = len(part.texts)
    scored = np.array([text is not None for text in part.texts], dtype=bool)
    answers: list[pa.Array]
    if isinstance(model, Tagger):
        entities: list[list[dict[str, object]] | None] = [None] * rows
        for start in range(0, rows, window):
            chosen = [i for i in range(start, min(start + window, rows)) if scored[i]]
            found = model.tag([part.texts[i] or "" for i in chosen], batch_size)
            for i, tagged in zip(chosen, found, strict=True):
                entities[i] = [entity.as_dict() for entity in tagged.entities]
        answers = [pa.array(entities, pa.list_(ENTITY))]
    else:
        best = np.zeros(rows, dtype=np.int64)
        probability = np.zeros(rows, dtype=np.float64)
        for start in range(0, rows, window):
            positions = np.flatnonzero(scored[start : start + window]) + start
            if len(positions):
                best[positions], probability[positions] = _classify(
                    model, [part.texts[i] or "" for i in positions], batch_size
                )
        labels = np.array(model.info.labels, dtype=object)[best]
        # Six decimals, as `textclf predict` and the HTTP service give them.
        answers = [
            pa.array(labels, pa.string(), mask=~scored),
            pa.array(np.round(probability, 6), pa.float64(), mask=~scored),
        ]
    constant = [pa.array(np.full(rows, value, dtype=object), pa.string()) for value in (version, variant)]
    reasons = pa.array(part.reasons, pa.string())
    return pa.Table.from_arrays([*part.kept.columns, *answers, *constant, reasons], schema=schema)
