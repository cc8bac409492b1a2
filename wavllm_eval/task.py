"""The task contract: load samples from a corpus, build model-neutral prompts, score records.

A task never calls a model; `score` works on stored records alone, so `wavllm-eval score`,
`report` and `gate` re-enter here without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.types import Prompt, Record, Sample, TaskResult


@runtime_checkable
class Task(Protocol):
    id: str
    group: str
    version: int

    def default_data_path(self, data_dir: Path) -> Path: ...

    def load(self, data: Path) -> Iterator[Sample]: ...

    def build_prompt(self, sample: Sample) -> Prompt: ...

    def make_metrics(self) -> list[RowMetric]: ...

    def score(self, records: Sequence[Record]) -> TaskResult: ...


class BaseTask:
    """Shared scoring: metrics over `ok` records, seeded bootstrap CIs, every sample counted."""

    group: str = ""  # set by @register_task
    version: int = 1
    max_new_tokens: int = 256

    def __init__(self, task_id: str) -> None:
        self.id = task_id

    def default_data_path(self, data_dir: Path) -> Path:
        raise NotImplementedError

    def load(self, data: Path) -> Iterator[Sample]:
        raise NotImplementedError

    def build_prompt(self, sample: Sample) -> Prompt:
        raise NotImplementedError

    def make_metrics(self) -> list[RowMetric]:
        """Fresh metric objects; the first is the headline."""
        raise NotImplementedError

    def settings(self) -> Mapping[str, Any]:
        """Scoring conventions recorded in results.json (normaliser identity, BLEU signature...)."""
        return {}

    def scored_metrics(self, records: Sequence[Record]) -> list[RowMetric]:
        """Metrics updated with the `ok` records: rows keyed by sample id, for CIs and paired tests."""
        ok = [r for r in dedupe_by_id(records) if r.status == "ok"]
        scored_choices = any(r.choice_logprobs for r in ok)
        # Constrained-choice metrics exist only when the model scored candidates: absent, never 0.
        metrics = [m for m in self.make_metrics() if scored_choices or not getattr(m, "needs_choice_logprobs", False)]
        for metric in metrics:
            metric.update(ok)
        return metrics

    def extra(self, records: Sequence[Record]) -> Mapping[str, Any]:
        """Task-specific diagnostics for results.json (parse failures, confusion matrix)."""
        return {}

    def score(self, records: Sequence[Record]) -> TaskResult:
        records = dedupe_by_id(records)
        metrics = self.scored_metrics(records)
        statuses = [r.status for r in records]
        return TaskResult(
            metrics={m.name: m.compute() for m in metrics},
            ci95={m.name: m.bootstrap() for m in metrics},
            n_total=len(records),
            n_scored=statuses.count("ok"),
            n_failed=statuses.count("failed"),
            n_skipped=statuses.count("skipped"),
            headline=metrics[0].name if metrics else "",
            higher_is_better={m.name: m.higher_is_better for m in metrics},
            settings={"task_version": self.version, **self.settings()},
            extra=self.extra(records),
        )


def dedupe_by_id(records: Sequence[Record]) -> list[Record]:
    """The last record per id (a re-run sample supersedes an earlier line), sorted by id: scoring
    and its bootstrap never depend on the order in which batches happened to finish."""
    latest: dict[str, Record] = {}
    for record in records:
        latest[record.id] = record
    return [latest[key] for key in sorted(latest)]
