"""Likely mislabelled rows by confident learning (cleanlab), on a cheap model's out-of-fold probabilities.

A TF-IDF (words and word pairs) + logistic-regression model is fitted `folds` times, each
time predicting the fold it did not see, so every row gets probabilities from a model that
never trained on it. cleanlab's `find_label_issues` then estimates, per pair of classes, how
often one is labelled as the other, and flags the rows whose label disagrees most with those
probabilities. A cheap model rather than the candidate: this runs in `validate`, before any
training, in seconds on 100k rows, and a fine-tuned transformer would have memorised its own
training rows anyway.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy.sparse import spmatrix

from tasks.lib.config import LabelNoiseConfig


def rows_to_check(positions: np.ndarray, labels: np.ndarray, config: LabelNoiseConfig) -> np.ndarray:
    """Of the rows a model can learn from (`positions`, their class codes `labels`), those to check:
    all, or over `max_rows` a seeded sample (pandas' `Series.sample` draw, in its order); none
    when fewer than two classes are present or one has fewer rows than folds."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    if len(counts) < 2 or counts.min() < config.folds:
        return np.zeros(0, dtype=np.int64)
    if len(positions) <= config.max_rows:
        return positions
    return positions[np.random.RandomState(config.seed).choice(len(positions), size=config.max_rows, replace=False)]


def out_of_fold_probabilities(
    features: spmatrix, given: np.ndarray, classes: int, config: LabelNoiseConfig
) -> np.ndarray:
    """Each row's class probabilities from the models that did not train on it (what
    `cross_val_predict` gives), averaged over `config.repeats` shufflings of `config.folds`
    stratified folds: one split's luck moves a borderline row.

    The `folds * repeats` fits run in threads, one per core: liblinear and lbfgs release the GIL
    while they fit, and threads share `features` where processes would each copy it.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    # liblinear: 2.5x faster than lbfgs on SST-2, but two classes only.
    solver = "liblinear" if classes == 2 else "lbfgs"
    folds = [
        (repeat, train, test)
        for repeat in range(config.repeats)
        for train, test in StratifiedKFold(
            n_splits=config.folds, shuffle=True, random_state=config.seed + repeat
        ).split(np.zeros(len(given)), given)
    ]

    def predict(fold: tuple[int, np.ndarray, np.ndarray]) -> np.ndarray:
        _, train, test = fold
        model = LogisticRegression(max_iter=1000, C=4.0, solver=solver).fit(features[train], given[train])
        return model.predict_proba(features[test])

    probabilities = np.zeros((config.repeats, len(given), classes))
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        for (repeat, _, test), predicted in zip(folds, pool.map(predict, folds), strict=True):
            probabilities[repeat, test] = predicted
    return probabilities.mean(axis=0)


def suspected_labels(
    texts: pd.Series, labels: pd.Series, classes: list[str], config: LabelNoiseConfig, population: int
) -> pd.Series:
    """Per row (same index): why its label looks wrong, or None.

    Args:
        texts, labels: the rows `rows_to_check` chose; their labels are in `classes`.
        population: how many rows they were chosen from (the report says when it sampled).
    """
    result = pd.Series(None, index=texts.index, dtype=object)
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer

    given = np.array([classes.index(label) for label in labels])
    if np.bincount(given, minlength=len(classes)).min() < config.folds:
        return result
    features = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(texts.tolist())
    probabilities = out_of_fold_probabilities(features, given, len(classes), config)
    own = probabilities[np.arange(len(given)), given]
    # cleanlab's estimate of which rows are mislabelled, kept only where the row's own label is
    # unlikely (a cheap model errs on hard rows too: this keeps its guesses out). Its per-class
    # thresholds are the model's mean confidence in the class, which on very separable data no
    # outlier reaches, so a row whose own label gets half that bound or less is flagged regardless.
    bound = config.max_label_probability
    flagged = find_label_issues(labels=given, pred_probs=probabilities, filter_by="prune_by_noise_rate")
    flagged = (flagged | (own <= bound / 2)) & (own <= bound)
    sampled = "" if len(texts) == population else f"; {len(texts)} of {population} rows checked"
    for position in np.flatnonzero(flagged):
        best = int(probabilities[position].argmax())
        result[texts.index[position]] = (
            f"a model that did not train on this row says {classes[best]!r} ({probabilities[position][best]:.0%}), "
            f"{classes[given[position]]!r} {probabilities[position][given[position]]:.0%}{sampled}"
        )
    return result
