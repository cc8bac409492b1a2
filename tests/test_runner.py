"""The runner: resume, per-sample seeds, batching independence, failures counted, OOM back-off."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
import soundfile as sf
from wavllm_eval.tasks.asr import WAVLLM_ASR_INSTRUCTION

from tests.librispeech_tree import SENTENCES, build_tree, corrupt
from tests.scripted_adapter import ScriptedAdapter
from wavllm_eval.errors import InputError
from wavllm_eval.evaluate import EvaluationRequest, evaluate
from wavllm_eval.registry import make_task
from wavllm_eval.runner import Runner, RunOptions, duration_batches, sample_seed
from wavllm_eval.store import SampleStore
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


def test_hardware_names_the_cpu_and_torch_threads_that_chose_the_kernels(tmp_path, corpus):
    """Kernel choice decides an output at a float near-tie (README: batching and exactness), so the
    results say which CPU and how many intra-op threads computed them."""
    import torch

    hardware = evaluate(request(tmp_path), adapter=ScriptedAdapter()).results["meta"]["hardware"]
    assert hardware["torch_threads"] == torch.get_num_threads()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            assert hardware["cpu"] == names[0]


def test_seeds_depend_only_on_run_seed_task_and_id():
    # independent computation of the documented derivation: first 4 bytes of sha256, 31 bits
    expected = int.from_bytes(hashlib.sha256(f"1\x1f{TASK}\x1fa".encode()).digest()[:4], "big") & 0x7FFFFFFF
    assert sample_seed(1, TASK, "a") == expected
    assert len({sample_seed(1, TASK, "a"), sample_seed(2, TASK, "a"), sample_seed(1, TASK, "b"),
                sample_seed(1, "other", "a")}) == 4


def test_batch_size_never_changes_an_output(tmp_path, corpus):
    evaluate(request(tmp_path, batch_size=1), adapter=ScriptedAdapter())
    one = sorted(samples_file(tmp_path).read_text().splitlines())
    evaluate(request(tmp_path, batch_size=4, resume=False), adapter=ScriptedAdapter())
    four = sorted(samples_file(tmp_path).read_text().splitlines())
    assert one == four


@pytest.mark.parametrize("batches_before_kill", [1, 2])
def test_interrupted_run_resumes_to_the_same_jsonl(tmp_path, corpus, batches_before_kill):
    evaluate(request(tmp_path, batch_size=2), adapter=ScriptedAdapter())  # 5 samples: batches of 2, 2, 1
    uninterrupted = samples_file(tmp_path).read_bytes()
    uninterrupted_metrics = json.loads((tmp_path / "out/scripted/results.json").read_text())["tasks"][TASK]["metrics"]
    samples_file(tmp_path).unlink()
    (tmp_path / "out/scripted/results.json").unlink()

    class Killed(ScriptedAdapter):
        def generate(self, prompts, seeds):
            if len(self.calls) == batches_before_kill:
                raise KeyboardInterrupt  # like Ctrl-C once these batches were written
            return super().generate(prompts, seeds)

    with pytest.raises(KeyboardInterrupt):
        evaluate(request(tmp_path, batch_size=2), adapter=Killed())
    assert len(samples_file(tmp_path).read_text().splitlines()) == 2 * batches_before_kill
    # a torn half line from a kill mid-write, cut inside a multi-byte character, is cut off, not parsed
    with open(samples_file(tmp_path), "ab") as f:
        f.write('{"id": "121-10", "prediction": "Größe'.encode()[:-1])
    resumed = ScriptedAdapter()
    outcome = evaluate(request(tmp_path, batch_size=2), adapter=resumed)
    assert sum(len(c) for c in resumed.calls) == len(SENTENCES) - 2 * batches_before_kill
    assert samples_file(tmp_path).read_bytes() == uninterrupted
    assert outcome.results["tasks"][TASK]["metrics"] == uninterrupted_metrics


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


def test_out_of_memory_halves_the_batch_for_the_rest_of_the_task(tmp_path, tone_fn):
    clips = [tone_fn(tmp_path / f"{i}.wav", seconds=0.2 + 0.05 * i) for i in range(9)]
    samples = [Sample(f"s{i}", (AudioRef(c),), "x", duration_s=0.2 + 0.05 * i) for i, c in enumerate(clips)]
    adapter = ScriptedAdapter(oom_above=2)
    runner = Runner(adapter, SampleStore(tmp_path / "out"), RunOptions(batch_size=4, show_progress=False))
    stats = runner.run(make_task(TASK), samples)
    # 4 fails -> halves 2, 2; the remaining five are re-planned at 2: 2, 2, 1 (never 4 again)
    assert adapter.attempts == [4, 2, 2, 2, 2, 1]
    assert stats.batch_size == 2 and stats.oom_backoffs == 1
    assert len(SampleStore(tmp_path / "out").load(TASK)) == 9


def test_limit_scores_only_its_samples(tmp_path, corpus):
    outcome = evaluate(request(tmp_path, limit=2), adapter=ScriptedAdapter())
    assert outcome.results["tasks"][TASK]["n_total"] == 2


def test_another_model_configuration_is_refused(tmp_path, corpus):
    evaluate(request(tmp_path), adapter=ScriptedAdapter())
    results = tmp_path / "out/scripted/results.json"
    data = json.loads(results.read_text())
    data["model"]["config_hash"] = "0" * 16
    results.write_text(json.dumps(data))
    with pytest.raises(InputError, match="another configuration"):
        evaluate(request(tmp_path), adapter=ScriptedAdapter())


def test_resuming_under_another_seed_is_refused(tmp_path, corpus):
    evaluate(request(tmp_path, seed=1), adapter=ScriptedAdapter())
    with pytest.raises(InputError, match="its seed was 1"):
        evaluate(request(tmp_path, seed=2), adapter=ScriptedAdapter())


def test_no_resume_under_a_new_configuration_keeps_nothing_of_the_old(tmp_path, corpus):
    other = "librispeech-test-other"
    build_tree(tmp_path / "data", split="test-other")
    both = EvaluationRequest(task_ids=[TASK, other], model_id="scripted", output_dir=tmp_path / "out",
                             data_dir=tmp_path / "data", options=RunOptions(show_progress=False))
    evaluate(both, adapter=ScriptedAdapter())
    # the new configuration (another seed) re-runs only test-clean: test-other's old entry must go
    outcome = evaluate(request(tmp_path, seed=2, resume=False), adapter=ScriptedAdapter())
    assert set(outcome.results["tasks"]) == {TASK}
    assert not (tmp_path / f"out/scripted/samples/{other}.jsonl").exists()
    assert outcome.results["meta"]["seed"] == 2


def test_changed_data_reruns_exactly_the_changed_samples(tmp_path, corpus):
    evaluate(request(tmp_path), adapter=ScriptedAdapter())
    trans = tmp_path / "data/LibriSpeech/test-clean/237/2000/237-2000.trans.txt"
    trans.write_text(trans.read_text().replace("RICE IS OFTEN", "RICE IS SELDOM"))
    again = ScriptedAdapter()
    outcome = evaluate(request(tmp_path), adapter=again)
    assert again.calls == [["237-2000-0000"]]
    records = {r.id: r for r in SampleStore(tmp_path / "out/scripted").load(TASK)}
    assert records["237-2000-0000"].reference.startswith("RICE IS SELDOM")
    assert outcome.results["tasks"][TASK]["n_total"] == 5


def test_too_long_audio_is_skipped_not_dropped(tmp_path, corpus):
    adapter = ScriptedAdapter()
    adapter.max_audio_s = 0.8
    entry = evaluate(request(tmp_path), adapter=adapter).results["tasks"][TASK]
    split = tmp_path / "data/LibriSpeech/test-clean"
    longer = sum(sf.info(str(f)).duration > 0.8 for f in split.glob("*/*/*.flac"))  # read independently
    assert 0 < longer < 5
    assert (entry["n_skipped"], entry["n_scored"]) == (longer, 5 - longer)


def test_the_audio_limit_applies_per_clip_not_to_a_trial(tmp_path, tone_fn):
    a, b = tone_fn(tmp_path / "a.wav", seconds=0.6), tone_fn(tmp_path / "b.wav", seconds=0.6)
    trial = Sample("t", (AudioRef(a), AudioRef(b)), "Yes", duration_s=1.2, clip_durations_s=(0.6, 0.6))
    adapter = ScriptedAdapter()
    adapter.max_audio_s = 1.0  # each clip fits, the sum does not
    Runner(adapter, SampleStore(tmp_path / "out"), RunOptions(show_progress=False)).run(make_task("voxceleb1-sv"), [trial])
    [record] = SampleStore(tmp_path / "out").load("voxceleb1-sv")
    assert record.status == "ok"
    # the joined signal every single-input model hears: clip, 0.1 s of silence, clip
    prompt = adapter.prompts[0]
    assert len(prompt.single_waveform()) == 9600 + 1600 + 9600
    assert not prompt.single_waveform()[9600:11200].any()


def test_a_second_writer_on_the_same_folder_is_refused(tmp_path, corpus):
    store = SampleStore(tmp_path / "out/scripted")
    with store.lock(), pytest.raises(InputError, match=f"pid {os.getpid()}"):
        evaluate(request(tmp_path), adapter=ScriptedAdapter())
    evaluate(request(tmp_path), adapter=ScriptedAdapter())  # released on exit: the next run goes ahead


def test_prompt_variants_are_keyed_entries(tmp_path, corpus):
    req = EvaluationRequest(task_ids=[TASK, f"{TASK}@p2"], model_id="scripted", output_dir=tmp_path / "out",
                            data_dir=tmp_path / "data", options=RunOptions(show_progress=False))
    adapter = ScriptedAdapter(script=lambda prompt, seed: prompt.text)
    outcome = evaluate(req, adapter=adapter)
    assert set(outcome.results["tasks"]) == {TASK, f"{TASK}@p2"}
    default = SampleStore(tmp_path / "out/scripted").load(TASK)
    variant = SampleStore(tmp_path / "out/scripted").load(f"{TASK}@p2")
    assert {r.prediction for r in default} == {WAVLLM_ASR_INSTRUCTION}
    assert {r.prediction for r in variant} == {"Transcribe the speech in this audio clip into text."}
    assert outcome.results["tasks"][f"{TASK}@p2"]["settings"]["instruction_variant"] == 2


def test_duration_batches_longest_first_within_budget():
    samples = [Sample(str(i), (AudioRef("x"),), "", duration_s=d) for i, d in enumerate([1, 9, 4, 3, 2])]
    batches = duration_batches(samples, batch_size=3, audio_budget_s=8)
    assert [[s.duration_s for s in b] for b in batches] == [[9], [4, 3], [2, 1]]


def test_resuming_a_finished_run_reads_its_stored_results(tmp_path, corpus, monkeypatch):
    from wavllm_eval.task import BaseTask

    first = evaluate(request(tmp_path), adapter=ScriptedAdapter())
    calls = []
    original = BaseTask.score
    monkeypatch.setattr(BaseTask, "score", lambda self, records: calls.append(self.id) or original(self, records))
    again = ScriptedAdapter()
    second = evaluate(request(tmp_path), adapter=again)
    assert again.calls == [] and calls == []  # neither the model nor the scorer ran
    assert second.results["tasks"] == first.results["tasks"]
    # a changed sample makes it score again
    trans = tmp_path / "data/LibriSpeech/test-clean/121/1000/121-1000.trans.txt"
    trans.write_text(trans.read_text().replace("BIRCH", "BEECH"))
    evaluate(request(tmp_path), adapter=ScriptedAdapter())
    assert calls == [TASK]


def test_batch_invariance_check_reports_outputs_that_depend_on_the_batch(tmp_path, corpus):
    class BatchDependent(ScriptedAdapter):
        def generate(self, prompts, seeds):
            return [dataclasses.replace(g, text=f"{g.text} batch={len(prompts)}")
                    for g in super().generate(prompts, seeds)]

    honest = evaluate(request(tmp_path, batch_size=4, check_batch_invariance=3), adapter=ScriptedAdapter())
    assert honest.results["tasks"][TASK]["batch_invariance"] == {"checked": 3, "n_differing": 0, "differing": []}
    other = tmp_path / "other"
    req = EvaluationRequest(task_ids=[TASK], model_id="scripted", output_dir=other, data_dir=tmp_path / "data",
                            options=RunOptions(show_progress=False, batch_size=8, check_batch_invariance=3))
    check = evaluate(req, adapter=BatchDependent()).results["tasks"][TASK]["batch_invariance"]
    assert check["checked"] == 3 and check["n_differing"] == 3
    first = check["differing"][0]
    assert first["alone"].endswith("batch=1") and first["batched"].endswith("batch=5")
    # where the two outputs part: the shared text up to "batch=" (a fault of the batching shows at 0)
    assert first["first_difference"] == len(first["alone"]) - 1
    assert first["alone"][:first["first_difference"]] == first["batched"][:first["first_difference"]]


def test_tf32_is_part_of_the_configuration_and_sets_cuda_precision(tmp_path, corpus):
    import torch

    from wavllm_eval.cli import main

    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": i, "prediction": s}) + "\n" for i, s in SENTENCES.items()))
    hashes, precisions = {}, {}
    for flag in ("--tf32", "--no-tf32"):
        out = tmp_path / flag
        assert main(["run", "--tasks", TASK, "--model", "replay", "--model-path", str(answers), "--data-dir",
                     str(tmp_path / "data"), "--output-dir", str(out), "--no-progress", flag]) == 0
        results = json.loads((out / "replay/results.json").read_text())
        hashes[flag] = results["model"]["config_hash"]
        assert results["meta"]["options"]["tf32"] is (flag == "--tf32")
        assert results["model"]["config"].get("tf32", False) is (flag == "--tf32")
        precisions[flag] = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    assert hashes["--tf32"] != hashes["--no-tf32"]
    assert precisions == {"--tf32": ("tf32", "tf32"), "--no-tf32": ("ieee", "ieee")}


def test_peak_memory_is_the_model_phase_not_what_came_before():
    import numpy as np

    from wavllm_eval.runner import peak_memory_now, reset_peak_memory

    before = peak_memory_now()["rss_mib"]
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    del block
    high = peak_memory_now()["rss_mib"]
    assert high >= before + 250
    reset_peak_memory()  # what a task's model phase starts with
    assert peak_memory_now()["rss_mib"] < high - 250


def test_gc_pause_restores_the_collector_as_it_was():
    import gc

    from wavllm_eval.gc_pause import gc_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failing load")
    assert gc.isenabled()  # back on after an error too
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


def test_process_cuda_peak_keeps_what_the_per_task_resets_cleared(monkeypatch):
    """meta.peak_memory.gpu_mib is the whole process's peak, although every task's model phase resets
    CUDA's counters for its own figure (a stand-in torch.cuda: this machine has no GPU)."""
    import sys
    import types

    from wavllm_eval import runner

    state = {"peak": 0}
    cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                 max_memory_allocated=lambda: state["peak"], max_memory_reserved=lambda: state["peak"],
                                 reset_peak_memory_stats=lambda: state.update(peak=0))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(runner, "_CUDA_PEAK_BEFORE_RESETS", {"allocated": 0})
    state["peak"] = 900 * 2**20  # loading and the first task
    runner.reset_peak_memory()  # the second task's model phase starts
    state["peak"] = 300 * 2**20
    assert runner.peak_memory_now()["cuda_allocated_mib"] == 300.0  # the task's own figure
    assert runner.process_cuda_peak_mib() == 900.0
    runner.reset_peak_memory()
    state["peak"] = 1200 * 2**20
    assert runner.process_cuda_peak_mib() == 1200.0
