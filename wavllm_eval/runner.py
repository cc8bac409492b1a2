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
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from wavllm_eval.adapter import LoadOptions, ModelAdapter, OutOfMemory
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
    max_new_tokens: int | None = None  # cap on generated tokens (quick looks; tests' tiny models)
    check_batch_invariance: int = 0  # rerun this many samples per task at batch size 1 and compare
    attn: str = "auto"  # attention kernel (LoadOptions.attn)
    tf32: bool = False  # TF32 matmuls/convolutions on CUDA (LoadOptions.tf32)
    show_progress: bool = True

    def load_options(self) -> LoadOptions:
        return LoadOptions(device=self.device, dtype=self.dtype, max_new_tokens=self.max_new_tokens, attn=self.attn,
                           tf32=self.tf32)


@dataclass
class Throughput:
    """Model-side efficiency of one run of one task (what this invocation computed)."""

    n_samples: int = 0
    audio_s: float = 0.0
    model_s: float = 0.0
    new_tokens: int = 0
    first_token_s: list[float] = field(default_factory=list)  # per model call, where the adapter measures it

    def to_json(self) -> dict[str, float]:
        ttft = {"ttft_s_mean": round(float(np.mean(self.first_token_s)), 4), "ttft_calls": len(self.first_token_s)
                } if self.first_token_s else {}
        return {**ttft,
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
    batch_size: int = 0  # the batch size in force at the end (after any out-of-memory back-off)
    oom_backoffs: int = 0
    wall_s: float = 0.0
    redone: int = 0  # stored samples whose input changed since they were written, run again
    peak_memory: dict[str, float] = field(default_factory=dict)  # at the end of the model phase

    def throughput_json(self, device: str) -> dict[str, Any]:
        """The efficiency protocol of results.json: model-side and wall-clock RTFx, tokens/s, the
        batch size actually used after any OOM back-off, the device, peak memory."""
        out: dict[str, Any] = self.throughput.to_json()
        out["wall_s"] = round(self.wall_s, 3)
        out["rtfx_wall"] = round(self.throughput.audio_s / self.wall_s, 3) if self.wall_s > 0 else 0.0
        out["batch_size_used"] = self.batch_size
        out["oom_backoffs"] = self.oom_backoffs
        out["device"] = device
        out["peak_memory"] = self.peak_memory or peak_memory_now()
        return out


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
        default = adapter.default_batch_size if adapter is not None else 1
        self.batch_size = max(1, options.batch_size or default)
        self.audio_budget_s = options.batch_audio_s or (AUTO_BATCH_AUDIO_S if options.batch_size is None else None)
        self._planned: dict[str, tuple[list[Sample], set[str]]] = {}  # task -> (pending, re-run ids)

    def pending(self, task: Task, samples: Sequence[Sample]) -> list[Sample]:
        """Samples with no stored record, or whose stored record was made from another input (the
        reference, instruction or audio file changed since): exactly those are run again. Remembered
        per task, so `run` right after it does not read the JSONL again."""
        check_unique_ids(task, samples)
        if not self.options.resume:
            return list(samples)
        stored = {r.id: r.meta.get("input") for r in self.store.load(task.id)}
        sizes: dict = {}  # one stat per audio file (a VoxCeleb clip serves many trials)
        todo = [s for s in samples if s.id not in stored or stored[s.id] != input_signature(task, s, sizes)]
        self._planned[task.id] = (todo, {s.id for s in todo if s.id in stored})
        return todo

    def adopt(self, adapter: ModelAdapter | None) -> None:
        """The model that runs the planned samples (loaded only once something is pending)."""
        self.adapter = adapter
        if adapter is not None and self.options.batch_size is None:
            self.batch_size = max(1, adapter.default_batch_size)

    def device_name(self) -> str:
        describe = self.adapter.describe() if self.adapter is not None else {}
        return str(describe.get("device_name") or describe.get("device") or "cpu")

    def run(self, task: Task, samples: Iterable[Sample]) -> TaskRun:
        wall_started = time.perf_counter()
        samples = list(samples)
        if not self.options.resume:
            self.store.reset(task.id)
        if task.id not in self._planned:
            self.pending(task, samples)
        todo, redone = self._planned.pop(task.id, (list(samples), set()))
        stats = TaskRun()
        stats.redone = len(redone)
        if stats.redone:
            log.warning("%s: %d stored samples changed since they were written (reference, instruction or audio); "
                        "running them again", task.id, stats.redone)
        if not todo:
            return stats
        if self.adapter is None:
            raise RuntimeError("pending samples but no model adapter loaded")
        too_long, runnable = self._split_too_long(task, todo)
        if too_long:
            self._write(task, too_long, stats)
        audio_done_s, started = 0.0, time.perf_counter()
        reset_peak_memory()  # the recorded peak is this task's model phase, not what ran or scores around it
        prefetcher = AudioPrefetcher(self._needs_audio(), prepare=getattr(self.adapter, "prepare_audio", None))
        with self._progress_bar() as progress, prefetcher as prefetch:
            bar = progress.add_task(task.id, total=len(todo), completed=len(too_long), rate="")
            batches = duration_batches(runnable, self.batch_size, self.audio_budget_s)
            if batches:
                prefetch.submit(batches[0])
            while batches:
                batch = batches.pop(0)
                if batches:  # decode the next batch's audio while the model works on this one
                    prefetch.submit(batches[0])
                planned_size = self.batch_size
                records = self._run_batch(task, batch, stats, prefetch)
                self._write(task, records, stats)
                if self.batch_size < planned_size and batches:
                    # An out-of-memory back-off holds for the rest of the task: re-plan what is left.
                    rest = [s for b in batches for s in b]
                    batches = duration_batches(rest, self.batch_size, self.audio_budget_s)
                audio_done_s += sum(s.duration_s for s in batch)
                elapsed = max(time.perf_counter() - started, 1e-9)
                done = progress.tasks[bar].completed + len(batch) - len(too_long)
                rate = f"{done / elapsed:.2f} samples/s · {audio_done_s / elapsed:.1f} audio-s/s"
                progress.update(bar, advance=len(batch), rate=rate)
        stats.batch_size = self.batch_size
        stats.peak_memory = peak_memory_now()
        stats.wall_s = time.perf_counter() - wall_started
        return stats

    # --- internals --------------------------------------------------------------------------
    def _split_too_long(self, task: Task, samples: list[Sample]) -> tuple[list[Record], list[Sample]]:
        """A sample whose clip exceeds the model's per-clip limit is `skipped` with the reason (the
        limit is per clip: a verification trial of two 20 s clips fits a 30 s model)."""
        limit = self.adapter.max_audio_s if self.adapter is not None else None
        if limit is None:
            return [], samples
        skipped, keep = [], []
        for s in samples:
            longest = max(s.clip_durations, default=0.0)
            if longest > limit:
                reason = f"audio clip of {longest:.2f} s is longer than the model's per-clip limit of {limit:g} s"
                skipped.append(Record(s.id, "", s.reference, "skipped", reason, meta=_meta(task, s), task=task.id))
            else:
                keep.append(s)
        return skipped, keep

    def _needs_audio(self) -> bool:
        return bool(getattr(self.adapter, "needs_audio", True))

    def _run_batch(self, task: Task, batch: list[Sample], stats: TaskRun, prefetch: AudioPrefetcher) -> list[Record]:
        records: dict[str, Record] = {}
        prompts: list[Prompt] = []
        by_id: dict[str, Sample] = {}
        for sample in batch:
            decoded = prefetch.result(sample)
            if isinstance(decoded, AudioReadError):
                records[sample.id] = Record(sample.id, "", sample.reference, "failed", str(decoded),
                                            meta=_meta(task, sample), task=task.id)
                continue
            prompt = dataclasses.replace(task.build_prompt(sample), waveforms=decoded.waveforms,
                                         prepared=decoded.prepared)
            prompts.append(prompt)
            by_id[sample.id] = sample
        seeds = [sample_seed(self.options.seed, task.id, p.sample_id) for p in prompts]
        durations = {p.sample_id: by_id[p.sample_id].duration_s for p in prompts}
        for prompt, seed, outcome in self._generate(task, prompts, seeds, stats, durations):
            sample = by_id[prompt.sample_id]
            meta = {**_meta(task, sample), "seed": seed}
            if isinstance(outcome, Exception):
                records[sample.id] = Record(sample.id, "", sample.reference, "failed",
                                            f"{type(outcome).__name__}: {outcome}", meta=meta, task=task.id)
            else:
                meta["n_new_tokens"] = outcome.n_new_tokens
                records[sample.id] = Record(sample.id, outcome.text, sample.reference, "ok",
                                            choice_logprobs=outcome.choice_logprobs, meta=meta, task=task.id)
        return [records[s.id] for s in batch]

    def _generate(self, task: Task, prompts: list[Prompt], seeds: list[int], stats: TaskRun,
                  durations: dict[str, float]):
        """Yield (prompt, seed, Generation | Exception); halves the batch on OOM, isolates failures."""
        if not prompts:
            return
        try:
            started = time.perf_counter()
            generations = self._call_model(prompts, seeds)
            elapsed = time.perf_counter() - started
        except Exception as exc:
            if _is_oom(exc) and len(prompts) > 1:
                self.batch_size = max(1, min(self.batch_size, len(prompts) // 2))
                if self.audio_budget_s is not None:  # a batch closed by the audio budget shrinks too
                    failing_audio_s = sum(durations[p.sample_id] for p in prompts)
                    self.audio_budget_s = min(self.audio_budget_s, failing_audio_s / 2)
                stats.oom_backoffs += 1
                log.warning("out of memory with %d samples; batch size now %d", len(prompts), self.batch_size)
                half = len(prompts) // 2
                yield from self._generate(task, prompts[:half], seeds[:half], stats, durations)
                yield from self._generate(task, prompts[half:], seeds[half:], stats, durations)
            elif len(prompts) > 1:
                log.warning("batch of %d failed (%s); retrying one by one", len(prompts), exc)
                for p, s in zip(prompts, seeds, strict=True):
                    yield from self._generate(task, [p], [s], stats, durations)
            else:
                log.warning("sample %s failed: %s", prompts[0].sample_id, exc)
                yield prompts[0], seeds[0], exc
            return
        stats.model_calls += 1
        throughput = stats.throughput
        throughput.model_s += elapsed
        throughput.n_samples += len(prompts)
        throughput.audio_s += sum(durations[p.sample_id] for p in prompts)
        throughput.new_tokens += sum(g.n_new_tokens for g in generations)
        first = [g.first_token_s for g in generations if g.first_token_s is not None]
        if first:
            throughput.first_token_s.append(min(first))
        yield from zip(prompts, seeds, generations, strict=True)

    def _call_model(self, prompts: list[Prompt], seeds: list[int]) -> list[Generation]:
        assert self.adapter is not None
        generations = list(self.adapter.generate(prompts, seeds))
        if len(generations) != len(prompts):
            raise RuntimeError(f"adapter returned {len(generations)} outputs for {len(prompts)} prompts")
        with_choices = [i for i, p in enumerate(prompts) if p.choices]
        if with_choices and self.adapter.supports_choice_scoring:
            scores = self.adapter.score_choices([prompts[i] for i in with_choices])
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


@dataclass(frozen=True)
class DecodedAudio:
    waveforms: tuple[np.ndarray, ...] = ()
    prepared: Any = None  # the adapter's prepare_audio result, or None


class AudioPrefetcher:
    """Decodes (and resamples) the next batch's clips in background threads while the model runs,
    and computes what the adapter's `prepare_audio` derives from them (WavLLM: log-mel and WavLM
    inputs), so the model thread never waits for I/O or feature extraction; soundfile, soxr and
    torch release the GIL while they work. A sample whose audio cannot be read yields its
    AudioReadError, which the runner records as `failed`."""

    def __init__(self, enabled: bool = True, workers: int = 2,
                 prepare: Callable[[Prompt], Any] | None = None) -> None:
        self.enabled = enabled
        self.workers = workers
        self.prepare = prepare
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[int, Future] = {}

    def __enter__(self) -> AudioPrefetcher:
        if self.enabled:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="audio")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True)

    def submit(self, batch: Sequence[Sample]) -> None:
        if self._pool is None:
            return
        for sample in batch:
            if id(sample) not in self._pending:
                self._pending[id(sample)] = self._pool.submit(_decode, sample, self.prepare)

    def result(self, sample: Sample) -> DecodedAudio | AudioReadError:
        if not self.enabled:
            return DecodedAudio()
        future = self._pending.pop(id(sample), None)
        return future.result() if future is not None else _decode(sample, self.prepare)


def _decode(sample: Sample, prepare: Callable[[Prompt], Any] | None = None) -> DecodedAudio | AudioReadError:
    try:
        waveforms = tuple(load_audio(ref) for ref in sample.audio)
    except AudioReadError as exc:
        return exc
    prepared = None
    if prepare is not None:
        try:
            prepared = prepare(Prompt(sample.id, "", sample.audio, waveforms=waveforms))
        except Exception:  # noqa: BLE001 - the adapter computes it again in generate, where errors are recorded
            log.debug("prepare_audio failed for %s; computed again in the model thread", sample.id, exc_info=True)
    return DecodedAudio(waveforms, prepared)


def batch_invariance(adapter: ModelAdapter, task: Task, samples: Sequence[Sample], records: Sequence[Record],
                     run_seed: int, k: int) -> dict[str, Any]:
    """Rerun up to `k` scored samples (the first by id) alone, at batch size 1, and report every output
    that differs from the stored (batched) one: a guard that scores do not depend on batching.

    Each difference says where the two outputs part (`first_difference`, a character index). Outputs
    that part late, after a shared prefix, are what float rounding does: a batched matmul rounds
    differently from a batch of one (~1e-6 of a logit in fp32), which moves a decision that sat
    within that distance of a tie. Outputs that differ from the first character point at the batching
    itself (padding, masks, a prompt built differently)."""
    stored = {r.id: r for r in records if r.status == "ok"}
    chosen = sorted((s for s in samples if s.id in stored), key=lambda s: s.id)[:k]
    differing = []
    for sample in chosen:
        decoded = _decode(sample) if getattr(adapter, "needs_audio", True) else DecodedAudio()
        if isinstance(decoded, AudioReadError):
            continue
        prompt = dataclasses.replace(task.build_prompt(sample), waveforms=decoded.waveforms)
        [alone] = adapter.generate([prompt], [sample_seed(run_seed, task.id, sample.id)])
        if alone.text != stored[sample.id].prediction:
            batched = stored[sample.id].prediction
            differing.append({"id": sample.id, "batched": batched, "alone": alone.text,
                              "first_difference": common_prefix_length(batched, alone.text)})
    if differing:
        log.warning("%s: %d of %d outputs differ between the batched run and batch size 1 (first differing "
                    "character: %s; after a shared prefix most likely a float near-tie, many at 0 a batching fault)", task.id,
                    len(differing), len(chosen), ", ".join(str(d["first_difference"]) for d in differing))
    return {"checked": len(chosen), "n_differing": len(differing), "differing": differing}


def common_prefix_length(a: str, b: str) -> int:
    """Characters `a` and `b` share from the start."""
    return len(os.path.commonprefix([a, b]))


def check_unique_ids(task: Task, samples: Sequence[Sample], source: object = None) -> None:
    """Ids key resume and pairing: a duplicate is an input error naming the data file."""
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise InputError(source, f"task {task.id}: sample id {s.id!r} occurs twice in the data",
                             "ids key resume and pairing; fix the manifest so every id is unique")
        seen.add(s.id)


def _meta(task: Task, sample: Sample) -> dict:
    return {**dict(sample.meta), "duration_s": round(sample.duration_s, 3), "input": input_signature(task, sample)}


def input_signature(task: Task, sample: Sample, sizes: dict | None = None) -> str:
    """What a record was computed from: reference, instruction, choices and each clip's file name,
    size and segment. Resume trusts a stored record only while this is unchanged. `sizes` memoises
    file sizes within one call site."""
    prompt = task.build_prompt(sample)
    sizes = {} if sizes is None else sizes
    for ref in sample.audio:
        if ref.path not in sizes:
            sizes[ref.path] = _file_size(ref.path)
    audio = [f"{ref.path.name}:{sizes[ref.path]}:{ref.offset_s}:{ref.duration_s}" for ref in sample.audio]
    text = "\x1f".join([sample.reference, prompt.text, "\x1e".join(prompt.choices), *audio])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _file_size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _torch_on_cuda() -> Any:
    """torch when this process has imported it and started CUDA, else None (never imports torch)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch
    return None


_CUDA_PEAK_BEFORE_RESETS = {"allocated": 0}  # what reset_peak_memory cleared, for process_cuda_peak_mib


def reset_peak_memory() -> None:
    """Start a new peak: CUDA's peak counters, and on Linux the process's high-water RSS mark
    (`5` written to /proc/self/clear_refs resets VmHWM); elsewhere the RSS peak stays the process's.
    The CUDA peak being cleared is kept for `process_cuda_peak_mib`."""
    torch = _torch_on_cuda()
    if torch is not None:
        _CUDA_PEAK_BEFORE_RESETS["allocated"] = max(_CUDA_PEAK_BEFORE_RESETS["allocated"],
                                                    torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def process_cuda_peak_mib() -> float | None:
    """The process's CUDA allocation peak over its whole life, per-task resets included (None: torch
    not imported, or no CUDA device)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return round(max(_CUDA_PEAK_BEFORE_RESETS["allocated"], torch.cuda.max_memory_allocated()) / 2**20, 1)


def peak_memory_now() -> dict[str, float]:
    """Peak memory since the last reset_peak_memory: CUDA allocated/reserved when a GPU is in use,
    and the process's high-water RSS."""
    out: dict[str, float] = {"rss_mib": _peak_rss_mib()}
    torch = _torch_on_cuda()
    if torch is not None:
        out["cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["cuda_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (OutOfMemory, MemoryError)):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()
