"""Load run directories (OUT/<model>/results.json + samples/) for reports and the gate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wavllm_eval.errors import InputError
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.registry import make_task
from wavllm_eval.store import RESULTS_FILE, SampleStore, check_results_shape, parse_results_file
from wavllm_eval.types import Record


@dataclass(frozen=True)
class RunResult:
    """One results.json and where its samples live."""

    run_dir: Path
    results: Mapping[str, Any]
    label: str = ""  # the row name in reports: the model id, made unique across the runs compared

    @property
    def model_id(self) -> str:
        return str(self.results["model"]["id"])

    @property
    def tasks(self) -> Mapping[str, Mapping[str, Any]]:
        return self.results.get("tasks", {})

    def records(self, task_id: str) -> list[Record]:
        return SampleStore(self.run_dir).load(task_id)

    def headlines(self, task_id: str) -> list[str]:
        entry = self.tasks.get(task_id, {})
        return list(entry.get("headlines") or ([entry["headline"]] if entry.get("headline") else []))

    def scoring_version(self, task_id: str) -> str:
        return str(self.tasks.get(task_id, {}).get("settings", {}).get("scoring_version", ""))

    def sample_ids(self, task_id: str) -> set[str]:
        """Every sample id of the task's scored set (failed and skipped included)."""
        stored = SampleStore(self.run_dir).read_scores(task_id) or {}
        return set(stored.get("sample_ids") or [r.id for r in self.records(task_id)])

    def metrics(self, task_id: str) -> list[RowMetric]:
        """The task's metrics holding the rows that scoring stored for this run: reports and the gate
        compute from these, never by re-scoring, so they show the numbers results.json shows."""
        stored = SampleStore(self.run_dir).read_scores(task_id)
        if stored is None:
            raise InputError(SampleStore(self.run_dir).scores_path(task_id), "missing (a run scored before stored scores)",
                             f"re-score the run once: wavllm-eval score {self.run_dir}")
        return make_task(task_id).metrics_from_rows(stored)


def load_run(path: Path) -> RunResult:
    path = Path(path)
    results_path = path / RESULTS_FILE if path.is_dir() else path
    if not results_path.is_file():
        raise InputError(path, "no results.json here", "pass OUT/<model> folders written by `wavllm-eval run`")
    results = check_results_shape(parse_results_file(results_path, "re-run or re-score"), results_path)
    return RunResult(results_path.parent, results, str(results["model"]["id"]))


def load_runs(paths: Sequence[Path]) -> list[RunResult]:
    """Each path is a run folder (OUT/<model>) or an output folder holding several (OUT)."""
    runs: list[RunResult] = []
    for path in paths:
        path = Path(path)
        if path.is_dir() and not (path / RESULTS_FILE).is_file():
            found = sorted(path.glob(f"*/{RESULTS_FILE}"))
            if not found:
                raise InputError(path, "holds no results.json (nor OUT/<model>/results.json)",
                                 "pass the --output-dir of a run, or one of its model folders")
            runs.extend(load_run(p.parent) for p in found)
        else:
            runs.append(load_run(path))
    return distinct_labels(runs)


def distinct_labels(runs: Sequence[RunResult]) -> list[RunResult]:
    """Every run its own label: a shared model id gets its output folder's name, and runs still alike
    (main/runs/wavllm beside pr/runs/wavllm, or one folder given twice) a number."""
    labels = [r.label for r in runs]
    runs = [replace(r, label=f"{r.label} ({r.run_dir.parent.name})") if labels.count(r.label) > 1 else r
            for r in runs]
    seen: dict[str, int] = {}
    out = []
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        out.append(replace(run, label=f"{run.label} #{seen[run.label]}") if seen[run.label] > 1 else run)
    return out
