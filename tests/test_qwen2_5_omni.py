"""Qwen2.5-Omni thinker: loads the released full-model layout, builds the released chat prompt, feeds
the audio to the encoder, decodes greedily even though the thinker's own config samples, batches with
left padding exactly, and scores choices as a plain forward pass does."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.choice_read_off import read_off_without_a_forward
from tests.tiny_models.qwen2_audio import BUILDERS
from wavllm_eval.adapter import LoadOptions
from wavllm_eval.audio import load_audio
from wavllm_eval.errors import InputError
from wavllm_eval.types import AudioRef, Prompt

SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
          "auditory and visual inputs, as well as generating text and speech.")
SPAN = "<|audio_bos|><|AUDIO|><|audio_eos|>"
SV = "Is there only one speaker in the audio clip?"
ST = "Translate the audio clip into German."


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return BUILDERS["qwen2.5-omni"](tmp_path_factory.mktemp("qwen2_5_omni"))


@pytest.fixture(scope="session")
def omni(folder):
    from wavllm_eval.registry import model_class

    return model_class("qwen2.5-omni").load(folder, LoadOptions(device="cpu", dtype="float32", max_new_tokens=6))


@pytest.fixture(scope="session")
def speech(tmp_path_factory, speak_fn):
    root = tmp_path_factory.mktemp("omni_speech")
    one = load_audio(AudioRef(speak_fn("three films from asia in the running", root / "a.flac")))
    two = load_audio(AudioRef(speak_fn("she will be all right", root / "b.flac", voice="en-gb", speed_wpm=190)))
    return one, two


def chat_text(instruction: str, n_clips: int, system: str = SYSTEM) -> str:
    """The cookbook layout (universal_audio_understanding.ipynb): instruction, then the audio parts."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{instruction}{SPAN * n_clips}<|im_end|>\n"
            "<|im_start|>assistant\n")


def n_audio_tokens(n_samples: int) -> int:
    """Whisper frames ceil(n/160) -> conv stride 2 -> avg-pool 2 (Qwen2.5-Omni audio encoder)."""
    frames = math.ceil(n_samples / 160)
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def independent_inputs(omni, text: str, waves):
    """Features from a fresh extractor, placeholders expanded by the formula, ids from the tokenizer."""
    from transformers import WhisperFeatureExtractor

    features = WhisperFeatureExtractor(feature_size=128)(list(waves), sampling_rate=16000, padding="max_length",
                                                         return_attention_mask=True, return_tensors="pt")
    for wave in waves:
        text = text.replace("<|AUDIO|>", "\0" * n_audio_tokens(len(wave)), 1)
    ids = omni.tokenizer(text.replace("\0", "<|AUDIO|>"), add_special_tokens=False, return_tensors="pt")["input_ids"]
    return ids, features["input_features"], features["attention_mask"]


def independent_choice_logprobs(omni, text: str, waves, choices) -> list[float]:
    ids, features, frame_mask = independent_inputs(omni, text, waves)
    out = []
    for choice in choices:
        choice_ids = omni.tokenizer(choice, add_special_tokens=False)["input_ids"]
        full = torch.cat([ids, torch.tensor([choice_ids])], dim=1)
        with torch.no_grad():
            logits = omni.model(input_ids=full, attention_mask=torch.ones_like(full), input_features=features,
                                feature_attention_mask=frame_mask).logits[0]
        start = ids.shape[1] - 1
        logprobs = torch.log_softmax(logits[start: start + len(choice_ids)].double(), dim=-1)
        out.append(float(sum(logprobs[i, t] for i, t in enumerate(choice_ids))))
    return out


def test_loads_the_thinker_from_the_released_full_layout(omni, folder):
    assert json.loads((folder / "config.json").read_text())["model_type"] == "qwen2_5_omni"
    assert type(omni.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    reference = torch.load(folder / "reference_state_dict.pt")
    loaded = omni.model.state_dict()
    assert set(loaded) == set(reference)  # every thinker.* tensor mapped; the talker tensor ignored
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert omni.describe()["chat_template"] == "chat_template.json"


def test_prompt_is_the_released_chat_template_with_the_system_prompt(omni, speech):
    prompt = Prompt("p", SV, (), waveforms=speech)
    text = omni.prompt_text(prompt)
    assert text == chat_text(SV, 2)
    assert "DECOY" not in text  # the processor's chat_template.json, not the tokenizer's own template
    ids, features, frame_mask = independent_inputs(omni, text, speech)
    inputs = omni.inputs_for([prompt])
    assert inputs["input_ids"].tolist() == ids.tolist()
    for i in range(2):  # each clip's valid frames: the full-window log-mel (the rest is never read)
        valid = int(frame_mask[i].sum())
        assert int(inputs["feature_attention_mask"][i].sum()) == valid
        assert torch.allclose(inputs["input_features"][i, :, :valid], features[i, :, :valid], atol=1e-6)
    assert n_audio_tokens(16_000) == 25  # 1 s -> 100 frames -> 50 -> 25 tokens (25 Hz)


def test_default_asr_and_st_instructions_become_the_cookbook_prompts(omni, speech):
    from wavllm_eval.tasks.asr import WAVLLM_ASR_INSTRUCTION
    from wavllm_eval.tasks.st import WAVLLM_ST_INSTRUCTION

    def text(instruction):
        return omni.prompt_text(Prompt("p", instruction, (), waveforms=speech[:1]))

    assert text(WAVLLM_ASR_INSTRUCTION) == chat_text(
        "Transcribe the English audio into text without any punctuation marks.", 1,
        system="You are a speech recognition model.")
    assert text(WAVLLM_ST_INSTRUCTION) == chat_text(
        "Listen to the provided English speech and produce a translation in German text.", 1,
        system="You are a speech translation model.")
    assert text("Transcribe the speech in this audio clip into text.") == chat_text(
        "Transcribe the speech in this audio clip into text.", 1)  # a variant stays verbatim


def official_processor(omni):
    """transformers' Qwen2_5OmniProcessor, its `__call__` untouched. Its constructor insists on an image
    and a video processor (the latter needs torchvision, which the harness does not install), so the
    instance is made without it and given the attributes that constructor sets."""
    from transformers import Qwen2_5OmniProcessor

    processor = Qwen2_5OmniProcessor.__new__(Qwen2_5OmniProcessor)
    processor.tokenizer, processor.feature_extractor = omni.tokenizer, omni.feature_extractor
    processor.chat_template, processor.image_processor, processor.video_processor = omni.chat_template, None, None
    for name, token in (("image", "<|IMAGE|>"), ("audio", "<|AUDIO|>"), ("video", "<|VIDEO|>")):
        setattr(processor, f"{name}_token", token)
        setattr(processor, f"{name}_token_id", omni.tokenizer.convert_tokens_to_ids(token))
    processor.vision_bos_token, processor.vision_eos_token = "<|vision_bos|>", "<|vision_eos|>"
    processor.audio_bos_token, processor.audio_eos_token = "<|audio_bos|>", "<|audio_eos|>"
    return processor


def test_inputs_equal_the_official_processor(omni, speech):
    """Same ids and masks, the same log-mel on every valid frame, hence the same logits, although each
    clip's mel is computed over its own length instead of the processor's whole window."""
    prompts = [Prompt("a", SV, (), waveforms=speech), Prompt("b", ST, (), waveforms=(speech[1][:7000],))]
    texts = [omni.prompt_text(p) for p in prompts]
    expected = official_processor(omni)(text=texts, audio=[speech[0], speech[1], speech[1][:7000]],
                                        return_tensors="pt", padding=True)
    ours = omni.inputs_for(prompts)
    assert set(ours) == {"input_ids", "attention_mask", "input_features", "feature_attention_mask"}
    assert (ours["attention_mask"][1, :3] == 0).all()  # the shorter prompt is padded on the left
    assert torch.equal(ours["input_ids"], expected["input_ids"])
    assert torch.equal(ours["attention_mask"], expected["attention_mask"])
    assert expected["input_features"].shape[-1] == 3000 > ours["input_features"].shape[-1]
    valid = expected["feature_attention_mask"].sum(-1)
    assert torch.equal(ours["feature_attention_mask"].sum(-1), valid)
    for i, n in enumerate(valid.tolist()):
        assert (ours["feature_attention_mask"][i, :n] == 1).all()
        assert torch.allclose(ours["input_features"][i, :, :n], expected["input_features"][i, :, :n], atol=1e-6)
    with torch.no_grad():
        official_logits = omni.model(**{k: v for k, v in expected.items()}).logits
        our_logits = omni.model(**ours).logits
    assert (official_logits - our_logits).abs().max().item() < 1e-5


def test_the_audio_reaches_the_encoder_and_changes_the_logits(omni, speech):
    seen = []
    handle = omni.audio_encoder().register_forward_pre_hook(lambda _m, args, kwargs: seen.append(
        (args[0] if args else kwargs["input_features"]).detach().clone()), with_kwargs=True)
    try:
        [with_speech] = omni.score_choices([Prompt("s", SV, (), ("Yes", "No"), waveforms=(speech[0],))])
    finally:
        handle.remove()
    _, features, frame_mask = independent_inputs(omni, chat_text(SV, 1), (speech[0],))
    n_frames = int(frame_mask.sum())
    # The encoder gets the valid frames of every row (two choice rows), concatenated along time.
    assert len(seen) == 1 and seen[0].shape == (128, 2 * n_frames)
    assert torch.allclose(seen[0][:, :n_frames], features[0, :, :n_frames], atol=1e-5)
    [with_silence] = omni.score_choices([Prompt("s", SV, (), ("Yes", "No"), waveforms=(np.zeros_like(speech[0]),))])
    assert max(abs(a - b) for a, b in zip(with_speech, with_silence, strict=True)) > 1e-3


def test_decoding_is_greedy_although_the_thinker_config_samples(omni, speech):
    omni.model.generation_config.do_sample = True
    omni.model.generation_config.temperature, omni.model.generation_config.top_k = 1.5, 50
    try:
        prompt = Prompt("g", ST, (), waveforms=(speech[1],))
        first = omni.generate([prompt], [1])[0]
        torch.manual_seed(12345)
        assert omni.generate([prompt], [999])[0] == first  # another seed, same text: nothing sampled
        inputs = omni.inputs_for([prompt])
        with torch.no_grad():
            greedy = omni.model.generate(**inputs, max_new_tokens=6, min_new_tokens=1, do_sample=False,
                                         eos_token_id=omni.stop_ids, pad_token_id=omni.pad_id)
        new = greedy[0, inputs["input_ids"].shape[1]:].tolist()
        assert first.text == omni.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    finally:
        omni.model.generation_config.do_sample = False
    info = omni.describe()
    assert info["decoding"]["do_sample"] is False and info["thinker_default_sampling_overridden"] is True
    assert info["component"].startswith("thinker only")


def test_batched_greedy_equals_batch_one_and_history_does_not_leak(omni, speech):
    prompts = [Prompt("a", ST, (), waveforms=(speech[0],)),
               Prompt("b", SV, (), waveforms=(speech[1][:9000], speech[0])),
               Prompt("c", "", (), waveforms=(speech[1][:4000],))]
    batched = omni.generate(prompts, [1, 2, 3])
    alone = [omni.generate([p], [s])[0] for p, s in zip(prompts, [1, 2, 3], strict=True)]
    assert [g.text for g in batched] == [g.text for g in alone]
    with torch.no_grad():
        inputs = omni.inputs_for(prompts)
        assert (inputs["attention_mask"][:, 0] == 0).any()
        batch_logits = omni.model(**inputs).logits[:, -1]
        singles = [omni.model(**omni.inputs_for([p])).logits[0, -1] for p in prompts]
    for i, single in enumerate(singles):
        assert (batch_logits[i] - single).abs().max().item() < 1e-4
    # mrope deltas are cached on the model between calls: B alone equals B after A
    b = Prompt("b2", SV, (), ("Yes", "No"), waveforms=(speech[1],))
    fresh = omni.score_choices([b])
    omni.generate([prompts[1]], [2])
    assert omni.score_choices([b]) == fresh


def test_choice_scores_equal_an_independent_forward(omni, speech):
    choices = ("A", "B", "C")
    question = "What will the man do next? A. Start to take exercise; B. Do as he always does; C. Change his time."
    [scores] = omni.score_choices([Prompt("q", question, (), choices, waveforms=(speech[0],))])
    expected = independent_choice_logprobs(omni, chat_text(question, 1), (speech[0],), choices)
    assert len(scores) == 3 and all(s < 0 for s in scores)
    assert max(abs(a - b) for a, b in zip(scores, expected, strict=True)) < 1e-5
    [pair] = omni.score_choices([Prompt("v", SV, (), ("Yes", "No"), waveforms=speech)])
    assert pair == pytest.approx(independent_choice_logprobs(omni, chat_text(SV, 2), speech, ("Yes", "No")), abs=1e-5)


def test_single_token_choices_after_generation_cost_no_forward(omni, speech):
    """Right after generate, option letters are read off the first step: the independent computation's
    numbers, with no model call (the first read-off is checked against a forward pass, once)."""
    question = "What will the man do next? A. Start to take exercise; B. Do as he always does; C. Change his time."
    prompts = [Prompt(f"q{i}", question, (), ("A", "B", "C"), waveforms=(speech[i],)) for i in range(2)]
    assert all(len(omni.choice_token_ids(c)) == 1 for c in ("A", "B", "C"))
    read = read_off_without_a_forward(omni, prompts, [1, 2], omni.model)
    for prompt, row in zip(prompts, read, strict=True):
        expected = independent_choice_logprobs(omni, chat_text(question, 1), prompt.waveforms, ("A", "B", "C"))
        assert row == pytest.approx(expected, abs=1e-5)


def test_a_clip_over_the_window_never_reaches_the_feature_extractor(omni, monkeypatch, speech):
    assert omni.max_audio_s == omni.feature_extractor.n_samples / 16000 == 30.0
    calls = []
    monkeypatch.setattr(type(omni.feature_extractor), "__call__", lambda *a, **k: calls.append(1))
    long_clip = np.resize(speech[0], 45 * 16000)
    with pytest.raises(ValueError, match=r"clip 1 is 45\.00 s, longer than the model's 30 s window"):
        omni.generate([Prompt("long", ST, (), waveforms=(long_clip,))], [1])
    with pytest.raises(ValueError, match="45.00 s"):
        omni.score_choices([Prompt("long", SV, (), ("Yes", "No"), waveforms=(long_clip,))])
    assert calls == []


def test_a_bad_folder_is_refused_with_the_reason(tmp_path, folder):
    from wavllm_eval.model_zoo.qwen2_5_omni import Qwen25OmniAdapter

    with pytest.raises(InputError, match="missing config.json, .*preprocessor_config.json"):
        Qwen25OmniAdapter.load(tmp_path, LoadOptions(device="cpu"))
    qwen2_audio = BUILDERS["qwen2-audio"](tmp_path / "q2a")
    with pytest.raises(InputError, match="model_type is 'qwen2_audio'"):
        Qwen25OmniAdapter.load(qwen2_audio, LoadOptions(device="cpu"))


def test_end_to_end_through_evaluate(folder, tmp_path, shared_data):
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions

    tasks = {"covost2-en-de": "en2de.tsv", "iemocap-er": "emo.tsv"}
    outcome = evaluate(EvaluationRequest(
        task_ids=list(tasks), model_id="qwen2.5-omni", output_dir=tmp_path / "out",
        data_overrides={t: shared_data / f for t, f in tasks.items()}, model_path=folder,
        options=RunOptions(max_new_tokens=6, show_progress=False, device="cpu", dtype="float32")))
    for task_id in tasks:
        entry = outcome.results["tasks"][task_id]
        assert entry["n_total"] == entry["n_scored"] == 1, (task_id, entry)
    assert outcome.results["model"]["details"]["decoding"]["do_sample"] is False
