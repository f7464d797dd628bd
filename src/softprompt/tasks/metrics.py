"""Task metrics in plain Python/numpy. All scores are in [0, 1] (correlations in [-1, 1]), never percentages.

Degenerate inputs score 0.0 rather than NaN (MCC or a correlation with a constant side, F1 with no positives),
so that "best checkpoint" comparisons stay well defined.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _check(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


# ---------------------------------------------------------------- classification (label indices)


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    _check(predictions, references)
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def f1(predictions: Sequence[int], references: Sequence[int], pos_label: int = 1) -> float:
    """Binary F1 of the class `pos_label`."""
    _check(predictions, references)
    pairs = list(zip(predictions, references, strict=True))
    tp = sum(p == pos_label and r == pos_label for p, r in pairs)
    fp = sum(p == pos_label and r != pos_label for p, r in pairs)
    fn = sum(p != pos_label and r == pos_label for p, r in pairs)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def macro_f1(predictions: Sequence[int], references: Sequence[int], labels: Sequence[int] | None = None) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: every class seen in references or predictions)."""
    _check(predictions, references)
    labels = sorted(set(references) | set(predictions)) if labels is None else labels
    return float(np.mean([f1(predictions, references, pos_label=c) for c in labels]))


def matthews_corrcoef(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Matthews correlation (the multiclass form, = the usual binary one for two classes)."""
    _check(predictions, references)
    n = len(references)
    correct = sum(p == r for p, r in zip(predictions, references, strict=True))
    pred_counts, true_counts = Counter(predictions), Counter(references)
    classes = set(pred_counts) | set(true_counts)
    cov_pt = correct * n - sum(pred_counts[c] * true_counts[c] for c in classes)
    cov_pp = n * n - sum(v * v for v in pred_counts.values())
    cov_tt = n * n - sum(v * v for v in true_counts.values())
    if cov_pp == 0 or cov_tt == 0:  # a constant side: no correlation to measure
        return 0.0
    return float(cov_pt / np.sqrt(float(cov_pp) * float(cov_tt)))


# ---------------------------------------------------------------- regression (scores)


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    _check(predictions, references)
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float(np.clip((x * y).sum() / denom, -1.0, 1.0)) if denom > 0 else 0.0


def _ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks (as scipy.stats.rankdata)."""
    _, inverse, counts = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # rank - 1 of the first member of each group of equal values
    return (starts + (counts + 1) / 2)[inverse.reshape(-1)]


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    _check(predictions, references)
    return pearson(_ranks(predictions).tolist(), _ranks(references).tolist())


# ---------------------------------------------------------------- generation (answer strings)


_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _exact(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:  # SQuAD v2: "no answer" only matches "no answer"
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _best(score: Callable[[str, str], float], prediction: str, reference: str | Sequence[str]) -> float:
    # A question may have several gold answers; the prediction is scored against the closest one.
    refs = [reference] if isinstance(reference, str) else list(reference)
    return max((score(prediction, r) for r in refs), default=0.0)


def exact_match(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    _check(predictions, references)
    return float(np.mean([_best(_exact, p, r) for p, r in zip(predictions, references, strict=True)]))


def token_f1(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    _check(predictions, references)
    return float(np.mean([_best(_token_f1, p, r) for p, r in zip(predictions, references, strict=True)]))


METRICS: dict[str, Callable[[Sequence[Any], Sequence[Any]], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
    "exact_match": exact_match,
    "token_f1": token_f1,
}
ALIASES = {"acc": "accuracy", "mcc": "matthews_corrcoef", "matthews": "matthews_corrcoef", "em": "exact_match"}


def compute_metrics(names: Sequence[str], predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """{name: score} for each metric name (keys are the names as given, so aliases stay as the caller wrote them)."""
    unknown = [n for n in names if ALIASES.get(n, n) not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    return {n: METRICS[ALIASES.get(n, n)](predictions, references) for n in names}
