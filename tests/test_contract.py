"""Registry-wide contract tests: every registered task and model is checked the moment its file is
registered (STYLE.md). A task needs an entry in tests/native_trees.py, a model in tests/tiny_models/."""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import tests.tiny_models as tiny_models
from tests.native_trees import TREES
from tests.step_scores import record_step_scores
from wavllm_eval.adapter import BaseAdapter, LoadOptions, ModelAdapter
from wavllm_eval.audio import load_audio
from wavllm_eval.registry import make_task, model_entries, task_entries
from wavllm_eval.store import read_records
from wavllm_eval.task import BaseTask, dedupe_by_id
from wavllm_eval.types import Record

TASK_IDS = sorted(task_entries())
MODEL_IDS = sorted(model_entries())


def tiny_builders() -> dict:
    builders: dict = {}
    for info in pkgutil.iter_modules(tiny_models.__path__):
        builders.update(importlib.import_module(f"tests.tiny_models.{info.name}").BUILDERS)
    return builders


BUILDERS = tiny_builders()


# --- tasks ---------------------------------------------------------------------------------------
def test_every_task_has_a_native_tree_for_these_tests():
    assert sorted(set(TASK_IDS) - set(TREES)) == []


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    cache: dict = {}

    def load(task_id: str):
        if task_id not in cache:
            task = make_task(task_id)
            root = tmp_path_factory.mktemp(task_id)
            samples = list(task.load(TREES[task_id](root)))
            cache[task_id] = (task, samples)
        return cache[task_id]

    return load


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_task_loads_prompts_and_scores(task_id, loaded, tmp_path):
    task, samples = loaded(task_id)
    assert isinstance(task, BaseTask) and task.group and task.id == task_id
    assert samples and len({s.id for s in samples}) == len(samples)
    for sample in samples:
        assert sample.audio and all(Path(ref.path).is_file() for ref in sample.audio), sample.id
        prompt = task.build_prompt(sample)
        assert prompt.sample_id == sample.id and prompt.audio == sample.audio and prompt.text.strip()
        assert prompt.max_new_tokens > 0
    # a model that answers with the reference: every sample scored, every headline defined
    records = [Record(s.id, s.reference, s.reference, "ok", meta=dict(s.meta), task=task_id) for s in samples]
    scored = task.score(records)
    result = scored.result
    assert (result.n_total, result.n_scored, result.n_failed) == (len(samples), len(samples), 0)
    assert result.headlines and set(result.headlines) <= set(result.metrics)
    assert result.headline == result.headlines[0]
    assert all(not math.isnan(result.metrics[h]) for h in result.headlines), result.metrics
    # JSONL round trip and the stored rows reproduce the same numbers
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(__import__("json").dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records))
    again = task.score(read_records(path)).result
    assert again.metrics == result.metrics
    stored = make_task(task_id).metrics_from_rows(scored.rows_json())
    assert {m.name: m.compute() for m in stored} == pytest.approx(dict(result.metrics), nan_ok=True)
    # shards merge to the whole
    if len(records) > 1:
        first, second = task.scored_metrics(records[: len(records) // 2]), task.scored_metrics(records[len(records) // 2:])
        whole = {m.name: m.compute() for m in task.scored_metrics(records)}
        merged = {a.name: a.merge(b).compute() for a, b in zip(first, second, strict=True)}
        assert merged == pytest.approx(whole, nan_ok=True)


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_task_failed_and_skipped_samples_are_counted_never_dropped(task_id, loaded):
    task, samples = loaded(task_id)
    records = [Record(s.id, "", s.reference, "failed" if i % 2 else "skipped", "reason", meta=dict(s.meta))
               for i, s in enumerate(samples)]
    result = task.score(records).result
    assert result.n_total == len(samples) and result.n_scored == 0
    assert result.n_failed + result.n_skipped == len(samples)


@pytest.mark.parametrize("task_id", [t for t in TASK_IDS if make_task(t).n_variants() > 1])
def test_prompt_variants_change_the_instruction_only(task_id, loaded):
    task, samples = loaded(task_id)
    sample = samples[0]
    variants = [make_task(f"{task_id}@p{k}") for k in range(2, task.n_variants() + 1)]
    texts = {task.build_prompt(sample).text, *(v.build_prompt(sample).text for v in variants)}
    assert len(texts) == task.n_variants()  # each instruction differs
    assert all(v.base_id == task_id and v.build_prompt(sample).audio == sample.audio for v in variants)


def test_dedupe_keeps_the_last_record_per_id():
    records = [Record("b", "1", "", "ok"), Record("a", "x", "", "failed"), Record("b", "2", "", "ok")]
    assert [(r.id, r.prediction) for r in dedupe_by_id(records)] == [("a", "x"), ("b", "2")]


# --- models --------------------------------------------------------------------------------------
def test_every_model_has_a_tiny_configuration_for_these_tests():
    assert sorted(set(MODEL_IDS) - set(BUILDERS)) == []


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    cache: dict = {}

    def load(model_id: str):
        if model_id not in cache:
            path = BUILDERS[model_id](tmp_path_factory.mktemp(model_id.replace(".", "_")))
            cls = model_entries()[model_id].cls
            cache[model_id] = cls.load(path, LoadOptions(device="cpu", dtype="float32", max_new_tokens=4))
        return cache[model_id]

    return load


@pytest.fixture(scope="module")
def clips(shared_data):
    from wavllm_eval.types import AudioRef

    wave = load_audio(AudioRef(shared_data / "audio" / "asr.flac"))
    return wave[: 16000 * 2], wave[16000 * 3: 16000 * 4]


def _prompts(clips):
    from wavllm_eval.types import Prompt

    long, short = clips
    return [Prompt("a", "Based on the attached audio, generate a comprehensive text transcription.", (),
                   waveforms=(long,)),
            # a longer instruction: the two prompts differ in length for every model (SALMONN's audio
            # tokens are fixed by its 30 s windows), so the batch is padded and the padding is tested
            Prompt("b", "Is there only one speaker in the audio clip? Answer with yes or no, and say nothing else.",
                   (), choices=("Yes", "No"),
                   waveforms=(short, long[:8000]))]


# adapters whose answers come from no LLM's logits (a recogniser's decoder, a file of answers)
WITHOUT_LLM_LOGITS = {"pocketsphinx", "replay"}


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_model_declares_the_contract_and_answers_a_batch(model_id, tiny_model, clips):
    adapter = tiny_model(model_id)
    assert isinstance(adapter, ModelAdapter) and isinstance(adapter, BaseAdapter)
    assert adapter.id == model_id and adapter.default_batch_size >= 1
    assert adapter.max_audio_s is None or adapter.max_audio_s > 0
    prompts = _prompts(clips)
    seeds = [11, 12]
    batch = adapter.generate(prompts, seeds)
    assert len(batch) == 2 and all(isinstance(g.text, str) for g in batch)
    # batch size 1 gives the same outputs, and an output does not depend on what ran before it
    alone_b = adapter.generate([prompts[1]], [seeds[1]])
    alone_a = adapter.generate([prompts[0]], [seeds[0]])
    assert [g.text for g in batch] == [alone_a[0].text, alone_b[0].text]
    if adapter.supports_choice_scoring:
        [scores] = adapter.score_choices([prompts[1]])
        assert len(scores) == 2 and all(s <= 0 for s in scores)
    described = adapter.describe()
    assert described["id"] == model_id


def silenced(prompt):
    return dataclasses.replace(prompt, waveforms=tuple(np.zeros_like(w) for w in prompt.waveforms))


@pytest.mark.parametrize("model_id", sorted(set(MODEL_IDS) - WITHOUT_LLM_LOGITS))
def test_model_scores_hear_the_audio_and_depend_on_neither_batch_nor_history(model_id, tiny_model, clips,
                                                                            monkeypatch):
    """Equal texts can hide a fault (a tiny model's argmax survives a small error): compare the scores.
    Every generating adapter passes each step's scores through its FirstTokenTimer; they are recorded."""
    import torch

    adapter = tiny_model(model_id)
    steps = record_step_scores(monkeypatch)

    def scores_of(prompts, seeds):
        steps.clear()
        texts = [g.text for g in adapter.generate(prompts, seeds)]
        return texts, list(steps)

    prompts, seeds = _prompts(clips), [11, 12]
    _, batched = scores_of(prompts, seeds)
    text_b, alone_b = scores_of([prompts[1]], [seeds[1]])
    text_a, alone_a = scores_of([prompts[0]], [seeds[0]])
    # each prompt's rows of the (left-padded) batch have, at every step, the scores it has alone, within
    # float rounding; a padding, mask or position fault moves them far more
    for i, alone in enumerate((alone_a, alone_b)):
        assert batched and alone
        for in_batch, single in zip(batched, alone, strict=False):
            rows = in_batch.shape[0] // 2  # one row per prompt, or one per beam
            row = in_batch[i * rows: (i + 1) * rows]
            finite = torch.isfinite(single)
            assert row.shape == single.shape and torch.equal(torch.isfinite(row), finite)
            assert float((row[finite] - single[finite]).abs().max()) < 1e-4, f"prompt {i}: scores depend on the batch"
    # the audio reaches the model through generate: silence of the same length changes the first scores
    # (a model that never hears it gives them to the last bit; the tiny random models' audio effect is
    # small, tiny Qwen3-ASR's 7e-5, so the bound sits an order above float noise, ~1e-6)
    _, deaf = scores_of([silenced(prompts[0])], [seeds[0]])
    finite = torch.isfinite(deaf[0]) & torch.isfinite(alone_a[0])
    assert float((deaf[0][finite] - alone_a[0][finite]).abs().max()) > 1e-5, "the audio changes nothing"
    # nothing of what ran before carries over: the same call again gives the same scores, to the bit
    again_text, again = scores_of([prompts[0]], [seeds[0]])
    assert again_text == text_a and len(again) == len(alone_a)
    assert all(torch.equal(x, y) for x, y in zip(again, alone_a, strict=True))
    if adapter.supports_choice_scoring:
        # candidate scores, too, depend on neither the batch nor what ran before, and they hear the audio
        [scores] = adapter.score_choices([prompts[1]])
        first = dataclasses.replace(prompts[0], sample_id="c", choices=("No", "Yes"))
        assert adapter.score_choices([first, prompts[1]])[1] == pytest.approx(scores, abs=1e-5)
        [silent_scores] = adapter.score_choices([silenced(prompts[1])])
        assert max(abs(a - b) for a, b in zip(silent_scores, scores, strict=True)) > 1e-5
        # right after generating the prompt (where single-token choices are read off the first step),
        # the scores are those of the forward passes
        adapter.generate([prompts[1]], [seeds[1]])
        assert adapter.score_choices([prompts[1]])[0] == pytest.approx(scores, abs=1e-5)


@pytest.mark.parametrize("model_id", sorted(set(MODEL_IDS) - WITHOUT_LLM_LOGITS))
def test_generation_decides_from_the_models_own_distribution(model_id, tiny_model, clips, monkeypatch):
    """The first step's scores that decoding sees are the model's next-token log-probabilities after
    the prompt (a forward pass alone, `next_token_logits`), up to an additive constant and a few
    banned ids (pad, a stop token before min_new_tokens). Nothing from a model folder's
    generation_config (a repetition penalty, a temperature) may reshape them unnoticed."""
    import torch

    adapter = tiny_model(model_id)
    steps = record_step_scores(monkeypatch)
    prompt = _prompts(clips)[0]
    adapter.generate([prompt], [11])
    first = steps[0][0].double()
    model_own = adapter.next_token_logits(prompt).detach().double().to(first.device)
    finite = torch.isfinite(first)
    assert int((~finite).sum()) <= 4  # only a few banned ids
    a = first[finite] - torch.logsumexp(first[finite], 0)
    b = model_own[finite] - torch.logsumexp(model_own[finite], 0)
    assert float((a - b).abs().max()) < 1e-4


def test_adapters_without_llm_logits_are_the_ones_named(tiny_model, clips, monkeypatch):
    """WITHOUT_LLM_LOGITS exempts adapters from the score checks: only those that really have none."""
    from wavllm_eval.adapter import FirstTokenTimer

    calls: list = []
    monkeypatch.setattr(FirstTokenTimer, "__call__", lambda self, ids, scores: calls.append(1) or scores)
    for model_id in sorted(WITHOUT_LLM_LOGITS):
        adapter = tiny_model(model_id)
        adapter.generate(_prompts(clips), [11, 12])
    assert calls == [] and WITHOUT_LLM_LOGITS <= set(MODEL_IDS)


def test_scoring_in_worker_processes_gives_the_same_rows():
    """In a fresh process without torch (as `score` and `report` run), 2 forked workers vs 1."""
    import subprocess
    import sys

    script = (
        "import os, sys, json\n"
        "from wavllm_eval.registry import make_task\n"
        "from wavllm_eval.types import Record\n"
        "words = ('neutral', 'happy', 'angry', 'sad', 'bored')\n"
        "recs = [Record(f's{i:05d}', words[(i * 7) % 5], ('neu', 'hap', 'ang', 'sad')[i % 4], 'ok') for i in range(400)]\n"
        "task = make_task('iemocap-er')\n"
        "out = {}\n"
        "for workers in ('1', '2'):\n"
        "    os.environ['WAVLLM_EVAL_SCORING_WORKERS'] = workers\n"
        "    from wavllm_eval.task import scoring_workers\n"
        "    assert scoring_workers(400) == int(workers), 'torch' in sys.modules\n"
        "    out[workers] = {m.name: (m.ids, m.rows.tolist()) for m in task.scored_metrics(recs)}\n"
        "print(json.dumps(out['1'] == out['2']))\n")
    env = {**__import__("os").environ, "WAVLLM_EVAL_PARALLEL_MIN_RECORDS": "100"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "true"
