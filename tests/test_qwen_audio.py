"""Qwen-Audio / Qwen-Audio-Chat native port: tokenizer and prompt ids, strict checkpoint mapping, and
logits against an independent re-computation of the released architecture (`QwenLM/Qwen-Audio`
`audio.py` + `modeling_qwen.py` equations, written here on the release's key names and layout)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.choice_read_off import read_off_without_a_forward
from tests.tiny_models.qwen_audio import (
    AUDIO_HEADS,
    AUDIO_LAYERS,
    HEADS,
    LAYERS,
    N_RANKS,
    build_tiny_qwen_audio,
    released_state_dict,
)
from wavllm_eval.adapter import LoadOptions
from wavllm_eval.audio import load_audio
from wavllm_eval.errors import InputError
from wavllm_eval.types import AudioRef, Prompt

# Special-token ids, counted from <|endoftext|> (= the number of BPE ranks) with the offsets of the
# release's ids in the shared reference (qwen_audio.md §3): 151643 + offset.
EOD, IM_START, IM_END = N_RANKS, N_RANKS + 1, N_RANKS + 2
PAD = N_RANKS + (151851 - 151643)
SOT, SOA, TRANSLATE, TRANSCRIBE = (N_RANKS + (i - 151643) for i in (151852, 151853, 151854, 151855))
KEYWORD = N_RANKS + (151857 - 151643)  # AUDIO_ST position 6
EN, DE, NOTIMESTAMPS = N_RANKS + (151859 - 151643), N_RANKS + (151861 - 151643), N_RANKS + (151868 - 151643)
ITN, WO_ITN, EMOTION = N_RANKS + (154876 - 151643), N_RANKS + (154877 - 151643), N_RANKS + (154887 - 151643)
QUESTION, ANSWER = N_RANKS + (155152 - 151643), N_RANKS + (155153 - 151643)
AUDIO_START, AUDIO_END = N_RANKS + (155163 - 151643), N_RANKS + (155164 - 151643)
SV_INSTRUCTION = "Is there only one speaker in the audio clip?"


def text_ids(text: str) -> list[int]:
    """The tiny vocabulary's ranks are the byte values; its four merges (ab, bc, cd) never occur in
    the texts these tests pin, so BPE leaves every byte alone."""
    assert not any(pair in text for pair in ("ab", "bc", "cd"))
    return list(text.encode("utf-8"))


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_qwen_audio(tmp_path_factory.mktemp("qwen_audio") / "release")


@pytest.fixture(scope="module")
def released():
    return released_state_dict()


@pytest.fixture(scope="module")
def base(tiny):
    from wavllm_eval.model_zoo.qwen_audio import QwenAudioAdapter

    return QwenAudioAdapter.load(tiny, LoadOptions(device="cpu", dtype="float32", max_new_tokens=6))


@pytest.fixture(scope="module")
def chat(tiny):
    from wavllm_eval.model_zoo.qwen_audio import QwenAudioChatAdapter

    return QwenAudioChatAdapter.load(tiny, LoadOptions(device="cpu", dtype="float32", max_new_tokens=6))


@pytest.fixture(scope="module")
def speech(tmp_path_factory, speak_fn):
    path = speak_fn("the quick brown fox jumps over the lazy dog", tmp_path_factory.mktemp("speech") / "s.flac")
    return load_audio(AudioRef(path))


# --- tokenizer -----------------------------------------------------------------------------------
def test_special_token_ids_are_the_releases():
    from wavllm_eval.model_zoo._qwen_audio_tokenizer import special_token_ids

    ids = special_token_ids(151643)  # the released qwen.tiktoken has 151,643 ranks
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                "[[[AUDIO:modality]]]": 151851, "<|startoftranscript|>": 151852, "<|startofanalysis|>": 151853,
                "<|translate|>": 151854, "<|transcribe|>": 151855, "<|en|>": 151859, "<|de|>": 151861,
                "<|notimestamps|>": 151868, "<|itn|>": 154876, "<|wo_itn|>": 154877,
                "<|emotion_recognition|>": 154887, "<|question|>": 155152, "<|answer|>": 155153,
                "<audio>": 155163, "</audio>": 155164}
    assert {k: ids[k] for k in expected} == expected
    assert len(ids) == 208 + 3314 and max(ids.values()) == 155164


def test_bpe_merges_lowest_rank_first_and_decodes_back(tiny):
    from wavllm_eval.model_zoo._qwen_audio_tokenizer import QwenTokenizer

    tok = QwenTokenizer.from_file(tiny / "qwen.tiktoken")
    # ranks: ab 256, bc 257, abc 258, cd 259. "abcd": ab (256) beats bc and cd -> [ab, c, d];
    # then abc (258) beats cd (259) -> [abc, d]; abcd is no token.
    assert tok.encode("abcd") == [258, ord("d")]
    assert tok.encode("bcd") == [257, ord("d")]  # bc (257) before cd (259)
    # The pattern splits words with their leading space; special tokens only where allowed
    assert tok.encode("x abc") == [ord("x"), ord(" "), 258]
    assert tok.encode("<|en|>a") == [EN, ord("a")]
    assert tok.encode("<|im_end|><|en|>", allowed_special={"<|en|>"}) == [*text_ids("<|im_end|>"), EN]
    text = "Grüße, <|en|> 12 ab"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([*tok.encode("ok"), EOD, EN], skip_special_tokens=True) == "ok"


# --- prompts -------------------------------------------------------------------------------------
def test_base_prompt_ids_are_the_eval_scripts_task_tags(base):
    from wavllm_eval.tasks.asr import WAVLLM_ASR_INSTRUCTION
    from wavllm_eval.tasks.er import WAVLLM_ER_INSTRUCTION
    from wavllm_eval.tasks.st import WAVLLM_ST_INSTRUCTION

    audio = [AUDIO_START, *[PAD] * 75, AUDIO_END]  # a 3 s clip: 300 mel frames -> T_cnn 150 -> 75 tokens
    assert base.prompt_ids(WAVLLM_ASR_INSTRUCTION, [75]) == [*audio, SOT, EN, TRANSCRIBE, EN, NOTIMESTAMPS, WO_ITN]
    assert base.prompt_ids(WAVLLM_ST_INSTRUCTION, [75]) == [*audio, SOT, EN, TRANSLATE, DE, NOTIMESTAMPS, ITN]
    assert base.prompt_ids(WAVLLM_ER_INSTRUCTION, [75]) == [*audio, SOA, EN, KEYWORD, EN, NOTIMESTAMPS, EMOTION]
    assert base.prompt_ids(SV_INSTRUCTION, [75]) == [*audio, SOA, EN, QUESTION, *text_ids(SV_INSTRUCTION), ANSWER]


def test_chat_prompt_ids_are_make_context_chatml(chat):
    nl = [ord("\n")]
    expected = ([IM_START, *text_ids("system"), *nl, *text_ids("You are a helpful assistant."), IM_END, *nl,
                 IM_START, *text_ids("user"), *nl,
                 *text_ids("Audio 1:"), AUDIO_START, *[PAD] * 75, AUDIO_END, *nl,
                 *text_ids("Audio 2:"), AUDIO_START, *[PAD] * 50, AUDIO_END, *nl,
                 *text_ids(SV_INSTRUCTION), IM_END, *nl, IM_START, *text_ids("assistant"), *nl])
    assert chat.prompt_ids(SV_INSTRUCTION, [75, 50]) == expected


def test_audio_token_counts_follow_the_release_floor_arithmetic():
    from wavllm_eval.model_zoo._qwen_audio_modeling import audio_lengths

    assert audio_lengths(48_000) == (150, 75)
    assert audio_lengths(32_037) == (100, 50)  # floor: 200 mel frames (a ceil mask would give 201)
    assert audio_lengths(40 * 16_000) == (1500, 750)  # truncated at 30 s


# --- checkpoint ----------------------------------------------------------------------------------
def test_every_released_key_is_mapped_and_mismatches_are_named(tiny, released):
    from wavllm_eval.model_zoo._qwen_audio_checkpoint import convert_state_dict
    from wavllm_eval.model_zoo.qwen_audio import build_model

    model = build_model(tiny)
    converted = convert_state_dict(released, model)
    assert set(converted) == set(model.state_dict())
    # c_attn splits into three, every other tensor maps one to one
    assert len(converted) == len(released) + 2 * 2 * LAYERS
    h = released["transformer.wte.weight"].shape[1]
    assert torch.equal(converted["llm.model.layers.1.self_attn.k_proj.bias"],
                       released["transformer.h.1.attn.c_attn.bias"][h: 2 * h])
    assert torch.equal(converted["llm.model.layers.0.mlp.gate_proj.weight"], released["transformer.h.0.mlp.w2.weight"])

    # non-persistent buffers of an older save are recomputed; a missing sinusoid table is rebuilt
    pos = "transformer.audio.positional_embedding"
    older = {**{k: v for k, v in released.items() if k != pos},
             "transformer.h.0.attn.masked_bias": torch.tensor(-1e4), "transformer.rotary_emb.inv_freq": torch.ones(8)}
    assert torch.equal(convert_state_dict(older, model)["audio.encoder.embed_positions.weight"], released[pos])

    broken = dict(released)
    broken.pop("transformer.h.1.mlp.w1.weight")
    broken["transformer.visual.proj.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"missing 1 \(llm\.model\.layers\.1\.mlp\.up_proj\.weight\).*"
                                         r"unexpected 1 \(transformer\.visual\.proj\.weight\)"):
        convert_state_dict(broken, model)
    reshaped = {**released, "transformer.audio.proj.bias": torch.zeros(3)}
    with pytest.raises(InputError, match=r"wrong shape 1 \(audio\.proj\.bias\)"):
        convert_state_dict(reshaped, model)


def test_torch_files_load_tensors_only(tmp_path, tiny, released):
    import shutil

    from wavllm_eval.model_zoo.qwen_audio import QwenAudioAdapter

    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("config.json", "qwen.tiktoken"):
        shutil.copy(tiny / name, folder / name)
    torch.save(released, folder / "pytorch_model.bin")
    loaded = QwenAudioAdapter.load(folder, LoadOptions(device="cpu"))
    assert torch.equal(loaded.model.audio.proj.weight, released["transformer.audio.proj.weight"])
    torch.save({**released, "extra": InputError(None, "an arbitrary object")}, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"refused to unpickle `wavllm_eval\.errors\.InputError`"):
        QwenAudioAdapter.load(folder, LoadOptions(device="cpu"))


def test_missing_files_are_all_named(tmp_path, tiny):
    import shutil

    from wavllm_eval.model_zoo.qwen_audio import QwenAudioAdapter

    shutil.copy(tiny / "config.json", tmp_path / "config.json")
    with pytest.raises(InputError, match=r"missing qwen\.tiktoken, model\.safetensors\.index\.json\|"):
        QwenAudioAdapter.load(tmp_path, LoadOptions(device="cpu"))


def test_converted_folder_loads_the_same_weights(tmp_path, tiny, chat):
    from wavllm_eval.model_zoo.qwen_audio import QwenAudioChatAdapter

    out = QwenAudioChatAdapter.convert(tiny, tmp_path / "converted")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "mel_filters.npz", "model.safetensors",
                                                      "qwen.tiktoken"]
    again = QwenAudioChatAdapter.load(out, LoadOptions(device="cpu", dtype="float32"))
    assert again.layout == "converted" and chat.layout == "release"
    mine, theirs = chat.model.state_dict(), again.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


# --- the independent reference: the release's equations on its own key names ---------------------
def reference_log_mel(waveform: np.ndarray, filters: np.ndarray) -> torch.Tensor:
    """openai-whisper log_mel_spectrogram(pad_or_trim(audio)) (audio.py)."""
    audio = torch.from_numpy(np.pad(waveform[:480000], (0, max(0, 480000 - len(waveform)))).astype(np.float32))
    stft = torch.stft(audio, 400, 160, window=torch.hann_window(400), return_complex=True)
    mel = torch.from_numpy(filters) @ (stft[..., :-1].abs() ** 2)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    return (torch.maximum(log_spec, log_spec.max() - 8.0) + 4.0) / 4.0


def reference_audio(sd, waveform: np.ndarray, filters: np.ndarray) -> torch.Tensor:
    """AudioEncoder.encode for one clip: [bos, tokens, eos]."""
    a = "transformer.audio."
    mel_len = min(len(waveform), 480000) // 160
    t_cnn = (mel_len - 1) // 2 + 1  # get_T_after_cnn: conv k3 s1 p1, then k3 s2 p1
    n_tok = (t_cnn - 2) // 2 + 1
    x = reference_log_mel(waveform, filters)[None, :, : t_cnn * 2]
    x = F.gelu(F.conv1d(x, sd[a + "conv1.weight"], sd[a + "conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, sd[a + "conv2.weight"], sd[a + "conv2.bias"], stride=2, padding=1)).permute(0, 2, 1)
    x = x + sd[a + "positional_embedding"][: x.shape[1]]
    d = x.shape[-1]
    ln = lambda v, name: F.layer_norm(v, (d,), sd[name + ".weight"], sd[name + ".bias"])  # noqa: E731
    for i in range(AUDIO_LAYERS):
        p = f"{a}blocks.{i}."
        h = ln(x, p + "attn_ln")
        q = F.linear(h, sd[p + "attn.query.weight"], sd[p + "attn.query.bias"])
        k = F.linear(h, sd[p + "attn.key.weight"])
        v = F.linear(h, sd[p + "attn.value.weight"], sd[p + "attn.value.bias"])
        scale = (d // AUDIO_HEADS) ** -0.25
        q = q.view(1, -1, AUDIO_HEADS, d // AUDIO_HEADS).permute(0, 2, 1, 3) * scale
        k = k.view(1, -1, AUDIO_HEADS, d // AUDIO_HEADS).permute(0, 2, 3, 1) * scale
        v = v.view(1, -1, AUDIO_HEADS, d // AUDIO_HEADS).permute(0, 2, 1, 3)
        wv = (F.softmax(q @ k, dim=-1) @ v).permute(0, 2, 1, 3).flatten(start_dim=2)
        x = x + F.linear(wv, sd[p + "attn.out.weight"], sd[p + "attn.out.bias"])
        h = ln(x, p + "mlp_ln")
        x = x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"])),
                         sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"])
    x = F.avg_pool1d(x.permute(0, 2, 1), 2, 2).permute(0, 2, 1)
    x = F.linear(ln(x, a + "ln_post"), sd[a + "proj.weight"], sd[a + "proj.bias"])
    table = sd[a + "audio_bos_eos_token.weight"]
    return torch.cat([table[:1], x[0, :n_tok], table[1:]])


def reference_logits(sd, ids: list[int], clips: list[torch.Tensor]) -> torch.Tensor:
    """QWenLMHeadModel.forward (modeling_qwen.py), fp32, no cache: (L, vocab)."""

    def rms(v, name):
        v32 = v.float()
        return (v32 * torch.rsqrt(v32.pow(2).mean(-1, keepdim=True) + 1e-5)).type_as(v) * sd[name]

    ids_t = torch.tensor(ids)
    h = sd["transformer.wte.weight"][ids_t].clone()
    starts = (ids_t == AUDIO_START).nonzero().flatten().tolist()
    ends = (ids_t == AUDIO_START + 1).nonzero().flatten().tolist()
    for (a, b), clip in zip(zip(starts, ends, strict=True), clips, strict=True):
        h[a: b + 1] = clip  # hidden_states[i][a : b+1] = audios[idx]
    length, dim = h.shape
    head = dim // HEADS
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head, 2).float() / head))
    freqs = torch.outer(torch.arange(length).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]

    def rotate(t):
        t1, t2 = t[..., : head // 2], t[..., head // 2:]
        return t * cos + torch.cat((-t2, t1), dim=-1) * sin

    causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
    h = h[None]
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        x = rms(h, p + "ln_1.weight")
        mixed = F.linear(x, sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"])
        q, k, v = (t.view(1, length, HEADS, head) for t in mixed.split(dim, dim=2))
        q, k = rotate(q).permute(0, 2, 1, 3), rotate(k).permute(0, 2, 1, 3)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head)
        scores = torch.where(causal, scores, torch.finfo(scores.dtype).min)
        attn = (F.softmax(scores, dim=-1) @ v.permute(0, 2, 1, 3)).transpose(1, 2).reshape(1, length, dim)
        h = h + F.linear(attn, sd[p + "attn.c_proj.weight"])
        x = rms(h, p + "ln_2.weight")
        a1, a2 = F.linear(x, sd[p + "mlp.w1.weight"]), F.linear(x, sd[p + "mlp.w2.weight"])
        h = h + F.linear(a1 * F.silu(a2), sd[p + "mlp.c_proj.weight"])
    return F.linear(rms(h, "transformer.ln_f.weight"), sd["lm_head.weight"])[0]


def chat_ids(instruction: str, n_tokens: list[int]) -> list[int]:
    nl = [ord("\n")]
    user = []
    for k, n in enumerate(n_tokens, 1):
        user += [*text_ids(f"Audio {k}:"), AUDIO_START, *[PAD] * n, AUDIO_END, *nl]
    return ([IM_START, *text_ids("system"), *nl, *text_ids("You are a helpful assistant."), IM_END, *nl,
             IM_START, *text_ids("user"), *nl, *user, *text_ids(instruction), IM_END, *nl,
             IM_START, *text_ids("assistant"), *nl])


def test_positional_table_is_whisper_sinusoids(released):
    channels = released["transformer.audio.positional_embedding"].shape[1]
    scale = torch.exp(-math.log(10000) / (channels // 2 - 1) * torch.arange(channels // 2))
    t = torch.arange(1500)[:, None] * scale[None]
    assert torch.allclose(released["transformer.audio.positional_embedding"], torch.cat([t.sin(), t.cos()], 1))


def test_logits_equal_the_released_architecture(chat, tiny, released, speech):
    filters = np.load(tiny / "mel_filters.npz")["mel_80"]
    clips = (speech[: 16000 * 2], speech[8000: 8000 + 27_777])
    prompt = Prompt("x", SV_INSTRUCTION, (), waveforms=clips)
    with torch.no_grad():
        logits = chat.model.llm(inputs_embeds=chat.prompt_embeddings(prompt)[None]).logits[0]
        ref_clips = [reference_audio(released, c, filters) for c in clips]
        ref = reference_logits(released, chat_ids(SV_INSTRUCTION, [len(c) - 2 for c in ref_clips]), ref_clips)
    assert [len(c) - 2 for c in ref_clips] == [50, 43]
    assert logits.shape == ref.shape
    assert (logits - ref).abs().max().item() < 1e-4
    assert ref.std() > 0.1  # not a degenerate comparison


def test_audio_reaches_the_encoder_and_changes_the_logits(base, tiny, speech):
    seen = []
    hook = base.model.audio.encoder.conv1.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    clip = speech[: 16000 * 2]
    try:
        with torch.no_grad():
            speech_logits = base.model.llm(inputs_embeds=base.prompt_embeddings(
                Prompt("s", SV_INSTRUCTION, (), waveforms=(clip,)))[None]).logits[0, -1]
            silence_logits = base.model.llm(inputs_embeds=base.prompt_embeddings(
                Prompt("z", SV_INSTRUCTION, (), waveforms=(np.zeros_like(clip),)))[None]).logits[0, -1]
    finally:
        hook.remove()
    assert seen[0].shape == (1, 80, 200)  # 2 s: 200 mel frames, T_cnn 100 -> 2 * 100 frames
    # the clip's own log-mel (padded to 30 s, as the release computes it) reaches the encoder
    reference = reference_log_mel(clip, np.load(tiny / "mel_filters.npz")["mel_80"])[:, :200]
    assert torch.allclose(seen[0][0], reference, atol=1e-5)
    assert (speech_logits - silence_logits).abs().max() > 1e-2


def test_score_choices_equal_forward_log_softmax(chat, tiny, released, speech):
    clips = (speech[: 16000 * 2], speech[16000: 16000 * 3])
    prompt = Prompt("c", SV_INSTRUCTION, (), choices=("Yes", "No"), waveforms=clips)
    [scores] = chat.score_choices([prompt])
    filters = np.load(tiny / "mel_filters.npz")["mel_80"]
    ref_clips = [reference_audio(released, c, filters) for c in clips]
    context = chat_ids(SV_INSTRUCTION, [len(c) - 2 for c in ref_clips])
    embed = chat.model.llm.model.embed_tokens
    for choice, score in zip(("Yes", "No"), scores, strict=True):
        ids = text_ids(choice)
        with torch.no_grad():
            # plain forward of this port, one choice alone
            full = torch.cat([chat.prompt_embeddings(prompt), embed(torch.tensor(ids))])[None]
            logprobs = torch.log_softmax(chat.model.llm(inputs_embeds=full).logits[0].float(), dim=-1)
            plain = sum(logprobs[len(context) - 1 + j, t].item() for j, t in enumerate(ids))
            # the released equations
            ref = torch.log_softmax(reference_logits(released, context + ids, ref_clips), dim=-1)
            released_score = sum(ref[len(context) - 1 + j, t].item() for j, t in enumerate(ids))
        assert abs(score - plain) < 1e-5
        assert abs(score - released_score) < 1e-4
    assert all(s < 0 for s in scores) and scores[0] != scores[1]


def test_single_token_choices_after_generation_cost_no_forward(chat, speech):
    """Right after generate, single-token choices are read off the first step: a plain forward's
    numbers, with no model call (the first read-off is checked against a forward pass, once)."""
    choices = tuple(c for c in ("Yes", "No", "A", "B", "C") if len(chat.tokenizer.encode(c, allowed_special=())) == 1)
    assert len(choices) >= 2
    prompts = [Prompt(f"c{i}", SV_INSTRUCTION, (), choices=choices, waveforms=(speech[4000 * i: 4000 * i + 16000],))
               for i in range(2)]
    read = read_off_without_a_forward(chat, prompts, [1, 2], chat.model.llm)
    for prompt, row in zip(prompts, read, strict=True):
        with torch.no_grad():
            logits = chat.model.llm(inputs_embeds=chat.prompt_embeddings(prompt)[None]).logits[0, -1].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        expected = [float(logprobs[chat.tokenizer.encode(c, allowed_special=())[0]]) for c in choices]
        assert row == pytest.approx(expected, abs=1e-5)


# --- decoding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["base", "chat"])
def test_batched_greedy_equals_batch_one_and_ignores_history(which, request, speech):
    adapter = request.getfixturevalue(which)
    prompts = [Prompt("a", "Transcribe the audio.", (), waveforms=(speech[: 16000 * 3],)),
               Prompt("b", SV_INSTRUCTION, (), waveforms=(speech[:9000], speech[4000:20000])),
               Prompt("c", "What is said?", (), max_new_tokens=3, waveforms=(speech[16000: 16000 * 2],))]
    first = adapter.generate_ids([prompts[1]])
    batched = adapter.generate_ids(prompts)
    alone = [adapter.generate_ids([p])[0] for p in prompts]
    assert batched == alone
    assert alone[1] == first[0]  # after other samples ran: unchanged
    assert len(batched[2]) <= 3 and all(len(t) > 0 for t in batched)
    assert len({tuple(t) for t in batched}) > 1  # different prompts, different outputs
    [generation] = adapter.generate(prompts[2:], [7])
    assert generation.n_new_tokens == len(alone[2])
    assert generation.text == adapter.tokenizer.decode(alone[2], skip_special_tokens=True).strip()


def test_base_task_tags_from_the_instruction():
    from wavllm_eval.model_zoo.qwen_audio import ASR_TAGS, SER_TAGS, base_task_text

    assert base_task_text("Transcribe the speech.") == ASR_TAGS
    assert base_task_text("Translate the audio clip into German.").endswith("<|translate|><|de|><|notimestamps|><|itn|>")
    assert base_task_text("What emotion does the speaker convey?") == SER_TAGS
    assert base_task_text("Who speaks?") == "<|startofanalysis|><|en|><|question|>Who speaks?<|answer|>"


def test_end_to_end_run_on_the_shared_manifests(tiny, tmp_path, shared_data):
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions

    manifests = {"librispeech-test-clean": "asr.tsv", "covost2-en-de": "en2de.tsv", "voxceleb1-sv": "sv.tsv",
                 "iemocap-er": "emo.tsv", "gaokao-sqa": "SQA.tsv"}
    outcome = evaluate(EvaluationRequest(
        task_ids=list(manifests), model_id="qwen-audio-chat", output_dir=tmp_path / "out", model_path=tiny,
        data_overrides={t: shared_data / f for t, f in manifests.items()},
        options=RunOptions(max_new_tokens=4, show_progress=False, device="cpu")))
    tasks = outcome.results["tasks"]
    for task_id in manifests:
        assert tasks[task_id]["n_total"] == tasks[task_id]["n_scored"] == 1, task_id
    assert "eer" in tasks["voxceleb1-sv"]["metrics"]
    assert outcome.results["model"]["details"]["prompt_format"] == "chatml"
