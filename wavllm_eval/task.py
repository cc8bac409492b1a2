"""The task contract: load samples from a corpus, build model-neutral prompts, score records.

A task never calls a model; `score` works on stored records alone, so `wavllm-eval score`,
`report` and `gate` re-enter here without a GPU.

A task id may carry a prompt variant, `<task>@p<K>`: the same data and scoring under the K-th
instruction of the task's shipped, versioned paraphrase list (`@p1` is the default instruction and
is written without the suffix). The variant is part of the id, so it keys the samples JSONL, the
results entry, pairing and the gate like any other task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from wavllm_eval.errors import InputError
from wavllm_eval.manifest import is_manifest, manifest_samples
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.types import Prompt, Record, Sample, TaskResult

log = logging.getLogger(__name__)

VARIANT_MARK = "@p"
PROMPT_VARIANTS_VERSION = "prompt-variants/v1"


def split_task_id(task_id: str) -> tuple[str, int]:
    """`"asr-x@p3"` -> ("asr-x", 3); a plain id is variant 1."""
    base, mark, number = task_id.rpartition(VARIANT_MARK)
    if mark and number.isdigit() and int(number) >= 1 and base:
        return base, int(number)
    return task_id, 1


def variant_id(base_id: str, variant: int) -> str:
    return base_id if variant == 1 else f"{base_id}{VARIANT_MARK}{variant}"


@runtime_checkable
class Task(Protocol):
    id: str
    base_id: str
    variant: int
    group: str
    version: int
    headlines: tuple[str, ...]

    def default_data_path(self, data_dir: Path) -> Path: ...

    def load(self, data: Path) -> Iterator[Sample]: ...

    def build_prompt(self, sample: Sample) -> Prompt: ...

    def make_metrics(self) -> list[RowMetric]: ...

    def score(self, records: Sequence[Record]) -> ScoredTask: ...


@dataclass(frozen=True)
class ScoredTask:
    """What scoring produced: the results.json entry and the per-sample rows behind every metric
    (stored next to the samples, so reports and the gate reuse them instead of re-scoring)."""

    result: TaskResult
    metrics: Sequence[RowMetric]
    scoring_version: str
    sample_ids: Sequence[str] = ()  # every sample of the scored set, whatever its status

    def rows_json(self) -> dict[str, Any]:
        return {"scoring_version": self.scoring_version, "sample_ids": list(self.sample_ids),
                "metrics": {m.name: {"ids": list(m.ids), "rows": m.rows.tolist()} for m in self.metrics}}


class BaseTask:
    """Shared loading, prompting and scoring; a task file states its data layout and metrics.

    - `load` reads an official WavLLM TSV manifest itself (every task accepts one) and otherwise
      calls `load_native` for the corpus's released layout.
    - `build_prompt` takes the instruction from `instruction(sample)`: the manifest's own prompt or
      `default_instruction` for variant 1, the paraphrase for `@pK`.
    - `headlines`: the metrics a paper prints for this task (several: SV accuracy and EER); the
      first present one is `headline` in results.json.
    """

    group: str = ""  # set by @register_task
    version: int = 1
    max_new_tokens: int = 256
    default_instruction: str = ""
    # Paraphrases of `default_instruction` for prompt robustness: @p2 is the first. A "{question}"
    # field is filled with the sample's own instruction (a spoken-QA question and its options).
    instruction_variants: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    headlines: tuple[str, ...] = ()
    judge: Any = None  # an optional model judge, set by `evaluate` when --judge is given
    # Stored sample attributes to break the score down by (results.json `breakdowns`), e.g. the
    # speaker, the IEMOCAP session (the 5-fold protocol), a duration bucket.
    breakdown_keys: tuple[str, ...] = ()
    data_layout: str = "an official WavLLM TSV manifest (id audio n_frames prompt tgt_text with_speech) + its audio"

    def __init__(self, task_id: str) -> None:
        self.id = task_id
        self.base_id, self.variant = split_task_id(task_id)
        if self.variant > self.n_variants():
            raise InputError(None, f"task {self.base_id} has {self.n_variants()} instruction variant(s), "
                             f"not {self.variant}", f"use at most {self.base_id}{VARIANT_MARK}{self.n_variants()}")

    def describe_layout(self) -> str:
        """The data this task reads, for `wavllm-eval list` ({split} filled in)."""
        return self.data_layout.replace("{split}", str(getattr(self, "split", "")))

    @classmethod
    def n_variants(cls) -> int:
        return 1 + len(cls.instruction_variants)

    # --- data ---------------------------------------------------------------------------------
    def default_data_path(self, data_dir: Path) -> Path:
        raise NotImplementedError

    def load(self, data: Path) -> Iterator[Sample]:
        data = Path(data)
        if is_manifest(data):
            for sample in manifest_samples(data):
                yield self.from_manifest(sample)
            return
        expected, count = self.official_size(data), 0
        for sample in self.load_native(data):
            count += 1
            yield sample
        if expected is not None and count != expected:
            log.warning("%s: %d %s samples, but the released test set has %d: the scores are not comparable "
                        "with published ones (%s)", data, count, self.base_id, expected, self.size_hint)

    # The released test set's size in the native layout (datasets.md), checked after loading: a partial
    # copy or another upstream release (a Hub copy of LibriSpeech, a later Common Voice) is named.
    released_size: int | None = None
    size_hint: str = "a partial or altered copy of the data"

    def official_size(self, data: Path) -> int | None:
        """The number of samples the released test set at `data` has (None: no fixed number)."""
        return self.released_size

    def load_native(self, data: Path) -> Iterator[Sample]:
        raise InputError(data, f"not an official WavLLM TSV manifest (task {self.base_id} has no other layout)",
                         "pass the .tsv with the columns id, audio, n_frames, prompt, tgt_text, with_speech")

    def from_manifest(self, sample: Sample) -> Sample:
        """Hook: enrich a manifest sample (parse options out of its prompt, say)."""
        return sample

    # --- prompts ------------------------------------------------------------------------------
    def instruction(self, sample: Sample) -> str:
        if self.variant == 1:
            return sample.instruction or self.default_instruction
        template = self.instruction_variants[self.variant - 2]
        return template.replace("{question}", sample.instruction) if "{question}" in template else template

    def build_prompt(self, sample: Sample) -> Prompt:
        return Prompt(sample.id, self.instruction(sample), sample.audio, choices=sample.choices or self.choices,
                      max_new_tokens=self.max_new_tokens)

    # --- scoring ------------------------------------------------------------------------------
    def make_metrics(self) -> list[RowMetric]:
        """Fresh metric objects; the first is the headline unless `headlines` says otherwise."""
        raise NotImplementedError

    def settings(self) -> Mapping[str, Any]:
        """Scoring conventions recorded in results.json (normaliser identity, BLEU signature...)."""
        return {}

    def scoring_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task_version": self.version, **self.settings()}
        if self.variant > 1 or self.instruction_variants:
            out["instruction_variant"] = self.variant
            out["prompt_variants"] = PROMPT_VARIANTS_VERSION
        return out

    def scoring_version(self) -> str:
        """Identity of the scoring code: the task version and every recorded convention. A run
        scored under another version is flagged by `report` (re-score it with `score RUN_DIR`)."""
        settings = self.scoring_settings()
        settings.pop("instruction_variant", None)
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{self.base_id}/v{self.version}/{digest}"

    def scored_metrics(self, records: Sequence[Record]) -> list[RowMetric]:
        """Metrics updated with the `ok` records: rows keyed by sample id, for CIs and paired tests."""
        ok = [r for r in dedupe_by_id(records) if r.status == "ok"]
        scored_choices = any(r.choice_logprobs for r in ok)
        # Constrained-choice metrics exist only when the model scored candidates: absent, never 0.
        metrics = [m for m in self.make_metrics() if scored_choices or not getattr(m, "needs_choice_logprobs", False)]
        workers = scoring_workers(len(ok))
        if workers > 1 and self.judge is None and all(getattr(m, "parallel_safe", True) for m in metrics):
            _update_in_processes(self.id, metrics, ok, workers)
        else:
            for metric in metrics:
                metric.update(ok)
        return metrics

    def metrics_from_rows(self, stored: Mapping[str, Any]) -> list[RowMetric]:
        """The metrics of a stored scores file, rows as scoring wrote them (no re-scoring)."""
        by_name = {m.name: m for m in self.make_metrics()}
        out: list[RowMetric] = []
        for name, block in stored.get("metrics", {}).items():
            if name in by_name:
                out.append(by_name[name].with_rows(block["ids"], block["rows"]))
        return out

    def extra(self, records: Sequence[Record]) -> Mapping[str, Any]:
        """Task-specific diagnostics for results.json (parse failures, confusion matrix)."""
        return {}

    def breakdown_value(self, record: Record, key: str) -> str | None:
        """A record's group under `key`: its stored attribute, or a duration bucket."""
        if key == "duration_bucket":
            duration = record.meta.get("duration_s")
            return duration_bucket(float(duration)) if duration is not None else None
        value = record.meta.get(key)
        return None if value in (None, "") else str(value)

    def breakdowns(self, records: Sequence[Record], headlines: Sequence[str],
                   metrics: Sequence[RowMetric]) -> dict[str, Any]:
        """Each headline metric per group of every breakdown key, with its bootstrap CI, from the rows
        scoring already computed (a group is a subset of rows: nothing is normalised or parsed again)."""
        import copy

        by_id = {r.id: r for r in records if r.status == "ok"}
        headline_metrics = [m for m in metrics if m.name in headlines]
        out: dict[str, Any] = {}
        for key in self.breakdown_keys:
            groups: dict[str, set[str]] = {}
            for record in by_id.values():
                value = self.breakdown_value(record, key)
                if value is not None:
                    groups.setdefault(value, set()).add(record.id)
            if not groups or len(groups) > MAX_BREAKDOWN_GROUPS:
                continue
            block = {}
            for value in sorted(groups, key=_natural):
                members = groups[value]
                subsets = []
                for metric in headline_metrics:
                    keep = [i for i, sample_id in enumerate(metric.ids) if sample_id in members]
                    subsets.append(copy.copy(metric).with_rows([metric.ids[i] for i in keep],
                                                               [metric._rows[i] for i in keep]))
                block[value] = {"n": len(members),
                                "metrics": {m.name: _rounded(m.compute()) for m in subsets},
                                "ci95": {m.name: [_rounded(x) for x in m.bootstrap()] for m in subsets}}
            out[key] = block
        return out

    def headline_names(self, metric_names: Sequence[str]) -> list[str]:
        present = [h for h in self.headlines if h in metric_names]
        return present or list(metric_names[:1])

    def score(self, records: Sequence[Record]) -> ScoredTask:
        records = dedupe_by_id(records)
        foreign = {r.task for r in records if r.task and r.task != self.id}
        if foreign:
            raise InputError(None, f"records were written by task {sorted(foreign)[0]}, not {self.id}",
                             f"score them with --task {sorted(foreign)[0]}")
        metrics = self.scored_metrics(records)
        statuses = [r.status for r in records]
        names = [m.name for m in metrics]
        headlines = self.headline_names(names)
        result = TaskResult(
            metrics={m.name: m.compute() for m in metrics},
            ci95={m.name: m.bootstrap() for m in metrics},
            n_total=len(records),
            n_scored=statuses.count("ok"),
            n_failed=statuses.count("failed"),
            n_skipped=statuses.count("skipped"),
            headline=headlines[0] if headlines else "",
            headlines=tuple(headlines),
            higher_is_better={m.name: m.higher_is_better for m in metrics},
            settings={**self.scoring_settings(), "scoring_version": self.scoring_version()},
            extra=self.extra(records),
            breakdowns=self.breakdowns(records, headlines, metrics),
        )
        return ScoredTask(result, metrics, self.scoring_version(), [r.id for r in records])


PARALLEL_MIN_RECORDS = 20_000  # below this, starting worker processes costs more than it saves


def scoring_workers(n_records: int) -> int:
    """Processes for computing metric rows: the machine's cores for a large set (WAVLLM_EVAL_SCORING_WORKERS
    overrides; 1 keeps scoring in this process). Workers are forked, so only from a process that has not
    imported torch (`score`, `report`, `gate`): forking a process whose model threads are running is
    unsafe, and spawning would re-import the caller's main module."""
    configured = os.environ.get("WAVLLM_EVAL_SCORING_WORKERS")
    minimum = int(os.environ.get("WAVLLM_EVAL_PARALLEL_MIN_RECORDS", PARALLEL_MIN_RECORDS))
    if n_records < minimum or "torch" in sys.modules:
        return 1
    return max(1, int(configured)) if configured else min(os.cpu_count() or 1, 8)


def _update_in_processes(task_id: str, metrics: Sequence[RowMetric], records: Sequence[Record], workers: int) -> None:
    """Rows of every metric computed over contiguous chunks in forked worker processes, then appended
    in order: the same rows as one pass."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    n_chunks = workers * 4
    size = -(-len(records) // n_chunks)
    chunks = [list(records[i: i + size]) for i in range(0, len(records), size)]
    names = [m.name for m in metrics]
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        results = list(pool.map(_rows_of_chunk, [task_id] * len(chunks), [names] * len(chunks), chunks))
    for metric in metrics:
        for rows_by_name in results:
            ids, rows = rows_by_name[metric.name]
            metric.ids.extend(ids)
            metric._rows.extend(rows)


def _rows_of_chunk(task_id: str, names: Sequence[str], records: Sequence[Record]) -> dict[str, tuple[list, list]]:
    from wavllm_eval.registry import make_task

    by_name = {m.name: m for m in make_task(task_id).make_metrics()}
    out = {}
    for name in names:
        metric = by_name[name]
        metric.update(records)
        out[name] = (metric.ids, metric._rows)
    return out


MAX_BREAKDOWN_GROUPS = 500
DURATION_BUCKETS_S = (5.0, 10.0, 20.0, 30.0)


def duration_bucket(seconds: float) -> str:
    """"0-5 s", "5-10 s", "10-20 s", "20-30 s", ">30 s"."""
    low = 0.0
    for high in DURATION_BUCKETS_S:
        if seconds < high:
            return f"{low:g}-{high:g} s"
        low = high
    return f">{DURATION_BUCKETS_S[-1]:g} s"


def _natural(value: str) -> tuple:
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", value))


def _rounded(value: float) -> float | None:
    return None if value != value else round(float(value), 6)


def dedupe_by_id(records: Sequence[Record]) -> list[Record]:
    """The last record per id (a re-run sample supersedes an earlier line), sorted by id: scoring
    and its bootstrap never depend on the order in which batches happened to finish."""
    latest: dict[str, Record] = {}
    for record in records:
        latest[record.id] = record
    return [latest[key] for key in sorted(latest)]
