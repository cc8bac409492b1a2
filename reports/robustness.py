"""Prompt robustness: a task run under N instructions (`<task>`, `<task>@p2`, ...) summarised per
headline metric as the default-prompt score beside the mean, standard deviation and worst case
across the variants (the WavLLM paper's claim of robustness to prompt wording, measured).

The standard deviation is the sample one (ddof = 1, over the N variant scores); the worst case is
the highest value of a lower-is-better metric, the lowest otherwise. The gate can check the mean
across variants instead of each variant (`gate --variants mean`): its paired test averages the
variants' metric on the same bootstrap resamples of the samples all of them share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from wavllm_eval.reports.compare import PairedComparison, _percentiles, koehn_p_value
from wavllm_eval.reports.runs import RunResult

from wavllm_eval.metrics.base import BOOTSTRAP_RESAMPLES, Resamples
from wavllm_eval.task import split_task_id

MEAN_SUFFIX = "@mean"


@dataclass(frozen=True)
class VariantSpread:
    model: str
    task: str  # the base task id
    metric: str
    default: float  # under the task's default instruction (variant 1)
    mean: float
    std: float
    worst: float
    n_variants: int
    higher_is_better: bool

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def variant_groups(run: RunResult) -> dict[str, list[str]]:
    """Base task id -> its task ids in variant order, for tasks run under two or more instructions."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for task_id in run.tasks:
        base, variant = split_task_id(task_id)
        groups.setdefault(base, []).append((variant, task_id))
    return {base: [t for _, t in sorted(ids)] for base, ids in groups.items() if len(ids) > 1}


def variant_spreads(runs: Sequence[RunResult]) -> list[VariantSpread]:
    out: list[VariantSpread] = []
    for run in runs:
        for base, task_ids in variant_groups(run).items():
            first = run.tasks[task_ids[0]]
            for metric in run.headlines(task_ids[0]):
                values = np.array([_value(run.tasks[t]["metrics"].get(metric)) for t in task_ids], dtype=float)
                higher = bool(first.get("higher_is_better", {}).get(metric, True))
                finite = values[~np.isnan(values)]
                default = values[0] if split_task_id(task_ids[0])[1] == 1 else math.nan
                out.append(VariantSpread(
                    run.label, base, metric, float(default),
                    float(finite.mean()) if finite.size else math.nan,
                    float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                    float(finite.max() if not higher else finite.min()) if finite.size else math.nan,
                    len(task_ids), higher))
    return out


def compare_variant_mean(baseline: RunResult, candidate: RunResult, base: str, metric: str,
                         n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 1) -> PairedComparison | None:
    """The paired test of the metric averaged over the variants both runs ran (shared samples only)."""
    task_ids = [t for t in variant_groups(baseline).get(base, []) if t in candidate.tasks]
    if len(task_ids) < 2:
        return None
    pairs = []
    for task_id in task_ids:
        b = next((m for m in baseline.metrics(task_id) if m.name == metric), None)
        c = next((m for m in candidate.metrics(task_id) if m.name == metric), None)
        if b is None or c is None:
            return None
        pairs.append((b, c))
    common = sorted(set.intersection(*(set(b.ids) & set(c.ids) for b, c in pairs)))
    if not common:
        return None
    resamples = Resamples(len(common), n_resamples, seed)
    base_values, cand_values, base_resampled, cand_resampled = [], [], [], []
    for b, c in pairs:
        b_rows, c_rows = _rows(b, common), _rows(c, common)
        base_values.append(b.reduce(b_rows))
        cand_values.append(c.reduce(c_rows))
        base_resampled.append(b.resampled_values(resamples, b_rows))
        cand_resampled.append(c.resampled_values(resamples, c_rows))
    base_mean, cand_mean = float(np.mean(base_values)), float(np.mean(cand_values))
    deltas = np.mean(cand_resampled, axis=0) - np.mean(base_resampled, axis=0)
    deltas = deltas[~np.isnan(deltas)]
    return PairedComparison(base + MEAN_SUFFIX, metric, pairs[0][0].higher_is_better, base_mean, cand_mean,
                            cand_mean - base_mean, _percentiles(deltas), koehn_p_value(deltas, cand_mean - base_mean),
                            None, len(common), f"paired bootstrap of the mean over {len(task_ids)} instructions",
                            len(pairs[0][0].ids), len(pairs[0][1].ids))


def _rows(metric, ids: list[str]) -> np.ndarray:
    position = {sample_id: i for i, sample_id in enumerate(metric.ids)}
    return metric.rows[[position[i] for i in ids]]


def _value(value) -> float:
    return math.nan if value is None else float(value)
