"""SIGKILL and resume: a run killed at any point and resumed writes what an uninterrupted run writes.

A real `wavllm-eval run --model pocketsphinx --batch-size 1` (installed console script, subprocess)
on an 8-utterance LibriSpeech tree of espeak-ng speech is killed with SIGKILL: once while it loads
(before its first record), then each time its samples JSONL reaches 1, 3 and 5 lines, and once
after its last line (while it scores and writes results.json). Once, the tail a kill in the middle
of a write would leave (half a line, no newline) is added before resuming. The resumed run's JSONL
must equal the uninterrupted run's byte for byte (after dropping timing fields, if records ever
carry any), and results.json the same metrics, intervals and counts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.bad_inputs import CONSOLE_SCRIPT, read_results
from tests.librispeech_tree import build_tree

TASK = "librispeech-test-clean"
SENTENCES = {
    "121-1000-0000": "THE BIRCH CANOE",
    "121-1000-0001": "GLUE THE SHEET",
    "121-1000-0002": "A WELL IS DEEP",
    "237-2000-0000": "RICE IN BOWLS",
    "237-2000-0001": "LEMON JUICE",
    "237-2001-0000": "FINE PUNCH TODAY",
    "260-3000-0000": "THE SMOOTH PLANKS",
    "260-3000-0001": "DARK BLUE BACKGROUND",
}
TIMING_KEYS = {"elapsed_s", "model_s", "time_s", "started", "finished", "wall_s", "latency_s"}


def _args(data: Path, out: Path) -> list[str]:
    return [str(CONSOLE_SCRIPT), "run", "--tasks", TASK, "--model", "pocketsphinx", "--data", f"{TASK}={data}",
            "--output-dir", str(out), "--batch-size", "1", "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def _jsonl(out: Path) -> Path:
    return out / "pocketsphinx" / "samples" / f"{TASK}.jsonl"


def _lines_written(out: Path) -> int:
    try:
        return _jsonl(out).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def run_to_completion(data: Path, out: Path) -> None:
    done = subprocess.run(_args(data, out), capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]


def run_and_kill(data: Path, out: Path, when_lines: int | None) -> int:
    """Start a run and SIGKILL it as soon as its JSONL holds `when_lines` lines (None: as soon as it
    has locked the run folder, i.e. while loading, before any record). Returns the lines at the kill."""
    process = subprocess.Popen(_args(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                pytest.fail(f"the run finished (rc {process.returncode}) before the kill point {when_lines}: "
                            f"{stderr[-2000:]}")
            reached = (out / "pocketsphinx" / ".lock").exists() if when_lines is None else (
                _lines_written(out) >= when_lines)
            if reached:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                assert process.returncode == -signal.SIGKILL
                return _lines_written(out)
            time.sleep(0.002)
        pytest.fail(f"kill point {when_lines} not reached in 90 s")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
    raise AssertionError("unreachable")


def normalised(path: Path) -> list[str]:
    """The JSONL's lines, in order, as written, minus any timing field (none today)."""
    lines = []
    for raw in path.read_bytes().split(b"\n")[:-1]:
        record = json.loads(raw)
        meta = record.get("meta", {})
        if TIMING_KEYS & (set(record) | set(meta)):
            record = {k: v for k, v in record.items() if k not in TIMING_KEYS}
            record["meta"] = {k: v for k, v in meta.items() if k not in TIMING_KEYS}
            lines.append(json.dumps(record, ensure_ascii=False))
        else:
            lines.append(raw.decode("utf-8"))
    return lines


def scored(out: Path) -> dict:
    entry = read_results(out)["tasks"][TASK]
    return {k: entry[k] for k in ("metrics", "ci95", "n_total", "n_scored", "n_failed", "n_skipped")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill_resume")
    return build_tree(root / "data", speech=True, sentences=SENTENCES) / "LibriSpeech" / "test-clean"


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_to_completion(corpus, out)
    assert _lines_written(out) == len(SENTENCES)
    return out


def test_killed_and_resumed_runs_write_what_an_uninterrupted_run_writes(corpus, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    expected_lines = _jsonl(uninterrupted).read_bytes().split(b"\n")
    kills = [run_and_kill(corpus, out, None)]  # while loading, before the first record
    for when in (1, 3, 5):
        kills.append(run_and_kill(corpus, out, when))
        assert normalised(_jsonl(out)) == normalised(_jsonl(uninterrupted))[: kills[-1]]
        if when == 3:  # what a kill in the middle of the next write leaves behind
            with open(_jsonl(out), "ab") as f:
                f.write(expected_lines[kills[-1]][: len(expected_lines[kills[-1]]) // 2])
    assert kills[0] == 0 and all(k >= w for k, w in zip(kills[1:], (1, 3, 5), strict=True))
    if kills[-1] < len(SENTENCES):  # one more kill after the last line, while it scores
        kills.append(run_and_kill(corpus, out, len(SENTENCES)))
    run_to_completion(corpus, out)

    assert normalised(_jsonl(out)) == normalised(_jsonl(uninterrupted))
    assert _jsonl(out).read_bytes() == _jsonl(uninterrupted).read_bytes()  # no timing fields: bytes too
    assert scored(out) == scored(uninterrupted)
    assert scored(out)["n_total"] == len(SENTENCES)


def test_resume_of_a_finished_run_changes_nothing(corpus, uninterrupted, tmp_path):
    """Re-running a finished folder loads no model and rewrites the same records and metrics."""
    before = _jsonl(uninterrupted).read_bytes()
    metrics = scored(uninterrupted)
    run_to_completion(corpus, uninterrupted)
    assert _jsonl(uninterrupted).read_bytes() == before
    assert scored(uninterrupted) == metrics
