"""Stage `evaluate`: the candidate PyTorch model on the held-out test split."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from tasks.lib.artifacts import EntityEvaluateMetrics, EvaluateMetrics
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params
from tasks.lib.data.sentences import as_sentences
from tasks.lib.evaluation.entity_metrics import bootstrap_f1, entity_counts, entity_pairs, scores, slice_scores
from tasks.lib.evaluation.metrics import (
    classification_report,
    expected_calibration_error,
    label_indices,
    reliability_bins,
    softmax,
)
from tasks.lib.evaluation.scoring import OVERALL, score
from tasks.lib.inference.word_logits import flatten, sentence_tags
from tasks.lib.io import atomic_path, read_table, write_json
from tasks.lib.stage_runner import run_as_script
from tasks.lib.training.logits import torch_logits, torch_word_logits
from tasks.lib.training.models import model_labels, save_predictions

log = logging.getLogger(__name__)


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


def evaluate_tagger(params: Params, test: pd.DataFrame) -> EntityEvaluateMetrics:
    """A token classifier on the test sentences: entity scores with a bootstrap interval of F1,
    per type and per slice; the word logits (reference for parity); entity pairs for the confusion
    plot; the words' calibration."""
    config = params.evaluate
    model_dir = params.path("model")
    tags = model_labels(model_dir)
    sentences, gold = as_sentences(test[TEXT]), as_sentences(test[LABEL])
    per_sentence = torch_word_logits(model_dir, sentences, config.batch_size, params.train.max_length)
    logits, cut = flatten(per_sentence, tags)
    flat = logits.argmax(axis=1)
    predicted = sentence_tags(logits, [len(s) for s in sentences], tags)
    types = list(params.data.labels)
    counts = entity_counts(gold, predicted, types)
    scored = scores(counts)
    low, high = bootstrap_f1(counts, config.bootstrap.resamples, config.bootstrap.seed, config.bootstrap.confidence)
    words = [tag for sentence in gold for tag in sentence]
    probabilities = softmax(logits)
    truth = np.array([tags.index(tag) if tag in tags else -1 for tag in words])
    reports = params.path("reports")
    save_predictions(params.path("predictions"), logits, words)
    pairs = pd.DataFrame(entity_pairs(gold, predicted, types), columns=["actual", "predicted"])
    with atomic_path(reports / "confusion.csv") as tmp:
        pairs.to_csv(tmp, index=False)
    write_json(reports / "calibration.json", reliability_bins(truth, probabilities, config.calibration_bins))
    micro, confidence = scored["micro"], probabilities.max(axis=1)
    return EntityEvaluateMetrics(
        n=len(sentences),
        words=len(words),
        words_cut=int(cut.sum()),
        f1=micro["f1"],
        precision=micro["precision"],
        recall=micro["recall"],
        accuracy=scored["accuracy"]["value"],
        ece=float(expected_calibration_error(confidence[None], (flat == truth)[None], config.calibration_bins)[0]),
        interval={"confidence": config.bootstrap.confidence, "f1": [low, high]},
        per_type={kind: scored[kind] for kind in types},
        slices=slice_scores(counts, gold),
    )


def run(params: Params) -> None:
    """Stage entry point: test metrics, the PyTorch logits (reference for parity), confusion and calibration data."""
    test = read_table(params.path("test_split"))
    if params.task == "token_classification":
        tagger = evaluate_tagger(params, test)
        tagger.write(params)
        low, high = tagger.interval["f1"]
        log.info(
            f"evaluate: entity F1 {tagger.f1:.4f} ({tagger.interval['confidence']:.0%} interval {low:.4f}-{high:.4f}), "
            f"word accuracy {tagger.accuracy:.4f} on {tagger.n} sentences; "
            + ", ".join(f"{kind} F1 {found['f1']:.4f}" for kind, found in tagger.per_type.items())
        )
        return
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
    log.info(
        f"evaluate: accuracy {metrics.accuracy:.4f} ({metrics.interval['confidence']:.0%} interval "
        f"{low:.4f}-{high:.4f}), macro-F1 {metrics.macro_f1:.4f}, ECE {metrics.ece:.4f} on {metrics.n} rows"
    )


if __name__ == "__main__":
    run_as_script(run)
