"""WavLLM: checkpoint mapping, prompt ids, prompt-aware LoRA, and logits against an independent
re-computation of the official (Meta-layout, fairseq-key) forward pass on the same weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.choice_read_off import read_off_without_a_forward
from tests.prefetch_check import assert_prepared_ahead_changes_nothing
from tests.wavllm_tiny import N_HEADS, N_LAYERS, build_tiny_wavllm
from wavllm_eval.adapter import LoadOptions
from wavllm_eval.audio import load_audio
from wavllm_eval.errors import InputError
from wavllm_eval.types import AudioRef, Prompt

ASR_PROMPT = "Based on the attached audio, generate a comprehensive text transcription of the spoken content."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    return build_tiny_wavllm(tmp_path_factory.mktemp("wavllm"), shared_data / "llama2_tokenizer.model")


@pytest.fixture(scope="module")
def adapter(tiny):
    from wavllm_eval.model_zoo.wavllm import WavLLMGreedyAdapter

    # tiny random models never emit EOS: the supported generation cap keeps each test short
    return WavLLMGreedyAdapter.load(tiny[0], LoadOptions(device="cpu", dtype="float32", max_new_tokens=8))


@pytest.fixture(scope="module")
def asr_audio(shared_data):
    return load_audio(AudioRef(shared_data / "audio" / "asr.flac"))


def test_prompt_token_ids_match_the_release(adapter):
    left, right, scale_ids = adapter.prompt_pieces(ASR_PROMPT)
    assert len(left) == 57
    assert left[:10] == [1, 518, 25580, 29962, 9314, 14816, 29903, 6778, 13, 2887]
    assert left[-8:] == [13, 13, 29966, 29903, 4162, 29923, 3210, 29958]
    raw_right = adapter.tokenizer.encode(" </SPEECH> " + ASR_PROMPT + " [/INST]")
    assert len(raw_right) == 29 and raw_right[:7] == [29871, 1533, 29903, 4162, 29923, 3210, 29958]
    assert raw_right[-4:] == [518, 29914, 25580, 29962]
    assert right == [1, *raw_right[1:]]  # the BOS quirk: '▁' replaced by BOS at inference
    assert len(scale_ids) == 20 and adapter.tokenizer.id_to_piece(scale_ids[0]) == '▁"'
    _, empty_right, empty_scale = adapter.prompt_pieces("")
    assert len(empty_right) == 12 and empty_scale == [5124]


def test_every_checkpoint_tensor_is_used_and_mismatches_are_named(tiny):
    from wavllm_eval.model_zoo._wavllm_checkpoint import convert_state_dict
    from wavllm_eval.model_zoo.wavllm import build_model

    root, official = tiny
    model = build_model(root)
    converted = convert_state_dict(official, model)
    assert len(converted) == len(official) == len(model.state_dict())
    broken = dict(official)
    broken.pop("gpt_model.model_llama.layers.1.attention.wk_lora_B")
    broken["gpt_model.model_llama.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"missing 1 \(llama.model.layers.1.self_attn.k_proj.lora_B.weight\).*"
                                         r"unexpected 1 \(gpt_model.model_llama.extra_head.weight\)"):
        convert_state_dict(broken, model)


def test_audio_token_count_for_the_asr_clip(adapter, asr_audio):
    assert adapter.audio_embeddings(asr_audio).shape == (1, 131, 64)  # 1044 mel frames -> 522 -> 131


# --- the independent reference: the official forward pass, Meta layout, from fairseq keys ----------
def rms_norm(x, weight, eps=1e-6):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def meta_llama(official, embeds, scale):
    """Returns (last layer output before the final norm, logits); complex-pair RoPE; LoRA delta * scale."""
    sd = {k[len("gpt_model.model_llama."):]: v for k, v in official.items() if k.startswith("gpt_model.model_llama.")}
    batch, length, dim = embeds.shape
    head_dim = dim // N_HEADS
    freqs = 1.0 / (10000 ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    freqs_cis = torch.polar(torch.ones(length, head_dim // 2), torch.outer(torch.arange(length).float(), freqs))

    def rope(x):
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3).type_as(x)

    def proj(x, layer, name):
        out = x @ sd[f"layers.{layer}.attention.{name}.weight"].T
        if scale is not None:
            out = out + ((x @ sd[f"layers.{layer}.attention.{name}_lora_A"]) @ sd[f"layers.{layer}.attention.{name}_lora_B"]) * scale[:, None, :]
        return out

    mask = torch.full((length, length), float("-inf")).triu(1)
    h = embeds
    for i in range(N_LAYERS):
        x = rms_norm(h, sd[f"layers.{i}.attention_norm.weight"])
        q = rope(proj(x, i, "wq").view(batch, length, N_HEADS, head_dim))
        k = rope(proj(x, i, "wk").view(batch, length, N_HEADS, head_dim))
        v = proj(x, i, "wv").view(batch, length, N_HEADS, head_dim)
        scores = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(2, 3)) / math.sqrt(head_dim) + mask
        attention = torch.softmax(scores.float(), dim=-1).type_as(q) @ v.transpose(1, 2)
        h = h + proj(attention.transpose(1, 2).reshape(batch, length, dim), i, "wo")
        x = rms_norm(h, sd[f"layers.{i}.ffn_norm.weight"])
        gate = F.silu(x @ sd[f"layers.{i}.feed_forward.w1.weight"].T) * (x @ sd[f"layers.{i}.feed_forward.w3.weight"].T)
        h = h + gate @ sd[f"layers.{i}.feed_forward.w2.weight"].T
    return h, rms_norm(h, sd["norm.weight"]) @ sd["output.weight"].T


def reference_scale(official, ids):
    sd = {k[len("gpt_model.model_llama."):]: v for k, v in official.items() if k.startswith("gpt_model.model_llama.")}
    hidden, _ = meta_llama(official, sd["tok_embeddings.weight"][ids][None], scale=None)
    projected = F.linear(F.gelu(F.linear(hidden, sd["scale_fc_1.weight"], sd["scale_fc_1.bias"])),
                         sd["scale_fc_2.weight"], sd["scale_fc_2.bias"])
    weights = torch.softmax(F.linear(projected, sd["scale_weight_attention.weight"], sd["scale_weight_attention.bias"]), dim=1)
    return torch.clamp(F.relu((weights * projected).sum(1)), max=3.0)


def reference_stream(official, prefix, hidden):
    x = hidden.transpose(1, 2)
    for i in range(2):
        x = F.glu(F.conv1d(x, official[f"{prefix}.subsample.conv_layers.{i}.weight"],
                           official[f"{prefix}.subsample.conv_layers.{i}.bias"], stride=2, padding=1), dim=1)
    x = x.transpose(1, 2)
    branch = F.linear(F.gelu(F.linear(x, official[f"{prefix}.adapter.down_layer.weight"], official[f"{prefix}.adapter.down_layer.bias"])),
                      official[f"{prefix}.adapter.up_layer.weight"], official[f"{prefix}.adapter.up_layer.bias"])
    x = F.layer_norm(branch, (x.shape[-1],), official[f"{prefix}.adapter.layer_norm.weight"],
                     official[f"{prefix}.adapter.layer_norm.bias"]) + x
    return F.linear(x, official[f"{prefix}.projector.weight"], official[f"{prefix}.projector.bias"])


def reference_audio(tiny, waveform, chunk_s=30):
    from transformers import (
        Wav2Vec2FeatureExtractor,
        WavLMConfig,
        WavLMModel,
        WhisperConfig,
        WhisperFeatureExtractor,
    )
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    root, official = tiny
    whisper = WhisperEncoder(WhisperConfig.from_pretrained(root / "whisper")).eval()
    whisper.load_state_dict({k[len("audio_encoder.model."):]: v for k, v in official.items() if k.startswith("audio_encoder.model.")})
    wavlm = WavLMModel(WavLMConfig.from_pretrained(root / "wavlm")).eval()
    wavlm.load_state_dict({k[len("wavlm_encoder.model."):]: v for k, v in official.items() if k.startswith("wavlm_encoder.model.")})
    # the official code cuts audio into 30 s chunks, encodes each padded to 30 s, keeps the frames of the
    # longest chunk's mel length in every chunk, subsamples each chunk, and concatenates in time
    extractor = WhisperFeatureExtractor.from_pretrained(root / "whisper")
    step = chunk_s * 16000
    mels = [extractor(waveform[i: i + step], sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
            for i in range(0, len(waveform), step)]
    keep = max((int(m.attention_mask.sum()) - 1) // 2 + 1 for m in mels)
    semantic = torch.cat([reference_stream(official, "audio_encoder", whisper(m.input_features).last_hidden_state[:, :keep])
                          for m in mels], dim=1)
    values = Wav2Vec2FeatureExtractor.from_pretrained(root / "wavlm")(waveform, sampling_rate=16000, return_tensors="pt")
    states = wavlm(values.input_values, output_hidden_states=True).hidden_states
    weights = torch.softmax(official["wavlm_encoder.output_weights"], 0)
    acoustic = reference_stream(official, "wavlm_encoder", sum(w * s for w, s in zip(weights, states, strict=True)))
    length = min(semantic.shape[1], acoustic.shape[1])
    return F.linear(torch.cat([semantic[:, :length], acoustic[:, :length]], -1), official["wavlm_audio_proj.weight"],
                    official["wavlm_audio_proj.bias"])


def test_logits_equal_the_official_forward_pass(tiny, adapter, asr_audio):
    root, official = tiny
    prompt = Prompt("0", ASR_PROMPT, (), waveforms=(asr_audio[: 16000 * 4],))
    inputs, scale, _ = adapter.input_embeddings(prompt)
    adapter.model.lora_scale.value = scale
    try:
        with torch.no_grad():
            logits = adapter.model.llama(inputs_embeds=inputs).logits
    finally:
        adapter.model.lora_scale.value = None

    left, right, scale_ids = adapter.prompt_pieces(ASR_PROMPT)
    with torch.no_grad():
        ref_scale = reference_scale(official, torch.tensor(scale_ids))
        table = official["gpt_model.model_llama.tok_embeddings.weight"]
        audio = reference_audio(tiny, asr_audio[: 16000 * 4])
        embeds = torch.cat([table[torch.tensor(left)][None], audio, table[torch.tensor(right)][None]], dim=1)
        _, ref_logits = meta_llama(official, embeds, ref_scale)
    assert torch.allclose(scale, ref_scale, atol=1e-4)
    assert ref_scale.abs().sum() > 0  # the LoRA path is exercised, not zeroed
    assert logits.shape == ref_logits.shape
    assert (logits - ref_logits).abs().max().item() < 1e-4


def test_zero_scale_is_the_base_model_and_the_scale_path_is_exact(adapter):
    from wavllm_eval.model_zoo._wavllm_modeling import LoRAScale, PromptScaledLoRALinear

    model = adapter.model
    ids = torch.tensor([[1, 450, 4996, 17354]])
    with torch.no_grad():
        base = model.llama(input_ids=ids).logits
        model.lora_scale.value = torch.zeros(1, 64)
        zero = model.llama(input_ids=ids).logits
        model.lora_scale.value = None
    assert torch.equal(base, zero)

    torch.manual_seed(3)
    state = LoRAScale()
    layer = PromptScaledLoRALinear(torch.nn.Linear(8, 6), r=2, scale=state, channel_order=torch.tensor([1, 0, 3, 2, 5, 4]))
    x, s = torch.randn(2, 3, 8), torch.rand(2, 6) * 3
    state.value = s
    expected = layer.base(x) + (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T) * s[:, [1, 0, 3, 2, 5, 4]][:, None, :]
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_batched_greedy_equals_batch_one(adapter, asr_audio, shared_data):
    prompts = [Prompt("a", ASR_PROMPT, (), waveforms=(asr_audio[:16000 * 3],)),
               Prompt("b", "Translate the audio clip into German.", (), waveforms=(asr_audio[16000 * 2: 16000 * 4],)),
               Prompt("c", "", (), waveforms=(asr_audio[:8000],))]
    batched = adapter.generate(prompts, [1, 2, 3])
    alone = [adapter.generate([p], [s])[0] for p, s in zip(prompts, [1, 2, 3], strict=True)]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert all(g.n_new_tokens > 0 for g in batched)


def test_choice_scores_equal_the_official_forward_pass(tiny, adapter, asr_audio):
    root, official = tiny
    question = "Is there only one speaker in the audio clip?"
    choices = ("Yes", "No", "Only one speaker")
    [scores] = adapter.score_choices([Prompt("s", question, (), choices=choices, waveforms=(asr_audio[:16000],))])
    left, right, scale_ids = adapter.prompt_pieces(question)
    table = official["gpt_model.model_llama.tok_embeddings.weight"]
    expected = []
    with torch.no_grad():
        ref_scale = reference_scale(official, torch.tensor(scale_ids))
        prefix = [table[torch.tensor(left)][None], reference_audio(tiny, asr_audio[:16000]), table[torch.tensor(right)][None]]
        for choice in choices:
            ids = adapter.tokenizer.encode(choice)
            embeds = torch.cat([*prefix, table[torch.tensor(ids)][None]], dim=1)
            _, logits = meta_llama(official, embeds, ref_scale)
            start = embeds.shape[1] - len(ids) - 1
            logprobs = torch.log_softmax(logits[0, start: start + len(ids)].double(), dim=-1)
            expected.append(float(logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum()))
    assert scores == pytest.approx(expected, abs=1e-4)


def test_converted_safetensors_folder_loads_the_same_model(tiny, tmp_path, adapter):
    from wavllm_eval.model_zoo._wavllm_checkpoint import convert_checkpoint
    from wavllm_eval.model_zoo.wavllm import WavLLMGreedyAdapter

    out = convert_checkpoint(tiny[0], tmp_path / "converted")
    assert (out / "model.safetensors").is_file() and not (out / "final.pt").exists()
    again = WavLLMGreedyAdapter.load(out, LoadOptions(device="cpu", dtype="float32"))
    for (name, a), (_, b) in zip(adapter.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_end_to_end_run_on_every_shared_manifest(tiny, tmp_path, shared_data):
    from wavllm_eval.cli import main

    out = tmp_path / "out"
    argv = ["run", "--model", "wavllm", "--model-path", str(tiny[0]), "--output-dir", str(out), "--no-progress",
            "--max-new-tokens", "6",
            "--tasks", "librispeech-test-clean,covost2-en-de,voxceleb1-sv,iemocap-er,gaokao-sqa",
            "--data", f"librispeech-test-clean={shared_data / 'asr.tsv'}", "--data", f"covost2-en-de={shared_data / 'en2de.tsv'}",
            "--data", f"voxceleb1-sv={shared_data / 'sv.tsv'}", "--data", f"iemocap-er={shared_data / 'emo.tsv'}",
            "--data", f"gaokao-sqa={shared_data / 'SQA.tsv'}"]
    assert main(argv) == 0
    results = json.loads((out / "wavllm/results.json").read_text())
    for task_id, entry in results["tasks"].items():
        assert entry["n_total"] == entry["n_scored"] == 1, task_id
    assert "eer" in results["tasks"]["voxceleb1-sv"]["metrics"]  # candidate scoring ran
    assert results["model"]["details"]["parameters"] > 0
    records = [json.loads(x) for x in (out / "wavllm/samples/librispeech-test-clean.jsonl").read_text().splitlines()]
    assert records[0]["status"] == "ok" and records[0]["meta"]["n_new_tokens"] == 6  # the cap held
    assert results["model"]["config"]["max_new_tokens"] == 6
    # time to first token: measured in the model call (audio encoding + prefill), before the 5 later steps
    throughput = results["tasks"]["librispeech-test-clean"]["throughput"]
    assert throughput["ttft_calls"] == 1 and 0 < throughput["ttft_s_mean"] < throughput["model_s"]


def test_long_audio_is_chunked_at_30_seconds_as_the_official_code(tiny, adapter):
    waveform = np.random.default_rng(0).standard_normal(16000 * 35).astype(np.float32) * 0.1
    with torch.no_grad():
        ours = adapter.audio_embeddings(waveform)
        reference = reference_audio(tiny, waveform)
    # each chunk keeps the longest chunk's 1500 encoder frames (padding of the 5 s tail included): 2 x 375
    # whisper tokens; WavLM sees the whole 35 s (1750 frames -> 438 tokens); the streams are cut to 438
    assert ours.shape == reference.shape == (1, 438, 64)
    assert (ours - reference).abs().max().item() < 1e-4


def test_a_stock_llama_config_gets_the_released_rms_norm_eps(tiny, tmp_path):
    import shutil

    from wavllm_eval.model_zoo.wavllm import WavLLMGreedyAdapter

    folder = tmp_path / "stock"
    shutil.copytree(tiny[0], folder)
    config = json.loads((folder / "llama/config.json").read_text())
    config["rms_norm_eps"] = 1e-5  # what a stock LLaMA-2-7B-chat config.json says
    (folder / "llama/config.json").write_text(json.dumps(config))
    adapter = WavLLMGreedyAdapter.load(folder, LoadOptions(device="cpu", max_new_tokens=2))
    norms = [m for m in adapter.model.llama.modules() if type(m).__name__ == "LlamaRMSNorm"]
    assert norms and {m.variance_epsilon for m in norms} == {1e-6}
    assert adapter.describe()["rms_norm_eps_in_config"] == 1e-5
    ids = torch.tensor([[1, 450, 4996, 17354]])
    table = tiny[1]["gpt_model.model_llama.tok_embeddings.weight"]
    with torch.no_grad():
        logits = adapter.model.llama(input_ids=ids).logits
        _, reference = meta_llama(tiny[1], table[ids], scale=None)  # eps 1e-6, the release
    assert (logits - reference).abs().max().item() < 1e-4


def test_a_folder_missing_several_files_names_them_all(tiny, tmp_path):
    import shutil

    from wavllm_eval.model_zoo.wavllm import WavLLMGreedyAdapter

    folder = tmp_path / "partial"
    shutil.copytree(tiny[0], folder)
    (folder / "tokenizer.model").unlink()
    shutil.rmtree(folder / "wavlm")
    with pytest.raises(InputError) as caught:
        WavLLMGreedyAdapter.load(folder, LoadOptions(device="cpu"))
    message = str(caught.value)
    for name in ("tokenizer.model", "wavlm/config.json", "wavlm/preprocessor_config.json"):
        assert name in message


def test_int8_loading_runs_and_stays_close_to_fp32(tiny, adapter, asr_audio):
    from wavllm_eval.model_zoo.wavllm import WavLLMGreedyAdapter

    quantised = WavLLMGreedyAdapter.load(tiny[0], LoadOptions(device="cpu", dtype="int8", max_new_tokens=4))
    assert quantised.describe()["dtype"] == "int8-dynamic"
    ids = torch.tensor([[1, 450, 4996, 17354, 1701]])
    with torch.no_grad():
        full = adapter.model.llama(input_ids=ids).logits
        small = quantised.model.llama(input_ids=ids).logits
    assert torch.corrcoef(torch.stack([full.flatten(), small.flatten()]))[0, 1] > 0.99
    [generation] = quantised.generate([Prompt("q", ASR_PROMPT, (), waveforms=(asr_audio[:16000],))], [1])
    assert generation.n_new_tokens > 0


@pytest.fixture(scope="module")
def sampling_adapter(tiny):
    from wavllm_eval.model_zoo.wavllm import WavLLMAdapter

    return WavLLMAdapter.load(tiny[0], LoadOptions(device="cpu", dtype="float32", max_new_tokens=6))


def test_sampling_is_batched_and_equal_to_batch_one(sampling_adapter, asr_audio):
    prompts = [Prompt(str(i), ASR_PROMPT if i % 2 else "Translate the audio clip into German.", (),
                      waveforms=(asr_audio[1600 * i: 1600 * i + 8000 + 2000 * i],)) for i in range(8)]
    seeds = [100 + i for i in range(8)]
    eight = [g.text for g in sampling_adapter.generate(prompts, seeds)]
    three = [g.text for k in range(0, 8, 3) for g in sampling_adapter.generate(prompts[k:k + 3], seeds[k:k + 3])]
    one = [sampling_adapter.generate([p], [s])[0].text for p, s in zip(prompts, seeds, strict=True)]
    assert eight == three == one
    other_seeds = [g.text for g in sampling_adapter.generate(prompts, [900 + i for i in range(8)])]
    assert other_seeds != eight  # the seed matters: it is sampling, not greedy
    greedy = [g.text for g in WavLLMGreedyAdapter_generate(sampling_adapter, prompts)]
    assert greedy != eight


def test_batched_decoding_differs_from_batch_one_only_by_float_rounding(sampling_adapter, asr_audio, monkeypatch):
    """What 'batch 8 equals batch 1' rests on. At every step, every row's logits in a left-padded batch
    of 8 equal that row's logits alone within float rounding (a padding, mask or position fault moves
    them by far more). Where a row's draw nonetheless differs, the draw sat within float rounding of
    a CDF boundary: this test finds one (seed 300 on one thread: 2e-9 from the boundary at step 1)."""
    import numpy as np

    import wavllm_eval.sampling as sampling

    seen: list[tuple[torch.Tensor, list[float]]] = []
    original = sampling.draw_tokens
    monkeypatch.setattr(sampling, "draw_tokens",
                        lambda logits, u: seen.append((logits.clone(), list(u))) or original(logits, u))

    def draw(logits: torch.Tensor, u: float) -> tuple[int, float]:
        """numpy inverse CDF: the token and the target's distance to the nearest CDF boundary."""
        x = logits.double().numpy()
        p = np.exp(x - x.max())
        cdf = np.cumsum(p / p.sum())
        token = int(np.sum(cdf <= u * cdf[-1]))
        return token, float(np.min(np.abs(cdf[max(token - 1, 0): token + 1] - u * cdf[-1])))

    prompts = [Prompt(str(i), ASR_PROMPT, (), waveforms=(asr_audio[1600 * i: 1600 * i + 6000 + 3000 * i],))
               for i in range(8)]
    seeds = [300 + i for i in range(8)]
    batched_text = [g.text for g in sampling_adapter.generate(prompts, seeds)]
    batched = [(logits, u) for logits, u in seen]
    seen.clear()
    parted = 0
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        seen.clear()
        [alone] = sampling_adapter.generate([prompt], [seed])
        for (logits_b, u_b), (logits_1, u_1) in zip(batched, seen, strict=False):
            row, single = logits_b[i], logits_1[0]
            finite = torch.isfinite(single)
            assert torch.equal(finite, torch.isfinite(row)) and u_b[i] == u_1[0]  # same banned tokens, same draw
            difference = (row[finite] - single[finite]).abs().max().item()
            assert difference < 1e-4, f"row {i}: batched logits differ from batch 1 by {difference}"
            (token_b, _), (token_1, gap) = draw(row, u_b[i]), draw(single, u_1[0])
            if token_b != token_1:  # the outputs part here: only at a near-tie
                assert gap < 1e-6, f"row {i} parted {gap} from the nearest CDF boundary"
                parted += 1
                break
        else:
            assert alone.text == batched_text[i]
    assert parted <= 1
    assert (batched[0][0][0] - batched[0][0][1]).abs().nan_to_num().max() > 1e-2  # rows are different prompts


def WavLLMGreedyAdapter_generate(adapter, prompts):
    return adapter._generate_batch(prompts)  # no seeds: plain greedy search on the same model


def full_forward_choice_logprobs(adapter, prompt) -> list[float]:
    """log P(choice | audio, prompt) from one forward pass over prompt + choice, per choice."""
    inputs, scale, _ = adapter.input_embeddings(prompt)
    embed = adapter.model.llama.model.embed_tokens
    out = []
    adapter.model.lora_scale.value = scale
    try:
        with torch.no_grad():
            for choice in prompt.choices:
                ids = adapter.tokenizer.encode(choice)
                full = torch.cat([inputs, embed(torch.tensor([ids]))], dim=1)
                logits = adapter.model.llama(inputs_embeds=full).logits[0].double()
                start = inputs.shape[1] - 1
                logprobs = torch.log_softmax(logits[start: start + len(ids)], dim=-1)
                out.append(float(logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum()))
    finally:
        adapter.model.lora_scale.value = None
    return out


def test_shared_prefix_choice_scores_equal_full_forwards(adapter, asr_audio):
    """Today's shortcut (one prefix pass, cached continuation) against a full forward per choice."""
    prompt = Prompt("s", "Can you describe the emotional condition of the speaker in the provided audio clip?", (),
                    choices=("neutral", "happy", "angry", "sad", "a mix of joy and fear"),
                    waveforms=(asr_audio[:24000],))
    [fast] = adapter.score_choices([prompt])
    slow = full_forward_choice_logprobs(adapter, prompt)
    assert any(len(adapter.tokenizer.encode(c)) > 1 for c in prompt.choices)  # both paths exercised
    assert fast == pytest.approx(slow, abs=1e-5)


def test_choice_scores_never_reuse_another_prompts_prefix(adapter, asr_audio):
    """score_choices reuses the prefix generation built, but only for the very same prompt: another
    prompt under the same sample id (other audio) is encoded afresh."""
    question, choices = "Is there only one speaker in the audio clip?", ("Yes", "No")
    generated = Prompt("s", question, (), choices=choices, waveforms=(asr_audio[:16000],))
    other = Prompt("s", question, (), choices=choices, waveforms=(asr_audio[16000 * 4: 16000 * 6],))
    adapter.generate([generated], [1])
    [after_generation] = adapter.score_choices([other])
    [fresh] = adapter.score_choices([other])
    [own] = adapter.score_choices([generated])
    assert after_generation == fresh and own != pytest.approx(fresh, abs=1e-4)


@pytest.mark.parametrize("sampled", [False, True])
def test_single_token_choices_are_read_off_the_first_generation_step(adapter, sampling_adapter, asr_audio, sampled):
    """After generate, Yes/No (and option letters, emotion words) cost no model call: the first
    step's logits, before any constraint or sampling, give log P(choice) as a full forward does."""
    model = sampling_adapter if sampled else adapter
    choices = ("Yes", "No")
    assert all(len(model.tokenizer.encode(c)) == 1 for c in choices)
    prompts = [Prompt(str(i), "Is there only one speaker in the audio clip?", (), choices=choices,
                      waveforms=(asr_audio[8000 * i: 8000 * i + 12000 + 4000 * i],)) for i in range(3)]
    fast = read_off_without_a_forward(model, prompts, [5, 6, 7], model.model.llama)
    for prompt, row in zip(prompts, fast, strict=True):
        assert row == pytest.approx(full_forward_choice_logprobs(model, prompt), abs=1e-5)
    # a second call (no generation just before) scores them with its own forward, equally
    again = model.score_choices(prompts)
    assert [x for row in again for x in row] == pytest.approx([x for row in fast for x in row], abs=1e-5)


def test_released_constraints_ban_pad_always_and_eos_at_the_first_step(adapter, asr_audio):
    """The release never draws id 0 (pad = unk), and not EOS as the first token: with the EOS logit
    raised above every other, the answer is one token, then EOS."""
    from wavllm_eval.model_zoo.wavllm import EOS, UNK, released_constraints

    constraints = released_constraints()
    scores = torch.randn(2, 10)
    first, later = constraints(torch.zeros(2, 0, dtype=torch.long), scores), constraints(torch.ones(2, 3, dtype=torch.long), scores)
    assert torch.isinf(first[:, [UNK, EOS]]).all() and torch.equal(first[:, 3:], scores[:, 3:])
    assert torch.isinf(later[:, UNK]).all() and torch.equal(later[:, 1:], scores[:, 1:])

    prompt = Prompt("e", ASR_PROMPT, (), waveforms=(asr_audio[:16000],))
    free = adapter.generate([prompt], [0])[0]
    head = adapter.model.llama.lm_head
    bias = torch.zeros(head.out_features)
    bias[EOS] = 1000.0  # EOS above every other token at every step
    head.bias = torch.nn.Parameter(bias)
    try:
        ended = adapter.generate([prompt], [0])[0]
    finally:
        head.bias = None
    assert free.n_new_tokens > 1 and ended.n_new_tokens == 1 and ended.text != ""


def test_whisper_chunks_of_a_batch_equal_clip_by_clip(adapter, asr_audio):
    clips = [asr_audio[:16000 * 2], asr_audio[: 16000 * 10], asr_audio[16000: 16000 * 4]]
    together = adapter.audio_embeddings_batch(clips)
    alone = [adapter.audio_embeddings_batch([c])[0] for c in clips]
    for a, b in zip(together, alone, strict=True):
        assert a.shape == b.shape and (a - b).abs().max().item() < 1e-5


def test_sdpa_attention_on_request_stays_within_the_fidelity_bound(tiny, adapter, asr_audio):
    from wavllm_eval.model_zoo.wavllm import WavLLMGreedyAdapter

    fast = WavLLMGreedyAdapter.load(tiny[0], LoadOptions(device="cpu", attn="sdpa", max_new_tokens=4))
    assert fast.describe()["attention"] == "sdpa" and adapter.describe()["attention"] == "eager"
    prompt = Prompt("0", ASR_PROMPT, (), waveforms=(asr_audio[:16000 * 2],))
    logits = []
    for model in (adapter, fast):
        inputs, scale, _ = model.input_embeddings(prompt)
        model.model.lora_scale.value = scale
        try:
            with torch.no_grad():
                logits.append(model.model.llama(inputs_embeds=inputs).logits)
        finally:
            model.model.lora_scale.value = None
    assert (logits[0] - logits[1]).abs().max().item() < 1e-4


def test_features_are_computed_ahead_in_a_worker_and_change_nothing(adapter, tmp_path, monkeypatch):
    """The runner's prefetch workers compute the log-mel and WavLM inputs (prepare_audio) while the
    previous batch runs; the model thread only encodes them. The outputs equal a run without it."""
    assert_prepared_ahead_changes_nothing(adapter, tmp_path, monkeypatch, consumer="build_inputs")


def test_converted_weights_are_memory_mapped_not_copied(tiny, tmp_path):
    """A converted folder loads by mapping model.safetensors: at fp32 every parameter's memory is the
    file's pages (a 30 GB checkpoint is not read into RAM first); /proc/self/maps says which file."""
    from wavllm_eval.model_zoo._wavllm_checkpoint import convert_checkpoint
    from wavllm_eval.model_zoo.wavllm import WavLLMGreedyAdapter

    out = convert_checkpoint(tiny[0], tmp_path / "converted")
    loaded = WavLLMGreedyAdapter.load(out, LoadOptions(device="cpu", dtype="float32"))
    target = str((out / "model.safetensors").resolve())
    mapped = []
    for line in open("/proc/self/maps", encoding="utf-8"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == target:
            low, high = (int(x, 16) for x in fields[0].split("-"))
            mapped.append((low, high))
    assert mapped, "model.safetensors is not mapped"
    params = list(loaded.model.parameters())
    outside = [p.shape for p in params if not any(lo <= p.data_ptr() < hi for lo, hi in mapped)]
    assert not outside, f"{len(outside)} of {len(params)} parameters were copied out of the file"
