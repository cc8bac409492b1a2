"""Every speech LLM that transformers ships natively, through its own processor and chat template.

`--model hf-audio-chat --model-path DIR` takes a folder written by `save_pretrained`, e.g. a hub
snapshot (`huggingface-cli download nvidia/audio-flamingo-3-hf --local-dir DIR`):

    config.json                        model_type and architectures pick the transformers class
    model.safetensors(.index.json)     the weights
    preprocessor_config.json | processor_config.json   the audio feature extractor (rate, window)
    tokenizer.json | tokenizer_config.json              the tokenizer
    chat_template.jinja | chat_template.json            the chat template (or in tokenizer_config.json)
    generation_config.json             optional: end tokens (its sampling entries are recorded, not used)

The class is the config's `architectures` entry as the installed transformers defines it (never
remote code), else transformers' multimodal / image-text-to-text / seq2seq-causal auto mapping for
its `model_type`. Each prompt becomes one user turn with one audio part per clip, rendered by the
folder's chat template and processed alone (so batch composition never changes a sample's
features), then left-padded into the batch; decoding is plain greedy search even where the model's
generation config samples (recorded in describe()). A clip longer than the processor's own limit is
skipped by the runner (`max_audio_s`). What differs between families is `_hf_audio_chat_table.py`;
`audio-flamingo-3` and `qwen3-asr` are this adapter refusing a folder of another family.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from wavllm_eval.model_zoo._hf_audio_chat_table import PROBE, UNSET, FamilySettings, settings_for

from wavllm_eval.adapter import (
    DecodingConfig,
    FirstTokenTimer,
    LoadOptions,
    SpeechLLMAdapter,
    resolve_device,
    token_logprob_sum,
)
from wavllm_eval.errors import InputError
from wavllm_eval.first_step import ChoiceReadOff, FirstStepLogits
from wavllm_eval.registry import register_model
from wavllm_eval.types import CLIP_GAP_S, SAMPLE_RATE_HZ, Generation, Prompt

# generation_config entries that change greedy search, at values that change nothing
NEUTRAL_SEARCH = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                  "encoder_no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": 0, "suppress_tokens": [],
                  "begin_suppress_tokens": [], "renormalize_logits": False}
WEIGHTS = "model.safetensors|model.safetensors.index.json|pytorch_model.bin|pytorch_model.bin.index.json"
# transformers' auto mappings holding audio chat models (model_type -> class name), in order of preference
AUTO_MAPPINGS = ("MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
                 "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES")
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
# generation_config.json entries that are identities or limits, not decoding choices
NOT_DECODING = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                "transformers_version", "_from_model_config", "max_new_tokens", "max_length", "use_cache",
                "output_attentions", "output_hidden_states")


@register_model("hf-audio-chat")
class NativeAudioChatAdapter(SpeechLLMAdapter):
    """Any transformers-native speech LLM (processor + chat template + audio parts), greedy, batched."""

    decoding = DecodingConfig(do_sample=False, num_beams=1)
    # v2: the generation_config entries that shape greedy search are neutralised (v1 let a folder's
    # repetition penalty through), so a v1 run's outputs are not resumed into
    decoding_revision = "neutral-search/v2"
    supports_choice_scoring = True
    default_batch_size = 8
    required_files: ClassVar[tuple[str, ...]] = (
        "config.json", "preprocessor_config.json|processor_config.json",
        "tokenizer.json|tokenizer_config.json|vocab.json|tokenizer.model", WEIGHTS)
    model_types: ClassVar[tuple[str, ...]] = ()  # an alias accepts only these; () = any

    def __init__(self, model: Any, processor: Any, settings: FamilySettings, path: Path,
                 options: LoadOptions, device: str, dtype: Any, model_type: str) -> None:
        self.model, self.processor, self.settings = model, processor, settings
        self.tokenizer = processor.tokenizer
        self.path, self.options, self.device, self.dtype = path, options, device, dtype
        self.model_type = model_type
        self.feature_extractor = audio_feature_extractor(processor)
        self.sampling_rate_hz = int(getattr(self.feature_extractor, "sampling_rate", SAMPLE_RATE_HZ))
        self.max_audio_s, self.long_audio_policy = audio_limit(processor, settings)
        # closed-set scoring needs the instruction to reach the model (not so for an ASR-only family)
        self.supports_choice_scoring = settings.instruction == "user"
        self.read_off = ChoiceReadOff(dtype)  # single-token choices from the first generation step
        self.model_generation_defaults = {k: v for k, v in model.generation_config.to_diff_dict().items()
                                          if k not in NOT_DECODING}
        self.eos_ids = eos_token_ids(model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self.max_audio_parts = settings.max_audio_parts
        if self.max_audio_parts == PROBE:
            self.max_audio_parts = self.probe_audio_parts()

    # --- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | None, options: LoadOptions) -> NativeAudioChatAdapter:
        from transformers import AutoProcessor

        root = check_folder(cls, path)
        model_type, model_cls = resolve_model_class(cls, root)
        device = resolve_device(options.device)
        dtype = torch_dtype(options.dtype, device)
        try:
            processor = AutoProcessor.from_pretrained(root, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(root, f"the processor does not load ({type(exc).__name__}: {exc})",
                             "copy preprocessor_config.json, processor_config.json and the tokenizer files "
                             "from the model's hub snapshot") from None
        check_processor(root, processor, model_type)
        processor.tokenizer.padding_side = "left"
        # straight onto the accelerator (no full CPU copy of a 7B model first)
        placement = {"device_map": {"": device}} if device != "cpu" else {}
        model = model_cls.from_pretrained(root, dtype=dtype, **placement).to(device).eval()
        return cls(model, processor, settings_for(model_type), root, options, device, dtype, model_type)

    # --- inputs -----------------------------------------------------------------------------------
    def audio_parts(self, prompt: Prompt) -> list[np.ndarray]:
        """One waveform per clip, at the processor's rate; joined into one (`Prompt.single_waveform`)
        where the family's processor takes a single audio per turn (`max_audio_parts`)."""
        limit = self.max_audio_parts
        joined = limit is not None and len(prompt.waveforms) > limit
        waves = [prompt.single_waveform()] if joined else list(prompt.waveforms)
        if not waves:
            raise ValueError(f"prompt {prompt.sample_id!r} has no decoded audio")
        if joined and self.max_audio_s and len(waves[0]) > self.max_audio_s * SAMPLE_RATE_HZ:
            # the runner checks each clip; joined, they would pass the processor's cap and be truncated
            raise ValueError(f"the {len(prompt.waveforms)} clips joined last "
                             f"{len(waves[0]) / SAMPLE_RATE_HZ:.2f} s, over the model's limit of "
                             f"{self.max_audio_s:g} s")
        if self.sampling_rate_hz != SAMPLE_RATE_HZ:
            import soxr

            waves = [soxr.resample(w, SAMPLE_RATE_HZ, self.sampling_rate_hz) for w in waves]
        return [np.asarray(w, dtype=np.float32) for w in waves]

    def probe_audio_parts(self) -> int | None:
        """None when one turn takes two audio parts (one part per clip), else 1 (clips joined). Many
        processors pair exactly one audio with each text, or their template renders one placeholder
        however many parts there are; both refuse this two-part call."""
        probe = Prompt(sample_id="probe", text="?", audio=(), waveforms=())
        silence = [np.zeros(self.sampling_rate_hz, dtype=np.float32)] * 2
        try:
            self.processor(text=[self.prompt_text(probe, 2)], **{self.settings.audio_keyword: silence},
                           sampling_rate=self.sampling_rate_hz, return_tensors="pt")
        except (ValueError, IndexError, RuntimeError, TypeError):
            return 1
        return None

    def conversation(self, prompt: Prompt, n_audio: int) -> list[dict[str, Any]]:
        """One user turn: the audio parts and the instruction, in the family's order."""
        audio = [{"type": "audio", "audio": f"clip-{i}"} for i in range(n_audio)]  # rendered, never loaded
        sends_text = bool(prompt.text) and self.settings.instruction == "user"
        text = [{"type": "text", "text": prompt.text}] if sends_text else []
        content = audio + text if self.settings.audio_position == "before" else text + audio
        turns: list[dict[str, Any]] = []
        if self.settings.system_prompt is not None:
            system = [{"type": "text", "text": self.settings.system_prompt}]
            turns.append({"role": "system", "content": system})
        turns.append({"role": "user", "content": content})
        return turns

    def prompt_text(self, prompt: Prompt, n_audio: int) -> str:
        """The chat template's rendering, with the assistant's generation prompt."""
        rendered = self.processor.apply_chat_template(self.conversation(prompt, n_audio), tokenize=False,
                                                      add_generation_prompt=True)
        return rendered[0] if isinstance(rendered, list) else rendered

    def encode(self, prompt: Prompt) -> dict[str, Any]:
        """The processor's tensors for one prompt alone (batch composition cannot change them)."""
        waves = self.audio_parts(prompt)
        inputs = self.processor(text=[self.prompt_text(prompt, len(waves))],
                                **{self.settings.audio_keyword: waves}, sampling_rate=self.sampling_rate_hz,
                                return_tensors="pt")
        return dict(inputs)

    def batch(self, prompts: Sequence[Prompt]) -> dict[str, Any]:
        """Per-prompt processor outputs, left-padded (text) and stacked (audio), on the device."""
        batch = collate([self.encode(p) for p in prompts], self.pad_id)
        return {k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in batch.items()}

    # --- generation -------------------------------------------------------------------------------
    def generation_config(self, max_new_tokens: int):
        """Plain greedy search with the model's end and pad tokens. The model's own decoding entries
        (Audio Flamingo 3 ships do_sample=True, T=0.7, top-k 20, top-p 0.8, repetition_penalty 1.05)
        are not applied and are recorded in describe(): sampling would make batch N differ from
        batch 1, and a repetition penalty counts the left padding (whose id is an end token)."""
        from transformers import GenerationConfig

        # transformers fills every field left None from the model's own generation_config: the entries
        # that would shape greedy search are set to their neutral values here, explicitly
        return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                eos_token_id=list(self.eos_ids), pad_token_id=self.pad_id,
                                bos_token_id=self.model.generation_config.bos_token_id, **NEUTRAL_SEARCH)

    def _generate_batch(self, prompts: Sequence[Prompt]) -> list[Generation]:
        import torch

        timer = FirstTokenTimer()
        limits = [self.options.cap(p.max_new_tokens) for p in prompts]
        inputs = self.batch(prompts)
        first_step = FirstStepLogits(prompts)  # plain greedy: no processor changes the logits before it
        with torch.no_grad():
            out = self.model.generate(**inputs, generation_config=self.generation_config(max(limits)),
                                      logits_processor=[timer, first_step])
        self.read_off.keep(first_step)
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        generations = []
        for row, limit in zip(new, limits, strict=True):
            tokens = row[:limit]
            stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), len(tokens))
            tokens = tokens[:stop]
            generations.append(Generation(self.decode(tokens), n_new_tokens=len(tokens)))
        return timer.stamp(generations)

    def decode(self, tokens: list[int]) -> str:
        """Answer text. Qwen3-ASR: the transcript after `<asr_text>`, by the processor's own parser;
        Audio Flamingo 3: its transcription framing ('The spoken content of the audio is "..."')
        removed by the processor's own `strip_prefix`, only when the answer opens with it."""
        text = str(self.tokenizer.decode(tokens, skip_special_tokens=True))
        if self.settings.output == "qwen3_asr_transcription":
            return str(self.processor.decode(tokens, return_format="transcription_only"))
        if self.settings.answer_prefixes and text.strip().startswith(self.settings.answer_prefixes):
            return str(self.processor.batch_decode([tokens], strip_prefix=True, skip_special_tokens=True)[0])
        return text

    # --- candidate scoring ------------------------------------------------------------------------
    def choice_ids(self, choice: str) -> list[int]:
        """A candidate answer's tokens as the assistant would write them (no special tokens)."""
        return list(self.tokenizer(choice, add_special_tokens=False)["input_ids"])

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        """log P(choice | audio, prompt): the choice's token log-probabilities after the generation
        prompt, summed (lm-evaluation-harness's loglikelihood). Right after generating the same
        Prompt, single-token choices are read off the first step (wavllm_eval.first_step); otherwise
        one forward per (prompt, choice)."""
        import torch

        scores: list[list[float]] = []
        for prompt in prompts:
            read = self.read_off.scores(prompt, [self.choice_ids(c) for c in prompt.choices], self.next_token_logits)
            if read is not None:
                scores.append(read)
                continue
            inputs = self.batch([prompt])
            start = inputs["input_ids"].shape[1] - 1
            row = []
            for choice in prompt.choices:
                ids = self.choice_ids(choice)
                extra = torch.tensor([ids], dtype=torch.long, device=self.device)
                full = dict(inputs)
                for key in TEXT_KEYS:
                    if key in inputs:
                        fill = int(key == "attention_mask")
                        tail = extra if key == "input_ids" else torch.full_like(extra, fill)
                        full[key] = torch.cat([inputs[key], tail], dim=1)
                with torch.no_grad():
                    logits = self.model(**full).logits[0].double()
                logprobs = torch.log_softmax(logits[start: start + len(ids)], dim=-1)
                row.append(token_logprob_sum(logprobs, extra[0]))
            scores.append(row)
        self.read_off.clear()
        return scores

    def next_token_logits(self, prompt: Prompt):
        """The model's logits for the token after `prompt`'s generation prompt (a forward pass alone)."""
        import torch

        with torch.no_grad():
            return self.model(**self.batch([prompt])).logits[0, -1]

    # --- identity ---------------------------------------------------------------------------------
    def describe(self) -> Mapping[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "model_type": self.model_type,
            "model_class": type(self.model).__name__,
            "processor_class": type(self.processor).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": self.device,
            "family_settings": self.settings.to_json(),
            "audio_parts_per_turn": "one per clip" if self.max_audio_parts is None
            else f"{self.max_audio_parts} (more clips are joined with {CLIP_GAP_S:g} s of silence)",
            "sampling_rate_hz": self.sampling_rate_hz,
            "supports_choice_scoring": self.supports_choice_scoring,
            "max_audio_s": self.max_audio_s,
            "long_audio_policy": self.long_audio_policy,
            "decoding": {"do_sample": False, "num_beams": 1, "eos_token_ids": list(self.eos_ids),
                         "max_new_tokens_cap": self.options.max_new_tokens},
            "model_generation_defaults_not_applied": self.model_generation_defaults,
            "sampling_overridden": bool(self.model_generation_defaults.get("do_sample")),
            "chat_template_sha256": chat_template_sha(self.processor),
        }


@register_model("audio-flamingo-3")
class AudioFlamingo3Adapter(NativeAudioChatAdapter):
    """NVIDIA Audio Flamingo 3 (transformers AudioFlamingo3ForConditionalGeneration), greedy."""

    model_types = ("audioflamingo3",)


@register_model("qwen3-asr")
class Qwen3ASRAdapter(NativeAudioChatAdapter):
    """Qwen3-ASR (transformers Qwen3ASRForConditionalGeneration): transcripts, greedy."""

    model_types = ("qwen3_asr",)
    supports_choice_scoring = False  # no instruction reaches an ASR-only model (set again per instance)


# --- folder checks and class resolution -------------------------------------------------------------
def check_folder(cls: type[NativeAudioChatAdapter], path: Path | None) -> Path:
    """The folder exists and holds every required file; all that is missing is named at once."""
    if path is None or not Path(path).is_dir():
        raise InputError(path, f"{cls.id} needs --model-path, a folder written by save_pretrained",
                         "download the model (e.g. huggingface-cli download nvidia/audio-flamingo-3-hf "
                         "--local-dir DIR) and pass --model-path DIR")
    root = Path(path)
    missing = cls.missing_files(root)
    if missing:
        raise InputError(root, "missing " + ", ".join(m.replace("|", " or ") for m in missing),
                         "copy the whole hub snapshot of the model into the folder")
    return root


def resolve_model_class(cls: type[NativeAudioChatAdapter], root: Path) -> tuple[str, type]:
    """config.json's model_type, and the installed transformers class that generates from it."""
    import transformers
    from transformers.models.auto import configuration_auto, modeling_auto

    config_path = root / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(config_path, f"not valid JSON ({exc})", "re-download config.json") from None
    model_type = str(config.get("model_type", ""))
    if not model_type:
        raise InputError(config_path, "no model_type", "use the config.json of the hub snapshot")
    if model_type not in configuration_auto.CONFIG_MAPPING_NAMES:
        raise InputError(config_path,
                         f"model_type {model_type!r} is unknown to transformers {transformers.__version__}",
                         "upgrade transformers, or use the model's own adapter")
    if cls.model_types and model_type not in cls.model_types:
        raise InputError(config_path, f"model_type {model_type!r} is not {' or '.join(cls.model_types)}",
                         f"use --model hf-audio-chat for this folder, or give --model {cls.id} its own model")
    names = [str(n) for n in config.get("architectures") or []]
    names += [getattr(modeling_auto, m)[model_type] for m in AUTO_MAPPINGS
              if model_type in getattr(modeling_auto, m)]
    for name in names:
        model_cls = getattr(transformers, name, None)
        generates = model_cls is not None and hasattr(model_cls, "generate")
        if generates and name.endswith(("ForConditionalGeneration", "ForCausalLM")):
            return model_type, model_cls
    raise InputError(config_path, f"no text-generating transformers class for model_type {model_type!r} "
                     f"(architectures: {names or 'none'})",
                     "this adapter runs transformers' own audio chat models only (no remote code)")


def check_processor(root: Path, processor: Any, model_type: str) -> None:
    """The processor hears audio and has a chat template; otherwise name what is missing."""
    problems = []
    if audio_feature_extractor(processor) is None:
        problems.append(f"the processor ({type(processor).__name__}) has no audio feature extractor")
    if getattr(processor, "tokenizer", None) is None:
        problems.append("no tokenizer")
    elif not chat_template(processor):
        problems.append("no chat template (chat_template.jinja)")
    if problems:
        raise InputError(root, f"{model_type}: " + "; ".join(problems),
                         "copy the processor files and chat_template.jinja from the model's hub snapshot")


def audio_feature_extractor(processor: Any) -> Any:
    return getattr(processor, "audio_processor", None) or getattr(processor, "feature_extractor", None)


def audio_limit(processor: Any, settings: FamilySettings) -> tuple[float | None, str]:
    """Per-clip seconds beyond which the runner skips a clip, and the policy in words.

    Processors that window long audio state their own cap (`max_audio_len`: Audio Flamingo 3's
    600 s, past which it truncates); a Whisper-style extractor truncates at its window
    (`chunk_length`, or `n_samples / sampling_rate`). A table entry may say there is no cap (None)."""
    if settings.max_audio_s != UNSET:
        if settings.max_audio_s is None:
            return None, "whole clip encoded (the processor does not truncate)"
        return float(settings.max_audio_s), f"skip clips over {settings.max_audio_s:g} s (family table)"
    cap = getattr(processor, "max_audio_len", None)
    if cap:
        return float(cap), f"skip clips over {float(cap):g} s (processor max_audio_len; it would truncate)"
    fe = audio_feature_extractor(processor)
    if getattr(fe, "chunk_length", None):
        return float(fe.chunk_length), f"skip clips over {fe.chunk_length:g} s (feature extractor window)"
    if getattr(fe, "n_samples", None) and getattr(fe, "sampling_rate", None):
        seconds = fe.n_samples / fe.sampling_rate
        return float(seconds), f"skip clips over {seconds:g} s (feature extractor window)"
    return None, "whole clip encoded (no limit stated by the processor)"


def eos_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """The generation config's end tokens, else the model config's, else the tokenizer's."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids:
        raise InputError(None, "the model declares no end-of-sequence token",
                         "set eos_token_id in generation_config.json")
    return tuple(int(i) for i in ids)


def torch_dtype(dtype: str, device: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
             "auto": torch.float32 if device == "cpu" else torch.bfloat16}
    if dtype not in table:
        raise InputError("--dtype", f"{dtype!r} is not supported by hf-audio-chat",
                         "use float32, bfloat16 or float16")
    return table[dtype]


def chat_template(processor: Any) -> str:
    template = getattr(processor, "chat_template", None)
    template = template or getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    return json.dumps(template, sort_keys=True) if isinstance(template, dict) else str(template or "")


def chat_template_sha(processor: Any) -> str:
    import hashlib

    return hashlib.sha256(chat_template(processor).encode()).hexdigest()[:16]


# --- batching ---------------------------------------------------------------------------------------
def collate(encoded: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Join single-prompt processor outputs: text tensors (1, L_i) are left-padded (pad id, mask 0);
    audio tensors are concatenated on their first axis (per clip or per window), right-padded with
    zeros along the others (their masks mark that padding invalid, so it is never attended)."""
    import torch
    import torch.nn.functional as F

    keys = [k for k in encoded[0] if isinstance(encoded[0][k], torch.Tensor)]
    out: dict[str, Any] = {}
    for key in keys:
        tensors = [e[key] for e in encoded]
        if key in TEXT_KEYS:
            longest = max(t.shape[1] for t in tensors)
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.cat([F.pad(t, (longest - t.shape[1], 0), value=fill) for t in tensors])
            continue
        shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
        padded = []
        for t in tensors:
            pad: list[int] = []
            for d in reversed(range(1, t.dim())):
                pad += [0, shape[d] - t.shape[d]]
            padded.append(F.pad(t, pad) if any(pad) else t)
        out[key] = torch.cat(padded)
    return out
