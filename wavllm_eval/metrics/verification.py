"""Speaker-verification metrics from trial scores: EER and normalised minDCF.

The score of a trial is log P(yes) − log P(no) from the model's candidate scoring. EER follows
voxceleb_trainer: sklearn's ROC curve (its operating points, computed here by `roc_points`), the operating point where |FNR − FPR| is smallest, EER =
max(FPR, FNR) there. minDCF is NIST SRE's normalised detection cost with C_miss = C_fa = 1,
divided by C_def = min(P_target, 1 − P_target) (SpeechBrain's minDCF is unnormalised: not this).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.types import Record


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from the highest score down, with the points that lie on
    a straight segment between their neighbours left out and (0, 0) first: the operating points of
    sklearn's `roc_curve` (drop_intermediate=True), without its input validation, which dominated a
    bootstrap's thousand EERs (`tests/test_metrics_closed_set.py` checks the equality)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    ordered, hits = np.asarray(scores, dtype=np.float64)[order], np.asarray(labels)[order] == 1
    # the last trial of each threshold; a comparison, not np.diff, so tied infinite scores (inf - inf
    # is NaN) stay one threshold
    ends = np.r_[np.flatnonzero(ordered[1:] != ordered[:-1]), ordered.size - 1]
    tps = np.cumsum(hits)[ends].astype(np.float64)
    fps = (ends + 1) - tps
    if fps.size > 2:
        corner = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        fps, tps = fps[corner], tps[corner]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1]


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER in % (voxceleb_trainer convention); NaN unless both labels occur."""
    if len(set(labels.tolist())) < 2:
        return float("nan")
    fpr, tpr = roc_points(scores, labels)
    fnr = 1 - tpr
    index = int(np.nanargmin(np.abs(fnr - fpr)))
    return 100.0 * float(max(fpr[index], fnr[index]))


def min_detection_cost(scores: np.ndarray, labels: np.ndarray, p_target: float,
                       c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minDCF (NIST SRE16 eqs. 2-4) over every threshold of the ROC curve."""
    if len(set(labels.tolist())) < 2:
        return float("nan")
    fpr, tpr = roc_points(scores, labels)
    fnr = 1 - tpr
    costs = c_miss * fnr * p_target + c_fa * fpr * (1 - p_target)
    return float(costs.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


class _TrialMetric(RowMetric):
    """Rows (score, label); not a function of sums, so `reduce` works on the rows themselves."""

    n_stats = 2
    needs_choice_logprobs = True

    def __init__(self, name: str, score: Callable[[Record], float], label: Callable[[Record], int]) -> None:
        super().__init__()
        self.name = name
        self.score = score
        self.label = label

    def row(self, record: Record) -> Sequence[float]:
        return (self.score(record), float(self.label(record)))


class EqualErrorRate(_TrialMetric):
    higher_is_better = False

    def reduce(self, rows: np.ndarray) -> float:
        return equal_error_rate(rows[:, 0], rows[:, 1].astype(int))


class MinDCF(_TrialMetric):
    higher_is_better = False

    def __init__(self, name: str, score, label, p_target: float) -> None:
        super().__init__(name, score, label)
        self.p_target = p_target

    def reduce(self, rows: np.ndarray) -> float:
        return min_detection_cost(rows[:, 0], rows[:, 1].astype(int), self.p_target)
