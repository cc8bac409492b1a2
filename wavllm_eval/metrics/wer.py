"""Word error rate with jiwer: per-utterance (edits, reference words), reduced as a corpus rate."""

from __future__ import annotations

from collections.abc import Sequence

import jiwer
import numpy as np

from wavllm_eval.metrics.base import RowMetric, safe_ratio
from wavllm_eval.text import Normaliser
from wavllm_eval.types import Record


def word_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) of one normalised pair.

    jiwer aligns; an empty reference is handled here (every hypothesis word is an insertion), so
    the corpus rate stays Σ edits / Σ reference words and nothing is dropped.
    """
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words:
        return len(hyp_words), 0
    if not hyp_words:
        return len(ref_words), len(ref_words)
    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    return out.substitutions + out.deletions + out.insertions, len(ref_words)


class WordErrorRate(RowMetric):
    """Corpus WER in %: total edits over total reference words, not the mean of per-utterance rates."""

    higher_is_better = False
    n_stats = 2

    def __init__(self, normaliser: Normaliser, name: str = "wer",
                 prediction_cleaner=None, reference_form=None) -> None:
        super().__init__()
        self.name = name
        self.normaliser = normaliser
        self.prediction_cleaner = prediction_cleaner
        self.reference_form = reference_form  # e.g. the reference as another layout's manifest writes it

    def row(self, record: Record) -> Sequence[float]:
        prediction, reference = record.prediction, record.reference
        if self.prediction_cleaner is not None:
            prediction = self.prediction_cleaner(prediction)
        if self.reference_form is not None:
            reference = self.reference_form(reference)
        return word_edits(self.normaliser(reference), self.normaliser(prediction))

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        return safe_ratio(totals[..., 0], totals[..., 1])
