"""Corpus BLEU and chrF with sacreBLEU: per-sentence sufficient statistics, summed, scored by sacreBLEU.

Rows are exactly the statistics sacreBLEU extracts for each segment (n-gram matches and totals,
lengths), and the corpus score comes from sacreBLEU's own `_compute_score_from_stats` on their sum,
so the value equals `corpus_bleu(hyps, [refs])` and a bootstrap resamples rows without re-tokenising
(the same route sacreBLEU's own `--confidence` and paired bootstrap take).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.types import Record


class SacreMetric(RowMetric):
    """A sacreBLEU metric whose rows are its sufficient statistics (paired tests hand them back to sacreBLEU)."""

    higher_is_better = True

    def __init__(self, name: str, prediction_cleaner=None) -> None:
        super().__init__()
        self.name = name
        self.prediction_cleaner = prediction_cleaner
        self.scorer = self._make_scorer()

    def _make_scorer(self):
        raise NotImplementedError

    def row(self, record: Record) -> Sequence[float]:
        hypothesis = record.prediction
        if self.prediction_cleaner is not None:
            hypothesis = self.prediction_cleaner(hypothesis)
        return self.scorer._extract_corpus_statistics([hypothesis], [[record.reference]])[0]

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        flat = np.asarray(totals).reshape(-1, totals.shape[-1])
        scores = [self.scorer._compute_score_from_stats([int(x) for x in row]).score for row in flat]
        return np.asarray(scores, dtype=np.float64).reshape(totals.shape[:-1])

    @property
    def signature(self) -> str:
        return str(self.scorer.get_signature())


class CorpusBLEU(SacreMetric):
    """sacreBLEU corpus BLEU: detokenised, cased, 13a, exp smoothing (BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp)."""

    n_stats = 10

    def _make_scorer(self):
        from sacrebleu.metrics import BLEU

        scorer = BLEU()
        scorer._extract_corpus_statistics(["x"], [["x"]])  # fixes nrefs:1 in the signature
        return scorer


class CorpusChrF(SacreMetric):
    """sacreBLEU chrF2 (nc:6, nw:0, cased)."""

    n_stats = 18

    def _make_scorer(self):
        from sacrebleu.metrics import CHRF

        scorer = CHRF()
        scorer._extract_corpus_statistics(["x"], [["x"]])
        return scorer
