r"""Rank statistics of an uncertainty against the true error.

An uncertainty :math:`u_i` (the per-atom equivariance error :math:`A_i`, a
committee deviation, an LLPR standard deviation) is judged by how well it
orders the samples by their true error :math:`e_i` (e.g.
:math:`|F_i - F_i^{ref}|`, eV/A):

- Spearman's rank correlation :math:`\rho` (Pearson's correlation of the
  ranks, ties given their mean rank; :func:`scipy.stats.spearmanr`);
- the ROC-AUC for the samples whose error exceeds a threshold :math:`t`:
  the probability that a sample with :math:`e > t` gets a larger
  :math:`u` than one with :math:`e \le t` (ties count one half). It is
  the Mann-Whitney statistic divided by the number of pairs,

  .. math:: \mathrm{AUC} = \frac{R_+ - n_+(n_+ + 1)/2}{n_+ n_-},

  with :math:`R_+` the sum of the ranks of :math:`u` over the positives in
  the pooled sample (mean ranks for ties). 1 is a perfect ordering, 0.5
  chance.

Both are invariant to any increasing transform of :math:`u` (so to its
calibration) and are ``nan`` where undefined: fewer than two samples, a
constant input (Spearman), no sample on one side of the threshold (AUC).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["rank_scores", "roc_auc", "spearman"]


def _pair(predicted: ArrayLike, error: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(predicted, dtype=np.float64).reshape(-1)
    e = np.asarray(error, dtype=np.float64).reshape(-1)
    if u.shape != e.shape:
        raise ValueError(
            f"predicted and error must have the same number of samples, got {u.size} and {e.size}"
        )
    if not (np.isfinite(u).all() and np.isfinite(e).all()):
        raise ValueError("predicted and error must be finite (found nan or inf)")
    return u, e


def spearman(predicted: ArrayLike, error: ArrayLike) -> float:
    """Spearman's rank correlation of two equally long 1-d samples (any
    shape, flattened); ``nan`` for fewer than two samples or a constant one."""
    from scipy.stats import spearmanr

    u, e = _pair(predicted, error)
    if u.size < 2 or np.ptp(u) == 0 or np.ptp(e) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(u, e).statistic)


def roc_auc(predicted: ArrayLike, positive: ArrayLike) -> float:
    """ROC-AUC of the score ``predicted`` for the boolean labels ``positive``
    (Mann-Whitney statistic over :math:`n_+ n_-`, ties one half); ``nan``
    when every sample is on the same side."""
    from scipy.stats import rankdata

    u = np.asarray(predicted, dtype=np.float64).reshape(-1)
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    if u.shape != pos.shape:
        raise ValueError(
            f"predicted and positive must have the same number of samples, got {u.size} and {pos.size}"
        )
    if not np.isfinite(u).all():
        raise ValueError("predicted must be finite (found nan or inf)")
    n_pos = int(pos.sum())
    n_neg = u.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(u)  # average ranks for ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def rank_scores(predicted: ArrayLike, error: ArrayLike, threshold: float = 0.1) -> dict:
    """How well ``predicted`` ranks ``error`` (same samples, same order):
    ``{"spearman", "roc_auc", "threshold", "n", "n_above"}``, the AUC for
    ``error > threshold`` (units of ``error``; default 0.1, eV/A for forces)."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    u, e = _pair(predicted, error)
    above = e > threshold
    return {
        "spearman": spearman(u, e),
        "roc_auc": roc_auc(u, above),
        "threshold": float(threshold),
        "n": int(u.size),
        "n_above": int(above.sum()),
    }
