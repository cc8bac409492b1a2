"""`wavllm-eval gate`: fail CI on a significant regression of a headline metric.

A task fails when the candidate is worse than the baseline by more than the metric's threshold AND
the paired test (compare.py) calls the difference significant, or when the candidate scored fewer
samples than the baseline (or dropped the task). Thresholds live in a small TOML file committed next
to a project's CI:

    # wavllm-gate.toml
    alpha = 0.05            # significance level of the paired test
    default = 1.0           # max regression, in metric units, for metrics not listed
    [max_regression]
    wer = 0.3               # WER points
    bleu = 0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavllm_eval.reports.compare import PairedComparison, compare_runs, wilcoxon_min_nonzero
from wavllm_eval.reports.runs import RunResult
from wavllm_eval.reports.thresholds import DEFAULT_ALPHA, DEFAULT_MAX_REGRESSION, DEFAULT_THRESHOLD  # noqa: E402

from wavllm_eval.errors import InputError


@dataclass(frozen=True)
class GateConfig:
    max_regression: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_REGRESSION))
    default: float = DEFAULT_THRESHOLD
    alpha: float = DEFAULT_ALPHA
    variants: str = "each"  # "mean": a task run under prompt variants is gated on the mean across them

    def threshold(self, metric: str) -> float:
        return self.max_regression.get(metric, self.default)

    @classmethod
    def from_file(cls, path: Path | None, overrides: dict[str, float] | None = None) -> GateConfig:
        config = cls()
        if path is not None:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            try:
                data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise InputError(path, "gate config not found", "pass --config wavllm-gate.toml") from exc
            except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, not text
                raise InputError(path, f"cannot read the gate config ({exc.__class__.__name__})",
                                 "pass --config with a TOML file, e.g. wavllm-gate.toml") from exc
            except tomllib.TOMLDecodeError as exc:
                raise InputError(path, f"invalid TOML ({exc})", "see `wavllm-eval gate --help` for the format") from exc
            config = _config_from_toml(cls, config, data, Path(path))
        if overrides:
            config = cls({**config.max_regression, **overrides}, config.default, config.alpha)
        return config

    def with_variants(self, mode: str) -> GateConfig:
        if mode not in ("each", "mean"):
            raise InputError("--variants", f"unknown mode {mode!r}", "use --variants each or --variants mean")
        return GateConfig(self.max_regression, self.default, self.alpha, mode)


@dataclass(frozen=True)
class GateCheck:
    task: str
    metric: str
    verdict: str  # "pass" | "fail"
    reason: str
    comparison: PairedComparison | None = None
    threshold: float = 0.0
    notes: tuple[str, ...] = ()



@dataclass(frozen=True)
class GateOutcome:
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return all(c.verdict == "pass" for c in self.checks)


MIN_GATE_SAMPLES = 30  # below this a paired test rarely detects anything: the gate warns


def coverage(baseline: RunResult, candidate: RunResult, task_id: str) -> tuple[str | None, list[str]]:
    """(why the candidate's samples cannot stand beside the baseline's, or None; notes). It must have
    the task, on the same test set or a subset of it, and score every sample the baseline scored
    there: pairing only the samples both scored would hide the candidate's failures."""
    base_entry, cand_entry = baseline.tasks[task_id], candidate.tasks.get(task_id)
    if cand_entry is None:
        return "task missing from the candidate run", []
    base_ids, cand_ids = baseline.sample_ids(task_id), candidate.sample_ids(task_id)
    if base_ids == cand_ids:
        if cand_entry["n_scored"] < base_entry["n_scored"]:
            return f"candidate scored {cand_entry['n_scored']} samples, baseline {base_entry['n_scored']}", []
        return None, []
    if not cand_ids or not cand_ids < base_ids:
        return "candidate ran on another test set (sample ids differ)", []
    notes = [f"candidate ran {len(cand_ids)} of the baseline's {len(base_ids)} samples (a subset): "
             "compared on the shared samples only"]
    base_ok = sum(r.status == "ok" for r in baseline.records(task_id) if r.id in cand_ids)
    cand_ok = sum(r.status == "ok" for r in candidate.records(task_id))
    if cand_ok < base_ok:
        return f"candidate scored {cand_ok} of its {len(cand_ids)} samples, the baseline {base_ok} of the same", notes
    return None, notes


def run_gate(baseline: RunResult, candidate: RunResult, config: GateConfig) -> GateOutcome:
    """Every headline metric of every baseline task is checked (SV accuracy and EER, ER WA and UA)."""
    checks: list[GateCheck] = []
    comparisons = {(c.task, c.metric): c for c in compare_runs(baseline, candidate)
                   if c.task in candidate.tasks}
    variant_tasks = set()
    if config.variants == "mean":
        from wavllm_eval.reports.robustness import compare_variant_mean, variant_groups

        for base, task_ids in variant_groups(baseline).items():
            variant_tasks.update(task_ids)
            # every variant covered as the per-task gate requires, or the mean is over other samples
            reasons = {t: coverage(baseline, candidate, t)[0] for t in task_ids}
            lacking = [(t, why) for t, why in reasons.items() if why]
            for metric in baseline.headlines(task_ids[0]):
                if lacking:
                    checks.append(GateCheck(base, metric, "fail", "; ".join(f"{t}: {why}" for t, why in lacking),
                                            None, config.threshold(metric)))
                    continue
                comparison = compare_variant_mean(baseline, candidate, base, metric)
                if comparison is None:
                    checks.append(GateCheck(base, metric, "fail", "candidate lacks the prompt variants to average"))
                else:
                    checks.append(_verdict(comparison, config, [f"mean over {len(task_ids)} instructions"]))
    for task_id in baseline.tasks:
        if task_id in variant_tasks:
            continue
        headlines = baseline.headlines(task_id)
        failure, notes = coverage(baseline, candidate, task_id)
        if failure is not None:
            checks.extend(GateCheck(task_id, h, "fail", failure, None, config.threshold(h), tuple(notes))
                          for h in headlines)
            continue
        for metric in headlines:
            comparison = comparisons.get((task_id, metric))
            if comparison is None:
                checks.append(GateCheck(task_id, metric, "fail", "no shared scored sample for this metric", None,
                                        config.threshold(metric), tuple(notes)))
                continue
            checks.append(_verdict(comparison, config, notes))
    return GateOutcome(checks)


def _verdict(comparison: PairedComparison, config: GateConfig, notes: list[str]) -> GateCheck:
    threshold = config.threshold(comparison.metric)
    p_value = comparison.p_value
    worse_by = comparison.regression
    significant = p_value < config.alpha
    notes = list(notes)
    if comparison.n_paired < MIN_GATE_SAMPLES:
        notes.append(f"only {comparison.n_paired} paired samples: too few to gate on reliably")
    if comparison.n_differing is not None:
        needed = wilcoxon_min_nonzero(config.alpha)
        if comparison.n_differing < needed:
            notes.append(f"only {comparison.n_differing} utterances' errors differ: the matched-pairs test cannot reach "
                         f"p < {config.alpha:g} with fewer than {needed}, whatever the size of the difference")
    elif math.isfinite(comparison.detectable):
        notes.append(f"smallest detectable difference at n = {comparison.n_paired}: about {comparison.detectable:.2f}")
    if worse_by > threshold and significant:
        verdict, reason = "fail", f"worse by {worse_by:.2f} > {threshold:g}, p = {p_value:.4f}"
    elif worse_by > threshold:
        verdict, reason = "pass", f"worse by {worse_by:.2f} but not significant (p = {p_value:.4f})"
    else:
        verdict, reason = "pass", f"change {comparison.delta:+.2f} within {threshold:g} (p = {p_value:.4f})"
    return GateCheck(comparison.task, comparison.metric, verdict, reason, comparison, threshold, tuple(notes))


def _number(value: Any, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"{key} = {value!r} is not a number", "write e.g. default = 0.5, [max_regression] wer = 0.3")
    return float(value)


def _config_from_toml(cls: type[GateConfig], config: GateConfig, data: dict[str, Any], path: Path) -> GateConfig:
    """The TOML's thresholds over the defaults; a wrong type is an input error naming the key."""
    per_metric = data.get("max_regression", {})
    if not isinstance(per_metric, dict):
        raise InputError(path, f"max_regression = {per_metric!r} is not a table of metric thresholds",
                         "write [max_regression] then one metric = threshold per line (e.g. wer = 0.3)")
    thresholds = {str(k): _number(v, path, f"max_regression.{k}") for k, v in per_metric.items()}
    return cls({**config.max_regression, **thresholds}, _number(data.get("default", config.default), path, "default"),
               _number(data.get("alpha", config.alpha), path, "alpha"))
