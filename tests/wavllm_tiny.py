"""A tiny WavLLM in the released layout: configs saved with save_pretrained, a synthetic fairseq
`final.pt` with the official key names (Meta-layout LLaMA, LoRA as (in, r)/(r, out)), and the real
LLaMA-2 tokenizer. Random weights; only the sizes are small."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

DIMS = {"whisper_sub_mid": 64, "wavlm_sub_mid": 24, "adapter_dim": 32, "adapter_bottleneck": 16,
        "prompt_hidden": 16, "lora_r": 4, "lora_alpha": 4}
LLM_DIM, N_HEADS, N_LAYERS, FFN, VOCAB = 64, 4, 2, 128, 32000


def build_tiny_wavllm(root: Path, tokenizer: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    from transformers import (
        LlamaConfig,
        Wav2Vec2FeatureExtractor,
        WavLMConfig,
        WavLMModel,
        WhisperConfig,
        WhisperFeatureExtractor,
    )
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    whisper_config = WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                                   decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80,
                                   max_source_positions=1500, vocab_size=100)
    whisper_config.save_pretrained(root / "whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "whisper")
    wavlm_config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               conv_dim=(32,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=32,
                               max_bucket_distance=64)
    wavlm_config.save_pretrained(root / "wavlm")
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=False,
                             return_attention_mask=True).save_pretrained(root / "wavlm")
    LlamaConfig(vocab_size=VOCAB, hidden_size=LLM_DIM, intermediate_size=FFN, num_hidden_layers=N_LAYERS,
                num_attention_heads=N_HEADS, num_key_value_heads=N_HEADS, rms_norm_eps=1e-6,
                max_position_embeddings=2048, tie_word_embeddings=False).save_pretrained(root / "llama")
    (root / "wavllm.json").write_text(json.dumps(DIMS))
    shutil.copy(tokenizer, root / "tokenizer.model")

    official: dict[str, torch.Tensor] = {}

    def rand(*shape, scale=0.2):
        return torch.randn(*shape) * scale

    for name, tensor in WhisperEncoder(whisper_config).state_dict().items():
        official[f"audio_encoder.model.{name}"] = tensor.clone()
    for name, tensor in WavLMModel(wavlm_config).state_dict().items():
        official[f"wavlm_encoder.model.{name}"] = tensor.clone()
    official["wavlm_encoder.output_weights"] = rand(3, scale=1.0)
    p, a, b = LLM_DIM // 2, DIMS["adapter_dim"], DIMS["adapter_bottleneck"]
    for stream, in_dim, mid in (("audio_encoder", 64, DIMS["whisper_sub_mid"]), ("wavlm_encoder", 32, DIMS["wavlm_sub_mid"])):
        official[f"{stream}.subsample.conv_layers.0.weight"] = rand(mid, in_dim, 3)
        official[f"{stream}.subsample.conv_layers.0.bias"] = rand(mid)
        official[f"{stream}.subsample.conv_layers.1.weight"] = rand(2 * a, mid // 2, 3)
        official[f"{stream}.subsample.conv_layers.1.bias"] = rand(2 * a)
        official[f"{stream}.adapter.down_layer.weight"], official[f"{stream}.adapter.down_layer.bias"] = rand(b, a), rand(b)
        official[f"{stream}.adapter.up_layer.weight"], official[f"{stream}.adapter.up_layer.bias"] = rand(a, b), rand(a)
        official[f"{stream}.adapter.layer_norm.weight"] = 1 + rand(a)
        official[f"{stream}.adapter.layer_norm.bias"] = rand(a)
        official[f"{stream}.projector.weight"], official[f"{stream}.projector.bias"] = rand(p, a), rand(p)
    official["wavlm_audio_proj.weight"], official["wavlm_audio_proj.bias"] = rand(LLM_DIM, LLM_DIM), rand(LLM_DIM)
    official["audio_proj.weight"], official["audio_proj.bias"] = rand(LLM_DIM, p), rand(LLM_DIM)
    llama = "gpt_model.model_llama."
    official[llama + "tok_embeddings.weight"] = rand(VOCAB, LLM_DIM, scale=1.0)
    official[llama + "norm.weight"] = 1 + rand(LLM_DIM)
    official[llama + "output.weight"] = rand(VOCAB, LLM_DIM)
    r = DIMS["lora_r"]
    for i in range(N_LAYERS):
        layer = f"{llama}layers.{i}."
        for w in ("wq", "wk", "wv", "wo"):
            # LLaMA-like conditioning (std ~ 1/sqrt(dim)): random but not chaotic, so float32
            # rounding stays far below the 1e-4 agreement the logits test asks for
            official[f"{layer}attention.{w}.weight"] = rand(LLM_DIM, LLM_DIM, scale=0.08)
            official[f"{layer}attention.{w}_lora_A"] = rand(LLM_DIM, r, scale=0.08)
            official[f"{layer}attention.{w}_lora_B"] = rand(r, LLM_DIM, scale=0.3)
        official[f"{layer}feed_forward.w1.weight"] = rand(FFN, LLM_DIM, scale=0.08)
        official[f"{layer}feed_forward.w3.weight"] = rand(FFN, LLM_DIM, scale=0.08)
        official[f"{layer}feed_forward.w2.weight"] = rand(LLM_DIM, FFN, scale=0.08)
        official[f"{layer}attention_norm.weight"] = 1 + rand(LLM_DIM)
        official[f"{layer}ffn_norm.weight"] = 1 + rand(LLM_DIM)
    h = DIMS["prompt_hidden"]
    official[llama + "scale_fc_1.weight"], official[llama + "scale_fc_1.bias"] = rand(h, LLM_DIM), rand(h)
    official[llama + "scale_fc_2.weight"], official[llama + "scale_fc_2.bias"] = rand(LLM_DIM, h, scale=1.0), rand(LLM_DIM) + 0.5
    official[llama + "scale_weight_attention.weight"] = rand(1, LLM_DIM)
    official[llama + "scale_weight_attention.bias"] = rand(1)
    torch.save({"model": official, "cfg": {"model": {"_name": "speechllm_model"}}}, root / "final.pt")
    return root, official
