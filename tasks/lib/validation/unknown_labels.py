"""Rows labelled outside `data.labels`: ask the production model which of its classes they are.

Validation and landing refuse such rows (rule `label_in_set`); this says what to
do about them. The advice reflects the production model at the time of the run:
it is text in a report, never applied to the data.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import DataConfig
from tasks.lib.errors import PipelineError
from tasks.lib.evaluation.label_sets import explain, propose_label_map
from tasks.lib.inference.production_model import load_classifier
from tasks.lib.storage.registry import Registry
from tasks.lib.validation.features import map_labels


def unknown_labels_advice(frame: pd.DataFrame, data: DataConfig, registry: Path | str, seed: int = 0) -> str | None:
    """Markdown on the labels (after data.label_map) not in data.labels, with a proposed map; None if none."""
    mapped = map_labels(frame[LABEL].astype(str), data.label_map)
    outside = ~mapped.isin(data.labels)
    if not outside.any():
        return None
    texts = {str(label): list(group) for label, group in frame.loc[outside, TEXT].groupby(mapped[outside])}
    lines = [
        "### Labels outside data.labels",
        "",
        f"{int(outside.sum())} rows are labelled {sorted(texts)}, which data.labels {list(data.labels)} does not "
        "have. A new class must be added to data.labels to be trained on; the same classes under other "
        "names need a data.label_map.",
        "",
    ]
    try:
        store = Registry(registry)
        production = store.production()
        if production is None:
            return "\n".join([*lines, "No production model yet to tell which classes they are."])
        served = load_classifier(store.fetch(production["version"]))
    except PipelineError as exc:
        return "\n".join([*lines, f"The production model could not be consulted: {exc}"])
    if served.info.task != "sequence_classification":
        return "\n".join([*lines, f"Production {production['version']} is a {served.info.task} model: not asked."])
    targets = [label for label in served.info.labels if label in data.labels]
    if not targets:
        known = served.info.labels
        return "\n".join([*lines, f"Production {production['version']} predicts {known}, none of data.labels."])
    proposal = propose_label_map(texts, targets, served.predict, production["version"], seed)
    return "\n".join([*lines, explain(proposal, data.labels, data.label_map)])
