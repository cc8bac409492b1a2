"""Paired significance between two runs on the same samples, from the rows scoring stored.

Rows of each task's metrics are paired by sample id (only ids scored `ok` in both runs).
- BLEU and chrF: sacreBLEU's own paired bootstrap (`sacrebleu.significance._paired_bs_test`, what
  `sacrebleu --paired-bs` runs: 1000 resamples, seed 12345, p = (#{|Δ_b| − mean|Δ| > |Δ_obs|} + 1)
  / (B + 1)), fed the stored sufficient statistics, so its p-value is sacreBLEU's to the digit.
- Every other metric: the same paired bootstrap (Koehn 2004 as sacreBLEU formulates it: one index
  matrix for both runs, the resampled absolute differences centred on their mean, counted with `>`),
  over our own seeded resamples.
- WER additionally: the Wilcoxon signed-rank test on per-utterance error counts, exact under ties
  (reports/signed_rank.py), a distribution-free matched-pairs stand-in for NIST's MAPSSWE that needs
  no segment alignment; it decides for WER.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wavllm_eval.reports.runs import RunResult

from wavllm_eval.metrics.base import BOOTSTRAP_RESAMPLES, Resamples, RowMetric
from wavllm_eval.metrics.bleu import SacreMetric

SACREBLEU_SEED = 12345  # sacreBLEU's default SACREBLEU_SEED for --paired-bs

SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True)
class PairedComparison:
    task: str
    metric: str
    higher_is_better: bool
    baseline: float  # on the paired samples
    candidate: float
    delta: float  # candidate − baseline
    ci95: tuple[float, float]  # of the delta
    p_bootstrap: float
    p_matched_pairs: float | None  # Wilcoxon on per-utterance errors (WER only)
    n_paired: int
    test: str = "paired bootstrap"
    n_baseline: int = 0  # samples each run scored (the pairing uses the shared ones)
    n_candidate: int = 0
    detectable: float = float("nan")  # the smallest |Δ| the bootstrap would call significant here
    n_differing: int | None = None  # matched pairs: utterances whose error counts differ

    @property
    def p_value(self) -> float:
        """The test that decides: matched pairs for WER, the paired bootstrap otherwise."""
        return self.p_matched_pairs if self.p_matched_pairs is not None else self.p_bootstrap

    @property
    def significant(self) -> bool:
        """p below the level and a difference at all: sacreBLEU's bootstrap counts resamples strictly
        above the observed |Δ| (MultEval's rule), so two identical runs get its smallest p, 1/(B+1);
        a zero difference is still no evidence of one."""
        return self.delta != 0 and self.p_value < SIGNIFICANCE_LEVEL

    @property
    def regression(self) -> float:
        """How much worse the candidate is, in the metric's units (negative: it is better)."""
        return -self.delta if self.higher_is_better else self.delta

    def to_json(self) -> dict:
        return {"task": self.task, "metric": self.metric, "baseline": self.baseline, "candidate": self.candidate,
                "delta": self.delta, "ci95": list(self.ci95), "p_bootstrap": self.p_bootstrap,
                "p_matched_pairs": self.p_matched_pairs, "p_value": self.p_value,
                "significant": self.significant, "n_paired": self.n_paired, "test": self.test,
                "n_baseline": self.n_baseline, "n_candidate": self.n_candidate}


def paired_metrics(baseline: RunResult, candidate: RunResult, task_id: str) -> tuple[list[RowMetric], list[RowMetric]]:
    """Both runs' metrics over their stored rows (no re-scoring)."""
    return baseline.metrics(task_id), candidate.metrics(task_id)


def compare_metric(task_id: str, base: RowMetric, cand: RowMetric, n_resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 1) -> PairedComparison | None:
    """Paired comparison of one metric; None when the runs share no scored sample."""
    common = sorted(set(base.ids) & set(cand.ids))
    if not common:
        return None
    base_rows = _rows_for(base, common)
    cand_rows = _rows_for(cand, common)
    base_value, cand_value = base.reduce(base_rows), cand.reduce(cand_rows)
    observed = cand_value - base_value
    resamples = Resamples(len(common), n_resamples, seed)  # the same resamples for both runs
    deltas = cand.resampled_values(resamples, cand_rows) - base.resampled_values(resamples, base_rows)
    deltas = deltas[~np.isnan(deltas)]
    low, high = _percentiles(deltas)  # the CI of the difference, from our seeded resamples
    if isinstance(base, SacreMetric):
        p_bootstrap = _sacrebleu_paired_bs(base, base_rows, cand_rows, n_resamples)
        test = "sacreBLEU paired bootstrap (--paired-bs)"
    else:
        p_bootstrap = koehn_p_value(deltas, observed)
        test = "paired bootstrap (Koehn 2004, sacreBLEU's formulation)"
    matched = _matched_pairs(base, base_rows, cand_rows)
    n_differing = None
    if matched is not None:
        test = "Wilcoxon signed-rank on per-utterance errors"
        n_differing = int(np.count_nonzero(cand_rows[:, 0] - base_rows[:, 0]))
    return PairedComparison(task_id, base.name, base.higher_is_better, base_value, cand_value, observed, (low, high),
                            p_bootstrap, matched, len(common), test, len(base.ids), len(cand.ids),
                            detectable_difference(deltas), n_differing)


def detectable_difference(deltas: np.ndarray, alpha: float = SIGNIFICANCE_LEVEL) -> float:
    """The smallest |Δ| whose paired-bootstrap p (see `koehn_p_value`) is below `alpha` on these
    resamples: p = (#{centred > |Δ|} + 1) / (B + 1) < alpha allows at most ceil(alpha (B + 1) − 1) − 1
    centred values above |Δ|, so it is the centred value of that rank from the top (inf: never)."""
    if deltas.size == 0:
        return float("nan")
    absolute = np.abs(deltas)
    centred = np.sort(absolute - absolute.mean())[::-1]
    allowed_above = int(np.ceil(alpha * (deltas.size + 1) - 1)) - 1
    if allowed_above < 0 or allowed_above >= centred.size:
        return float("inf")
    return float(centred[allowed_above])


def wilcoxon_min_nonzero(alpha: float = SIGNIFICANCE_LEVEL) -> int:
    """The fewest non-zero differences with which the exact two-sided signed-rank test can reach p < alpha
    (its smallest p with k differences is 2 / 2**k)."""
    k = 1
    while 2 / 2**k >= alpha:
        k += 1
    return k


def koehn_p_value(deltas: np.ndarray, observed: float) -> float:
    """sacreBLEU's paired-bootstrap p: the resampled |Δ| centred on their mean, counted strictly above
    the observed |Δ|, with the +1 correction."""
    if deltas.size == 0:
        return 1.0
    absolute = np.abs(deltas)
    centred = absolute - absolute.mean()
    return float((np.sum(centred > abs(observed)) + 1) / (deltas.size + 1))


def _percentiles(deltas: np.ndarray) -> tuple[float, float]:
    deltas = deltas[~np.isnan(deltas)]
    if deltas.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)


def _sacrebleu_paired_bs(metric: SacreMetric, base_rows: np.ndarray, cand_rows: np.ndarray, n_resamples: int) -> float:
    """sacreBLEU's own `_paired_bs_test` on stored statistics: a stand-in metric hands it the rows
    instead of re-extracting them from text, everything else is sacreBLEU's code."""
    from sacrebleu.significance import _paired_bs_test

    scorer = metric.scorer

    class StoredStatistics:
        def _extract_corpus_statistics(self, hypotheses, references):
            return cand_rows.astype(int).tolist()

        def _aggregate_and_compute(self, stats):
            return scorer._compute_score_from_stats(np.asarray(stats).sum(0).tolist())

        def _compute_score_from_stats(self, stats):
            return scorer._compute_score_from_stats(list(stats))

    baseline_score = scorer._compute_score_from_stats(base_rows.sum(0).astype(int).tolist())
    placeholders = [""] * len(cand_rows)
    _, results = _paired_bs_test({metric.name: (base_rows.astype(int).tolist(), baseline_score)}, "candidate",
                                 placeholders, None, {metric.name: StoredStatistics()}, n_samples=n_resamples,
                                 seed=SACREBLEU_SEED)
    return float(results[metric.name].p_value)


def _matched_pairs(metric: RowMetric, base_rows: np.ndarray, cand_rows: np.ndarray) -> float | None:
    if not metric.name.startswith("wer"):
        return None
    from wavllm_eval.reports.signed_rank import signed_rank_p

    return signed_rank_p(cand_rows[:, 0] - base_rows[:, 0])  # per-utterance word errors


def _rows_for(metric: RowMetric, ids: list[str]) -> np.ndarray:
    position = {sample_id: i for i, sample_id in enumerate(metric.ids)}
    rows = metric.rows
    return rows[[position[i] for i in ids]]


def compare_runs(baseline: RunResult, candidate: RunResult, headline_only: bool = True,
                 n_resamples: int = BOOTSTRAP_RESAMPLES) -> list[PairedComparison]:
    """Paired comparisons on every task both runs scored (every headline metric by default)."""
    out: list[PairedComparison] = []
    for task_id in [t for t in baseline.tasks if t in candidate.tasks]:
        base_metrics, cand_metrics = paired_metrics(baseline, candidate, task_id)
        headlines = set(baseline.headlines(task_id))
        candidates = {m.name: m for m in cand_metrics}
        for base in base_metrics:
            cand = candidates.get(base.name)
            if cand is None or (headline_only and base.name not in headlines):
                continue
            comparison = compare_metric(task_id, base, cand, n_resamples)
            if comparison is not None:
                out.append(comparison)
    return out
