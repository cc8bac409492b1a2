"""A tiny Qwen-Audio(-Chat) folder in the release's layout: QWenConfig-style config.json (with its
`audio` section), a .tiktoken vocabulary (the 256 bytes as ranks 0..255 plus four merges), the 80 mel
filters in mel_filters.npz, and random weights under the release's key names (`transformer.h.i.attn.c_attn`,
`transformer.audio.blocks.i.attn.query`, ...) in two safetensors shards with an index, as the hub ships them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

MERGES = (b"ab", b"bc", b"abc", b"cd")  # ranks 256..259; none occurs in the prompts the tests pin
N_RANKS = 256 + len(MERGES)
N_SPECIAL = 3 + 205 + 3314  # <|endoftext|>, <|im_start|>, <|im_end|>, extras, the audio specials
AUDIO_START_OFFSET = 155163 - 151643  # <audio> counted from <|endoftext|> in the release
VOCAB = 3840  # >= N_RANKS + N_SPECIAL, padded like the release's 155,947
HIDDEN, HEADS, LAYERS, MLP = 64, 4, 2, 96
AUDIO_STATE, AUDIO_HEADS, AUDIO_LAYERS = 32, 2, 2


def config() -> dict:
    return {
        "architectures": ["QWenLMHeadModel"], "model_type": "qwen", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "kv_channels": HIDDEN // HEADS,
        "intermediate_size": 2 * MLP, "layer_norm_epsilon": 1e-5, "rotary_emb_base": 10000, "rotary_pct": 1.0,
        "no_bias": True, "seq_length": 2048, "max_position_embeddings": 8192, "tie_word_embeddings": False,
        "use_dynamic_ntk": True, "use_logn_attn": True, "bf16": False, "fp16": False, "fp32": False,
        "audio": {"n_mels": 80, "n_ctx": 1500, "n_state": AUDIO_STATE, "n_head": AUDIO_HEADS,
                  "n_layer": AUDIO_LAYERS, "output_dim": HIDDEN, "avg_pool": True, "add_audio_bos_eos_token": True,
                  "audio_start_id": N_RANKS + AUDIO_START_OFFSET},
    }


def released_state_dict(seed: int = 0) -> dict:
    """Random tensors under the release's names and shapes (conditioned like a trained net: small
    projections, norms near 1), so float32 rounding stays far below the tests' tolerances."""
    import torch
    from wavllm_eval.model_zoo._qwen_audio_modeling import sinusoids

    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.08):
        return torch.randn(*shape, generator=gen) * scale

    sd = {"transformer.wte.weight": rand(VOCAB, HIDDEN, scale=1.0), "transformer.ln_f.weight": 1 + rand(HIDDEN),
          "lm_head.weight": rand(VOCAB, HIDDEN, scale=0.2)}
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"], sd[p + "ln_2.weight"] = 1 + rand(HIDDEN), 1 + rand(HIDDEN)
        sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"] = rand(3 * HIDDEN, HIDDEN, scale=0.15), rand(3 * HIDDEN)
        sd[p + "attn.c_proj.weight"] = rand(HIDDEN, HIDDEN, scale=0.15)
        sd[p + "mlp.w1.weight"], sd[p + "mlp.w2.weight"] = rand(MLP, HIDDEN, scale=0.15), rand(MLP, HIDDEN, scale=0.15)
        sd[p + "mlp.c_proj.weight"] = rand(HIDDEN, MLP, scale=0.15)
    a, d = "transformer.audio.", AUDIO_STATE
    sd[a + "conv1.weight"], sd[a + "conv1.bias"] = rand(d, 80, 3, scale=0.1), rand(d)
    sd[a + "conv2.weight"], sd[a + "conv2.bias"] = rand(d, d, 3, scale=0.1), rand(d)
    sd[a + "positional_embedding"] = sinusoids(1500, d)
    for i in range(AUDIO_LAYERS):
        p = f"{a}blocks.{i}."
        for name in ("query", "value", "out"):
            sd[f"{p}attn.{name}.weight"], sd[f"{p}attn.{name}.bias"] = rand(d, d, scale=0.2), rand(d)
        sd[p + "attn.key.weight"] = rand(d, d, scale=0.2)  # openai-whisper: the key has no bias
        for ln in ("attn_ln", "mlp_ln"):
            sd[f"{p}{ln}.weight"], sd[f"{p}{ln}.bias"] = 1 + rand(d), rand(d)
        sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"] = rand(4 * d, d, scale=0.2), rand(4 * d)
        sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"] = rand(d, 4 * d, scale=0.1), rand(d)
    sd[a + "ln_post.weight"], sd[a + "ln_post.bias"] = 1 + rand(d), rand(d)
    sd[a + "proj.weight"], sd[a + "proj.bias"] = rand(HIDDEN, d, scale=0.3), rand(HIDDEN)
    sd[a + "audio_bos_eos_token.weight"] = rand(2, HIDDEN, scale=1.0)
    return sd


def write_vocabulary(path: Path) -> Path:
    tokens = [bytes([b]) for b in range(256)] + list(MERGES)
    path.write_text("".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)))
    return path


def build_tiny_qwen_audio(root: Path) -> Path:
    """Write the folder and return it (the same weights for both ids: only the prompt format differs)."""
    from safetensors.torch import save_file
    from wavllm_eval.model_zoo._qwen_audio_modeling import mel_filter_matrix

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config(), indent=2))
    write_vocabulary(root / "qwen.tiktoken")
    np.savez_compressed(root / "mel_filters.npz", mel_80=mel_filter_matrix(80))
    state = released_state_dict()
    shards = {"model-00001-of-00002.safetensors": {k: v for k, v in state.items() if ".audio." not in k},
              "model-00002-of-00002.safetensors": {k: v for k, v in state.items() if ".audio." in k}}
    weight_map = {}
    for name, part in shards.items():
        save_file({k: v.contiguous() for k, v in part.items()}, str(root / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen-audio": lambda tmp: build_tiny_qwen_audio(tmp / "qwen-audio"),
    "qwen-audio-chat": lambda tmp: build_tiny_qwen_audio(tmp / "qwen-audio-chat"),
}
