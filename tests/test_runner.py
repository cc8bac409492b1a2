"""The runner: resume, per-sample seeds, batching independence, failures counted, OOM back-off."""

from __future__ import annotations

import json

import pytest

from tests.librispeech_tree import SENTENCES, build_tree, corrupt
from tests.scripted_adapter import ScriptedAdapter
from wavllm_eval.errors import InputError
from wavllm_eval.evaluate import EvaluationRequest, evaluate
from wavllm_eval.runner import RunOptions, duration_batches, sample_seed
from wavllm_eval.types import AudioRef, Sample

TASK = "librispeech-test-clean"


def request(tmp_path, **options):
    return EvaluationRequest(task_ids=[TASK], model_id="scripted", output_dir=tmp_path / "out",
                             data_dir=tmp_path / "data", options=RunOptions(show_progress=False, **options))


def samples_file(tmp_path):
    return tmp_path / "out" / "scripted" / "samples" / f"{TASK}.jsonl"


@pytest.fixture
def corpus(tmp_path):
    return build_tree(tmp_path / "data")


def test_results_and_samples_follow_the_contract(tmp_path, corpus):
    outcome = evaluate(request(tmp_path), adapter=ScriptedAdapter())
    results = json.loads((tmp_path / "out/scripted/results.json").read_text())
    assert outcome.results == results
    assert set(results) == {"model", "tasks", "meta"}
    assert {"id", "path", "config_hash"} <= set(results["model"])
    entry = results["tasks"][TASK]
    assert {"metrics", "ci95", "n_total", "n_scored", "n_failed", "n_skipped"} <= set(entry)
    assert entry["n_total"] == entry["n_scored"] == len(SENTENCES)
    assert {"started", "versions", "git_sha", "data_hashes", "seed"} <= set(results["meta"])
    lines = [json.loads(x) for x in samples_file(tmp_path).read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(SENTENCES)  # every utterance exactly once
    assert all({"id", "prediction", "reference", "status"} <= set(x) for x in lines)


def test_seeds_depend_only_on_run_seed_task_and_id():
    assert sample_seed(1, TASK, "a") == sample_seed(1, TASK, "a")
    assert len({sample_seed(1, TASK, "a"), sample_seed(2, TASK, "a"), sample_seed(1, TASK, "b"),
                sample_seed(1, "other", "a")}) == 4


def test_batch_size_never_changes_an_output(tmp_path, corpus):
    evaluate(request(tmp_path, batch_size=1), adapter=ScriptedAdapter())
    one = sorted(samples_file(tmp_path).read_text().splitlines())
    evaluate(request(tmp_path, batch_size=4, resume=False), adapter=ScriptedAdapter())
    four = sorted(samples_file(tmp_path).read_text().splitlines())
    assert one == four


def test_interrupted_run_resumes_to_the_same_jsonl(tmp_path, corpus):
    evaluate(request(tmp_path, batch_size=2), adapter=ScriptedAdapter())
    uninterrupted = samples_file(tmp_path).read_bytes()
    samples_file(tmp_path).unlink()
    (tmp_path / "out/scripted/results.json").unlink()

    class Killed(ScriptedAdapter):
        def generate(self, prompts, seeds):
            if len(self.calls) == 1:
                raise KeyboardInterrupt  # like Ctrl-C after the first batch was written
            return super().generate(prompts, seeds)

    with pytest.raises(KeyboardInterrupt):
        evaluate(request(tmp_path, batch_size=2), adapter=Killed())
    assert len(samples_file(tmp_path).read_text().splitlines()) == 2
    # a torn half line from a kill mid-write is cut off, not parsed
    with open(samples_file(tmp_path), "a") as f:
        f.write('{"id": "121-10')
    resumed = ScriptedAdapter()
    evaluate(request(tmp_path, batch_size=2), adapter=resumed)
    assert sum(len(c) for c in resumed.calls) == len(SENTENCES) - 2
    assert samples_file(tmp_path).read_bytes() == uninterrupted


def test_finished_run_makes_no_model_calls(tmp_path, corpus):
    first = evaluate(request(tmp_path), adapter=ScriptedAdapter())
    again = ScriptedAdapter()
    second = evaluate(request(tmp_path), adapter=again)
    assert again.calls == []
    assert second.results["tasks"][TASK]["metrics"] == first.results["tasks"][TASK]["metrics"]


def test_unreadable_audio_is_failed_and_counted(tmp_path, corpus):
    split = tmp_path / "data/LibriSpeech/test-clean"
    corrupt(split / "121/1000/121-1000-0000.flac", "missing")
    corrupt(split / "121/1000/121-1000-0001.flac", "empty")
    corrupt(split / "237/2000/237-2000-0000.flac", "garbage")
    outcome = evaluate(request(tmp_path), adapter=ScriptedAdapter())
    entry = outcome.results["tasks"][TASK]
    assert (entry["n_total"], entry["n_scored"], entry["n_failed"]) == (5, 2, 3)
    failed = {x["id"]: x for x in map(json.loads, samples_file(tmp_path).read_text().splitlines())
              if x["status"] == "failed"}
    assert "121-1000-0000.flac" in failed["121-1000-0000"]["error"]
    assert "121-1000-0001.flac" in failed["121-1000-0001"]["error"]
    assert "237-2000-0000.flac" in failed["237-2000-0000"]["error"]


def test_a_failing_sample_is_isolated_from_its_batch(tmp_path, corpus):
    outcome = evaluate(request(tmp_path, batch_size=8), adapter=ScriptedAdapter(fail_ids=["237-2000-0001"]))
    entry = outcome.results["tasks"][TASK]
    assert (entry["n_scored"], entry["n_failed"]) == (4, 1)


def test_out_of_memory_halves_the_batch(tmp_path, corpus):
    adapter = ScriptedAdapter(oom_above=2)
    outcome = evaluate(request(tmp_path, batch_size=8), adapter=adapter)
    assert outcome.results["tasks"][TASK]["n_scored"] == 5
    assert max(len(c) for c in adapter.calls) <= 2


def test_limit_scores_only_its_samples(tmp_path, corpus):
    outcome = evaluate(request(tmp_path, limit=2), adapter=ScriptedAdapter())
    assert outcome.results["tasks"][TASK]["n_total"] == 2


def test_another_model_configuration_is_refused(tmp_path, corpus):
    evaluate(request(tmp_path), adapter=ScriptedAdapter())
    results = tmp_path / "out/scripted/results.json"
    data = json.loads(results.read_text())
    data["model"]["config_hash"] = "0" * 16
    results.write_text(json.dumps(data))
    with pytest.raises(InputError, match="another model configuration"):
        evaluate(request(tmp_path), adapter=ScriptedAdapter())


def test_too_long_audio_is_skipped_not_dropped(tmp_path, corpus):
    adapter = ScriptedAdapter()
    adapter.max_audio_s = 0.8
    entry = evaluate(request(tmp_path), adapter=adapter).results["tasks"][TASK]
    assert entry["n_skipped"] > 0 and entry["n_skipped"] + entry["n_scored"] == 5


def test_duration_batches_longest_first_within_budget():
    samples = [Sample(str(i), (AudioRef("x"),), "", duration_s=d) for i, d in enumerate([1, 9, 4, 3, 2])]
    batches = duration_batches(samples, batch_size=3, audio_budget_s=8)
    assert [[s.duration_s for s in b] for b in batches] == [[9], [4, 3], [2, 1]]
