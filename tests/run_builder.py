"""Run folders as `wavllm-eval run` writes them, from fixed records (no audio, no model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from wavllm_eval.registry import make_task
from wavllm_eval.store import SampleStore
from wavllm_eval.types import Record


def write_run(out: Path, model: str, tasks: Mapping[str, Sequence[Record]], data_hash: str = "d" * 64) -> Path:
    """samples/<task>.jsonl, scores/<task>.json and results.json for each task's records."""
    store = SampleStore(out / model)
    entries = {}
    for task_id, records in tasks.items():
        store.append(task_id, records)
        scored = make_task(task_id).score(records)
        store.write_scores(task_id, scored.rows_json())
        entries[task_id] = scored.result.to_json()
    store.write_results({"model": {"id": model, "path": None, "config_hash": "0" * 16},
                         "tasks": entries,
                         "meta": {"seed": 1, "data_hashes": dict.fromkeys(tasks, data_hash), "git_sha": "abc123"}})
    return out / model
