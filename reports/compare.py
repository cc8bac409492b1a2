"""Paired significance between two runs on the same samples.

Rows of each task's metrics are paired by sample id (only ids scored `ok` in both runs). The paired
bootstrap draws one index matrix and applies it to both runs (Koehn 2004, as sacreBLEU's
`--paired-bs`): p = (#{|Δ_b − mean Δ| ≥ |Δ_obs|} + 1) / (B + 1). For WER, a matched-pairs test is
added: the Wilcoxon signed-rank test on per-utterance error counts (scipy), a distribution-free
stand-in for NIST's MAPSSWE that needs no segment alignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wavllm_eval.reports.runs import RunResult

from wavllm_eval.metrics.base import BOOTSTRAP_RESAMPLES, RowMetric, bootstrap_indices
from wavllm_eval.registry import make_task

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

    @property
    def p_value(self) -> float:
        """The test that decides: matched pairs for WER, the paired bootstrap otherwise."""
        return self.p_matched_pairs if self.p_matched_pairs is not None else self.p_bootstrap

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE_LEVEL

    @property
    def regression(self) -> float:
        """How much worse the candidate is, in the metric's units (negative: it is better)."""
        return -self.delta if self.higher_is_better else self.delta

    def to_json(self) -> dict:
        return {"task": self.task, "metric": self.metric, "baseline": self.baseline, "candidate": self.candidate,
                "delta": self.delta, "ci95": list(self.ci95), "p_bootstrap": self.p_bootstrap,
                "p_matched_pairs": self.p_matched_pairs, "p_value": self.p_value,
                "significant": self.significant, "n_paired": self.n_paired}


def paired_metrics(baseline: RunResult, candidate: RunResult, task_id: str) -> tuple[list[RowMetric], list[RowMetric]]:
    task = make_task(task_id)
    return task.scored_metrics(baseline.records(task_id)), task.scored_metrics(candidate.records(task_id))


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
    indices = bootstrap_indices(len(common), n_resamples, seed)
    deltas = cand.resampled_values(indices, cand_rows) - base.resampled_values(indices, base_rows)
    deltas = deltas[~np.isnan(deltas)]
    if deltas.size:
        centred = np.abs(deltas - deltas.mean())
        p_bootstrap = float((np.sum(centred >= abs(observed)) + 1) / (deltas.size + 1))
        low, high = (float(x) for x in np.percentile(deltas, [2.5, 97.5]))
    else:
        p_bootstrap, low, high = 1.0, float("nan"), float("nan")
    return PairedComparison(task_id, base.name, base.higher_is_better, base_value, cand_value, observed, (low, high),
                            p_bootstrap, _matched_pairs(base, base_rows, cand_rows), len(common))


def _matched_pairs(metric: RowMetric, base_rows: np.ndarray, cand_rows: np.ndarray) -> float | None:
    if not metric.name.startswith("wer"):
        return None
    from scipy.stats import wilcoxon

    differences = cand_rows[:, 0] - base_rows[:, 0]  # per-utterance word errors
    if not np.any(differences):
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox").pvalue)


def _rows_for(metric: RowMetric, ids: list[str]) -> np.ndarray:
    position = {sample_id: i for i, sample_id in enumerate(metric.ids)}
    rows = metric.rows
    return rows[[position[i] for i in ids]]


def compare_runs(baseline: RunResult, candidate: RunResult, headline_only: bool = True,
                 n_resamples: int = BOOTSTRAP_RESAMPLES) -> list[PairedComparison]:
    """Paired comparisons on every task both runs scored (headline metrics by default)."""
    out: list[PairedComparison] = []
    for task_id in [t for t in baseline.tasks if t in candidate.tasks]:
        base_metrics, cand_metrics = paired_metrics(baseline, candidate, task_id)
        headline = baseline.tasks[task_id].get("headline")
        candidates = {m.name: m for m in cand_metrics}
        for base in base_metrics:
            cand = candidates.get(base.name)
            if cand is None or (headline_only and base.name != headline):
                continue
            comparison = compare_metric(task_id, base, cand, n_resamples)
            if comparison is not None:
                out.append(comparison)
    return out
