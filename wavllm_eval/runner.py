"""One runner for CPU and GPU: duration-sorted batches, per-sample seeds, resume, OOM back-off.

Longest batches go first, so an out-of-memory error shows at once and halves the batch. Each
sample's seed is derived from (run seed, task, sample id), so sampling never depends on batch size
or order, and a resumed run writes what an uninterrupted one would have. A sample that fails
becomes a `failed` Record with its reason; nothing crashes the run, nothing is silently dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from wavllm_eval.adapter import ModelAdapter, OutOfMemory
from wavllm_eval.audio import load_audio
from wavllm_eval.console import console
from wavllm_eval.errors import AudioReadError, InputError
from wavllm_eval.store import SampleStore
from wavllm_eval.task import Task
from wavllm_eval.types import Generation, Prompt, Record, Sample

log = logging.getLogger(__name__)

AUTO_BATCH_AUDIO_S = 240.0  # with --batch-size auto: at most this many audio seconds per batch


@dataclass(frozen=True)
class RunOptions:
    """Everything `wavllm-eval run` decides from its flags."""

    batch_size: int | None = None  # None: auto (the adapter's default, capped by an audio budget)
    batch_audio_s: float | None = None  # explicit audio-seconds budget per batch
    limit: int | None = None
    seed: int = 1
    resume: bool = True
    device: str = "auto"
    dtype: str = "auto"
    show_progress: bool = True


@dataclass
class Throughput:
    """Model-side efficiency of one run of one task (what this invocation computed)."""

    n_samples: int = 0
    audio_s: float = 0.0
    model_s: float = 0.0
    new_tokens: int = 0

    def to_json(self) -> dict[str, float]:
        return {
            "n_samples": self.n_samples,
            "audio_s": round(self.audio_s, 3),
            "model_s": round(self.model_s, 3),
            "rtfx": round(self.audio_s / self.model_s, 3) if self.model_s > 0 else 0.0,
            "tokens_per_s": round(self.new_tokens / self.model_s, 3) if self.model_s > 0 else 0.0,
            "new_tokens": self.new_tokens,
        }


@dataclass
class TaskRun:
    records_written: int = 0
    model_calls: int = 0
    throughput: Throughput = field(default_factory=Throughput)


def sample_seed(run_seed: int, task_id: str, sample_id: str) -> int:
    """A 31-bit seed that depends only on (run seed, task, sample id)."""
    digest = hashlib.sha256(f"{run_seed}\x1f{task_id}\x1f{sample_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def duration_batches(samples: Sequence[Sample], batch_size: int, audio_budget_s: float | None) -> list[list[Sample]]:
    """Longest first; a batch closes at `batch_size` samples or when the next clip would exceed the
    audio-seconds budget (a single clip longer than the budget still forms its own batch)."""
    ordered = sorted(samples, key=lambda s: (-s.duration_s, s.id))
    batches: list[list[Sample]] = []
    current: list[Sample] = []
    current_s = 0.0
    for sample in ordered:
        too_many = len(current) >= batch_size
        too_long = audio_budget_s is not None and current and current_s + sample.duration_s > audio_budget_s
        if current and (too_many or too_long):
            batches.append(current)
            current, current_s = [], 0.0
        current.append(sample)
        current_s += sample.duration_s
    if current:
        batches.append(current)
    return batches


class Runner:
    """Drives one adapter over one task's pending samples, writing records as batches finish."""

    def __init__(self, adapter: ModelAdapter | None, store: SampleStore, options: RunOptions) -> None:
        self.adapter = adapter
        self.store = store
        self.options = options
        default = getattr(adapter, "default_batch_size", 1) if adapter is not None else 1
        self.batch_size = max(1, options.batch_size or default)
        self.audio_budget_s = options.batch_audio_s or (AUTO_BATCH_AUDIO_S if options.batch_size is None else None)

    def pending(self, task: Task, samples: Sequence[Sample]) -> list[Sample]:
        check_unique_ids(task, samples)
        done = self.store.done_ids(task.id) if self.options.resume else set()
        return [s for s in samples if s.id not in done]

    def run(self, task: Task, samples: Iterable[Sample]) -> TaskRun:
        samples = list(samples)
        if not self.options.resume:
            self.store.reset(task.id)
        todo = self.pending(task, samples)
        stats = TaskRun()
        if not todo:
            return stats
        if self.adapter is None:
            raise RuntimeError("pending samples but no model adapter loaded")
        too_long, runnable = self._split_too_long(todo)
        if too_long:
            self._write(task, too_long, stats)
        audio_done_s, started = 0.0, time.perf_counter()
        with self._progress_bar() as progress:
            bar = progress.add_task(task.id, total=len(todo), completed=len(too_long), rate="")
            for batch in duration_batches(runnable, self.batch_size, self.audio_budget_s):
                records = self._run_batch(task, batch, stats)
                self._write(task, records, stats)
                audio_done_s += sum(s.duration_s for s in batch)
                elapsed = max(time.perf_counter() - started, 1e-9)
                done = progress.tasks[bar].completed + len(batch) - len(too_long)
                rate = f"{done / elapsed:.2f} samples/s · {audio_done_s / elapsed:.1f} audio-s/s"
                progress.update(bar, advance=len(batch), rate=rate)
        return stats

    # --- internals --------------------------------------------------------------------------
    def _split_too_long(self, samples: list[Sample]) -> tuple[list[Record], list[Sample]]:
        limit = getattr(self.adapter, "max_audio_s", None)
        if limit is None:
            return [], samples
        skipped, keep = [], []
        for s in samples:
            if s.duration_s > limit:
                reason = f"audio {s.duration_s:.2f} s is longer than the model's limit of {limit:g} s"
                skipped.append(Record(s.id, "", s.reference, "skipped", reason, meta=_meta(s)))
            else:
                keep.append(s)
        return skipped, keep

    def _run_batch(self, task: Task, batch: list[Sample], stats: TaskRun) -> list[Record]:
        records: dict[str, Record] = {}
        prompts: list[Prompt] = []
        by_id: dict[str, Sample] = {}
        for sample in batch:
            try:
                waveforms = tuple(load_audio(ref) for ref in sample.audio)
            except AudioReadError as exc:
                records[sample.id] = Record(sample.id, "", sample.reference, "failed", str(exc), meta=_meta(sample))
                continue
            prompt = dataclasses.replace(task.build_prompt(sample), waveforms=waveforms)
            prompts.append(prompt)
            by_id[sample.id] = sample
        seeds = [sample_seed(self.options.seed, task.id, p.sample_id) for p in prompts]
        for prompt, seed, outcome in self._generate(task, prompts, seeds, stats):
            sample = by_id[prompt.sample_id]
            meta = {**_meta(sample), "seed": seed}
            if isinstance(outcome, Exception):
                records[sample.id] = Record(sample.id, "", sample.reference, "failed",
                                            f"{type(outcome).__name__}: {outcome}", meta=meta)
            else:
                meta["n_new_tokens"] = outcome.n_new_tokens
                records[sample.id] = Record(sample.id, outcome.text, sample.reference, "ok",
                                            choice_logprobs=outcome.choice_logprobs, meta=meta)
        return [records[s.id] for s in batch]

    def _generate(self, task: Task, prompts: list[Prompt], seeds: list[int], stats: TaskRun):
        """Yield (prompt, seed, Generation | Exception); halves the batch on OOM, isolates failures."""
        if not prompts:
            return
        try:
            started = time.perf_counter()
            generations = self._call_model(prompts, seeds)
            elapsed = time.perf_counter() - started
        except Exception as exc:
            if _is_oom(exc) and len(prompts) > 1:
                self.batch_size = max(1, len(prompts) // 2)
                log.warning("out of memory with %d samples; batch size now %d", len(prompts), self.batch_size)
                half = len(prompts) // 2
                yield from self._generate(task, prompts[:half], seeds[:half], stats)
                yield from self._generate(task, prompts[half:], seeds[half:], stats)
            elif len(prompts) > 1:
                log.warning("batch of %d failed (%s); retrying one by one", len(prompts), exc)
                for p, s in zip(prompts, seeds, strict=True):
                    yield from self._generate(task, [p], [s], stats)
            else:
                log.warning("sample %s failed: %s", prompts[0].sample_id, exc)
                yield prompts[0], seeds[0], exc
            return
        stats.model_calls += 1
        throughput = stats.throughput
        throughput.model_s += elapsed
        throughput.n_samples += len(prompts)
        throughput.audio_s += sum(len(w) for p in prompts for w in p.waveforms) / 16_000
        throughput.new_tokens += sum(g.n_new_tokens for g in generations)
        yield from zip(prompts, seeds, generations, strict=True)

    def _call_model(self, prompts: list[Prompt], seeds: list[int]) -> list[Generation]:
        assert self.adapter is not None
        generations = list(self.adapter.generate(prompts, seeds))
        if len(generations) != len(prompts):
            raise RuntimeError(f"adapter returned {len(generations)} outputs for {len(prompts)} prompts")
        with_choices = [i for i, p in enumerate(prompts) if p.choices]
        if with_choices and getattr(self.adapter, "supports_choice_scoring", False):
            scores = self.adapter.score_choices([prompts[i] for i in with_choices])  # type: ignore[attr-defined]
            for i, logprobs in zip(with_choices, scores, strict=True):
                generations[i] = dataclasses.replace(generations[i], choice_logprobs=tuple(map(float, logprobs)))
        return generations

    def _write(self, task: Task, records: list[Record], stats: TaskRun) -> None:
        self.store.append(task.id, records)
        stats.records_written += len(records)

    def _progress_bar(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.options.show_progress,
        )


def check_unique_ids(task: Task, samples: Sequence[Sample]) -> None:
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise InputError(None, f"task {task.id}: sample id {s.id!r} occurs twice in the data",
                             "ids key resume and pairing; fix the manifest so every id is unique")
        seen.add(s.id)


def _meta(sample: Sample) -> dict:
    return {**dict(sample.meta), "duration_s": round(sample.duration_s, 3)}


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (OutOfMemory, MemoryError)):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()
