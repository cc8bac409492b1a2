"""The on-disk layout of a run (CONTRACT.md): append-only sample JSONL, atomic results.json.

    OUT/<model>/results.json
    OUT/<model>/samples/<task>.jsonl
    OUT/<model>/scores/<task>.json      # what scoring produced per sample: the rows behind each metric

A batch's records are appended, flushed and fsynced together, so a killed run loses at most the
batch in flight; a torn last line (killed mid-write) is cut off before the next append.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from wavllm_eval.errors import InputError
from wavllm_eval.gc_pause import gc_paused
from wavllm_eval.types import Record

RESULTS_FILE = "results.json"
SAMPLES_DIR = "samples"
SCORES_DIR = "scores"
LOCK_FILE = ".lock"


class SampleStore:
    """Sample records and results of one model's run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def samples_path(self, task_id: str) -> Path:
        return self.run_dir / SAMPLES_DIR / f"{task_id}.jsonl"

    @property
    def lock_name(self) -> str:
        return LOCK_FILE

    def scores_path(self, task_id: str) -> Path:
        return self.run_dir / SCORES_DIR / f"{task_id}.json"

    def write_scores(self, task_id: str, rows: dict[str, Any]) -> None:
        write_json_atomic(self.scores_path(task_id), rows, indent=None)

    def read_scores(self, task_id: str) -> dict[str, Any] | None:
        """The stored per-sample rows of a task, or None when the run predates stored scores."""
        path = self.scores_path(task_id)
        if not path.is_file():
            return None
        try:
            with gc_paused():
                data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
            raise InputError(path, f"not valid JSON ({_short(exc)})", f"re-score the run: wavllm-eval score {self.run_dir}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            raise InputError(path, "not a scores file", f"re-score the run: wavllm-eval score {self.run_dir}")
        return data

    def task_ids_on_disk(self) -> list[str]:
        folder = self.run_dir / SAMPLES_DIR
        return sorted(p.name.removesuffix(".jsonl") for p in folder.glob("*.jsonl")) if folder.is_dir() else []

    @property
    def results_path(self) -> Path:
        return self.run_dir / RESULTS_FILE

    def load(self, task_id: str) -> list[Record]:
        path = self.samples_path(task_id)
        if not path.exists():
            return []
        with gc_paused():  # acyclic records by the hundred thousand (see wavllm_eval/gc_pause.py)
            return read_records(path)

    def done_ids(self, task_id: str) -> set[str]:
        return {r.id for r in self.load(task_id)}

    def append(self, task_id: str, records: Sequence[Record]) -> None:
        """Append a batch's lines and fsync. On a full disk the partial write is cut off again, so
        the JSONL stays intact and the run resumes once space is freed."""
        if not records:
            return
        path = self.samples_path(task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(path)
        payload = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        size = path.stat().st_size if path.exists() else 0
        try:
            with open(path, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.truncate(path, size)
            raise _disk_error(path, exc) from exc

    def check_writable(self) -> None:
        """Fail before any model loads when the output folder cannot take files."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.run_dir, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise _disk_error(self.run_dir, exc) from exc

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per run folder: a second `run` on it stops at once, naming the first one's pid.
        The lock is an flock, so the kernel releases it however the holder exits (even SIGKILL)."""
        import fcntl

        self.check_writable()
        path = self.run_dir / self.lock_name
        try:  # never through a link: a planted .lock -> elsewhere would have that file truncated
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            if path.is_symlink():
                raise InputError(path, "is a symbolic link, not this run's lock file",
                                 "delete it (the run folder may come from elsewhere), then run again") from exc
            raise _disk_error(self.run_dir, exc) from exc
        handle = os.fdopen(fd, "a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise InputError(self.run_dir, f"is in use by a running `wavllm-eval run` (pid {holder})",
                                 "wait for it to finish, or use another --output-dir") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.close()

    def reset(self, task_id: str) -> None:
        """--no-resume: start the task's samples afresh."""
        self.samples_path(task_id).unlink(missing_ok=True)
        self.scores_path(task_id).unlink(missing_ok=True)

    def reset_all(self) -> None:
        """A new configuration under --no-resume: no sample of the old one may survive in this folder."""
        for task_id in self.task_ids_on_disk():
            self.reset(task_id)
        for path in (self.run_dir / SCORES_DIR).glob("*.json") if (self.run_dir / SCORES_DIR).is_dir() else ():
            path.unlink(missing_ok=True)
        self.results_path.unlink(missing_ok=True)

    def read_results(self) -> dict[str, Any]:
        if not self.results_path.exists():
            return {}
        fix = "delete it; `wavllm-eval run` rewrites it from the samples"
        data = parse_results_file(self.results_path, fix)
        if not isinstance(data, dict) or not isinstance(data.get("tasks", {}), dict):
            raise InputError(self.results_path, f"holds JSON {type(data).__name__}, not a results object", fix)
        return data

    def write_results(self, results: dict[str, Any]) -> Path:
        write_json_atomic(self.results_path, results)
        return self.results_path


def read_records(path: Path) -> list[Record]:
    """Records of a samples JSONL, decoded line by line. A torn last line (a run killed mid-write,
    possibly inside a multi-byte character) is ignored; any other malformed line is an input error
    naming the line."""
    records: list[Record] = []
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise InputError(path, "file not found", "check the path to the samples JSONL") from exc
    except IsADirectoryError as exc:
        raise InputError(path, "is a folder, not a samples JSONL", "point at samples/<task>.jsonl") from exc
    lines = data.split(b"\n")
    last = len(lines) - 1  # after the final newline: empty, or a torn write
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            records.append(Record.from_json(json.loads(raw.decode("utf-8"))))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, TypeError, AttributeError,
                RecursionError) as exc:
            if number - 1 == last:  # no trailing newline: an interrupted write
                break
            raise InputError(f"{path}:{number}", f"not a sample record ({_short(exc)})",
                             "each line must be a JSON object with id, prediction, reference, status; "
                             "delete the line to re-run that sample") from exc
    return records


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 120 else text[:117] + "..."


def write_json_atomic(path: Path, data: Any, indent: int | None = 2) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file.
    The file gets the mode any other output gets under the user's umask (mkstemp would leave 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=indent, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _disk_error(path, exc) from exc
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



def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _disk_error(path: Path, exc: OSError) -> InputError:
    if exc.errno == errno.ENOSPC:
        return InputError(path, "no space left on the device; the samples written so far are intact",
                          "free some space and run the same command again: it resumes")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(path, f"cannot write here ({exc.strerror})", "choose a writable --output-dir")
    return InputError(path, f"cannot write ({exc.strerror or exc})", "check the --output-dir")


def parse_results_file(path: Path, fix: str) -> Any:
    """A results.json's JSON, or one input error naming the file: not JSON, not UTF-8, or nested past
    the recursion limit."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg}, line {exc.lineno})", fix) from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})", fix) from exc
    except RecursionError as exc:
        raise InputError(path, "nested too deeply to be a results.json", fix) from exc


def check_results_shape(results: Any, path: Path) -> dict[str, Any]:
    """`results` as `run` writes it (model {id}, tasks {id: entry with metrics and counts}, meta {}),
    else an input error naming `path` and what is wrong: report, gate and score index these fields."""
    fix = "pass a run folder written by `wavllm-eval run` (or re-run it)"
    if (not isinstance(results, dict) or not isinstance(results.get("model"), dict) or "id" not in results["model"]
            or not isinstance(results.get("tasks"), dict)):
        raise InputError(path, "lacks the model {id} / tasks {id: entry} sections of a results.json", fix)
    if not isinstance(results.get("meta", {}), dict):
        raise InputError(path, "its meta section is not an object", fix)
    for task_id, entry in results["tasks"].items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in metrics.values()):
            raise InputError(path, f"task {task_id!r} has no metrics object of numbers", fix)
        counts = ("n_total", "n_scored", "n_failed", "n_skipped")
        if not all(isinstance(entry.get(c), int) and not isinstance(entry.get(c), bool) for c in counts):
            raise InputError(path, f"task {task_id!r} lacks the sample counts {', '.join(counts)}", fix)
    return results
