"""The released Qwen-Audio(-Chat) weights (remote-code `QWenLMHeadModel` key names) mapped onto
`QwenAudioModel`, strictly, and `convert_checkpoint` writing one safetensors folder in our names.

Key map (shared reference qwen_audio.md §4.3, checked against `modeling_qwen.py` / `audio.py`):

    transformer.wte / ln_f / lm_head          -> llm.model.embed_tokens / llm.model.norm / llm.lm_head
    transformer.h.i.ln_1 / ln_2               -> llm.model.layers.i.input_layernorm / post_attention_layernorm
    transformer.h.i.attn.c_attn.{weight,bias} -> q_proj / k_proj / v_proj (rows split in thirds, q k v order)
    transformer.h.i.attn.c_proj               -> self_attn.o_proj
    transformer.h.i.mlp.w2 / w1 / c_proj      -> mlp.gate_proj / up_proj / down_proj  (a1 * silu(a2): w2 is the gate)
    transformer.audio.conv1 / conv2 / ln_post -> audio.encoder.conv1 / conv2 / layer_norm
    transformer.audio.positional_embedding    -> audio.encoder.embed_positions.weight
    transformer.audio.blocks.i.attn.{query,key,value,out} -> audio.encoder.layers.i.self_attn.{q,k,v,out}_proj
    transformer.audio.blocks.i.{attn_ln,mlp.0,mlp.2,mlp_ln} -> self_attn_layer_norm / fc1 / fc2 / final_layer_norm
    transformer.audio.proj / audio_bos_eos_token -> audio.proj / audio.audio_bos_eos_token

Non-persistent buffers an older save may hold (`attn.masked_bias`, `rotary_emb.inv_freq`, `logn_tensor`;
the release lists them as ignorable) are recomputed, never loaded. `positional_embedding` is openai-whisper's
fixed sinusoid table: when a checkpoint lacks it, it is rebuilt (bit-identical to the buffer). Any other
missing or unexpected key is an InputError that names them. Files are read as safetensors, or as torch
files through `wavllm_eval.safe_load` (`weights_only=True`: tensors only, no arbitrary unpickling).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from wavllm_eval.model_zoo._qwen_audio_modeling import QwenAudioModel, sinusoids

from wavllm_eval.errors import InputError

_LM_LAYER = re.compile(r"transformer\.h\.(\d+)\.(.+)")
_AUDIO_LAYER = re.compile(r"transformer\.audio\.blocks\.(\d+)\.(.+)")
_LM_PARTS = {"ln_1.weight": "input_layernorm.weight", "ln_2.weight": "post_attention_layernorm.weight",
             "attn.c_proj.weight": "self_attn.o_proj.weight", "mlp.w2.weight": "mlp.gate_proj.weight",
             "mlp.w1.weight": "mlp.up_proj.weight", "mlp.c_proj.weight": "mlp.down_proj.weight"}
_AUDIO_PARTS = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
                "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
                "mlp_ln": "final_layer_norm"}
_TOP = {"transformer.wte.weight": "llm.model.embed_tokens.weight", "transformer.ln_f.weight": "llm.model.norm.weight",
        "lm_head.weight": "llm.lm_head.weight",
        "transformer.audio.positional_embedding": "audio.encoder.embed_positions.weight",
        "transformer.audio.audio_bos_eos_token.weight": "audio.audio_bos_eos_token.weight"}
_AUDIO_TOP = {"conv1": "audio.encoder.conv1", "conv2": "audio.encoder.conv2", "ln_post": "audio.encoder.layer_norm",
              "proj": "audio.proj"}
_DERIVED_BUFFERS = re.compile(r"transformer\.(h\.\d+\.attn\.(masked_bias|logn_tensor|rotary_emb\.inv_freq)"
                              r"|rotary_emb\.inv_freq)")
POSITIONS_KEY = "audio.encoder.embed_positions.weight"
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")
CONVERTED_MARK = "qwen_audio_port"  # safetensors metadata `format` of a converted folder


def released_to_model(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """One released tensor -> its model tensor(s); KeyError for a name outside the release's layout."""
    if key in _TOP:
        return {_TOP[key]: tensor}
    match = _LM_LAYER.fullmatch(key)
    if match:
        index, part = match.groups()
        prefix = f"llm.model.layers.{index}."
        if part in _LM_PARTS:
            return {prefix + _LM_PARTS[part]: tensor}
        if part in ("attn.c_attn.weight", "attn.c_attn.bias"):
            leaf = part.rsplit(".", 1)[1]
            parts = tensor.chunk(3, dim=0)  # the release's `mixed.split(hidden, dim=2)`: q, k, v
            return {f"{prefix}self_attn.{name}_proj.{leaf}": t.contiguous()
                    for name, t in zip("qkv", parts, strict=True)}
    match = _AUDIO_LAYER.fullmatch(key)
    if match:
        index, part = match.groups()
        module, _, leaf = part.rpartition(".")
        if module in _AUDIO_PARTS and leaf in ("weight", "bias"):
            return {f"audio.encoder.layers.{index}.{_AUDIO_PARTS[module]}.{leaf}": tensor}
    if key.startswith("transformer.audio."):
        module, _, leaf = key[len("transformer.audio."):].rpartition(".")
        if module in _AUDIO_TOP and leaf in ("weight", "bias"):
            return {f"{_AUDIO_TOP[module]}.{leaf}": tensor}
    raise KeyError(key)


def convert_state_dict(released: Mapping[str, torch.Tensor], model: QwenAudioModel) -> dict[str, torch.Tensor]:
    """Map every released tensor; raise an InputError listing unknown, missing and mis-shaped keys."""
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in released.items():
        if _DERIVED_BUFFERS.fullmatch(key):
            continue
        try:
            targets = released_to_model(key, tensor)
        except KeyError:
            unknown.append(key)
            continue
        for target, value in targets.items():
            if target in converted:
                raise InputError(None, f"two checkpoint tensors map onto {target}", "the checkpoint is not a release")
            converted[target] = value
    expected = model.state_dict()
    if POSITIONS_KEY not in converted and POSITIONS_KEY in expected:
        converted[POSITIONS_KEY] = sinusoids(*expected[POSITIONS_KEY].shape)
    check_complete(converted, expected, "the Qwen-Audio release layout", unknown=unknown)
    return converted


def check_complete(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], layout: str,
                   where: Path | None = None, unknown: Sequence[str] = ()) -> None:
    """Raise naming the missing, unexpected (unknown names included) and mis-shaped tensors."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected)) + sorted(unknown)
    shapes = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if names:
                parts.append(f"{label} {len(names)} ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
        raise InputError(where, f"checkpoint does not match {layout}: " + "; ".join(parts),
                         "use the release's weights with its own config.json, or re-run `wavllm-eval convert`")


def read_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of the folder's weights (single file or sharded index) and the safetensors metadata."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as exc:
                raise InputError(path, "not a weight index (no weight_map)", "re-download the index") from exc
            absent = [s for s in shards if not (folder / s).is_file()]
            if absent:
                raise InputError(folder, f"missing {len(absent)} weight shard(s): {', '.join(absent)}",
                                 "download every shard the index names")
            files = [folder / s for s in shards]
        else:
            files = [path]
        tensors: dict[str, torch.Tensor] = {}
        metadata: dict[str, str] = {}
        for file in files:
            part, meta = _read_file(file)
            tensors.update(part)
            metadata.update(meta)
        return tensors, metadata
    raise InputError(folder, "no weights: expected one of " + ", ".join(WEIGHT_FILES),
                     "download the Qwen-Audio release's model-*.safetensors and index")


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    from wavllm_eval.safe_load import load_state_dict

    return load_state_dict(path), {}  # torch's weights-only unpickler: tensors and containers only


def load_weights(model: QwenAudioModel, folder: Path) -> str:
    """Load the folder's weights into `model` (strict, assign); returns the layout read
    ("release" or "converted")."""
    tensors, metadata = read_tensors(folder)
    if metadata.get("format") == CONVERTED_MARK:
        expected = model.state_dict()
        check_complete(tensors, expected, "this port's layout", where=folder)
        model.load_state_dict(tensors, strict=True, assign=True)
        return "converted"
    try:
        state = convert_state_dict(tensors, model)
    except InputError as exc:
        raise InputError(folder, exc.problem, exc.fix) from None
    model.load_state_dict(state, strict=True, assign=True)
    return "release"


def convert_checkpoint(source: Path, destination: Path, model: QwenAudioModel) -> Path:
    """Write `model.safetensors` in this port's names (c_attn split, renamed) beside the release's
    config.json, qwen.tiktoken and mel_filters.npz; the folder then loads without the mapping."""
    from safetensors.torch import save_file

    source, destination = Path(source), Path(destination)
    load_weights(model, source)
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "qwen.tiktoken", "mel_filters.npz", "generation_config.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, destination / name)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(destination / "model.safetensors"),
              metadata={"format": CONVERTED_MARK, "source": str(source.name)})
    return destination
