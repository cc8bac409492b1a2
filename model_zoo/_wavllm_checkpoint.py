"""The released WavLLM checkpoint (`final.pt`, a fairseq state dict) mapped onto WavLLMModel.

An explicit key map; the Meta→HF RoPE row permutation on q/k weights and q/k LoRA-B; LoRA A/B
transposed from the official (in, r)/(r, out) storage to nn.Linear's (out, in). Strict: every
checkpoint tensor is used exactly once and every model tensor is loaded, or the error names them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from wavllm_eval.model_zoo._wavllm_modeling import WavLLMModel, meta_to_hf_rows

from wavllm_eval.errors import InputError
from wavllm_eval.safe_load import load_state_dict

LLAMA = "gpt_model.model_llama."
_STREAMS = {"audio_encoder.": ("whisper.", "whisper_head."), "wavlm_encoder.": ("wavlm.", "wavlm_head.")}
_LLAMA_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_ATTENTION = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj"}
_LAYER_PARTS = {"feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w3.weight": "mlp.up_proj.weight",
                "feed_forward.w2.weight": "mlp.down_proj.weight", "attention_norm.weight": "input_layernorm.weight",
                "ffn_norm.weight": "post_attention_layernorm.weight"}
_LLAMA_TOP = {"tok_embeddings.weight": "llama.model.embed_tokens.weight", "norm.weight": "llama.model.norm.weight",
              "output.weight": "llama.lm_head.weight"}
_LEGACY_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def read_official(path: Path, trusted: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a fairseq checkpoint (`{"model": ..., "cfg": ...}`) or of a bare state dict.

    Unpickled by `wavllm_eval.safe_load` (torch's weights-only unpickler plus the fairseq config
    allow-list): a file that needs anything else is refused, naming it. `trusted=True` (only for a
    file the user vouches for, as `convert --trust-pickle`) unpickles it fully."""
    if not Path(path).exists():
        raise InputError(path, "checkpoint not found", "download final.pt (HF v-sjhu/WavLLM) into --model-path")
    state = load_state_dict(path, trusted=trusted)
    return {k.replace("_checkpoint_wrapped_module.", ""): v for k, v in state.items()}


def official_to_model_key(key: str) -> str:
    """One official key -> the WavLLMModel key (before any tensor transform)."""
    for prefix, (encoder, head) in _STREAMS.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if rest.startswith("model."):
                rest = rest[len("model."):]
                for legacy, modern in _LEGACY_WEIGHT_NORM.items():
                    if rest.endswith("conv." + legacy):
                        rest = rest[: -len(legacy)] + modern
                return encoder + rest
            if rest == "output_weights":
                return "wavlm_output_weights"
            return head + rest
    if key.startswith("wavlm_audio_proj."):
        return "fusion." + key[len("wavlm_audio_proj."):]
    if key.startswith("audio_proj."):
        return key
    if key.startswith(LLAMA):
        rest = key[len(LLAMA):]
        if rest in _LLAMA_TOP:
            return _LLAMA_TOP[rest]
        if rest.split(".")[0] in ("scale_fc_1", "scale_fc_2", "scale_weight_attention"):
            return rest
        match = _LLAMA_LAYER.fullmatch(rest)
        if match:
            index, part = match.groups()
            prefix = f"llama.model.layers.{index}."
            if part in _LAYER_PARTS:
                return prefix + _LAYER_PARTS[part]
            attention = re.fullmatch(r"attention\.(w[qkvo])(?:\.weight|_lora_(A|B))", part)
            if attention:
                name, lora = attention.groups()
                leaf = f"lora_{lora}.weight" if lora else "base.weight"
                return f"{prefix}self_attn.{_ATTENTION[name]}.{leaf}"
    raise KeyError(key)


def convert_state_dict(official: Mapping[str, torch.Tensor], model: WavLLMModel) -> dict[str, torch.Tensor]:
    """Map and transform every official tensor; raise naming unknown, unused or missing keys."""
    n_heads = model.dims.n_heads
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in official.items():
        try:
            target = official_to_model_key(key)
        except KeyError:
            unknown.append(key)
            continue
        if target in converted:
            raise InputError(None, f"checkpoint keys map twice onto {target}", "the checkpoint is not a WavLLM release")
        if "_lora_" in key:
            tensor = tensor.t()  # (in, r) -> (r, in); (r, out) -> (out, r)
        if re.search(r"attention\.w[qk](\.weight|_lora_B)$", key):
            tensor = meta_to_hf_rows(tensor, n_heads)
        converted[target] = tensor
    expected = set(model.state_dict())
    missing = sorted(expected - set(converted))
    unexpected = sorted(set(converted) - expected) + sorted(unknown)
    if missing or unexpected:
        raise InputError(None, "checkpoint does not match the WavLLM architecture: "
                         + (f"missing {len(missing)} ({', '.join(missing[:5])}) " if missing else "")
                         + (f"unexpected {len(unexpected)} ({', '.join(unexpected[:5])})" if unexpected else ""),
                         "check the model folder's whisper/, wavlm/, llama/ configs and wavllm.json dims")
    return converted


def load_weights(model: WavLLMModel, weights: Path, trusted: bool = False,
                 official: Mapping[str, torch.Tensor] | None = None) -> None:
    """Load `final.pt` (official layout) or `model.safetensors` (converted, model keys), strictly.
    `official`: final.pt's state dict already read (read it before building the model, so a refused
    or damaged file is reported before the encoders and the LLM are even constructed)."""
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        # load_file maps the file and assign=True makes the mapped tensors the parameters: at the
        # stored dtype nothing is copied into RAM (pages are read on first use); test_wavllm checks it
        state = load_file(str(weights))
        result = model.load_state_dict(state, strict=False, assign=True)
        if result.missing_keys or result.unexpected_keys:
            raise InputError(weights, f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}",
                             "re-run `wavllm-eval convert` for this model folder")
        return
    if official is None:
        official = read_official(weights, trusted=trusted)
    model.load_state_dict(convert_state_dict(official, model), strict=True, assign=True)


def convert_checkpoint(source: Path, destination: Path, trusted: bool = False) -> Path:
    """Write a folder that loads without the conversion: `model.safetensors` in this implementation's
    key names and layout (RoPE-permuted, LoRA transposed), beside the tokenizer and configs."""
    import shutil

    from safetensors.torch import save_file
    from wavllm_eval.model_zoo.wavllm import build_model

    source, destination = Path(source), Path(destination)
    official = read_official(source / "final.pt", trusted=trusted)  # refused or damaged: before any model is built
    model = build_model(source, empty=True)
    load_weights(model, source / "final.pt", trusted=trusted, official=official)
    destination.mkdir(parents=True, exist_ok=True)
    for item in ("tokenizer.model", "wavllm.json", "whisper", "wavlm", "llama"):
        if (source / item).is_dir():
            shutil.copytree(source / item, destination / item, dirs_exist_ok=True)
        elif (source / item).is_file():
            shutil.copy2(source / item, destination / item)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(destination / "model.safetensors"), metadata={"format": "pt", "source": "wavllm final.pt"})
    return destination
