"""The run folder and the harness's own checkout: modes under the umask, no git locks taken, an
unwritable or full output folder answered before (or without losing) any work."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.librispeech_tree import build_tree
from wavllm_eval.errors import InputError
from wavllm_eval.evaluate import EvaluationRequest, evaluate, harness_git_sha
from wavllm_eval.runner import RunOptions
from wavllm_eval.store import SampleStore, write_json_atomic
from wavllm_eval.types import Record

TASK = "librispeech-test-clean"


def request(tmp_path, out=None):
    return EvaluationRequest([TASK], "scripted", out or tmp_path / "out", tmp_path / "data",
                             options=RunOptions(show_progress=False))


def test_results_json_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_reading_the_git_sha_takes_no_lock(tmp_path, monkeypatch):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(args, *a, **k):
        calls.append(list(args))
        return real_run(args, *a, **k)

    monkeypatch.setattr(subprocess, "run", spy)
    sha = harness_git_sha()
    assert sha and len(sha.split("+")[0]) == 40
    status = [c for c in calls if "status" in c]
    assert status and all("--no-optional-locks" in c for c in status)  # status would refresh the index
    assert not (repo / ".git" / "index.lock").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_output_folder_is_refused_before_the_model_loads(tmp_path):
    build_tree(tmp_path / "data")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    with pytest.raises(InputError, match="cannot write here"):
        evaluate(request(tmp_path, out), adapter=None)


def test_a_folder_that_is_a_file_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from wavllm_eval.model_zoo.pocketsphinx import PocketSphinxAdapter

    build_tree(tmp_path / "data")
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    loaded = []
    monkeypatch.setattr(PocketSphinxAdapter, "load", classmethod(lambda cls, *a, **k: loaded.append(1)))
    with pytest.raises(InputError, match="cannot write"):
        evaluate(EvaluationRequest([TASK], "pocketsphinx", blocker, tmp_path / "data",
                                   options=RunOptions(show_progress=False)))
    assert loaded == []


def test_a_full_disk_keeps_the_jsonl_intact_and_resumable(tmp_path, monkeypatch):
    store = SampleStore(tmp_path / "run")
    store.append(TASK, [Record("a", "x", "x", "ok")])
    before = store.samples_path(TASK).read_bytes()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InputError, match="no space left on the device; the samples written so far are intact"):
        store.append(TASK, [Record("b", "y" * 1000, "y", "ok")])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert store.samples_path(TASK).read_bytes() == before  # the partial batch was cut off again
    store.append(TASK, [Record("b", "y", "y", "ok")])  # space freed: the run resumes
    assert [r.id for r in store.load(TASK)] == ["a", "b"]


def test_full_disk_in_a_run_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from wavllm_eval.cli import main

    build_tree(tmp_path / "data")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    rc = main(["run", "--tasks", TASK, "--model", "pocketsphinx", "--data-dir", str(tmp_path / "data"),
               "--output-dir", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "no space left on the device" in err and "Traceback" not in err
    jsonl = tmp_path / "out/pocketsphinx/samples" / f"{TASK}.jsonl"
    assert not jsonl.exists() or jsonl.read_bytes() == b""


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched(tmp_path):
    """A run folder from elsewhere whose .lock links to a file outside it: taking the lock used to
    truncate that file and write a pid into it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious content\n")
    store = SampleStore(tmp_path / "received")
    store.run_dir.mkdir()
    (store.run_dir / store.lock_name).symlink_to(victim)
    with pytest.raises(InputError, match="symbolic link"), store.lock():
        pass
    assert victim.read_text() == "precious content\n"
    (store.run_dir / store.lock_name).unlink()
    with store.lock():  # an ordinary lock still works
        assert (store.run_dir / store.lock_name).read_text() == str(os.getpid())
