"""A tiny SALMONN in the released layout: whisper/ and vicuna/ written by save_pretrained, a BEATs
`.pt` as microsoft/unilm saves it (`{'cfg': ..., 'model': ...}`), and a SALMONN checkpoint
(`{'model': ...}`) with the release's key names, written here independently of the adapter: the LAVIS
BERT Q-Former (text branch included, as the v1 checkpoint stores it), `speech_query_tokens`,
`speech_llama_proj`, `ln_speech`/`ln_audio` and peft LoRA under `llama_model.`. Random weights; only
the sizes are small (Whisper keeps its 30 s / 1500-frame geometry, so there are 88 windows)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "wavllm_test_data" / "llama2_tokenizer.model"
WHISPER_DIM, BEATS_DIM, QFORMER_DIM, QFORMER_FFN, LLM_DIM, LLM_LAYERS, LORA_R = 16, 32, 16, 32, 32, 2, 8
BEATS_CFG = {"input_patch_size": 16, "embed_dim": 24, "conv_bias": False, "encoder_layers": 2,
             "encoder_embed_dim": BEATS_DIM, "encoder_ffn_embed_dim": 48, "encoder_attention_heads": 4,
             "activation_fn": "gelu", "layer_norm_first": False, "deep_norm": True, "dropout": 0.1,
             "attention_dropout": 0.1, "activation_dropout": 0.0, "encoder_layerdrop": 0.05, "dropout_input": 0.0,
             "layer_wise_gradient_decay_ratio": 0.6, "conv_pos": 16, "conv_pos_groups": 4,
             "relative_position_embedding": True, "num_buckets": 32, "max_distance": 64, "gru_rel_pos": True,
             "finetuned_model": True, "predictor_dropout": 0.0, "predictor_class": 5}
DIMS = {"qformer_hidden": QFORMER_DIM, "qformer_heads": 2, "qformer_ffn": QFORMER_FFN}
TRAINABLE = {"salmonn-13b": "salmonn_v1.pth", "salmonn-7b": "salmonn_7b_v0.pth"}
BEATS_FILE = "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"


def _rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape) * scale


def _norm(prefix: str, dim: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 1.0 + _rand(dim, scale=0.1), f"{prefix}.bias": _rand(dim, scale=0.1)}


def _linear(prefix: str, out_dim: int, in_dim: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _rand(out_dim, in_dim), f"{prefix}.bias": _rand(out_dim, scale=0.05)}


def salmonn_state(llm_layers: int = LLM_LAYERS) -> dict[str, torch.Tensor]:
    """The release's trainable-parts state dict (v1 key names)."""
    width = WHISPER_DIM + BEATS_DIM
    state: dict[str, torch.Tensor] = {"speech_query_tokens": _rand(1, 1, QFORMER_DIM, scale=1.0)}
    bert = "speech_Qformer.bert"
    state[f"{bert}.embeddings.word_embeddings.weight"] = _rand(30522, QFORMER_DIM)
    state[f"{bert}.embeddings.position_embeddings.weight"] = _rand(512, QFORMER_DIM)
    state[f"{bert}.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    state.update(_norm(f"{bert}.embeddings.LayerNorm", QFORMER_DIM))
    for n in range(2):
        layer = f"{bert}.encoder.layer.{n}"
        for block, kv_in in (("attention", QFORMER_DIM), ("crossattention", width)):
            state.update(_linear(f"{layer}.{block}.self.query", QFORMER_DIM, QFORMER_DIM))
            state.update(_linear(f"{layer}.{block}.self.key", QFORMER_DIM, kv_in))
            state.update(_linear(f"{layer}.{block}.self.value", QFORMER_DIM, kv_in))
            state.update(_linear(f"{layer}.{block}.output.dense", QFORMER_DIM, QFORMER_DIM))
            state.update(_norm(f"{layer}.{block}.output.LayerNorm", QFORMER_DIM))
        for branch in ("", "_query"):  # "" is the text FFN, never run for the queries
            state.update(_linear(f"{layer}.intermediate{branch}.dense", QFORMER_FFN, QFORMER_DIM))
            state.update(_linear(f"{layer}.output{branch}.dense", QFORMER_DIM, QFORMER_FFN))
            state.update(_norm(f"{layer}.output{branch}.LayerNorm", QFORMER_DIM))
    state["speech_Qformer.cls.predictions.bias"] = _rand(30522)
    state.update(_linear("speech_Qformer.cls.predictions.transform.dense", QFORMER_DIM, QFORMER_DIM))
    state.update(_norm("speech_Qformer.cls.predictions.transform.LayerNorm", QFORMER_DIM))
    state.update(_linear("speech_llama_proj", LLM_DIM, QFORMER_DIM))
    state.update(_norm("ln_speech", WHISPER_DIM))
    state.update(_norm("ln_audio", BEATS_DIM))
    for n in range(llm_layers):
        for proj in ("q_proj", "v_proj"):
            prefix = f"llama_model.base_model.model.model.layers.{n}.self_attn.{proj}"
            state[f"{prefix}.lora_A.default.weight"] = _rand(LORA_R, LLM_DIM)
            state[f"{prefix}.lora_B.default.weight"] = _rand(LLM_DIM, LORA_R)
    return state


def beats_state(cfg: dict = BEATS_CFG) -> dict[str, torch.Tensor]:
    """The release's BEATs state dict (microsoft/unilm beats/BEATs.py + backbone.py key names; the
    pos-conv as torch.nn.utils.weight_norm(dim=2) stores it; the bias table shared by every layer)."""
    embed, dim, ffn = cfg["embed_dim"], cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"]
    heads, patch, kernel = cfg["encoder_attention_heads"], cfg["input_patch_size"], cfg["conv_pos"]
    state = {"patch_embedding.weight": _rand(embed, 1, patch, patch, scale=0.05), **_norm("layer_norm", embed),
             **_linear("post_extract_proj", dim, embed),
             "encoder.pos_conv.0.weight_g": 1.0 + _rand(1, 1, kernel, scale=0.1),
             "encoder.pos_conv.0.weight_v": _rand(dim, dim // cfg["conv_pos_groups"], kernel),
             "encoder.pos_conv.0.bias": _rand(dim, scale=0.05), **_norm("encoder.layer_norm", dim)}
    table = _rand(cfg["num_buckets"], heads, scale=1.0)
    for n in range(cfg["encoder_layers"]):
        layer = f"encoder.layers.{n}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            state.update(_linear(f"{layer}.self_attn.{proj}", dim, dim))
        state[f"{layer}.self_attn.relative_attention_bias.weight"] = table
        state.update(_linear(f"{layer}.self_attn.grep_linear", 8, dim // heads))
        state[f"{layer}.self_attn.grep_a"] = 1.0 + _rand(1, heads, 1, 1, scale=0.3)
        state.update(_norm(f"{layer}.self_attn_layer_norm", dim))
        state.update(_linear(f"{layer}.fc1", ffn, dim))
        state.update(_linear(f"{layer}.fc2", dim, ffn))
        state.update(_norm(f"{layer}.final_layer_norm", dim))
    state.update(_linear("predictor", cfg["predictor_class"], dim))
    return state


def build_tiny_salmonn(root: Path, model_id: str = "salmonn-13b", seed: int = 0) -> Path:
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    whisper_config = WhisperConfig(d_model=WHISPER_DIM, encoder_layers=1, encoder_attention_heads=2,
                                   encoder_ffn_dim=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
                                   num_mel_bins=80, max_source_positions=1500, max_target_positions=64, vocab_size=64,
                                   pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2)
    WhisperModel(whisper_config).save_pretrained(root / "whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(root / "whisper")
    torch.save({"cfg": BEATS_CFG, "model": beats_state()}, root / BEATS_FILE)
    llama_config = LlamaConfig(vocab_size=32000, hidden_size=LLM_DIM, intermediate_size=64, num_hidden_layers=LLM_LAYERS,
                               num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                               rms_norm_eps=1e-6, tie_word_embeddings=False)
    LlamaForCausalLM(llama_config).save_pretrained(root / "vicuna")
    shutil.copy(TOKENIZER, root / "vicuna" / "tokenizer.model")
    torch.save({"model": salmonn_state()}, root / TRAINABLE[model_id])
    (root / "salmonn.json").write_text(json.dumps(DIMS))
    return root


BUILDERS = {model_id: (lambda tmp, model_id=model_id: build_tiny_salmonn(Path(tmp) / model_id, model_id))
            for model_id in TRAINABLE}
