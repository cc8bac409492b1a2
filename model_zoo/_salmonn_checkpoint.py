"""SALMONN's weights from their four sources, with strict key checks and a record of which file
gave which tensor.

The release loads its checkpoint with `load_state_dict(ckpt['model'], strict=False)`
(`models/salmonn.py::from_config`, v1 `model.py`), so a renamed or absent tensor goes unnoticed and the
model runs on random Q-Former or LoRA weights. Here every part is checked:

- the SALMONN checkpoint (`salmonn_v1.pth`, `salmonn_7b_v0.pth`, or `salmonn.safetensors` from
  `convert`) must give every Q-Former, query, projection, `ln_speech`/`ln_audio` and LoRA tensor, and
  may hold nothing else except the Q-Former's text branch, which the network never runs (word and
  position embeddings, `position_ids`, the per-layer text FFN `intermediate`/`output`, `cls`, `pooler`);
- the Whisper folder must give every `WhisperEncoder` tensor (its decoder is ignored, by design);
- the BEATs checkpoint must match the BEATs module exactly (its `predictor` included);
- Vicuna comes through `from_pretrained`, whose missing / unexpected / mismatched keys are errors.

Checkpoints are read with safetensors or, through `wavllm_eval.safe_load`, `torch.load(weights_only=True)`
only: no pickled code runs.
The Q-Former key map (LAVIS BERT -> `Blip2QFormerModel`): `bert.embeddings.LayerNorm` -> `layernorm`,
`.attention.self.` -> `.attention.attention.`, `.crossattention.self.` -> `.crossattention.attention.`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wavllm_eval.errors import InputError

QFORMER = "speech_Qformer."
LLAMA = "llama_model."
_QFORMER_UNUSED = re.compile(
    r"^speech_Qformer\.(cls\..*|bert\.pooler\..*|bert\.embeddings\.(word_embeddings|position_embeddings)\..*"
    r"|bert\.embeddings\.position_ids|bert\.encoder\.layer\.\d+\.(intermediate|output)\..*)$")
_TRAINABLE_PREFIXES = ("speech_qformer.", "speech_query_tokens", "speech_llama_proj.", "ln_speech.", "ln_audio.")
_WHISPER_PREFIXES = ("model.encoder.", "encoder.")
_LEGACY_LORA = re.compile(r"\.lora_([AB])\.weight$")
_NON_PERSISTENT = re.compile(r"rotary_emb\.inv_freq$")
BEATS_FILES = ("BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt", "beats.safetensors")


@dataclass
class WeightSources:
    """model tensor name -> the file it was read from (describe() reports it compressed)."""

    by_file: dict[str, list[str]] = field(default_factory=dict)
    ignored: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: Path, keys: Iterable[str], ignored: Iterable[str] = ()) -> None:
        self.by_file.setdefault(str(path), []).extend(keys)
        ignored = list(ignored)
        if ignored:
            self.ignored.setdefault(str(path), []).extend(ignored)

    def source_of(self, key: str) -> str | None:
        for path, keys in self.by_file.items():
            if key in keys:
                return path
        return None

    def summary(self) -> dict[str, Any]:
        return {path: {"n_tensors": len(keys), "keys": compress_keys(keys),
                       **({"ignored": compress_keys(self.ignored[path])} if path in self.ignored else {})}
                for path, keys in self.by_file.items()}


def compress_keys(keys: Iterable[str]) -> list[str]:
    """Exact, short: layer indices folded into ranges (`layers.{0-39}.self_attn.q_proj.weight`)."""
    groups: dict[str, list[int]] = {}
    plain: list[str] = []
    for key in keys:
        match = re.search(r"\.(\d+)\.", key)
        if match is None:
            plain.append(key)
            continue
        pattern = key[: match.start()] + ".{}." + key[match.end():]
        groups.setdefault(pattern, []).append(int(match.group(1)))
    out = sorted(set(plain))
    for pattern, indices in sorted(groups.items()):
        out.append(pattern.replace("{}", "{" + _ranges(sorted(set(indices))) + "}"))
    return out


def _ranges(values: list[int]) -> str:
    parts, start = [], values[0]
    for prev, cur in zip(values, [*values[1:], None], strict=True):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(parts)


def _listing(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', …' if len(keys) > limit else ''})"


def mismatch_error(path: Path, missing: Iterable[str], unexpected: Iterable[str],
                   wrong_shape: Iterable[str] = (), fix: str = "") -> InputError:
    missing, unexpected, wrong_shape = list(missing), list(unexpected), list(wrong_shape)
    parts = []
    if missing:
        parts.append(f"missing {_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected {_listing(unexpected)}")
    if wrong_shape:
        parts.append(f"wrong shape {_listing(wrong_shape)}")
    return InputError(path, "checkpoint does not match the model: " + "; ".join(parts),
                      fix or "use the released files named in the model's documentation (`wavllm-eval list`)")


# --- reading ------------------------------------------------------------------------------------
def read_tensors(path: Path) -> dict[str, Any]:
    """A safetensors file, or a torch checkpoint through the harness's one safe loader
    (`wavllm_eval.safe_load`: `torch.load(weights_only=True)` with its allow-list)."""
    from wavllm_eval.safe_load import load_checkpoint

    return dict(load_checkpoint(path))


def read_salmonn_state(path: Path) -> dict[str, torch.Tensor]:
    """`ckpt['model']` of the release (or a bare state dict / salmonn.safetensors): tensors only."""
    from wavllm_eval.safe_load import load_state_dict

    return load_state_dict(path)


# --- the SALMONN checkpoint ---------------------------------------------------------------------
def salmonn_to_model_key(key: str) -> str | None:
    """Release key -> SalmonnModel key; None for the Q-Former's unused text branch."""
    if _QFORMER_UNUSED.match(key):
        return None
    if key.startswith(QFORMER + "bert."):
        rest = key[len(QFORMER + "bert."):]
        if rest.startswith("embeddings.LayerNorm."):
            return "speech_qformer.layernorm." + rest[len("embeddings.LayerNorm."):]
        rest = rest.replace(".crossattention.self.", ".crossattention.attention.")
        rest = rest.replace(".attention.self.", ".attention.attention.")
        return "speech_qformer." + rest
    if key.startswith(LLAMA):
        # peft before multi-adapter support stored `lora_A.weight`; modern peft adds the adapter name
        return "llm." + _LEGACY_LORA.sub(r".lora_\1.default.weight", key[len(LLAMA):])
    return key


def model_to_salmonn_key(key: str) -> str:
    """The inverse map (what `convert` and the tiny test models write)."""
    if key.startswith("speech_qformer."):
        rest = key[len("speech_qformer."):]
        if rest.startswith("layernorm."):
            return QFORMER + "bert.embeddings.LayerNorm." + rest[len("layernorm."):]
        rest = rest.replace(".crossattention.attention.", ".crossattention.self.")
        rest = rest.replace(".attention.attention.", ".attention.self.")
        return QFORMER + "bert." + rest
    if key.startswith("llm."):
        return LLAMA + key[len("llm."):]
    return key


def trainable_keys(model_state: Mapping[str, torch.Tensor]) -> list[str]:
    """What the SALMONN checkpoint must give: everything trained, nothing from Whisper/BEATs/Vicuna."""
    return [k for k in model_state if k.startswith(_TRAINABLE_PREFIXES) or (k.startswith("llm.") and ".lora_" in k)]


def map_salmonn_state(path: Path, state: Mapping[str, torch.Tensor],
                      model_state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(model key -> tensor, the ignored text-branch keys); an InputError names every mismatch."""
    required = set(trainable_keys(model_state))
    mapped: dict[str, torch.Tensor] = {}
    ignored, unexpected, wrong_shape = [], [], []
    for key, tensor in state.items():
        target = salmonn_to_model_key(key)
        if target is None:
            ignored.append(key)
        elif target not in required:
            unexpected.append(key)
        elif tuple(tensor.shape) != tuple(model_state[target].shape):
            wrong_shape.append(f"{key} {tuple(tensor.shape)} vs {tuple(model_state[target].shape)}")
        else:
            mapped[target] = tensor
    missing = [model_to_salmonn_key(k) for k in sorted(required - set(mapped))
               if not any(model_to_salmonn_key(k) in s for s in wrong_shape)]
    if missing or unexpected or wrong_shape:
        raise mismatch_error(path, missing, unexpected, wrong_shape,
                             "use the SALMONN checkpoint released for this model id (13B: salmonn_v1.pth, "
                             "7B: salmonn_7b_v0.pth) with the matching Vicuna")
    return mapped, ignored


# --- Whisper ------------------------------------------------------------------------------------
def whisper_weight_files(folder: Path) -> list[Path]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    raise InputError(folder, "no Whisper weights (model.safetensors or pytorch_model.bin)",
                     "download openai/whisper-large-v2 into this folder")


def whisper_encoder_state(folder: Path, encoder_state: Mapping[str, torch.Tensor]
                          ) -> tuple[dict[str, torch.Tensor], dict[Path, tuple[list[str], list[str]]]]:
    """Encoder tensors (prefix `model.encoder.` or `encoder.` stripped) and per file (loaded, ignored)."""
    out: dict[str, torch.Tensor] = {}
    per_file: dict[Path, tuple[list[str], list[str]]] = {}
    unexpected, wrong_shape = [], []
    for path in whisper_weight_files(folder):
        loaded, ignored = [], []
        for key, tensor in read_encoder_tensors(path, ignored).items():
            prefix = next(p for p in _WHISPER_PREFIXES if key.startswith(p))
            name = key[len(prefix):]
            if name not in encoder_state:
                unexpected.append(key)
            elif tuple(tensor.shape) != tuple(encoder_state[name].shape):
                wrong_shape.append(f"{key} {tuple(tensor.shape)} vs {tuple(encoder_state[name].shape)}")
            else:
                out[name] = tensor
                loaded.append(name)
        per_file[path] = (loaded, ignored)
    missing = sorted(set(encoder_state) - set(out))
    if missing or unexpected or wrong_shape:
        raise mismatch_error(folder, missing, unexpected, wrong_shape,
                             "the whisper folder must hold openai/whisper-large-v2 (config and weights)")
    return out, per_file


def read_encoder_tensors(path: Path, ignored: list[str]) -> dict[str, torch.Tensor]:
    """The encoder tensors of one Whisper weight file; other keys (the decoder and the output
    projection, not part of SALMONN) go to `ignored`. safetensors files are read tensor by tensor."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        out = {}
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                if key.startswith(_WHISPER_PREFIXES):
                    out[key] = handle.get_tensor(key)
                else:
                    ignored.append(key)
        return out
    state = read_tensors(path)
    ignored.extend(k for k in state if not k.startswith(_WHISPER_PREFIXES))
    return {k: v for k, v in state.items() if k.startswith(_WHISPER_PREFIXES)}


# --- BEATs --------------------------------------------------------------------------------------
def beats_file(root: Path) -> Path:
    for name in BEATS_FILES:
        if (root / name).is_file():
            return root / name
    raise InputError(root, f"no BEATs checkpoint ({' or '.join(BEATS_FILES)})",
                     "download BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt (microsoft/unilm beats) into it")


def read_beats(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(cfg, state) from the release's `{'cfg': ..., 'model': ...}` or `beats.safetensors` + `beats.json`."""
    if path.suffix == ".safetensors":
        cfg_path = path.with_suffix(".json")
        if not cfg_path.is_file():
            raise InputError(cfg_path, "missing (the BEATs cfg written by convert)", "re-run `wavllm-eval convert`")
        return json.loads(cfg_path.read_text()), read_tensors(path)
    raw = read_tensors(path)
    if not isinstance(raw.get("cfg"), Mapping) or not isinstance(raw.get("model"), Mapping):
        raise InputError(path, "expected a dict with 'cfg' and 'model'", "pass the released BEATs .pt file")
    return dict(raw["cfg"]), dict(raw["model"])


def check_exact(path: Path, state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor],
                fix: str) -> None:
    missing = sorted(set(model_state) - set(state))
    unexpected = sorted(set(state) - set(model_state))
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(model_state[k].shape)}"
                   for k in sorted(set(state) & set(model_state)) if tuple(state[k].shape) != tuple(model_state[k].shape)]
    if missing or unexpected or wrong_shape:
        raise mismatch_error(path, missing, unexpected, wrong_shape, fix)


def check_shared_bias(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """The release shares layer 0's relative-position table with every layer, so each layer's copy
    in the checkpoint must be the same tensor; different copies would silently keep only the last."""
    copies = {k: v for k, v in state.items() if k.endswith("self_attn.relative_attention_bias.weight")}
    first = next(iter(copies.values()), None)
    differing = [k for k, v in copies.items() if not torch.equal(v, first)]
    if differing:
        raise InputError(path, f"relative_attention_bias differs between layers: {_listing(differing)}",
                         "BEATs shares one table across layers; pass the released checkpoint")


# --- Vicuna -------------------------------------------------------------------------------------
def load_vicuna(folder: Path, dtype: torch.dtype):
    """`LlamaForCausalLM.from_pretrained` with its loading report turned into an error."""
    from transformers import LlamaForCausalLM

    if not (folder / "config.json").is_file():
        raise InputError(folder / "config.json", "missing", "download the Vicuna model folder here")
    model, info = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, output_loading_info=True,
                                                   attn_implementation="eager")
    missing = [k for k in info.get("missing_keys", ()) if not _NON_PERSISTENT.search(k)]
    unexpected = [k for k in info.get("unexpected_keys", ()) if not _NON_PERSISTENT.search(k)]
    wrong = [str(k) for k in info.get("mismatched_keys", ())]
    if missing or unexpected or wrong:
        raise mismatch_error(folder, missing, unexpected, wrong,
                             "the vicuna folder must hold lmsys/vicuna-13b-v1.1 (SALMONN 13B) or vicuna-7b-v1.5 (7B)")
    return model


def vicuna_weight_files(folder: Path) -> list[str]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            return sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
    return sorted(p.name for p in folder.glob("*.safetensors")) or sorted(p.name for p in folder.glob("*.bin"))


def audit(model_state: Mapping[str, torch.Tensor], sources: WeightSources) -> None:
    """Every tensor of the assembled model came from exactly one file."""
    seen: dict[str, str] = {}
    twice = []
    for path, keys in sources.by_file.items():
        for key in keys:
            if key in seen:
                twice.append(f"{key} ({seen[key]} and {path})")
            seen[key] = path
    unsourced = sorted(set(model_state) - set(seen))
    if unsourced or twice:
        raise InputError(None, f"weights without a source: {_listing(unsourced)}; read twice: {_listing(twice)}",
                         "this is a bug in the SALMONN loader; please report it")


# --- assembly -----------------------------------------------------------------------------------
def read_dims(root: Path):
    from wavllm_eval.model_zoo._salmonn_modeling import SalmonnDims

    path = root / "salmonn.json"
    if not path.is_file():
        return SalmonnDims()
    overrides = json.loads(path.read_text())
    known = set(SalmonnDims.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(path, f"unknown fields {unknown}", f"use only {sorted(known)}")
    if "lora_targets" in overrides:
        overrides["lora_targets"] = tuple(overrides["lora_targets"])
    return SalmonnDims(**overrides)


def build_salmonn(root: Path, trainable: Path, llm_dtype: torch.dtype):
    """(SalmonnModel with every tensor loaded and checked, WeightSources)."""
    from accelerate import init_empty_weights
    from peft import get_peft_model
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    from wavllm_eval.model_zoo._beats import BEATs, BEATsConfig
    from wavllm_eval.model_zoo._salmonn_modeling import SalmonnModel, lora_config

    dims = read_dims(root)
    sources = WeightSources()
    vicuna_dir = root / "vicuna"
    vicuna = load_vicuna(vicuna_dir, llm_dtype)
    llm = get_peft_model(vicuna, lora_config(dims))

    whisper_config = WhisperConfig.from_pretrained(root / "whisper")
    with init_empty_weights(include_buffers=False):
        encoder = WhisperEncoder(whisper_config)
    encoder_state, whisper_files = whisper_encoder_state(root / "whisper", encoder.state_dict())
    encoder.load_state_dict(encoder_state, strict=True, assign=True)
    encoder = encoder.float()

    beats_path = beats_file(root)
    beats_cfg, beats_state = read_beats(beats_path)
    try:
        config = BEATsConfig.from_cfg(beats_cfg)
    except ValueError as exc:
        raise InputError(beats_path, str(exc), "pass the released BEATs checkpoint") from exc
    with init_empty_weights(include_buffers=False):
        beats = BEATs(config)
    check_exact(beats_path, beats_state, beats.state_dict(), "use BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")
    check_shared_bias(beats_path, beats_state)
    beats.load_state_dict(beats_state, strict=True, assign=True)
    beats = beats.float()

    model = SalmonnModel(encoder, beats, llm, dims)
    model_state = model.state_dict()
    mapped, ignored = map_salmonn_state(trainable, read_salmonn_state(trainable), model_state)
    result = model.load_state_dict(mapped, strict=False)
    if result.unexpected_keys:
        raise mismatch_error(trainable, [], result.unexpected_keys)
    for part in (model.speech_qformer, model.speech_llama_proj, model.ln_speech, model.ln_audio):
        part.float()
    model.speech_query_tokens.data = model.speech_query_tokens.data.float()

    llm_keys = [k for k in model_state if k.startswith("llm.") and ".lora_" not in k]
    sources.add(vicuna_dir / ",".join(vicuna_weight_files(vicuna_dir)), llm_keys)
    for path, (loaded, skipped) in whisper_files.items():
        sources.add(path, [f"speech_encoder.{k}" for k in loaded], skipped)
    sources.add(beats_path, [f"beats.{k}" for k in beats_state])
    sources.add(trainable, list(mapped), ignored)
    audit(model_state, sources)
    return model, sources


def convert_folder(src: Path, trainable: Path, out: Path) -> Path:
    """Write `out/` in the same layout with safetensors only: salmonn.safetensors (release key names,
    the unused Q-Former text branch dropped), beats.safetensors + beats.json, whisper/ (encoder
    only) and vicuna/ (save_pretrained). Every part passes the same checks as `load` first."""
    import shutil

    from safetensors.torch import save_file

    model, _ = build_salmonn(src, trainable, torch.float16 if _is_half(src) else torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    trained = {model_to_salmonn_key(k): state[k].contiguous().clone() for k in trainable_keys(state)}
    save_file(trained, str(out / "salmonn.safetensors"))
    beats_cfg, beats_state = read_beats(beats_file(src))
    save_file({k: v.contiguous().clone() for k, v in beats_state.items()}, str(out / "beats.safetensors"))
    (out / "beats.json").write_text(json.dumps(beats_cfg, indent=1))
    (out / "whisper").mkdir(exist_ok=True)
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(src / "whisper" / name, out / "whisper" / name)
    save_file({f"encoder.{k}": v.contiguous() for k, v in model.speech_encoder.state_dict().items()},
              str(out / "whisper" / "model.safetensors"))
    _save_vicuna(model, out / "vicuna")
    for path in (src / "vicuna").iterdir():
        if path.name.startswith("tokenizer") or path.name in ("special_tokens_map.json", "generation_config.json"):
            shutil.copy(path, out / "vicuna" / path.name)
    if (src / "salmonn.json").is_file():
        shutil.copy(src / "salmonn.json", out / "salmonn.json")
    return out


def _is_half(src: Path) -> bool:
    config = json.loads((src / "vicuna" / "config.json").read_text())
    return str(config.get("torch_dtype", config.get("dtype", ""))) == "float16"


def _save_vicuna(model, out: Path) -> None:
    """The base Vicuna without LoRA (the LoRA tensors live in salmonn.safetensors)."""
    base = model.llm.unload()  # removes the LoRA layers, keeps the base weights unchanged
    base.save_pretrained(out, safe_serialization=True)
