"""The on-disk layout of a run (CONTRACT.md): append-only sample JSONL, atomic results.json.

    OUT/<model>/results.json
    OUT/<model>/samples/<task>.jsonl

A batch's records are appended, flushed and fsynced together, so a killed run loses at most the
batch in flight; a torn last line (killed mid-write) is cut off before the next append.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wavllm_eval.errors import InputError
from wavllm_eval.types import Record

RESULTS_FILE = "results.json"
SAMPLES_DIR = "samples"


class SampleStore:
    """Sample records and results of one model's run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def samples_path(self, task_id: str) -> Path:
        return self.run_dir / SAMPLES_DIR / f"{task_id}.jsonl"

    @property
    def results_path(self) -> Path:
        return self.run_dir / RESULTS_FILE

    def load(self, task_id: str) -> list[Record]:
        path = self.samples_path(task_id)
        return read_records(path) if path.exists() else []

    def done_ids(self, task_id: str) -> set[str]:
        return {r.id for r in self.load(task_id)}

    def append(self, task_id: str, records: Sequence[Record]) -> None:
        if not records:
            return
        path = self.samples_path(task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        payload = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
        with open(path, "a", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())

    def reset(self, task_id: str) -> None:
        """--no-resume: start the task's samples afresh."""
        self.samples_path(task_id).unlink(missing_ok=True)

    def read_results(self) -> dict[str, Any]:
        if not self.results_path.exists():
            return {}
        try:
            return json.loads(self.results_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(self.results_path, f"not valid JSON ({exc.msg}, line {exc.lineno})",
                             "delete it; `wavllm-eval run` rewrites it from the samples") from exc

    def write_results(self, results: dict[str, Any]) -> Path:
        write_json_atomic(self.results_path, results)
        return self.results_path


def read_records(path: Path) -> list[Record]:
    """Records of a samples JSONL. A torn last line (a run killed mid-write) is ignored; any other
    malformed line is an input error naming the line."""
    records: list[Record] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except FileNotFoundError as exc:
        raise InputError(path, "file not found", "check the path to the samples JSONL") from exc
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(Record.from_json(json.loads(line)))
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            if number - 1 == last:  # no trailing newline: an interrupted write
                break
            raise InputError(f"{path}:{number}", f"not a sample record ({exc})",
                             "each line must be a JSON object with id, prediction, reference, status") from exc
    return records


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cut_torn_tail(path: Path) -> None:
    """Truncate an unterminated last line, so the next append starts on a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline (lines are short; read the tail in chunks).
        position = size
        while position > 0:
            step = min(65536, position)
            position -= step
            f.seek(position)
            chunk = f.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(position + cut + 1)
                return
        f.truncate(0)

