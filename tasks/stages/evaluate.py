"""Stage `evaluate`: the candidate PyTorch model on the held-out test split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.lib.artifacts import EvaluateMetrics
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params
from tasks.lib.io import atomic_path, read_table, write_json
from tasks.lib.metrics import (
    classification_report,
    label_indices,
    reliability_bins,
    softmax,
)
from tasks.lib.models import model_labels, save_predictions, torch_logits
from tasks.lib.scoring import OVERALL, score
from tasks.lib.stage_runner import run_as_script


def candidate_report(
    texts: list[str], y_true: np.ndarray, probabilities: np.ndarray, labels: list[str], params: Params
) -> dict[str, Any]:
    """The classification report, bootstrap intervals of its metrics, and the metrics of every slice."""
    config = params.evaluate
    report = classification_report(y_true, probabilities, labels, config.calibration_bins)
    scored = score(texts, y_true, {"model": probabilities}, labels, config)
    report["interval"] = {
        "confidence": config.bootstrap.confidence,
        **{metric: scored[OVERALL]["model_interval"][metric] for metric in report if isinstance(report[metric], float)},
    }
    report["slices"] = {
        name: {"n": found["n"], **{m: v for m, v in found.get("model", {}).items() if "." not in m}}
        for name, found in scored.items()
        if name != OVERALL
    }
    return report


def run(params: Params) -> None:
    """Stage entry point: test metrics, the PyTorch logits (reference for parity), confusion and calibration data."""
    test = read_table(params.path("test_split"))
    model_dir = params.path("model")
    labels = model_labels(model_dir)
    texts = list(test[TEXT])
    logits = torch_logits(model_dir, texts, params.evaluate.batch_size, params.train.max_length)
    probabilities = softmax(logits)
    y_true = label_indices(list(test[LABEL]), labels)
    report = candidate_report(texts, y_true, probabilities, labels, params)
    save_predictions(params.path("predictions"), logits, list(test[LABEL]))
    metrics = EvaluateMetrics.parse(report, "evaluate report")
    metrics.write(params)
    reports = params.path("reports")
    confusion = pd.DataFrame({"actual": test[LABEL], "predicted": [labels[i] for i in logits.argmax(axis=1)]})
    with atomic_path(reports / "confusion.csv") as tmp:
        confusion.to_csv(tmp, index=False)
    write_json(reports / "calibration.json", reliability_bins(y_true, probabilities, params.evaluate.calibration_bins))
    low, high = metrics.accuracy_interval()
    print(
        f"evaluate: accuracy {metrics.accuracy:.4f} ({metrics.interval['confidence']:.0%} interval "
        f"{low:.4f}-{high:.4f}), macro-F1 {metrics.macro_f1:.4f}, ECE {metrics.ece:.4f} on {metrics.n} rows"
    )


if __name__ == "__main__":
    run_as_script(run)
