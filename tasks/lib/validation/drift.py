"""Distribution drift between the last accepted dataset and a new one.

Labels are compared as class shares (L-infinity, Jensen-Shannon distance or
population stability index); text lengths as samples (Kolmogorov-Smirnov
statistic, or JS/PSI over the baseline's decile bins). Statistics, not
p-values: on tens of thousands of rows any change is "significant".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Empty bins would make PSI infinite; this floor keeps it finite and comparable.
_FLOOR = 1e-4


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(expected, _FLOOR), np.maximum(actual, _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _js(expected: np.ndarray, actual: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(expected, actual, base=2))


def shares(labels: pd.Series, label_set: list[str]) -> np.ndarray:
    """Share of each label of `label_set` among `labels` (zero for absent ones)."""
    counts = labels.value_counts().reindex(label_set, fill_value=0).to_numpy(dtype=float)
    return counts / max(counts.sum(), 1.0)


def label_drift(baseline: pd.Series, current: pd.Series, label_set: list[str], statistic: str) -> float:
    """How far the class shares moved: `linf`, `js` or `psi`."""
    expected, actual = shares(baseline, label_set), shares(current, label_set)
    if statistic == "linf":
        return float(np.max(np.abs(expected - actual)))
    return _js(expected, actual) if statistic == "js" else _psi(expected, actual)


def length_drift(baseline: np.ndarray, current: np.ndarray, statistic: str) -> float:
    """How far the text-length distribution moved: `ks`, `js` or `psi`."""
    if statistic == "ks":
        return _ks_statistic(baseline, current)
    inner = np.quantile(baseline, np.linspace(0, 1, 11)[1:-1])
    edges = np.unique(np.concatenate([[-np.inf], inner, [np.inf]]))
    expected = np.histogram(baseline, edges)[0] / len(baseline)
    actual = np.histogram(current, edges)[0] / len(current)
    return _js(expected, actual) if statistic == "js" else _psi(expected, actual)


def _ks_statistic(baseline: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic (scipy's `ks_2samp(...).statistic`).

    Lengths in characters are small whole numbers: comparing the two empirical CDFs at every
    length gives the same value from counts, without sorting (and copying) both samples.
    """
    whole = all(np.issubdtype(a.dtype, np.integer) and (len(a) == 0 or a.min() >= 0) for a in (baseline, current))
    if not whole:
        from scipy.stats import ks_2samp

        return float(ks_2samp(baseline, current).statistic)
    size = int(max(baseline.max(initial=0), current.max(initial=0))) + 1
    below = [np.cumsum(np.bincount(a, minlength=size)) / len(a) for a in (baseline, current)]
    return float(np.abs(below[0] - below[1]).max())
