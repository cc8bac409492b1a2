"""Qwen2.5-Omni (Xu et al., 2025), text out: the thinker alone, on transformers' own
`Qwen2_5OmniThinkerForConditionalGeneration` (no talker, no token2wav, no remote code).

--model-path is the hub folder of `Qwen/Qwen2.5-Omni-7B` (or -3B) as released: config.json (model_type
qwen2_5_omni; its thinker_config is used) or a thinker-only folder (qwen2_5_omni_thinker),
model-*.safetensors (`thinker.*` keys; transformers strips the prefix and ignores talker/token2wav),
the Qwen2 tokenizer, preprocessor_config.json (WhisperFeatureExtractor, 128 mels) and chat_template.json.

Conventions:
- Greedy: transformers' default thinker generation samples, while the paper's numbers are greedy, so
  `do_sample=False` is passed explicitly (and recorded); left padding; `min_new_tokens=1`.
- Prompt: the released chat template (chat_template.json, else the built-in copy below), laid out as
  the official `cookbooks/universal_audio_understanding.ipynb` (QwenLM/Qwen2.5-Omni f8bf58c): a system
  turn, then one user turn holding the instruction followed by one audio part per clip
  (`<|audio_bos|><|AUDIO|><|audio_eos|>`, no "Audio k:" ids). The harness's default ASR and
  translation instructions become the cookbook's task prompts with its task system prompts ("You are
  a speech recognition model." / "... translation model."; its English->Chinese translation prompt
  with German as the target); any other instruction is kept verbatim under the model card's system
  prompt ("You are Qwen, a virtual human ...").
- Inputs: `Qwen2_5OmniProcessor` needs a video processor, hence torchvision, which this harness does
  not install; for audio-only prompts its work is three steps, done here with the same pieces: the
  folder's WhisperFeatureExtractor (`clip_features`: the log-mel of each clip's valid frames, equal
  to the processor's), each `<|AUDIO|>` expanded to `_get_feat_extract_output_lengths(frames)` tokens
  (transformers' own function), and the tokenizer with left padding. A test checks ids, features
  and logits against the official processor's `__call__`.
- Per-clip limit: the feature extractor's window (`n_samples`), read from the folder (the released
  preprocessor_config.json says chunk_length 300, i.e. 300 s); a longer clip is skipped by the
  runner, never truncated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from wavllm_eval.model_zoo._hf_chat_batching import HFAudioChatAdapter, missing_entries, torch_dtype

from wavllm_eval.adapter import DecodingConfig, LoadOptions, resolve_device
from wavllm_eval.errors import InputError
from wavllm_eval.registry import register_model
from wavllm_eval.types import SAMPLE_RATE_HZ, Prompt

AUDIO_TOKEN = "<|AUDIO|>"
SYSTEM_PROMPT = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
                 "auditory and visual inputs, as well as generating text and speech.")

# WavLLM's default instructions (tasks/asr.py, st.py) -> (system prompt, instruction) of the cookbook.
COOKBOOK_PROMPTS: dict[str, tuple[str, str]] = {
    "Based on the attached audio, generate a comprehensive text transcription of the spoken content.":
        ("You are a speech recognition model.", "Transcribe the English audio into text without any punctuation marks."),
    "Translate the audio clip into German.":
        ("You are a speech translation model.",
         "Listen to the provided English speech and produce a translation in German text."),
}

# The released Qwen2.5-Omni chat_template.json (also transformers' processor test fixture).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}{% set video_count = "
    "namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in "
    "message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>{% elif content['type'] == 'audio' or 'audio' in content or "
    "'audio_url' in content %}{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio "
    "{{ audio_count.value }}: {% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'video' "
    "or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)


def folder_chat_template(path: Path) -> tuple[str, str]:
    """(template, where it came from): the processor's chat_template.json / .jinja, else the built-in
    copy. Never the tokenizer's own template, which on the hub is the text-only Qwen2.5 one."""
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text())["chat_template"], "chat_template.json"
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(), "chat_template.jinja"
    return CHAT_TEMPLATE, "built-in copy of the released chat_template.json"


def expand_audio_tokens(texts: Sequence[str], token_counts: Sequence[int]) -> list[str]:
    """Each `<|AUDIO|>` in reading order becomes its clip's number of audio tokens."""
    counts = iter(token_counts)
    out = []
    for text in texts:
        pieces = text.split(AUDIO_TOKEN)
        out.append(pieces[0] + "".join(AUDIO_TOKEN * next(counts) + piece for piece in pieces[1:]))
    return out


@register_model("qwen2.5-omni")
class Qwen25OmniAdapter(HFAudioChatAdapter):
    """Qwen2.5-Omni thinker (text out): released chat template and system prompt, one audio part per clip, greedy."""

    decoding = DecodingConfig(do_sample=False, num_beams=1)
    max_audio_s: float | None = 30.0  # replaced at load by the feature extractor's window
    required_files: ClassVar[tuple[str, ...]] = (
        "config.json", "model.safetensors|model.safetensors.index.json", "tokenizer.json|vocab.json",
        "tokenizer_config.json", "preprocessor_config.json",
    )

    def __init__(self, model: Any, tokenizer: Any, feature_extractor: Any, chat_template: tuple[str, str],
                 path: Path, options: LoadOptions, dtype: Any, device: str) -> None:
        super().__init__(model, tokenizer, path, options, dtype, device)
        self.feature_extractor = feature_extractor
        self.chat_template, self.chat_template_source = chat_template
        self.max_audio_s = feature_extractor.n_samples / feature_extractor.sampling_rate

    @classmethod
    def load(cls, path: Path | None, options: LoadOptions) -> Qwen25OmniAdapter:
        from transformers import (
            AutoConfig,
            AutoTokenizer,
            Qwen2_5OmniThinkerForConditionalGeneration,
            WhisperFeatureExtractor,
        )

        missing = missing_entries(path, cls.required_files)
        if path is None or missing:
            raise InputError(path, f"not a Qwen2.5-Omni folder: missing {', '.join(missing)}",
                             "pass --model-path with the hub folder of Qwen/Qwen2.5-Omni-7B")
        path = Path(path)
        config = AutoConfig.from_pretrained(path)
        if config.model_type == "qwen2_5_omni":
            thinker_config = config.thinker_config
        elif config.model_type == "qwen2_5_omni_thinker":
            thinker_config = config
        else:
            raise InputError(path / "config.json", f"model_type is {config.model_type!r}, not qwen2_5_omni",
                             "point --model-path at a Qwen2.5-Omni checkpoint")
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"
        audio_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
        if audio_id != thinker_config.audio_token_index:
            raise InputError(path, f"the tokenizer's {AUDIO_TOKEN} id {audio_id} is not the config's "
                             f"audio_token_index {thinker_config.audio_token_index}",
                             "use the tokenizer shipped with the model")
        feature_extractor = WhisperFeatureExtractor.from_pretrained(path)
        device = resolve_device(options.device)
        dtype = torch_dtype(options.dtype, device)
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            path, config=thinker_config, dtype=dtype, device_map=device).eval()
        return cls(model, tokenizer, feature_extractor, folder_chat_template(path), path, options, dtype, device)

    def prompt_text(self, prompt: Prompt) -> str:
        system, instruction = COOKBOOK_PROMPTS.get(prompt.text.strip(), (SYSTEM_PROMPT, prompt.text))
        content: list[dict[str, str]] = [{"type": "text", "text": instruction}]
        content.extend({"type": "audio", "audio": f"clip-{i + 1}"} for i in range(len(prompt.waveforms)))
        conversation = [{"role": "system", "content": [{"type": "text", "text": system}]},
                        {"role": "user", "content": content}]
        return self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template,
                                                  add_generation_prompt=True, tokenize=False)

    def build_inputs(self, texts: Sequence[str], waveforms: Sequence[Any]):
        from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

        features, frames = self.clip_features(waveforms)
        counts = _get_feat_extract_output_lengths(frames.sum(-1)).tolist()
        text = self.tokenizer(expand_audio_tokens(texts, counts), padding=True, padding_side="left",
                              return_tensors="pt")
        return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                "input_features": features, "feature_attention_mask": frames}

    def clip_features(self, waveforms: Sequence[Any]):
        """(features (N, 128, T), frame mask (N, T)) as Qwen2_5OmniProcessor._process_audio computes them
        (`padding='max_length'`, attention mask), except that each clip is padded only to its own length
        plus one FFT window instead of the released 300 s: the log-mel of the valid frames is the same
        (zeros follow the signal either way, and the per-clip max used for the dynamic-range floor
        comes from the signal), the encoder reads only the valid frames, and a 300 s mel for every
        clip is tens of times the work. Per clip, so a clip's features never depend on its batch."""
        import math

        import torch

        extractor = self.feature_extractor
        rows, masks = [], []
        for wave in waveforms:
            window = math.ceil((len(wave) + extractor.n_fft) / extractor.hop_length) * extractor.hop_length
            out = extractor([wave], sampling_rate=SAMPLE_RATE_HZ, padding="max_length",
                            max_length=min(window, extractor.n_samples), return_attention_mask=True,
                            return_tensors="pt")
            rows.append(out["input_features"][0])
            masks.append(out["attention_mask"][0])
        longest = max(r.shape[-1] for r in rows)
        features = torch.zeros(len(rows), rows[0].shape[0], longest, dtype=rows[0].dtype)
        frames = torch.zeros(len(rows), longest, dtype=masks[0].dtype)
        for i, (row, mask) in enumerate(zip(rows, masks, strict=True)):
            features[i, :, : row.shape[-1]] = row
            frames[i, : mask.shape[-1]] = mask
        return features, frames

    def audio_encoder(self):
        return self.model.model.audio_tower

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "component": "thinker only (text output)",
                "system_prompt": SYSTEM_PROMPT, "task_prompts": {k: list(v) for k, v in COOKBOOK_PROMPTS.items()},
                "chat_template": self.chat_template_source,
                "prompt_format": "chat template (cookbook layout): system, user = instruction + one audio part per clip",
                "thinker_default_sampling_overridden": True,
                "audio_features": "WhisperFeatureExtractor log-mel per clip over its own length (valid frames "
                                  "equal the processor's full-window ones)"}
