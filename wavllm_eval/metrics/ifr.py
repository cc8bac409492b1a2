"""Instruction-following rate (IFR) from rule verdicts (`wavllm_eval.instructions`), as row metrics.

`ifr`: share of samples whose answer follows every sub-instruction (%). A sample with an undecidable
sub-instruction and no failed one is neither followed nor dropped: it stays in the denominator and is
reported by `ifr_undecidable`. `ifr_instruction`: followed sub-instructions over all sub-instructions.
The definition is the harness's own (no official IFR scorer exists, metrics.md §9).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from wavllm_eval.instructions import FOLLOWED, NOT_FOLLOWED, OUTCOMES, UNDECIDABLE, Verdict, sample_outcome
from wavllm_eval.metrics.base import RowMetric, safe_ratio
from wavllm_eval.types import Record

Verdicts = Callable[[Record], Sequence[Verdict]]


class _Rate(RowMetric):
    n_stats = 2

    def __init__(self, name: str, verdicts: Verdicts) -> None:
        super().__init__()
        self.name = name
        self.verdicts = verdicts

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        return safe_ratio(totals[..., 0], totals[..., 1])


class InstructionFollowingRate(_Rate):
    """% of samples whose every sub-instruction was followed."""

    higher_is_better = True

    def row(self, record: Record) -> Sequence[float]:
        return (float(sample_outcome(self.verdicts(record)) == FOLLOWED), 1.0)


class SubInstructionFollowingRate(_Rate):
    """% of sub-instructions followed, pooled over samples."""

    higher_is_better = True

    def row(self, record: Record) -> Sequence[float]:
        verdicts = self.verdicts(record)
        return (float(sum(v.outcome == FOLLOWED for v in verdicts)), float(len(verdicts)))


class UndecidableRate(_Rate):
    """% of samples whose outcome the rules could not decide (none failed, at least one undecidable)."""

    higher_is_better = False

    def row(self, record: Record) -> Sequence[float]:
        return (float(sample_outcome(self.verdicts(record)) == UNDECIDABLE), 1.0)


def ifr_metrics(verdicts: Verdicts) -> list[RowMetric]:
    return [InstructionFollowingRate("ifr", verdicts), SubInstructionFollowingRate("ifr_instruction", verdicts),
            UndecidableRate("ifr_undecidable", verdicts)]


def ifr_breakdown(records: Sequence[Record], verdicts: Verdicts) -> Mapping[str, Any]:
    """Counts of sample and sub-instruction outcomes, and the follow rate per instruction type."""
    ok = [r for r in records if r.status == "ok"]
    samples = dict.fromkeys(OUTCOMES, 0)
    by_type: dict[str, dict[str, int]] = {}
    by_position: dict[str, dict[str, int]] = {}
    for record in ok:
        record_verdicts = verdicts(record)
        samples[sample_outcome(record_verdicts)] += 1
        for position, verdict in enumerate(record_verdicts, start=1):
            for key, table in ((verdict.instruction.kind, by_type), (str(position), by_position)):
                table.setdefault(key, dict.fromkeys(OUTCOMES, 0))[verdict.outcome] += 1

    def rates(table: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
        out = {}
        for key, counts in sorted(table.items()):
            total = sum(counts.values())
            out[key] = {**counts, "n": total, "follow_rate": round(100 * counts[FOLLOWED] / total, 4)}
        return out

    return {"sample_outcomes": samples, "per_type": rates(by_type), "per_position": rates(by_position),
            "not_followed_samples": samples[NOT_FOLLOWED]}
