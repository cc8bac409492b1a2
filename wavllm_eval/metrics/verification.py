"""Speaker-verification metrics from trial scores: EER and normalised minDCF.

The score of a trial is log P(yes) − log P(no) from the model's candidate scoring. EER follows
voxceleb_trainer: sklearn's ROC curve, the operating point where |FNR − FPR| is smallest, EER =
max(FPR, FNR) there. minDCF is NIST SRE's normalised detection cost with C_miss = C_fa = 1,
divided by C_def = min(P_target, 1 − P_target) (SpeechBrain's minDCF is unnormalised: not this).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.types import Record


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER in % (voxceleb_trainer convention); NaN unless both labels occur."""
    from sklearn.metrics import roc_curve

    if len(set(labels.tolist())) < 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    fnr = 1 - tpr
    index = int(np.nanargmin(np.abs(fnr - fpr)))
    return 100.0 * float(max(fpr[index], fnr[index]))


def min_detection_cost(scores: np.ndarray, labels: np.ndarray, p_target: float,
                       c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minDCF (NIST SRE16 eqs. 2-4) over every threshold of the ROC curve."""
    from sklearn.metrics import roc_curve

    if len(set(labels.tolist())) < 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
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
