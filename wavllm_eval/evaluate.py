"""The one pipeline that the CLI, tests and notebooks share: load -> run -> score -> results.json."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from wavllm_eval import __version__
from wavllm_eval.adapter import ModelAdapter, model_config, set_fp32_precision
from wavllm_eval.distributed import Shard, ShardStore, merge_shards
from wavllm_eval.errors import InputError
from wavllm_eval.gc_pause import gc_paused
from wavllm_eval.registry import make_task, model_class
from wavllm_eval.runner import (
    Runner,
    RunOptions,
    TaskRun,
    batch_invariance,
    check_unique_ids,
    process_cuda_peak_mib,
)
from wavllm_eval.store import SampleStore, check_results_shape
from wavllm_eval.task import ScoredTask, Task
from wavllm_eval.types import Record, Sample

log = logging.getLogger(__name__)

RECORDED_PACKAGES = ("torch", "transformers", "peft", "numpy", "jiwer", "sacrebleu", "whisper-normalizer",
                     "soundfile", "soxr", "scikit-learn", "rouge-score", "bert-score", "pocketsphinx")


@dataclass(frozen=True)
class EvaluationRequest:
    task_ids: Sequence[str]
    model_id: str
    output_dir: Path
    data_dir: Path | None = None
    data_overrides: Mapping[str, Path] = field(default_factory=dict)
    model_path: Path | None = None
    options: RunOptions = RunOptions()
    # Tasks that came from a group (`--tasks asr`): one whose data is absent is skipped with a line,
    # while a task named explicitly must have its data.
    optional_task_ids: frozenset[str] = frozenset()
    judge: str | None = None


@dataclass(frozen=True)
class EvaluationOutcome:
    results_path: Path
    results: dict[str, Any]
    model_loaded: bool
    runs: Mapping[str, TaskRun]
    skipped_tasks: Mapping[str, str] = field(default_factory=dict)  # task id -> why it did not run


def evaluate(request: EvaluationRequest, adapter: ModelAdapter | None = None) -> EvaluationOutcome:
    """Run `request` end to end. The model is loaded only when some sample is still pending, so a
    finished run re-scores from its JSONL without touching the model. `adapter` injects a ready one."""
    started = _now()
    options = request.options
    shard = Shard.from_env()
    adapter_cls = type(adapter) if adapter is not None else model_class(request.model_id)
    load_options = options.load_options()
    config = {**model_config(adapter_cls, request.model_id, request.model_path, load_options), "seed": options.seed}
    config_hash = _hash_json(config)[:16]
    run_dir = request.output_dir / request.model_id
    store: SampleStore = ShardStore(run_dir, shard) if shard.active else SampleStore(run_dir)
    store.check_writable()
    if shard.active:
        load_options = dataclasses.replace(load_options, device=shard.device(load_options.device))
    with store.lock():
        previous = store.read_results()
        if not options.resume and previous.get("model", {}).get("config_hash") not in (None, config_hash):
            if shard.is_main:
                log.info("new configuration under --no-resume: clearing %s", store.run_dir)
                store.reset_all()
            previous = {}
        _check_same_model(store, previous, config_hash, options.resume)

        tasks, paths, samples, skipped = _load_tasks(request)
        mine = {task.id: shard.select(samples[task.id]) for task in tasks}  # all of them in one process
        runner = Runner(None, store, options)  # plans what is pending; the adapter joins once it is loaded
        pending = {task.id: len(runner.pending(task, mine[task.id])) if options.resume else len(mine[task.id])
                   for task in tasks}
        model_loaded = False
        if (any(pending.values()) or options.check_batch_invariance) and adapter is None:
            missing = adapter_cls.missing_files(request.model_path) if hasattr(adapter_cls, "missing_files") else []
            if missing:
                raise InputError(request.model_path or "--model-path",
                                 f"{request.model_id} needs {', '.join(missing)}",
                                 f"pass --model-path DIR holding {', '.join(adapter_cls.required_files)}")
            log.info("loading model %s", request.model_id)
            adapter = adapter_cls.load(request.model_path, load_options)  # type: ignore[attr-defined]
            if "torch" in sys.modules:  # before any model call; a model without torch never imports it
                set_fp32_precision(load_options.tf32)
            model_loaded = True
        runner.adopt(adapter)
        judge = _load_judge(request.judge, store) if request.judge else None

        runs: dict[str, TaskRun] = {}
        task_entries: dict[str, Any] = dict(previous.get("tasks", {}))
        for task in tasks:
            log.info("%s: %d samples, %d to run%s", task.id, len(samples[task.id]), pending[task.id],
                     f" on rank {shard.rank} of {shard.world_size}" if shard.active else "")
            runs[task.id] = runner.run(task, mine[task.id])
        if shard.active:
            shard.barrier()  # every rank's shard is complete
            if not shard.is_main:
                shard.close()
                return EvaluationOutcome(store.results_path, {}, model_loaded, runs, skipped)
            for task in tasks:
                merge_shards(run_dir, task.id, shard.world_size)
            store = SampleStore(run_dir)
        hashes = {t.id: data_hash(samples[t.id]) for t in tasks}
        for task in tasks:
            if judge is not None:
                task.judge = judge
            elif (runs[task.id].records_written == 0 and not options.check_batch_invariance
                  and _stored_entry_is_current(store, task, previous, samples[task.id], hashes[task.id])):
                continue  # a finished task, unchanged: its stored results stand (no re-scoring)
            scored = score_task(task, store.load(task.id), [s.id for s in samples[task.id]])
            store.write_scores(task.id, scored.rows_json())
            entry = scored.result.to_json()
            if options.check_batch_invariance and adapter is not None:
                entry["batch_invariance"] = batch_invariance(adapter, task, samples[task.id], store.load(task.id),
                                                             options.seed, options.check_batch_invariance)
            if runs[task.id].model_calls:
                entry["throughput"] = runs[task.id].throughput_json(runner.device_name())
            elif "throughput" in task_entries.get(task.id, {}):
                entry["throughput"] = task_entries[task.id]["throughput"]
            task_entries[task.id] = entry

        describe = dict(adapter.describe()) if adapter is not None else previous.get("model", {}).get("details", {})
        old_meta = previous.get("meta", {})
        results = {
            "model": {"id": request.model_id, "path": config["path"], "config_hash": config_hash,
                      "config": config, "details": describe},
            "tasks": task_entries,
            "meta": {
                "started": started,
                "finished": _now(),
                "harness_version": __version__,
                "versions": package_versions(),
                "git_sha": harness_git_sha(),
                "data_hashes": {**old_meta.get("data_hashes", {}), **hashes},
                "data_paths": {**old_meta.get("data_paths", {}), **{t.id: str(paths[t.id]) for t in tasks}},
                "seed": options.seed,
                "world_size": shard.world_size,
                "options": {"batch_size": options.batch_size or "auto", "batch_audio_s": options.batch_audio_s,
                            "limit": options.limit, "device": options.device, "dtype": options.dtype,
                            "resume": options.resume, "max_new_tokens": options.max_new_tokens,
                            "attn": options.attn, "tf32": options.tf32,
                            "batch_size_used": {t: r.batch_size for t, r in runs.items() if r.model_calls}},
                "skipped_tasks": dict(skipped),
                "hardware": hardware(),
                "peak_memory": peak_memory(),
                "command": " ".join(sys.argv),
            },
        }
        path = store.write_results(results)
    shard.close()
    return EvaluationOutcome(path, results, model_loaded, runs, skipped)


def score_task(task: Task, records: Sequence[Record], sample_ids: Sequence[str]) -> ScoredTask:
    """Score the records of this run's sample set (a `--limit` run scores only its samples)."""
    wanted = set(sample_ids)
    by_id = {r.id: r for r in records if r.id in wanted}
    missing = wanted - set(by_id)
    if missing:
        raise RuntimeError(f"{task.id}: {len(missing)} samples have no record after the run")
    return task.score([by_id[i] for i in sample_ids])


def _stored_entry_is_current(store: SampleStore, task: Task, previous: Mapping[str, Any],
                             samples: Sequence[Sample], current_hash: str) -> bool:
    """True when results.json already holds this task scored by the installed scorer over exactly
    these samples (resuming a finished run then costs no scoring at all)."""
    entry = previous.get("tasks", {}).get(task.id)
    if not entry or entry.get("settings", {}).get("scoring_version") != task.scoring_version():
        return False
    stored = store.read_scores(task.id)
    if stored is None or stored.get("scoring_version") != task.scoring_version():
        return False
    if previous.get("meta", {}).get("data_hashes", {}).get(task.id) != current_hash:
        return False
    return set(stored.get("sample_ids", ())) == {s.id for s in samples}


# results.json entries that `run` measures beside the scores: re-scoring keeps them
RUN_MEASUREMENTS = ("throughput", "batch_invariance")


def rescore_run(run_dir: Path, judge: str | None = None) -> dict[str, Any]:
    """`wavllm-eval score RUN_DIR`: re-score every task of a run in place from its samples (results.json
    entries and the stored rows together), over the samples the run scored (a `--limit` run stays
    limited), keeping what the run measured (throughput, batch invariance) and its metadata. A task
    scored with `--judge` needs the judge again (its cached verdicts are reused)."""
    store = SampleStore(run_dir)
    results = store.read_results()
    if not results:
        raise InputError(run_dir, "holds no results.json", "pass an OUT/<model> folder written by `wavllm-eval run`")
    tasks = check_results_shape(results, store.results_path)["tasks"]
    judged = [t for t, e in tasks.items() if "judge" in e.get("settings", {})]
    if judged and judge is None:
        raise InputError(store.results_path, f"{', '.join(judged)} was scored with --judge",
                         "re-score with `wavllm-eval score RUN_DIR --judge PATH` (the cached verdicts are reused)")
    model_judge = _load_judge(judge, store) if judge else None
    with store.lock():
        for task_id, entry in list(tasks.items()):
            task = make_task(task_id)
            if model_judge is not None:
                task.judge = model_judge
            records = store.load(task_id)
            if not records:
                raise InputError(store.samples_path(task_id), "missing or empty", "re-run the task")
            scored_ids = (store.read_scores(task_id) or {}).get("sample_ids")
            if scored_ids is not None:  # the run's own set: what its results.json counted
                wanted = set(scored_ids)
                records = [r for r in records if r.id in wanted]
            scored = task.score(records)
            store.write_scores(task_id, scored.rows_json())
            fresh = scored.result.to_json()
            fresh.update({key: entry[key] for key in RUN_MEASUREMENTS if key in entry})
            tasks[task_id] = fresh
        results.setdefault("meta", {})["rescored"] = {"at": _now(), "harness_version": __version__,
                                                      "versions": package_versions()}
        store.write_results(results)
    return results


def _load_tasks(request: EvaluationRequest) -> tuple[list[Task], dict[str, Path], dict[str, list[Sample]], dict[str, str]]:
    tasks: list[Task] = []
    paths: dict[str, Path] = {}
    samples: dict[str, list[Sample]] = {}
    skipped: dict[str, str] = {}
    for task_id in request.task_ids:
        task = make_task(task_id)
        path = _data_path(task, request)
        if not path.exists() and task.id in request.optional_task_ids:
            skipped[task.id] = f"no data at {path}"
            log.debug("%s: skipped, its data is not at %s", task.id, path)
            continue
        tasks.append(task)
        paths[task.id] = path
        samples[task.id] = _load_samples(task, path, request.options.limit)
    if not tasks:
        raise InputError(request.data_dir, "none of the requested tasks has its data here ("
                         + "; ".join(f"{t}: {why}" for t, why in skipped.items()) + ")",
                         "unpack the datasets under --data-dir in their released layout, or pass --data TASK=PATH")
    return tasks, paths, samples, skipped


def _load_judge(spec: str, store: SampleStore):
    from wavllm_eval.judge import load_judge

    return load_judge(spec, cache_dir=store.run_dir / "judge-cache")


def _data_path(task: Task, request: EvaluationRequest) -> Path:
    for key in (task.id, task.base_id):
        if key in request.data_overrides:
            return Path(request.data_overrides[key])
    if request.data_dir is None:
        raise InputError(None, f"no data for task {task.id}", f"pass --data-dir DATA or --data {task.base_id}=PATH")
    return task.default_data_path(Path(request.data_dir))


def _load_samples(task: Task, path: Path, limit: int | None) -> list[Sample]:
    if not path.exists():
        raise InputError(path, f"data for {task.id} not found",
                         f"unpack the dataset under --data-dir in its released layout, or pass --data {task.base_id}=PATH")
    with gc_paused():  # ~10^6 acyclic objects for a big corpus (see wavllm_eval/gc_pause.py)
        samples = list(task.load(path))
    check_unique_ids(task, samples, path)
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise InputError(path, f"no samples for {task.id}", "check that the folder holds the released files")
    return samples


def _check_same_model(store: SampleStore, previous: Mapping[str, Any], config_hash: str, resume: bool) -> None:
    old = previous.get("model", {}).get("config_hash")
    if resume and old and old != config_hash:
        old_seed = previous.get("meta", {}).get("seed")
        raise InputError(store.results_path,
                         f"holds samples from another configuration (model, path, dtype, decoding, generation cap "
                         f"or seed; config_hash {old}, now {config_hash}; its seed was {old_seed})",
                         "use a new --output-dir, or --no-resume to start this folder afresh")


def data_hash(samples: Sequence[Sample]) -> str:
    """sha256 over (id, reference, audio file names and sizes): the test set's identity, not its path."""
    digest = hashlib.sha256()
    sizes: dict[Path, int] = {}
    for s in sorted(samples, key=lambda x: x.id):
        for ref in s.audio:
            if ref.path not in sizes:
                sizes[ref.path] = _size(ref.path)
        audio = ",".join(f"{ref.path.name}:{sizes[ref.path]}:{ref.offset_s}:{ref.duration_s}" for ref in s.audio)
        digest.update(f"{s.id}\t{s.reference}\t{audio}\n".encode())
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "wavllm-eval": __version__}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def harness_git_sha() -> str | None:
    """The harness checkout's commit (with `+dirty`), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        # --no-optional-locks: `status` would otherwise refresh the index and take .git/index.lock,
        # writing into the harness's own checkout (and racing a developer's git commands).
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=5,
                               env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def hardware() -> dict[str, Any]:
    """Where the numbers were computed. The CPU model and torch's intra-op thread count are here
    because they choose the matmul kernels, whose rounding decides an output at a float near-tie."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count()}
    cpu = cpu_model()
    if cpu:
        info["cpu"] = cpu
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def peak_memory() -> dict[str, float]:
    """The whole process's peaks (meta): ru_maxrss is never reset; the CUDA counters are, at each
    task's model phase (runner.reset_peak_memory), so the CUDA figure adds back what they cleared."""
    out = {"rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    gpu = process_cuda_peak_mib()
    if gpu is not None:
        out["gpu_mib"] = gpu
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _hash_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
