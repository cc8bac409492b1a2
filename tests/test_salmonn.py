"""SALMONN: Kaldi fbank and BEATs against independent re-computations, window geometry, strict
checkpoint loading with named mismatches, prompt ids, batching, audio reaching both encoders, and
choice scoring against a plain forward pass."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tests.choice_read_off import read_off_without_a_forward
from tests.prefetch_check import assert_prepared_ahead_changes_nothing
from tests.tiny_models.salmonn import BEATS_CFG, BEATS_FILE, BUILDERS, LLM_DIM, salmonn_state
from wavllm_eval.adapter import DecodingConfig, LoadOptions
from wavllm_eval.audio import load_audio
from wavllm_eval.errors import InputError
from wavllm_eval.types import AudioRef, Prompt

ASR = "Recognize the speech and give me the transcription."
MAX_NEW = 6


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, shared_data):
    return BUILDERS["salmonn-13b"](tmp_path_factory.mktemp("salmonn"))


@pytest.fixture(scope="session")
def adapter(tiny_root):
    from wavllm_eval.model_zoo.salmonn import Salmonn13BAdapter

    return Salmonn13BAdapter.load(tiny_root, LoadOptions(device="cpu", dtype="float32", max_new_tokens=MAX_NEW))


@pytest.fixture(scope="session")
def clips(shared_data):
    return {"asr": load_audio(AudioRef(shared_data / "audio" / "asr.flac"))[: 16000 * 3],  # 3 s of 10.4
            "st": load_audio(AudioRef(shared_data / "audio" / "st.flac")),  # 2.2 s
            "emo": load_audio(AudioRef(shared_data / "audio" / "emo.wav"))}  # 0.8 s


# --- Kaldi fbank: torchaudio.compliance.kaldi.fbank's definition, in numpy ----------------------
def numpy_fbank(wave: np.ndarray, num_bins: int = 128, rate: int = 16000) -> np.ndarray:
    x = wave.astype(np.float64)
    length, shift, n_fft = 400, 160, 512
    count = 1 + (len(x) - length) // shift
    frames = np.stack([x[i * shift: i * shift + length] for i in range(count)])
    frames -= frames.mean(axis=1, keepdims=True)  # remove_dc_offset
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)  # pre-emphasis
    n = np.arange(length)
    frames *= (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85  # povey
    spectrum = np.abs(np.fft.rfft(frames, n=n_fft)) ** 2
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    low, high = mel(20.0), mel(rate / 2)
    delta = (high - low) / (num_bins + 1)
    bin_mel = mel(np.arange(n_fft // 2) * rate / n_fft)
    banks = np.zeros((num_bins, n_fft // 2 + 1))
    for m in range(num_bins):
        left, center, right = low + m * delta, low + (m + 1) * delta, low + (m + 2) * delta
        up = (bin_mel - left) / (center - left)
        down = (right - bin_mel) / (right - center)
        banks[m, : n_fft // 2] = np.maximum(0.0, np.minimum(up, down))
    return np.log(np.maximum(spectrum @ banks.T, np.finfo(np.float32).eps))


def test_fbank_equals_the_kaldi_definition():
    from wavllm_eval.model_zoo._kaldi_fbank import fbank

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    signal = (0.3 * np.sin(2 * np.pi * (200 + 3000 * t) * t) + 0.01 * rng.standard_normal(len(t))) * 2 ** 15
    ours = fbank(torch.tensor(signal, dtype=torch.float32)).numpy()
    expected = numpy_fbank(signal.astype(np.float32))
    assert ours.shape == expected.shape == (1 + (8000 - 400) // 160, 128)
    assert np.abs(ours - expected).max() < 2e-3
    assert expected.std() > 1.0  # a real spectrum, not a floor


# --- BEATs: the release's layers, recomputed from the raw checkpoint ----------------------------
def reference_beats(state: dict, cfg: dict, wave: np.ndarray) -> torch.Tensor:
    """The forward of microsoft/unilm beats (T x B x C layout, heads folded into the batch)."""
    banks = torch.tensor(numpy_fbank(wave * 2 ** 15), dtype=torch.float32)
    x = ((banks - 15.41663) / (2 * 6.55582))[None, None]
    x = F.conv2d(x, state["patch_embedding.weight"], stride=cfg["input_patch_size"])
    x = x.reshape(1, x.shape[1], -1).transpose(1, 2)
    x = F.layer_norm(x, (x.shape[-1],), state["layer_norm.weight"], state["layer_norm.bias"])
    x = F.linear(x, state["post_extract_proj.weight"], state["post_extract_proj.bias"])
    weight = torch._weight_norm(state["encoder.pos_conv.0.weight_v"], state["encoder.pos_conv.0.weight_g"], 2)
    conv = F.conv1d(x.transpose(1, 2), weight, state["encoder.pos_conv.0.bias"], padding=cfg["conv_pos"] // 2,
                    groups=cfg["conv_pos_groups"])[:, :, :-1]
    x = x + F.gelu(conv).transpose(1, 2)
    dim, heads = cfg["encoder_embed_dim"], cfg["encoder_attention_heads"]
    x = F.layer_norm(x, (dim,), state["encoder.layer_norm.weight"], state["encoder.layer_norm.bias"]).transpose(0, 1)
    length, head_dim = x.shape[0], dim // heads
    alpha_norm = (2 * cfg["encoder_layers"]) ** 0.25

    relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half = cfg["num_buckets"] // 2
    exact = half // 2
    bucket = (relative > 0).long() * half
    distance = relative.abs()
    far = exact + (torch.log(distance.float() / exact) / math.log(cfg["max_distance"] / exact) * (half - exact)).long()
    bucket = bucket + torch.where(distance < exact, distance, torch.clamp(far, max=half - 1))
    position_bias = state["encoder.layers.0.self_attn.relative_attention_bias.weight"][bucket].permute(2, 0, 1)

    def lin(h, name):
        return F.linear(h, state[f"{name}.weight"], state[f"{name}.bias"])

    for n in range(cfg["encoder_layers"]):
        p = f"encoder.layers.{n}."
        q = lin(x, p + "self_attn.q_proj") * head_dim ** -0.5 / 32
        k, v = lin(x, p + "self_attn.k_proj"), lin(x, p + "self_attn.v_proj")
        q, k, v = (t.contiguous().view(length, heads, head_dim).transpose(0, 1) for t in (q, k, v))
        scores = torch.bmm(q, k.transpose(1, 2))
        scores = (scores - scores.max(dim=-1, keepdim=True)[0]) * 32
        query_layer = q.view(1, heads, length, head_dim) * 32 / head_dim ** -0.5
        gate_a, gate_b = torch.sigmoid(lin(query_layer, p + "self_attn.grep_linear").view(1, heads, length, 2, 4)
                                       .sum(-1)).chunk(2, dim=-1)
        gate = gate_a * (gate_b * state[p + "self_attn.grep_a"] - 1.0) + 2.0
        scores = scores + gate.view(heads, length, 1) * position_bias
        attention = torch.bmm(torch.softmax(scores, dim=-1), v).transpose(0, 1).reshape(length, 1, dim)
        x = F.layer_norm(x * alpha_norm + lin(attention, p + "self_attn.out_proj"), (dim,),
                         state[p + "self_attn_layer_norm.weight"], state[p + "self_attn_layer_norm.bias"])
        ffn = lin(F.gelu(lin(x, p + "fc1")), p + "fc2")
        x = F.layer_norm(x * alpha_norm + ffn, (dim,), state[p + "final_layer_norm.weight"],
                         state[p + "final_layer_norm.bias"])
    return x.transpose(0, 1)


def test_beats_equals_the_release_forward(tiny_root, adapter, clips):
    raw = torch.load(tiny_root / BEATS_FILE, weights_only=True)
    wave = clips["st"][: 16000 * 2]
    with torch.no_grad():
        ours = adapter.model.beats(torch.from_numpy(wave)[None])
        expected = reference_beats(raw["model"], raw["cfg"], wave)
    assert ours.shape == expected.shape == (1, (198 // 16) * 8, BEATS_CFG["encoder_embed_dim"])
    assert (ours - expected).abs().max().item() < 1e-4
    assert adapter.model.beats.encoder.layers[1].self_attn.relative_attention_bias is \
        adapter.model.beats.encoder.layers[0].self_attn.relative_attention_bias


@pytest.mark.parametrize(("seconds", "tokens"), [(1.0, 48), (3.0, 144), (30.0, 1496)])
def test_beats_token_count(adapter, seconds, tokens):
    with torch.no_grad():
        out = adapter.model.beats(torch.zeros(1, int(seconds * 16000)) + 0.01)
    assert out.shape[1] == tokens  # N = (T_fbank // 16) * 8, T_fbank = 1 + (n - 400) // 160


# --- window-level Q-Former --------------------------------------------------------------------
def test_window_geometry_and_order(adapter):
    from wavllm_eval.model_zoo._salmonn_modeling import window_geometry

    assert window_geometry(1500, 0.333333, 0.333333) == (17, 17, 88)
    assert adapter.model.windows_per_clip() == (17, 88)
    fused = torch.arange(2 * 1500 * 3, dtype=torch.float32).view(2, 1500, 3)
    windows = adapter.model.windows(fused)
    assert windows.shape == (2 * 88, 17, 3)
    for b, i in ((0, 0), (0, 87), (1, 5)):
        assert torch.equal(windows[b * 88 + i], fused[b, 17 * i: 17 * i + 17])  # last 4 frames dropped


@pytest.mark.parametrize("seconds", [0.8, 10.4])
def test_always_88_speech_tokens(adapter, seconds):
    wave = np.full(int(seconds * 16000), 0.01, dtype=np.float32)
    assert adapter.speech_embeddings([adapter.waveform(Prompt("x", ASR, (), waveforms=(wave,)))]).shape == (1, 88, LLM_DIM)


def reference_qformer(raw: dict, queries: torch.Tensor, frames: torch.Tensor, heads: int = 2) -> torch.Tensor:
    """The query path of LAVIS's BERT Q-Former (SALMONN `models/Qformer.py`) from release-named
    tensors: LN(query); per layer self-attention, cross-attention over the frames, query FFN, each
    post-LN with its residual."""
    bert = "speech_Qformer.bert."

    def lin(x, name):
        return F.linear(x, raw[f"{bert}{name}.weight"], raw[f"{bert}{name}.bias"])

    def norm(x, name):
        return F.layer_norm(x, (x.shape[-1],), raw[f"{bert}{name}.weight"], raw[f"{bert}{name}.bias"], eps=1e-12)

    def attend(x, memory, block):
        batch, dim = x.shape[0], x.shape[-1]
        split = lambda t: t.view(batch, -1, heads, dim // heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(lin(x, f"{block}.self.query")), split(lin(memory, f"{block}.self.key")), \
            split(lin(memory, f"{block}.self.value"))
        context = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1) @ v
        return norm(lin(context.transpose(1, 2).reshape(batch, -1, dim), f"{block}.output.dense") + x,
                    f"{block}.output.LayerNorm")

    h = norm(queries, "embeddings.LayerNorm")
    for n in range(2):
        layer = f"encoder.layer.{n}"
        h = attend(h, h, f"{layer}.attention")
        h = attend(h, frames, f"{layer}.crossattention")
        ffn = lin(F.gelu(lin(h, f"{layer}.intermediate_query.dense")), f"{layer}.output_query.dense")
        h = norm(ffn + h, f"{layer}.output_query.LayerNorm")
    return h


def test_speech_tokens_follow_the_release_pipeline(tiny_root, adapter, clips):
    """ln_speech on Whisper, ln_audio on BEATs then zero-pad, concat, 17-frame windows, the LAVIS
    Q-Former and the projection, all recomputed from the checkpoint's own release-named tensors."""
    raw = torch.load(tiny_root / "salmonn_v1.pth", weights_only=True)["model"]
    model, wave = adapter.model, clips["st"]
    with torch.no_grad():
        mel = adapter.feature_extractor(wave, sampling_rate=16000, return_tensors="pt").input_features
        whisper = model.speech_encoder(mel).last_hidden_state
        beats = model.beats(torch.from_numpy(wave)[None])
        speech = F.layer_norm(whisper, (whisper.shape[-1],), raw["ln_speech.weight"], raw["ln_speech.bias"])
        audio = F.layer_norm(beats, (beats.shape[-1],), raw["ln_audio.weight"], raw["ln_audio.bias"])
        audio = torch.cat([audio, torch.zeros(1, 1500 - audio.shape[1], audio.shape[2])], dim=1)
        fused = torch.cat([speech, audio], dim=-1)
        windows = torch.cat([fused[:, 17 * i: 17 * i + 17] for i in range(88)])  # 88 samples of 17 frames
        out = reference_qformer(raw, raw["speech_query_tokens"].expand(88, -1, -1), windows)
        expected = F.linear(out[:, 0], raw["speech_llama_proj.weight"], raw["speech_llama_proj.bias"])[None]
        ours = adapter.speech_embeddings([wave])
    assert (ours - expected).abs().max().item() < 1e-5


# --- checkpoint loading ---------------------------------------------------------------------------
def test_every_tensor_is_sourced_and_the_values_are_the_files(tiny_root, adapter):
    weights = adapter.describe()["weights"]
    files = {Path(k).relative_to(tiny_root).as_posix() for k in weights}
    assert files == {"vicuna/model.safetensors", "whisper/model.safetensors", BEATS_FILE, "salmonn_v1.pth"}
    state = adapter.model.state_dict()
    assert sum(v["n_tensors"] for v in weights.values()) == len(state)
    trained = weights[str(tiny_root / "salmonn_v1.pth")]
    assert "llm.base_model.model.model.layers.{0-1}.self_attn.q_proj.lora_A.default.weight" in trained["keys"]
    assert "speech_qformer.encoder.layer.{0-1}.crossattention.attention.key.weight" in trained["keys"]
    assert "speech_Qformer.cls.predictions.bias" in trained["ignored"]
    assert "speech_Qformer.bert.encoder.layer.{0-1}.intermediate.dense.weight" in trained["ignored"]
    assert any(k.startswith("decoder.") for k in weights[str(tiny_root / "whisper" / "model.safetensors")]["ignored"])
    raw = torch.load(tiny_root / "salmonn_v1.pth", weights_only=True)["model"]
    assert torch.equal(state["speech_qformer.encoder.layer.1.attention.attention.query.weight"],
                       raw["speech_Qformer.bert.encoder.layer.1.attention.self.query.weight"])
    assert torch.equal(state["speech_qformer.layernorm.bias"], raw["speech_Qformer.bert.embeddings.LayerNorm.bias"])
    assert torch.equal(state["llm.base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"],
                       raw["llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"])
    lora = adapter.model.causal_lm.model.layers[0].self_attn.q_proj
    assert lora.scaling["default"] == 32 / 8 and not lora.training


def test_a_mismatched_checkpoint_is_refused_with_the_keys_named(adapter):
    from wavllm_eval.model_zoo._salmonn_checkpoint import map_salmonn_state

    torch.manual_seed(1)
    state = salmonn_state()
    state.pop("llama_model.base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight")
    state["speech_Qformer.bert.encoder.layer.0.attention.query.weight"] = torch.zeros(16, 16)  # a bad rename
    state["speech_llama_proj.weight"] = torch.zeros(7, 16)
    with pytest.raises(InputError) as error:
        map_salmonn_state("ckpt.pth", state, adapter.model.state_dict())
    message = str(error.value)
    assert "missing 1 (llama_model.base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight)" in message
    assert "unexpected 1 (speech_Qformer.bert.encoder.layer.0.attention.query.weight)" in message
    assert "wrong shape 1 (speech_llama_proj.weight (7, 16) vs (32, 16))" in message


def test_broken_folders_fail_at_load(tiny_root, tmp_path):
    from wavllm_eval.model_zoo.salmonn import Salmonn7BAdapter, Salmonn13BAdapter

    options = LoadOptions(device="cpu")
    with pytest.raises(InputError, match="missing salmonn_7b_v0.pth\\|salmonn.safetensors"):
        Salmonn7BAdapter.load(tiny_root, options)  # a 13B folder is not a 7B folder
    broken = tmp_path / "broken"
    shutil.copytree(tiny_root, broken)
    raw = torch.load(broken / "salmonn_v1.pth", weights_only=True)
    raw["model"].pop("ln_audio.bias")
    torch.save(raw, broken / "salmonn_v1.pth")
    with pytest.raises(InputError, match=r"missing 1 \(ln_audio.bias\)"):
        Salmonn13BAdapter.load(broken, options)
    beats = torch.load(tiny_root / BEATS_FILE, weights_only=True)
    beats["model"]["encoder.layers.0.self_attn.extra"] = torch.zeros(1)
    torch.save(beats, broken / BEATS_FILE)
    with pytest.raises(InputError, match=r"unexpected 1 \(encoder.layers.0.self_attn.extra\)"):
        Salmonn13BAdapter.load(broken, options)
    shutil.copy(tiny_root / BEATS_FILE, broken / BEATS_FILE)
    whisper = load_file(str(broken / "whisper" / "model.safetensors"))
    whisper.pop("encoder.layer_norm.weight")
    save_file(whisper, str(broken / "whisper" / "model.safetensors"))
    with pytest.raises(InputError, match=r"whisper: checkpoint does not match the model: missing 1 \(layer_norm.weight\)"):
        Salmonn13BAdapter.load(broken, options)
    shutil.copy(tiny_root / "whisper" / "model.safetensors", broken / "whisper" / "model.safetensors")
    vicuna = load_file(str(broken / "vicuna" / "model.safetensors"))
    vicuna.pop("model.layers.1.mlp.up_proj.weight")
    save_file(vicuna, str(broken / "vicuna" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"vicuna: .*missing 1 \(model.layers.1.mlp.up_proj.weight\)"):
        Salmonn13BAdapter.load(broken, options)


def test_convert_writes_safetensors_that_load_the_same(tiny_root, adapter, tmp_path, clips):
    from wavllm_eval.model_zoo.salmonn import Salmonn13BAdapter

    out = Salmonn13BAdapter.convert(tiny_root, tmp_path / "converted")
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pth")) and not list(out.rglob("*.bin"))
    converted = Salmonn13BAdapter.load(out, LoadOptions(device="cpu", max_new_tokens=MAX_NEW))
    prompt = Prompt("c", ASR, (), choices=("Yes", "No"), waveforms=(clips["st"],))
    assert converted.score_choices([prompt])[0] == pytest.approx(adapter.score_choices([prompt])[0], abs=1e-6)


# --- prompt ---------------------------------------------------------------------------------------
def test_prompt_token_ids(adapter):
    assert adapter.tokenizer.get_piece_size() == 32000
    before, after = adapter.prompt_ids(ASR)
    assert before == [1, 3148, 1001, 29901, 529, 10649, 5309, 29958]  # <s> ▁US ER : ▁< Spe ech >
    # ▁</ Spe ech > ▁Rec ogn ize ▁the ▁speech ▁and ▁give ▁me ▁the ▁trans cription . <0x0A> ASS IST ANT :
    assert after == [1533, 10649, 5309, 29958, 3599, 3811, 675, 278, 12032, 322, 2367, 592, 278, 1301, 3395, 29889,
                     13, 22933, 9047, 13566, 29901]
    harness_asr = "Based on the attached audio, generate a comprehensive text transcription of the spoken content."
    assert adapter.prompt_ids(harness_asr) == (before, after)  # the release's own ASR test prompt is used
    _, passthrough = adapter.prompt_ids("")
    assert passthrough == [1533, 10649, 5309, 29958, 29871, 13, 22933, 9047, 13566, 29901]


def test_every_harness_default_instruction_has_the_released_prompt():
    from wavllm_eval.model_zoo.salmonn import NATIVE_PROMPTS
    from wavllm_eval.tasks import asr, er, st, sv

    assert NATIVE_PROMPTS[asr.WAVLLM_ASR_INSTRUCTION] == "Recognize the speech and give me the transcription."
    assert NATIVE_PROMPTS[st.WAVLLM_ST_INSTRUCTION] == "Listen to the speech and translate it into German."
    assert NATIVE_PROMPTS[sv.WAVLLM_SV_INSTRUCTION] == "Do you only hear the same person talking? Answer yes or no."
    assert NATIVE_PROMPTS[er.WAVLLM_ER_INSTRUCTION] == "Describe the emotion of the speaker in one word."


def test_waveform_policy(adapter):
    long_clip = np.full(16000 * 20, 0.1, dtype=np.float32)
    trial = Prompt("long-trial", "", (), waveforms=(long_clip, long_clip))
    assert len(adapter.waveform(trial)) == 16000 * 30 and len(adapter.waveform(trial)) == 16000 * 30
    assert adapter.truncated_ids == {"long-trial"} and adapter.describe()["audio_policy"]["n_truncated"] == 1
    joined = adapter.waveform(Prompt("j", "", (), waveforms=(long_clip[:16000], long_clip[:8000])))
    assert len(joined) == 16000 + 1600 + 8000 and not joined[16000:17600].any()
    assert len(adapter.waveform(Prompt("s", "", (), waveforms=(long_clip[:4000],)))) == 16000
    assert adapter.describe()["audio_policy"]["max_audio_s"] == adapter.max_audio_s == 30.0


# --- generation -----------------------------------------------------------------------------------
def _prompts(clips):
    return [Prompt("a", ASR, (), waveforms=(clips["asr"],)),
            Prompt("b", "Listen to the speech and translate it into German.", (), waveforms=(clips["st"],)),
            Prompt("c", "Describe the emotion of the speaker in one word.", (), waveforms=(clips["emo"],))]


@pytest.mark.parametrize("num_beams", [4, 1])
def test_batched_generation_equals_batch_size_one(adapter, clips, num_beams):
    prompts = _prompts(clips)
    saved = adapter.decoding
    adapter.decoding = DecodingConfig(do_sample=False, num_beams=num_beams, max_new_tokens=200)
    try:
        alone_last = adapter.generate([prompts[2]], [0])
        batched = adapter.generate(prompts, [0, 0, 0])
        alone = [adapter.generate([p], [0])[0] for p in prompts]
    finally:
        adapter.decoding = saved
    assert [g.text for g in batched] == [g.text for g in alone]
    assert alone_last[0].text == alone[2].text  # nothing carries over from earlier calls
    assert all(g.n_new_tokens == MAX_NEW for g in batched) and len({g.text for g in batched}) > 1


def test_single_token_choices_after_beam_search_cost_no_forward(adapter, clips):
    """Right after (beam-4) generation, single-token choices are read off the first step: a plain
    forward's numbers, with no model call (the first read-off is checked against a forward, once)."""
    choices = tuple(c for c in ("Yes", "No", "A", "B", "C") if len(adapter.tokenizer.encode(c)) == 1)
    assert len(choices) >= 2 and adapter.decoding.num_beams == 4
    prompts = [Prompt(f"s{i}", "Is there only one speaker? Answer yes or no.", (), choices=choices,
                      waveforms=(clips[name],)) for i, name in enumerate(("asr", "st"))]
    read = read_off_without_a_forward(adapter, prompts, [0, 0], adapter.model.causal_lm)
    for prompt, row in zip(prompts, read, strict=True):
        with torch.no_grad():  # a plain forward over the prompt's inputs
            logits = adapter.model.causal_lm(inputs_embeds=adapter.input_embeddings([prompt])[0]).logits[0, -1]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        assert row == pytest.approx([float(logprobs[adapter.tokenizer.encode(c)[0]]) for c in choices], abs=1e-5)


def test_audio_reaches_both_encoders(adapter, clips):
    seen = {}
    hooks = [adapter.model.speech_encoder.register_forward_pre_hook(lambda m, a: seen.__setitem__("mel", a[0])),
             adapter.model.beats.register_forward_pre_hook(lambda m, a: seen.__setitem__("wave", a[0]))]
    prompt = Prompt("a", ASR, (), waveforms=(clips["st"],))
    silent = Prompt("a", ASR, (), waveforms=(np.zeros_like(clips["st"]),))
    try:
        with torch.no_grad():
            spoken = adapter.model.causal_lm(inputs_embeds=adapter.input_embeddings([prompt])[0]).logits
    finally:
        for hook in hooks:
            hook.remove()
    expected_mel = adapter.feature_extractor(clips["st"], sampling_rate=16000, return_tensors="pt").input_features
    assert seen["mel"].shape == (1, 80, 3000) and torch.allclose(seen["mel"], expected_mel)
    assert torch.equal(seen["wave"][0], torch.from_numpy(clips["st"]))
    with torch.no_grad():
        quiet = adapter.model.causal_lm(inputs_embeds=adapter.input_embeddings([silent])[0]).logits
    assert (spoken[0, -1] - quiet[0, -1]).abs().max().item() > 1e-3


def test_score_choices_equals_a_plain_forward(adapter, clips):
    import sentencepiece as spm

    from tests.tiny_models.salmonn import TOKENIZER

    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    instruction = "Do you only hear the same person talking? Answer yes or no."
    prompt = Prompt("v", instruction, (), choices=("Yes", "No", "not sure"), waveforms=(clips["st"], clips["emo"]))
    ours = adapter.score_choices([prompt])[0]
    table = adapter.model.causal_lm.get_input_embeddings().weight
    speech = adapter.speech_embeddings([adapter.waveform(prompt)])
    before = [1, *sp.encode("USER: <Speech>")]
    after = sp.encode("</Speech> " + instruction + "\nASSISTANT:")
    expected = []
    for choice in prompt.choices:
        ids = sp.encode(choice)
        embeds = torch.cat([table[before][None], speech, table[after + ids][None]], dim=1)
        with torch.no_grad():
            logprobs = torch.log_softmax(adapter.model.causal_lm(inputs_embeds=embeds).logits[0], dim=-1)
        start = len(before) + speech.shape[1] + len(after)
        expected.append(sum(logprobs[start - 1 + j, token].item() for j, token in enumerate(ids)))
    assert ours == pytest.approx(expected, abs=1e-5)
    assert len(sp.encode("not sure")) == 2


def test_both_ids_load_their_builders(tmp_path):
    from wavllm_eval.registry import model_class

    root = BUILDERS["salmonn-7b"](tmp_path)
    adapter = model_class("salmonn-7b").load(root, LoadOptions(device="cpu", max_new_tokens=2))
    assert adapter.describe()["vicuna"] == "lmsys/vicuna-7b-v1.5"
    assert model_class("salmonn-13b").required_files[0] == "salmonn_v1.pth|salmonn.safetensors"


def test_legacy_peft_lora_names_map_to_the_adapter_name():
    from wavllm_eval.model_zoo._salmonn_checkpoint import salmonn_to_model_key

    legacy = "llama_model.base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight"
    assert salmonn_to_model_key(legacy) == "llm.base_model.model.model.layers.3.self_attn.v_proj.lora_B.default.weight"
    assert salmonn_to_model_key("speech_Qformer.bert.encoder.layer.1.output.dense.weight") is None  # text FFN
    assert salmonn_to_model_key("speech_Qformer.bert.encoder.layer.1.output_query.dense.weight") == \
        "speech_qformer.encoder.layer.1.output_query.dense.weight"


def test_end_to_end_through_evaluate(tiny_root, tmp_path, shared_data):
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions

    tasks = {"gaokao-sqa": "SQA.tsv"}  # generation and choice scoring through the runner (ASR: above)
    outcome = evaluate(EvaluationRequest(
        task_ids=list(tasks), model_id="salmonn-13b", output_dir=tmp_path / "out",
        data_overrides={t: shared_data / f for t, f in tasks.items()}, model_path=tiny_root,
        options=RunOptions(max_new_tokens=4, show_progress=False, device="cpu", dtype="float32")))
    results = outcome.results
    for task_id in tasks:
        entry = results["tasks"][task_id]
        assert entry["n_total"] == 1 and entry["n_scored"] == 1, (task_id, entry)
    assert "accuracy_choice" in results["tasks"]["gaokao-sqa"]["metrics"]  # candidate scoring ran


def test_whisper_mel_is_computed_ahead_in_a_worker_and_changes_nothing(adapter, tmp_path, monkeypatch):
    """The runner's prefetch workers compute each prompt's waveform and Whisper log-mel
    (prepare_audio); the outputs equal a run in which the model thread computes them."""
    assert_prepared_ahead_changes_nothing(adapter, tmp_path, monkeypatch, consumer="input_embeddings")
