"""Classification metrics shared by evaluate, export, quantize and gate.

`metric_table` computes every metric for a stack of label vectors at once, so
the same code gives the point estimate (one row) and the bootstrap
distribution (one row per resample). Metric names are what `gate.metrics`
rules refer to: accuracy, macro_f1, weighted_f1, ece, roc_auc (two labels
only), and per class `precision.<label>`, `recall.<label>`, `f1.<label>`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.lib.metric_names import PER_CLASS_METRICS, metric_names


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """(R, k, k) counts, rows true, columns predicted, for (R, n) index arrays."""
    offset = np.arange(y_true.shape[0])[:, None] * classes * classes
    flat = np.bincount((offset + y_true * classes + y_pred).ravel(), minlength=y_true.shape[0] * classes**2)
    return flat.reshape(y_true.shape[0], classes, classes)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def confidence_bins(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Index of the equal-width bin over [0, 1] each confidence falls in (1.0 in the last bin)."""
    return np.minimum((confidence * bins).astype(np.int64), bins - 1)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int) -> np.ndarray:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    resamples, n = confidence.shape
    which = confidence_bins(confidence, bins) + np.arange(resamples)[:, None] * bins
    size = resamples * bins
    gap = np.bincount(which.ravel(), weights=correct.ravel().astype(np.float64), minlength=size) - np.bincount(
        which.ravel(), weights=confidence.ravel(), minlength=size
    )
    return np.abs(gap.reshape(resamples, bins)).sum(axis=1) / n


def binary_roc_auc(positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN with only one class present."""
    from scipy.stats import rankdata

    ranks = rankdata(score, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    u = (ranks * positive).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def metric_table(
    y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], bins: int
) -> dict[str, np.ndarray]:
    """Every metric for each row of a stack of samples.

    Args:
        y_true: (R, n) true class indices into `labels`.
        probabilities: (R, n, k) predicted class probabilities.
        bins: confidence bins of the expected calibration error.
    Returns:
        metric name -> (R,) values.
    """
    classes = len(labels)
    predicted = probabilities.argmax(axis=-1)
    matrices = confusion_matrices(y_true, predicted, classes)
    hits = np.diagonal(matrices, axis1=1, axis2=2).astype(np.float64)
    support, claimed = matrices.sum(axis=2), matrices.sum(axis=1)
    precision, recall = _safe_divide(hits, claimed), _safe_divide(hits, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    n = y_true.shape[1]
    table = {
        "accuracy": hits.sum(axis=1) / n,
        "macro_f1": f1.mean(axis=1),
        "weighted_f1": (f1 * support).sum(axis=1) / n,
        "ece": expected_calibration_error(probabilities.max(axis=-1), predicted == y_true, bins),
    }
    if classes == 2:
        table["roc_auc"] = binary_roc_auc(y_true == 1, probabilities[..., 1])
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        table.update({f"{name}.{label}": values[:, i] for i, label in enumerate(labels)})
    return table


def as_number(value: float) -> float | None:
    """A JSON-safe rounded number; None for NaN (a metric undefined on this data)."""
    return None if math.isnan(value) else round(float(value), 6)


def label_indices(values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Class indices of label names; a name outside `labels` is an error that names it."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's labels {list(labels)}")
    return np.array([index[v] for v in values], dtype=np.int64)


def point_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], bins: int
) -> dict[str, float | None]:
    """The metrics of one set of predictions: (n,) indices and (n, k) probabilities."""
    table = metric_table(y_true[None, :], probabilities[None, :, :], labels, bins)
    return {name: as_number(values[0]) for name, values in table.items()}


def classification_report(
    y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], bins: int
) -> dict[str, Any]:
    """Headline metrics, per-class precision/recall/F1/support and the confusion matrix."""
    values = point_metrics(y_true, probabilities, labels, bins)
    matrix = confusion_matrices(y_true[None, :], probabilities.argmax(axis=1)[None, :], len(labels))[0]
    return {
        "n": len(y_true),
        **{name: values[name] for name in metric_names(labels) if "." not in name},
        "per_class": {
            label: {**{m: values[f"{m}.{label}"] for m in PER_CLASS_METRICS}, "support": int(matrix[i].sum())}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {"labels": list(labels), "rows_true_cols_pred": matrix.tolist()},
    }


def reliability_bins(y_true: np.ndarray, probabilities: np.ndarray, bins: int) -> list[dict[str, Any]]:
    """Per confidence bin: rows, mean confidence and accuracy (the reliability diagram)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    which = confidence_bins(confidence, bins)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "bin": f"{b / bins:.2f}-{(b + 1) / bins:.2f}",
                    "rows": int(inside.sum()),
                    "confidence": round(float(confidence[inside].mean()), 6),
                    "accuracy": round(float(correct[inside].mean()), 6),
                }
            )
    return rows


def bootstrap_samples(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) row indices drawn with replacement; the same seed gives the same draws."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of bootstrap values, ignoring resamples where the metric is undefined."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return as_number(low), as_number(high)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities from logits (numerically stable)."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of class probabilities."""
    clipped = np.clip(probabilities, 1e-12, 1.0)
    return -(clipped * np.log(clipped)).sum(axis=1)


def agreement(reference_logits: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """How closely `logits` follows `reference_logits` (same rows, same order)."""
    diff = np.abs(reference_logits.astype(np.float64) - logits.astype(np.float64))
    return {
        "label_agreement": round(float((reference_logits.argmax(1) == logits.argmax(1)).mean()), 6),
        "max_abs_logit_diff": round(float(diff.max()), 6) if diff.size else 0.0,
        "mean_abs_logit_diff": round(float(diff.mean()), 6) if diff.size else 0.0,
    }
