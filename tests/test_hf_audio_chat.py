"""hf-audio-chat: transformers-native speech LLMs (Audio Flamingo 3, Qwen3-ASR) through their own
processor and chat template, on tiny random models built here and loaded through the real `load`."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.choice_read_off import read_off_without_a_forward
from tests.step_scores import record_step_scores
from tests.tiny_models.hf_audio_chat import VOCAB_SIZE, build_audio_flamingo_3, build_qwen3_asr
from wavllm_eval.adapter import LoadOptions
from wavllm_eval.errors import InputError
from wavllm_eval.types import AudioRef, Prompt

SR = 16_000
QUESTION = "What is surprising about the relationship between the barking and the music?"
# The released renderings, as transformers' processor tests state them for the hub checkpoints
AF3_RENDERED = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                f"<|im_start|>user\n<sound>{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
Q3_RENDERED = ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n"
               "<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\n<|im_start|>assistant\n")
FAMILIES = ("af3", "q3")


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_audio_chat")
    return {"af3": build_audio_flamingo_3(root), "q3": build_qwen3_asr(root)}


@pytest.fixture(scope="session")
def adapters(folders):
    from wavllm_eval.model_zoo.hf_audio_chat import AudioFlamingo3Adapter, Qwen3ASRAdapter

    options = LoadOptions(device="cpu", dtype="float32", max_new_tokens=6)
    return {"af3": AudioFlamingo3Adapter.load(folders["af3"], options),
            "q3": Qwen3ASRAdapter.load(folders["q3"], options)}


@pytest.fixture(scope="session")
def clips(speak_fn, tmp_path_factory) -> dict[str, np.ndarray]:
    from wavllm_eval.audio import load_audio

    root = tmp_path_factory.mktemp("hf_audio_chat_audio")
    long = load_audio(AudioRef(speak_fn("the quick brown fox jumps over the lazy dog", root / "long.flac")))
    short = load_audio(AudioRef(speak_fn("yes", root / "short.flac")))
    return {"long": long, "short": short, "three_s": np.resize(long, 3 * SR).astype(np.float32),
            "silence": np.zeros(3 * SR, dtype=np.float32)}


def prompt(waves, text="Transcribe the input speech.", choices=(), sample_id="s") -> Prompt:
    waves = tuple(waves) if isinstance(waves, (list, tuple)) else (waves,)
    refs = tuple(AudioRef(Path(f"{i}.wav")) for i in range(len(waves)))
    return Prompt(sample_id=sample_id, text=text, audio=refs, choices=tuple(choices), max_new_tokens=32,
                  waveforms=waves)


# --- the folder, tokenizer and template ---------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_is_the_one_built(adapters, family):
    tok = adapters[family].tokenizer
    assert len(tok) == VOCAB_SIZE
    special = "<sound>" if family == "af3" else "<|audio_pad|>"
    ids = tok("a" + special + "b", add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids(special)) == 1
    assert tok.padding_side == "left"


def test_chat_templates_render_as_released(adapters):
    assert adapters["af3"].prompt_text(prompt(np.zeros(SR, np.float32), QUESTION), 1) == AF3_RENDERED
    # Qwen3-ASR: the user turn is the audio alone; the instruction is not sent (ASR-only, as transcribe())
    assert adapters["q3"].prompt_text(prompt(np.zeros(SR, np.float32), QUESTION), 1) == Q3_RENDERED


def test_af3_prompt_token_ids_exact(adapters, clips):
    """3 s in 2 s windows: 300 valid mel frames -> conv stride 2 (150) -> pool 2 (75) <sound> slots."""
    adapter = adapters["af3"]
    tok = adapter.tokenizer
    head, tail = AF3_RENDERED.split("<sound>")
    expected = (tok(head, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<sound>")] * 75
                + tok(tail, add_special_tokens=False)["input_ids"])
    ids = adapter.encode(prompt(clips["three_s"], QUESTION))["input_ids"][0].tolist()
    assert ids == expected


def test_qwen3_asr_prompt_token_ids_exact(adapters, clips):
    """Qwen3-ASR's AuT encoder: 13 audio tokens per full 100-frame (1 s) chunk."""
    adapter = adapters["q3"]
    tok = adapter.tokenizer
    head, tail = Q3_RENDERED.split("<|audio_pad|>")
    audio_pad = tok.convert_tokens_to_ids("<|audio_pad|>")
    expected = (tok(head, add_special_tokens=False)["input_ids"] + [audio_pad] * 39
                + tok(tail, add_special_tokens=False)["input_ids"])
    assert adapter.encode(prompt(clips["three_s"]))["input_ids"][0].tolist() == expected


def test_table_settings_shape_the_turn(adapters):
    """A system prompt and text-before-audio from the table reach the template (generic families)."""
    adapter = copy.copy(adapters["af3"])
    adapter.settings = replace(adapter.settings, system_prompt="Answer briefly.", audio_position="after")
    turns = adapter.conversation(prompt(np.zeros(SR, np.float32), "What is it?"), 1)
    assert turns == [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
                     {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                                  {"type": "audio", "audio": "clip-0"}]}]
    assert adapter.prompt_text(prompt(np.zeros(SR, np.float32), "What is it?"), 1) == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n<sound>What is it?<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_qwen3_asr_answer_is_the_transcript(adapters):
    adapter = adapters["q3"]
    tok = adapter.tokenizer
    ids = tok("language English<asr_text>hello world", add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<asr_text>")) == 1
    assert adapter.decode(ids) == "hello world"


def test_af3_transcription_framing_is_removed_only_when_present(adapters):
    adapter = adapters["af3"]
    tok = adapter.tokenizer
    framed = tok('The spoken content of the audio is "hello world".', add_special_tokens=False)["input_ids"]
    plain = tok("Hello world.", add_special_tokens=False)["input_ids"]
    assert adapter.decode(framed) == "hello world"
    assert adapter.decode(plain) == "Hello world."


# --- generation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_greedy_equals_batch_size_one(adapters, clips, family):
    adapter = adapters[family]
    prompts = [prompt(clips["long"], "Transcribe the input speech.", sample_id="a"),
               prompt(clips["short"], "Is the speaker happy? Answer yes or no.", sample_id="b"),
               prompt([clips["short"], clips["long"]], "Is it the same speaker?", sample_id="c")]
    batched = adapter.generate(prompts, [1, 2, 3])
    single = [adapter.generate([p], [s])[0] for p, s in zip(prompts, [1, 2, 3], strict=True)]
    assert batched == single
    assert all(g.n_new_tokens == 6 for g in batched)  # the LoadOptions cap; random weights never stop early


@pytest.mark.parametrize("family", FAMILIES)
def test_output_does_not_depend_on_what_ran_before(folders, clips, family):
    from wavllm_eval.model_zoo.hf_audio_chat import NativeAudioChatAdapter

    options = LoadOptions(device="cpu", max_new_tokens=6)
    a = prompt(clips["long"], "Transcribe.", sample_id="a")
    b = prompt(clips["short"], "Answer.", sample_id="b")
    fresh = NativeAudioChatAdapter.load(folders[family], options).generate([b], [0])
    used = NativeAudioChatAdapter.load(folders[family], options)
    used.generate([a], [0])
    used.score_choices([prompt(clips["long"], "Yes or no?", choices=("yes", "no"))])
    assert used.generate([b], [0]) == fresh


def test_sampling_defaults_are_overridden_and_recorded(adapters, clips, monkeypatch):
    """Audio Flamingo 3's generation_config.json samples; the adapter decodes greedily and says so."""
    adapter = adapters["af3"]
    assert adapter.model.generation_config.do_sample is True  # the released defaults are in the folder
    info = adapter.describe()
    assert info["sampling_overridden"] is True and info["decoding"]["do_sample"] is False
    released = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.05}
    assert info["model_generation_defaults_not_applied"] == released
    p = prompt(clips["long"])
    torch.manual_seed(0)
    with monkeypatch.context() as patch:  # the scores greedy search picks from, after transformers' processors
        steps = record_step_scores(patch)
        first = adapter.generate([p], [0])
    seen = [step[0] for step in steps]
    torch.manual_seed(123)
    assert adapter.generate([p], [0]) == first
    # and it is plain greedy search: each step's scores are an independent forward's logits on the
    # sequence so far (the released repetition penalty of 1.05 would move them: it had been applied),
    # and each token their argmax
    inputs = adapter.processor(text=[adapter.prompt_text(p, 1)], audio=[clips["long"]], sampling_rate=SR,
                               return_tensors="pt")
    ids = inputs["input_ids"]
    for k in range(6):
        with torch.no_grad():
            step = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
            logits = adapter.model(**step).logits
        assert (seen[k] - logits[0, -1]).abs().max() < 1e-4
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    new = ids[0, inputs["input_ids"].shape[1]:].tolist()
    assert first[0].text == adapter.tokenizer.decode(new, skip_special_tokens=True)
    assert adapters["q3"].describe()["sampling_overridden"] is False


def test_the_decoding_revision_is_part_of_the_configuration():
    """The v2 decoding (generation_config entries neutralised) gives other outputs than v1's, so it
    is in the configuration hash: a v1 run is never resumed into as the same configuration."""
    from wavllm_eval.model_zoo.hf_audio_chat import AudioFlamingo3Adapter, NativeAudioChatAdapter

    from wavllm_eval.adapter import model_config

    for cls in (NativeAudioChatAdapter, AudioFlamingo3Adapter):
        assert model_config(cls, "m", None, LoadOptions())["decoding"]["revision"] == "neutral-search/v2"


# --- the generic path: families without a table row ----------------------------------------------------
def test_generic_path_joins_clips_where_the_processor_takes_one_audio(tmp_path, clips):
    from wavllm_eval.model_zoo.hf_audio_chat import NativeAudioChatAdapter

    from tests.tiny_models.hf_audio_chat import build_glm_asr_standin

    adapter = NativeAudioChatAdapter.load(build_glm_asr_standin(tmp_path), LoadOptions(device="cpu",
                                                                                       max_new_tokens=6))
    info = adapter.describe()
    assert info["model_class"] == "GlmAsrForConditionalGeneration"
    assert info["family_settings"]["family"] == "generic transformers audio chat model"
    assert adapter.max_audio_parts == 1 and info["audio_parts_per_turn"].startswith("1 ")  # probed at load
    assert adapter.max_audio_s == 655.0  # GlmAsrProcessor.max_audio_len
    prompts = [prompt([clips["short"], clips["long"]], "Same speaker?", sample_id="a"),
               prompt(clips["short"], "Transcribe.", sample_id="b")]
    assert adapter.generate(prompts, [0, 0]) == [adapter.generate([p], [0])[0] for p in prompts]


def test_one_audio_part_per_clip_where_the_processor_takes_several(tmp_path, clips):
    """Qwen2-Audio's processor takes several audio parts in a turn (its own adapter is
    qwen2-audio-instruct; here it only proves the generic path): each clip is one part."""
    from transformers import WhisperFeatureExtractor
    from wavllm_eval.model_zoo.hf_audio_chat import NativeAudioChatAdapter

    from tests.tiny_models.qwen2_audio import build_qwen2_audio

    adapter = NativeAudioChatAdapter.load(build_qwen2_audio(tmp_path), LoadOptions(device="cpu",
                                                                                   max_new_tokens=4))
    assert adapter.max_audio_parts is None and adapter.max_audio_s == 30.0  # Whisper window
    two = prompt([clips["short"], clips["long"]], "Is it the same speaker?")
    assert adapter.prompt_text(two, 2).count("<|AUDIO|>") == 2
    expected = WhisperFeatureExtractor(feature_size=128)([clips["short"], clips["long"]], sampling_rate=SR,
                                                         return_tensors="pt").input_features
    seen, handle = capture_encoder_input(adapter)
    try:
        batched = adapter.generate([two, prompt(clips["short"], sample_id="b")], [0, 0])
    finally:
        handle.remove()
    assert torch.allclose(seen[0][:2], expected, atol=1e-5)  # the first prompt's two clips, in order
    assert batched[0] == adapter.generate([two], [0])[0]


# --- the audio reaches the model ----------------------------------------------------------------------
def capture_encoder_input(adapter):
    seen: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        seen.append((args[0] if args else kwargs["input_features"]).detach().clone())

    return seen, adapter.model.model.audio_tower.register_forward_pre_hook(hook, with_kwargs=True)


def test_af3_encoder_sees_the_clip_features(adapters, clips):
    from transformers import WhisperFeatureExtractor

    adapter = adapters["af3"]
    wave = clips["three_s"]
    # independent: the released AF3 recipe, 128-mel Whisper features of each 2 s window (this tiny window)
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=2)
    expected = fe([wave[: 2 * SR], wave[2 * SR:]], sampling_rate=SR, return_tensors="pt").input_features
    seen, handle = capture_encoder_input(adapter)
    try:
        adapter.generate([prompt(wave)], [0])
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.allclose(seen[0], expected, atol=1e-5)


def test_two_clips_are_joined_for_a_single_audio_processor(adapters, clips):
    from transformers import WhisperFeatureExtractor

    adapter = adapters["af3"]
    joined = np.concatenate([clips["short"], np.zeros(int(0.1 * SR), np.float32), clips["long"]])
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=2)
    windows = [joined[i: i + 2 * SR] for i in range(0, len(joined), 2 * SR)]
    expected = fe(windows, sampling_rate=SR, return_tensors="pt").input_features
    seen, handle = capture_encoder_input(adapter)
    try:
        adapter.generate([prompt([clips["short"], clips["long"]])], [0])
    finally:
        handle.remove()
    assert torch.allclose(seen[0], expected, atol=1e-5)


def test_qwen3_asr_encoder_sees_the_clip_features(adapters, clips):
    from transformers import Qwen3ASRFeatureExtractor

    adapter = adapters["q3"]
    # independent: the released extractor as Qwen3ASRProcessor calls it (no truncation, whole 1 s chunks)
    expected = Qwen3ASRFeatureExtractor()([clips["long"]], sampling_rate=SR, padding="longest",
                                          return_tensors="pt").input_features
    assert expected.shape[-1] == 400  # 3.44 s -> 343 frames -> 4 chunks of 100
    seen, handle = capture_encoder_input(adapter)
    try:
        adapter.generate([prompt(clips["long"])], [0])
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.allclose(seen[0], expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_differ_between_a_clip_and_silence(adapters, clips, family):
    adapter = adapters[family]
    with torch.no_grad():
        speech = adapter.model(**adapter.batch([prompt(clips["three_s"])])).logits[0, -1]
        silence = adapter.model(**adapter.batch([prompt(clips["silence"])])).logits[0, -1]
    # Same length, so the same token ids: a model that never heard the audio gives identical logits.
    # (Random tiny weights make the audio's effect small, so the bound is well above float noise only.)
    assert (speech - silence).abs().max() > 1e-5


# --- candidate scoring ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_score_choices_equals_an_independent_forward(adapters, clips, family):
    adapter = adapters[family]
    text = "Is the speaker happy? Answer yes or no."
    choices = ("yes", "no", "the quick brown fox")
    got = adapter.score_choices([prompt(clips["long"], text, choices)])[0]

    processor, tok = adapter.processor, adapter.tokenizer
    rendered = AF3_RENDERED.replace(QUESTION, text) if family == "af3" else Q3_RENDERED
    inputs = processor(text=[rendered], audio=[clips["long"]], sampling_rate=SR, return_tensors="pt")
    expected = []
    for choice in choices:
        ids = tok.encode(choice, add_special_tokens=False)
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([ids])], dim=1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(adapter.model(**full).logits[0].double(), dim=-1)
        n = inputs["input_ids"].shape[1]
        expected.append(sum(float(logp[n - 1 + i, t]) for i, t in enumerate(ids)))
    assert got == pytest.approx(expected, abs=1e-5)
    assert adapter.supports_choice_scoring is (family == "af3")


def test_single_token_choices_after_generation_cost_no_forward(adapters, clips):
    """Right after generate, single-token choices are read off the first step: the independent
    forward's numbers, with no model call (the first read-off is checked against a forward, once)."""
    adapter = adapters["af3"]
    choices = tuple(c for c in ("A", "B", "C", "yes", "no", "Yes", "No") if len(adapter.choice_ids(c)) == 1)[:3]
    assert len(choices) >= 2
    text = "Which option? Answer with one of: " + ", ".join(choices)
    prompts = [prompt(clips[name], text, choices, sample_id=name) for name in ("long", "three_s")]
    read = read_off_without_a_forward(adapter, prompts, [0, 0], adapter.model)
    processor, tok = adapter.processor, adapter.tokenizer
    for p, row in zip(prompts, read, strict=True):
        inputs = processor(text=[AF3_RENDERED.replace(QUESTION, text)], audio=[p.waveforms[0]], sampling_rate=SR,
                           return_tensors="pt")
        with torch.no_grad():
            logp = torch.log_softmax(adapter.model(**inputs).logits[0, -1].double(), dim=-1)
        expected = [float(logp[tok.encode(c, add_special_tokens=False)[0]]) for c in choices]
        assert row == pytest.approx(expected, abs=1e-5)


# --- limits, identity and bad folders -------------------------------------------------------------------
def test_per_clip_limit_and_policy_come_from_the_processor(adapters):
    af3, q3 = adapters["af3"].describe(), adapters["q3"].describe()
    assert adapters["af3"].max_audio_s == 600.0 == adapters["af3"].processor.max_audio_len
    assert "600 s" in af3["long_audio_policy"]
    assert adapters["q3"].max_audio_s is None and "does not truncate" in q3["long_audio_policy"]
    assert af3["model_class"] == "AudioFlamingo3ForConditionalGeneration"
    assert q3["model_class"] == "Qwen3ASRForConditionalGeneration"
    assert af3["family_settings"]["max_audio_parts"] == 1 and q3["family_settings"]["instruction"] == "drop"
    assert af3["sampling_rate_hz"] == 16000


def test_registered_ids():
    from wavllm_eval.registry import model_class

    for model_id in ("hf-audio-chat", "audio-flamingo-3", "qwen3-asr"):
        assert model_class(model_id).id == model_id


def test_bad_folders_name_what_is_missing(folders, tmp_path):
    from wavllm_eval.model_zoo.hf_audio_chat import NativeAudioChatAdapter, Qwen3ASRAdapter

    options = LoadOptions(device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as err:
        NativeAudioChatAdapter.load(empty, options)
    for name in ("config.json", "preprocessor_config.json", "tokenizer.json", "model.safetensors"):
        assert name in str(err.value)

    unknown = tmp_path / "unknown"
    shutil.copytree(folders["af3"], unknown)
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no_such_audio_llm"}))
    with pytest.raises(InputError, match="no_such_audio_llm"):
        NativeAudioChatAdapter.load(unknown, options)

    no_template = tmp_path / "no_template"
    shutil.copytree(folders["af3"], no_template)
    (no_template / "chat_template.jinja").unlink()
    with pytest.raises(InputError, match="chat template"):
        NativeAudioChatAdapter.load(no_template, options)

    with pytest.raises(InputError, match="audioflamingo3"):
        Qwen3ASRAdapter.load(folders["af3"], options)
    with pytest.raises(InputError, match="--model-path"):
        NativeAudioChatAdapter.load(None, options)


# --- end to end through the pipeline ----------------------------------------------------------------------
def test_end_to_end_through_evaluate(folders, shared_data, tmp_path):
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions

    outcome = evaluate(EvaluationRequest(
        ["librispeech-test-clean", "iemocap-er"], "audio-flamingo-3", tmp_path / "out",
        data_overrides={"librispeech-test-clean": shared_data / "asr.tsv",
                        "iemocap-er": shared_data / "emo.tsv"},
        model_path=folders["af3"], options=RunOptions(max_new_tokens=6, show_progress=False, device="cpu")))
    results = json.loads(outcome.results_path.read_text())
    for task_id in ("librispeech-test-clean", "iemocap-er"):
        entry = results["tasks"][task_id]
        assert entry["n_total"] >= 1 and entry["n_failed"] == 0 and entry["n_skipped"] == 0
        samples = tmp_path / "out" / "audio-flamingo-3" / "samples" / f"{task_id}.jsonl"
        lines = samples.read_text().splitlines()
        assert len(lines) == entry["n_total"] and all(json.loads(x)["status"] == "ok" for x in lines)
    assert "family_settings" in json.dumps(results)


def test_a_clip_over_the_processor_limit_is_skipped_with_the_reason(folders, shared_data, tmp_path):
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions

    short_limit = tmp_path / "af3-5s"
    shutil.copytree(folders["af3"], short_limit)
    config = json.loads((short_limit / "processor_config.json").read_text())
    (short_limit / "processor_config.json").write_text(json.dumps({**config, "max_audio_len": 5}))
    outcome = evaluate(EvaluationRequest(
        ["librispeech-test-clean"], "hf-audio-chat", tmp_path / "out",
        data_overrides={"librispeech-test-clean": shared_data / "asr.tsv"},  # one 10.4 s clip
        model_path=short_limit, options=RunOptions(max_new_tokens=6, show_progress=False, device="cpu")))
    assert outcome.results["tasks"]["librispeech-test-clean"]["n_skipped"] == 1
    samples = tmp_path / "out" / "hf-audio-chat" / "samples" / "librispeech-test-clean.jsonl"
    line = json.loads(samples.read_text())
    assert line["status"] == "skipped" and "limit of 5 s" in line["error"]
