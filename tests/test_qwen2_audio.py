"""Qwen2-Audio base and Instruct on transformers' own classes: the audio keyword and features reach the
encoder, prompt ids are the released formats, left-padded batches equal batch size 1, choice scores
equal a plain forward pass, and a clip over 30 s never reaches the processor."""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch

from tests.choice_read_off import read_off_without_a_forward
from tests.tiny_models.qwen2_audio import BUILDERS, VOCAB_SIZE
from wavllm_eval.adapter import LoadOptions
from wavllm_eval.audio import load_audio
from wavllm_eval.errors import InputError
from wavllm_eval.types import AudioRef, Prompt

ASR = "Based on the attached audio, generate a comprehensive text transcription of the spoken content."
SV = "Is there only one speaker in the audio clip?"
SPAN = "<|audio_bos|><|AUDIO|><|audio_eos|>"


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen2_audio")
    return {mid: BUILDERS[mid](root) for mid in ("qwen2-audio", "qwen2-audio-instruct")}


def _load(model_id, folder):
    from wavllm_eval.registry import model_class

    return model_class(model_id).load(folder, LoadOptions(device="cpu", dtype="float32", max_new_tokens=6))


@pytest.fixture(scope="session")
def instruct(folders):
    return _load("qwen2-audio-instruct", folders["qwen2-audio-instruct"])


@pytest.fixture(scope="session")
def base(folders):
    return _load("qwen2-audio", folders["qwen2-audio"])


@pytest.fixture(scope="session")
def speech(tmp_path_factory, speak_fn):
    root = tmp_path_factory.mktemp("qwen2_audio_speech")
    one = load_audio(AudioRef(speak_fn("he hoped there would be stew for dinner", root / "a.flac")))
    two = load_audio(AudioRef(speak_fn("turnips and carrots", root / "b.flac", voice="en-gb", speed_wpm=180)))
    return one, two


def n_audio_tokens(n_samples: int) -> int:
    """Qwen2-Audio: mel frames ceil(n/160) -> conv stride 2 -> avg-pool 2 (qwen_audio.md §11.1)."""
    frames = math.ceil(n_samples / 160)
    return (((frames - 1) // 2 + 1) - 2) // 2 + 1


def independent_choice_logprobs(adapter, text: str, waves, choices) -> list[float]:
    """Official processor on the full text (audio=), each choice's ids appended, one unpadded forward each."""
    processor = adapter.processor
    inputs = processor(text=[text], audio=list(waves), sampling_rate=16000, return_tensors="pt")
    out = []
    for choice in choices:
        ids = processor.tokenizer(choice, add_special_tokens=False)["input_ids"]
        full = torch.cat([inputs["input_ids"], torch.tensor([ids])], dim=1)
        with torch.no_grad():
            logits = adapter.model(input_ids=full, attention_mask=torch.ones_like(full),
                                   input_features=inputs["input_features"],
                                   feature_attention_mask=inputs["feature_attention_mask"]).logits[0]
        start = inputs["input_ids"].shape[1] - 1
        logprobs = torch.log_softmax(logits[start: start + len(ids)].double(), dim=-1)
        out.append(float(sum(logprobs[i, t] for i, t in enumerate(ids))))
    return out


def test_the_tiny_tokenizer_is_real(instruct):
    tokenizer = instruct.tokenizer
    assert len(tokenizer) == VOCAB_SIZE == instruct.model.config.text_config.vocab_size
    assert tokenizer.decode(tokenizer("Translate the audio clip")["input_ids"]) == "Translate the audio clip"


def test_the_processor_reads_audio_not_audios(instruct, speech):
    """transformers 5.24 names the keyword `audio`; `audios=` leaves the placeholder without audio."""
    from transformers import Qwen2AudioProcessor

    params = inspect.signature(Qwen2AudioProcessor.__call__).parameters
    assert "audio" in params and "audios" not in params
    with pytest.raises(ValueError, match="no audio inputs"):
        instruct.processor(text=[SPAN], audios=[speech[0]], sampling_rate=16000, return_tensors="pt")


def test_the_audio_reaches_the_encoder_and_changes_the_logits(instruct, speech):
    from transformers import WhisperFeatureExtractor

    seen = []
    handle = instruct.audio_encoder().register_forward_pre_hook(lambda _m, args, kwargs: seen.append(
        (args[0] if args else kwargs["input_features"]).detach().clone()), with_kwargs=True)
    try:
        [speech_scores] = instruct.score_choices([Prompt("s", SV, (), ("Yes", "No"), waveforms=(speech[0],))])
    finally:
        handle.remove()
    expected = WhisperFeatureExtractor(feature_size=128)(speech[0], sampling_rate=16000, padding="max_length",
                                                         return_tensors="pt").input_features
    assert len(seen) == 1 and seen[0].shape == (2, 128, 3000)  # one forward, the clip once per choice row
    for row in seen[0]:
        assert torch.allclose(row, expected[0], atol=1e-5)  # the clip's own log-mel, not silence or padding
    silence = np.zeros_like(speech[0])
    [silent_scores] = instruct.score_choices([Prompt("s", SV, (), ("Yes", "No"), waveforms=(silence,))])
    assert max(abs(a - b) for a, b in zip(speech_scores, silent_scores, strict=True)) > 1e-3


def test_instruct_prompt_is_the_released_chat_template(instruct, speech):
    prompt = Prompt("p", SV, (), waveforms=speech)
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                f"Audio 1: {SPAN}\nAudio 2: {SPAN}\n{SV}<|im_end|>\n<|im_start|>assistant\n")
    assert instruct.prompt_text(prompt) == expected
    ids = instruct.inputs_for([prompt])["input_ids"][0].tolist()
    counts = [n_audio_tokens(len(w)) for w in speech]
    expanded = expected.replace("<|AUDIO|>", "\0", 1).replace("<|AUDIO|>", "<|AUDIO|>" * counts[1])
    expanded = expanded.replace("\0", "<|AUDIO|>" * counts[0])
    assert ids == instruct.tokenizer(expanded, add_special_tokens=False)["input_ids"]
    assert ids.count(instruct.model.config.audio_token_index) == sum(counts)
    assert n_audio_tokens(32_000) == 50  # 2 s -> 50 tokens (qwen_audio.md §11.1, verified on 5.24)


def test_base_prompts_follow_the_qwen2_audio_eval_format(base, speech):
    from wavllm_eval.tasks.asr import WAVLLM_ASR_INSTRUCTION
    from wavllm_eval.tasks.er import WAVLLM_ER_INSTRUCTION
    from wavllm_eval.tasks.st import WAVLLM_ST_INSTRUCTION

    def text(instruction, n_clips=1):
        return base.prompt_text(Prompt("p", instruction, (), waveforms=speech[:n_clips]))

    assert text(WAVLLM_ASR_INSTRUCTION) == SPAN + "Detect the language and recognize the speech: <|en|>"
    assert text(WAVLLM_ST_INSTRUCTION) == SPAN + "Detect the language and translate the speech into German: <|en|>"
    assert text(WAVLLM_ER_INSTRUCTION) == SPAN + "Recognize the emotion with keywords in English:"
    assert text(SV, n_clips=2) == SPAN + SPAN + SV  # no official SV prompt: the instruction verbatim
    assert "<|im_start|>" not in text("Anything else?")
    ids = base.inputs_for([Prompt("p", WAVLLM_ASR_INSTRUCTION, (), waveforms=speech[:1])])["input_ids"][0].tolist()
    expected = ("<|audio_bos|>" + "<|AUDIO|>" * n_audio_tokens(len(speech[0])) + "<|audio_eos|>"
                "Detect the language and recognize the speech: <|en|>")
    assert ids == base.tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert ids[-1] == base.tokenizer.convert_tokens_to_ids("<|en|>")  # the language tag is one token


def test_batched_greedy_equals_batch_one(instruct, speech):
    adapter = instruct  # the base model shares every batching step; only its prompt text differs
    prompts = [Prompt("a", ASR, (), waveforms=(speech[0],)),
               Prompt("b", "Translate the audio clip into German.", (), waveforms=(speech[1][:8000],)),
               Prompt("c", SV, (), waveforms=(speech[1], speech[0][:16000]))]
    batched = adapter.generate(prompts, [1, 2, 3])
    alone = [adapter.generate([p], [s])[0] for p, s in zip(prompts, [1, 2, 3], strict=True)]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert all(g.n_new_tokens == 6 for g in batched)  # tiny random models never stop: the cap holds
    # Scores, not only tokens: left padding leaves each row's next-token logits unchanged.
    with torch.no_grad():
        batch_inputs = adapter.inputs_for(prompts)
        assert (batch_inputs["attention_mask"][:, 0] == 0).any() and (batch_inputs["attention_mask"][:, -1] == 1).all()
        batch_logits = adapter.model(**batch_inputs).logits[:, -1]
        for i, prompt in enumerate(prompts):
            single = adapter.model(**adapter.inputs_for([prompt])).logits[0, -1]
            assert (batch_logits[i] - single).abs().max().item() < 1e-4


def test_a_sample_does_not_depend_on_what_ran_before(instruct, speech):
    a = Prompt("a", ASR, (), ("Yes", "No"), waveforms=(speech[0],))
    b = Prompt("b", SV, (), ("Yes", "No"), waveforms=(speech[1],))
    fresh_text, fresh_scores = instruct.generate([b], [2])[0].text, instruct.score_choices([b])
    instruct.generate([a], [1])
    instruct.score_choices([a])
    assert instruct.generate([b], [2])[0].text == fresh_text
    assert instruct.score_choices([b]) == fresh_scores


@pytest.mark.parametrize("model", ["instruct", "base"])
def test_choice_scores_equal_an_independent_forward(model, request, speech):
    adapter = request.getfixturevalue(model)
    choices = ("neutral", "happy", "angry", "sad")
    instruction = "Can you describe the emotional condition of the speaker in the provided audio clip?"
    prompt = Prompt("e", instruction, (), choices, waveforms=(speech[1],))
    [scores] = adapter.score_choices([prompt])
    if model == "instruct":
        text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                f"Audio 1: {SPAN}\n{instruction}<|im_end|>\n<|im_start|>assistant\n")
    else:
        text = SPAN + "Recognize the emotion with keywords in English:"
    expected = independent_choice_logprobs(adapter, text, (speech[1],), choices)
    assert len(scores) == 4 and all(s < 0 for s in scores)
    assert max(abs(a - b) for a, b in zip(scores, expected, strict=True)) < 1e-5
    sv = Prompt("v", SV, (), ("Yes", "No"), waveforms=speech)  # two clips per trial
    [sv_scores] = adapter.score_choices([sv])
    sv_text = adapter.prompt_text(sv)
    assert sv_scores == pytest.approx(independent_choice_logprobs(adapter, sv_text, speech, ("Yes", "No")), abs=1e-5)


@pytest.mark.parametrize("model", ["instruct", "base"])
def test_single_token_choices_after_generation_cost_no_forward(model, request, speech):
    """Right after generate, option letters (single tokens in this tiny tokenizer; Yes/No are too in
    the released one) are read off the first step: the independent computation's numbers, with no
    model call (the adapter's first read-off is checked against a forward pass, once)."""
    adapter = request.getfixturevalue(model)
    question = "What will the man do next? A. Exercise; B. As always; C. Change his time. Answer with a letter."
    choices = ("A", "B", "C")
    trials = [Prompt(f"q{i}", question, (), choices, waveforms=(speech[i], speech[1 - i])) for i in range(2)]
    assert all(len(adapter.choice_token_ids(c)) == 1 for c in choices)
    read = read_off_without_a_forward(adapter, trials, [1, 2], adapter.model)
    for trial, row in zip(trials, read, strict=True):
        expected = independent_choice_logprobs(adapter, adapter.prompt_text(trial), trial.waveforms, choices)
        assert row == pytest.approx(expected, abs=1e-5)


def test_a_45_s_clip_never_reaches_the_processor(instruct, monkeypatch, speech):
    assert type(instruct).max_audio_s == instruct.max_audio_s == 30.0
    calls = []
    monkeypatch.setattr(type(instruct.processor), "__call__", lambda *a, **k: calls.append(1))
    long_clip = np.tile(speech[0], int(np.ceil(45 * 16000 / len(speech[0]))))[: 45 * 16000]
    prompt = Prompt("long", ASR, (), ("Yes", "No"), waveforms=(speech[0], long_clip))
    with pytest.raises(ValueError, match=r"clip 2 is 45\.00 s, longer than the model's 30 s window"):
        instruct.generate([prompt], [1])
    with pytest.raises(ValueError, match="45.00 s"):
        instruct.score_choices([prompt])
    assert calls == []


def test_describe_records_greedy_decoding_and_policies(base, instruct):
    for adapter in (base, instruct):
        info = adapter.describe()
        assert info["decoding"]["do_sample"] is False and info["decoding"]["num_beams"] == 1
        assert info["decoding"]["padding_side"] == "left" and info["max_audio_s"] == 30.0
        assert info["processor_audio_keyword"] == "audio=" and info["parameters"] > 0
        json.dumps(info)
    assert "task_prompts" in base.describe() and "chat template" in instruct.describe()["prompt_format"]


def test_a_bad_folder_names_everything_missing(tmp_path, folders):
    from wavllm_eval.model_zoo.qwen2_audio import Qwen2AudioInstructAdapter

    with pytest.raises(InputError, match=r"missing config.json, model.safetensors\|model.safetensors.index.json, "
                                         r"tokenizer.json\|vocab.json, tokenizer_config.json"):
        Qwen2AudioInstructAdapter.load(tmp_path, LoadOptions(device="cpu"))
    omni = BUILDERS["qwen2.5-omni"](tmp_path / "omni")
    (omni / "processor_config.json").write_text("{}")
    with pytest.raises(InputError, match="model_type is 'qwen2_5_omni'"):
        Qwen2AudioInstructAdapter.load(omni, LoadOptions(device="cpu"))


def test_end_to_end_through_evaluate(folders, tmp_path, shared_data):
    """evaluate() on the shared manifests, plus an ASR manifest whose second clip is 45 s: that one is
    recorded `skipped` with the reason (the runner reads the adapter's 30 s limit), the rest scored."""
    import soundfile as sf

    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions

    speech = load_audio(AudioRef(shared_data / "audio" / "asr.flac"))
    long_path = tmp_path / "long.wav"
    sf.write(str(long_path), np.resize(speech, 45 * 16000), 16000, subtype="PCM_16")
    asr = tmp_path / "asr.tsv"
    asr.write_text("id\taudio\tn_frames\tprompt\ttgt_text\twith_speech\n"
                   f"short\t{shared_data / 'audio' / 'asr.flac'}\t{len(speech)}\t{ASR}\the hoped\tTrue\n"
                   f"long\t{long_path}\t{45 * 16000}\t{ASR}\the hoped\tTrue\n")
    data = {"librispeech-test-clean": asr, "voxceleb1-sv": shared_data / "sv.tsv", "gaokao-sqa": shared_data / "SQA.tsv"}
    outcome = evaluate(EvaluationRequest(
        task_ids=list(data), model_id="qwen2-audio-instruct", output_dir=tmp_path / "out", data_overrides=data,
        model_path=folders["qwen2-audio-instruct"],
        options=RunOptions(max_new_tokens=6, show_progress=False, device="cpu", dtype="float32")))
    tasks = outcome.results["tasks"]
    assert tasks["librispeech-test-clean"]["n_total"] == 2 and tasks["librispeech-test-clean"]["n_skipped"] == 1
    for task_id in ("voxceleb1-sv", "gaokao-sqa"):  # sv.wav is 22 s: under the window, so scored
        assert tasks[task_id]["n_total"] == tasks[task_id]["n_scored"] == 1, (task_id, tasks[task_id])
    assert "accuracy_choice" in tasks["gaokao-sqa"]["metrics"]  # candidate scoring ran
    lines = (tmp_path / "out").rglob("librispeech-test-clean.jsonl")
    records = {r["id"]: r for r in (json.loads(x) for x in next(lines).read_text().splitlines())}
    assert records["long"]["status"] == "skipped" and "30 s" in records["long"]["error"]
    assert records["short"]["status"] == "ok"
