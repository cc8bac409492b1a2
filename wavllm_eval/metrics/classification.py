"""Closed-set metrics: accuracy (WA) and balanced accuracy (UA), from per-sample indicator rows.

A prediction that cannot be parsed is its own outcome: it counts as wrong, and tasks report how
many there were; it is never dropped from the denominator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from wavllm_eval.metrics.base import RowMetric, safe_ratio
from wavllm_eval.types import Record

Labeller = Callable[[Record], "str | None"]


class Accuracy(RowMetric):
    """Accuracy in %: correct answers over all scored samples (unparsed answers are wrong)."""

    higher_is_better = True
    n_stats = 2

    def __init__(self, name: str, predict: Labeller, target: Callable[[Record], str],
                 needs_choice_logprobs: bool = False) -> None:
        super().__init__()
        self.name = name
        self.predict = predict
        self.target = target
        self.needs_choice_logprobs = needs_choice_logprobs

    def row(self, record: Record) -> Sequence[float]:
        return (float(self.predict(record) == self.target(record)), 1.0)

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        return safe_ratio(totals[..., 0], totals[..., 1])


class BalancedAccuracy(RowMetric):
    """UA in %: the mean of per-class recalls over the classes present in the references
    (sklearn's `balanced_accuracy_score`). Rows: one-hot hits, then one-hot class counts."""

    higher_is_better = True

    def __init__(self, name: str, classes: Sequence[str], predict: Labeller, target: Callable[[Record], str],
                 needs_choice_logprobs: bool = False) -> None:
        super().__init__()
        self.name = name
        self.classes = tuple(classes)
        self.n_stats = 2 * len(self.classes)
        self.predict = predict
        self.target = target
        self.needs_choice_logprobs = needs_choice_logprobs

    def row(self, record: Record) -> Sequence[float]:
        k = len(self.classes)
        row = [0.0] * (2 * k)
        truth = self.target(record)
        if truth not in self.classes:
            raise ValueError(f"sample {record.id}: reference label {truth!r} is not one of {self.classes}")
        index = self.classes.index(truth)
        row[k + index] = 1.0
        row[index] = float(self.predict(record) == truth)
        return row

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        k = len(self.classes)
        hits, counts = totals[..., :k], totals[..., k:]
        with np.errstate(divide="ignore", invalid="ignore"):
            recalls = np.where(counts > 0, hits / np.where(counts > 0, counts, 1), np.nan)
        return 100.0 * np.nanmean(recalls, axis=-1)


def argmax_choice(record: Record, choices: Sequence[str]) -> str | None:
    """The candidate with the highest log-probability (constrained-choice answer mode)."""
    if not record.choice_logprobs:
        raise ValueError(f"sample {record.id}: no choice_logprobs (the model did not score the candidates)")
    if len(record.choice_logprobs) != len(choices):
        raise ValueError(f"sample {record.id}: {len(record.choice_logprobs)} log-probs for {len(choices)} choices")
    return choices[int(np.argmax(record.choice_logprobs))]
