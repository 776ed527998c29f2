"""Classification metrics shared by evaluate, export, quantize and gate."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_report(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 6),
        "per_class": {label: {"precision": round(float(p), 6), "recall": round(float(r), 6),
                              "f1": round(float(f), 6), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support)},
        "confusion_matrix": {"labels": labels,
                             "rows_true_cols_pred": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }


def agreement(reference_logits: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """How closely `logits` follows `reference_logits` (same rows, same order)."""
    diff = np.abs(reference_logits.astype(np.float64) - logits.astype(np.float64))
    return {
        "label_agreement": round(float((reference_logits.argmax(1) == logits.argmax(1)).mean()), 6),
        "max_abs_logit_diff": round(float(diff.max()), 6) if diff.size else 0.0,
        "mean_abs_logit_diff": round(float(diff.mean()), 6) if diff.size else 0.0,
    }
