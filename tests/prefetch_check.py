"""The check every adapter with a `prepare_audio` hook owes: the runner's prefetch workers run it,
the model sees its result, and the outputs equal a run in which the model thread computes it."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.librispeech_tree import build_tree
from wavllm_eval.evaluate import EvaluationRequest, evaluate
from wavllm_eval.runner import RunOptions

TASK = "librispeech-test-clean"


def assert_prepared_ahead_changes_nothing(adapter, tmp_path: Path, monkeypatch, consumer: str) -> None:
    """`consumer`: the adapter method that receives the batch's prompts (where `prepared` is read)."""
    build_tree(tmp_path / "data")
    cls = type(adapter)
    threads: set[str] = set()
    prepared_seen: list[bool] = []
    original_prepare, original_consumer = cls.prepare_audio, getattr(cls, consumer)

    def spy_prepare(self, prompt):
        threads.add(threading.current_thread().name)
        return original_prepare(self, prompt)

    def spy_consumer(self, prompts, *args, **kwargs):
        prepared_seen.extend(p.prepared is not None for p in prompts)
        return original_consumer(self, prompts, *args, **kwargs)

    def run(out: str) -> str:
        request = EvaluationRequest([TASK], adapter.id, tmp_path / out, data_dir=tmp_path / "data",
                                    options=RunOptions(batch_size=3, show_progress=False))
        evaluate(request, adapter=adapter)
        return (tmp_path / out / adapter.id / f"samples/{TASK}.jsonl").read_text()

    monkeypatch.setattr(cls, "prepare_audio", spy_prepare)
    monkeypatch.setattr(cls, consumer, spy_consumer)
    ahead = run("ahead")
    assert threads and all(name.startswith("audio") for name in threads)  # the prefetch pool, not the main thread
    assert prepared_seen and all(prepared_seen)
    monkeypatch.setattr(adapter, "prepare_audio", None, raising=False)  # the runner finds no hook
    prepared_seen.clear()
    inline = run("inline")
    assert prepared_seen and not any(prepared_seen)
    assert ahead == inline
