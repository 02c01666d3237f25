import math
import re

import numpy as np
import pytest

from symmd.ranking import rank_scores, roc_auc, spearman


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0, abs=1e-15)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0, abs=1e-15)
    # d = (0, 1, 1): rho = 1 - 6 * 2 / (3 * 8) = 0.5
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5, abs=1e-15)
    # invariant to an increasing transform of either side
    x = np.random.default_rng(0).random(50)
    y = x + 0.3 * np.random.default_rng(1).random(50)
    assert spearman(np.exp(x), y**3) == pytest.approx(spearman(x, y), abs=1e-14)
    # ties take their mean rank: ranks (1.5, 1.5, 3) against (1, 2, 3)
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2, abs=1e-14)


def test_spearman_undefined_is_nan():
    assert math.isnan(spearman([1.0], [2.0]))
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_roc_auc_by_hand():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert roc_auc([0.1, 0.2, 0.3], [False, True, True]) == 1.0
    assert roc_auc([0.3, 0.2, 0.1], [False, True, True]) == 0.0
    assert roc_auc([1.0, 1.0], [True, False]) == 0.5  # a tie counts one half
    # two positives (0.5, 0.9) and two negatives (0.5, 0.2): 1 tie + 3 wins of 4
    assert roc_auc([0.5, 0.9, 0.5, 0.2], [True, True, False, False]) == 0.875


def test_roc_auc_undefined_is_nan():
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))
    assert math.isnan(roc_auc([0.1, 0.2], [False, False]))


def test_rank_scores_threshold_is_strict():
    scores = rank_scores([0.1, 0.2, 0.3, 0.4], [0.05, 0.1, 0.15, 0.3], threshold=0.1)
    assert scores == {
        "spearman": pytest.approx(1.0),
        "roc_auc": 1.0,
        "threshold": 0.1,
        "n": 4,
        "n_above": 2,  # 0.1 itself is not above
    }
    assert rank_scores([0.4, 0.3, 0.2, 0.1], [0.05, 0.1, 0.15, 0.3])["roc_auc"] == 0.0


def test_rank_bad_input():
    with pytest.raises(
        ValueError,
        match=re.escape("predicted and error must have the same number of samples, got 3 and 2"),
    ):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(
        ValueError, match=re.escape("predicted and error must be finite (found nan or inf)")
    ):
        rank_scores([1, np.nan], [1, 2])
    with pytest.raises(
        ValueError, match=re.escape("threshold must be a finite number >= 0, got -0.1")
    ):
        rank_scores([1, 2], [1, 2], threshold=-0.1)
    with pytest.raises(
        ValueError,
        match=re.escape("predicted and positive must have the same number of samples, got 2 and 1"),
    ):
        roc_auc([1, 2], [True])
