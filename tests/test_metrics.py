from __future__ import annotations

import math

import numpy as np
import pytest

from softprompt.tasks.metrics import (
    accuracy,
    compute_metrics,
    exact_match,
    f1,
    macro_f1,
    matthews_corrcoef,
    normalize_answer,
    pearson,
    spearman,
    token_f1,
)

PRED = [1, 1, 0, 0, 1]
REF = [1, 0, 0, 0, 1]  # tp=2 fp=1 tn=2 fn=0


def test_accuracy_and_binary_f1_by_hand():
    assert accuracy(PRED, REF) == pytest.approx(4 / 5)
    assert f1(PRED, REF) == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))  # 0.8
    # class 0 as positive: tp=2 fp=0 fn=1
    assert f1(PRED, REF, pos_label=0) == pytest.approx(4 / 5)
    assert f1([0, 0], [0, 0]) == 0.0  # no positives anywhere


def test_mcc_by_hand():
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (4 - 0) / sqrt(3*2*3*2)
    assert matthews_corrcoef(PRED, REF) == pytest.approx(4 / 6)
    assert matthews_corrcoef(REF, REF) == pytest.approx(1.0)
    assert matthews_corrcoef([1 - r for r in REF], REF) == pytest.approx(-1.0)


def test_mcc_degenerate_is_zero():
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0  # constant predictions
    assert matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0  # constant references


def test_mcc_multiclass_by_hand():
    pred, ref = [0, 1, 2, 2], [0, 1, 1, 2]
    # c=3, s=4, p=(1,1,2), t=(1,2,1): (3*4 - (1+2+2)) / sqrt((16-6)*(16-6)) = 7/10
    assert matthews_corrcoef(pred, ref) == pytest.approx(0.7)


def test_macro_f1_by_hand():
    pred, ref = [0, 1, 2, 2], [0, 1, 1, 2]
    # per class F1: 0 -> 1.0, 1 -> 2*1/(2+0+1) = 2/3, 2 -> 2*1/(2+1+0) = 2/3
    assert macro_f1(pred, ref) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # a class nobody predicted and nobody has still counts when named
    assert macro_f1(pred, ref, labels=[0, 1, 2, 3]) == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)


def test_pearson_and_spearman_with_ties_by_hand():
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    # ranks: x -> 1, 2.5, 2.5, 4; y -> 1, 3, 2, 4; pearson of ranks = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert spearman(x, y) == pytest.approx(3 / math.sqrt(10))
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0  # constant side


def test_correlations_match_scipy_on_tied_data():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 200).tolist(), rng.integers(0, 5, 200).tolist()
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)


def test_squad_style_answers():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match(["the Eiffel tower.", "Paris"], ["Eiffel Tower", "London"]) == pytest.approx(0.5)
    # several gold answers: the best one counts
    assert exact_match(["Paris"], [["London", "paris"]]) == 1.0
    # pred tokens {big, red, dog}, gold {red, dog, barked}: p = r = 2/3
    assert token_f1(["a big red dog"], ["the red dog barked"]) == pytest.approx(2 / 3)
    assert token_f1([""], [""]) == 1.0 and token_f1(["x"], [""]) == 0.0


def test_compute_metrics():
    out = compute_metrics(("matthews_corrcoef", "accuracy", "f1", "mcc"), PRED, REF)
    assert out == pytest.approx({"matthews_corrcoef": 4 / 6, "accuracy": 0.8, "f1": 0.8, "mcc": 4 / 6})
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(["bleu"], PRED, REF)
    with pytest.raises(ValueError, match="predictions"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError):
        accuracy([], [])
