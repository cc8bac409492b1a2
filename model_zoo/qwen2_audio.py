"""Qwen2-Audio (Chu et al., 2024): `Qwen/Qwen2-Audio-7B` (base) and `Qwen/Qwen2-Audio-7B-Instruct`,
on transformers' own `Qwen2AudioForConditionalGeneration` + `Qwen2AudioProcessor` (no remote code).

--model-path is the hub folder as released: config.json, generation_config.json, model-*.safetensors
(+ index), the Qwen2 tokenizer (vocab.json/merges.txt or tokenizer.json, tokenizer_config.json),
preprocessor_config.json (WhisperFeatureExtractor, 128 mels, 30 s) and, for Instruct, the chat template.

Conventions (`QwenLM/Qwen2-Audio` `eval_audio/`, reference qwen_audio.md §11-§13):
- the processor's audio keyword is `audio=` (`audios=` is rejected by transformers 5.x and was silently
  dropped by 4.54-4.57, the cause of "identical answers for every sample" reports);
- left padding, greedy decoding, `min_new_tokens=1`, stop at `<|im_end|>` / `<|endoftext|>`;
- per-clip limit 30 s (the Whisper window): a longer clip is skipped by the runner, never truncated;
- Instruct: the released ChatML template, one audio part per clip, then the instruction;
- base: raw text, `<|audio_bos|><|AUDIO|><|audio_eos|>` per clip followed by the task prompt. The
  official prompts live in hosted jsonl files outside the repository; for the harness's default
  (WavLLM) instructions we use the ones third-party re-implementations cite (ASR: "Detect the language
  and recognize the speech: <|en|>"; emotion: "Recognize the emotion with keywords in English:";
  translation, UNVERIFIED: "Detect the language and translate the speech into German: <|en|>"); every
  other instruction (SV, SQA, prompt variants) follows the audio verbatim — the base model is not
  instruction-tuned, so expect poor SV/SQA numbers (Qwen-Audio FAQ: use the chat model for those).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from wavllm_eval.model_zoo._hf_chat_batching import HFAudioChatAdapter, missing_entries, torch_dtype

from wavllm_eval.adapter import DecodingConfig, LoadOptions, resolve_device
from wavllm_eval.errors import InputError
from wavllm_eval.registry import register_model
from wavllm_eval.types import SAMPLE_RATE_HZ, Prompt

AUDIO_SPAN = "<|audio_bos|><|AUDIO|><|audio_eos|>"
MAX_AUDIO_S = 30.0

# The released Qwen2-Audio-7B-Instruct chat template (hub chat_template; the same text as
# transformers' `Qwen2AudioProcessor.default_chat_template`): default system turn, "Audio k: " + span.
INSTRUCT_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and "
    "message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if 'audio' in content or 'audio_url' "
    "in content %}{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: "
    "<|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)

# WavLLM's default instructions (tasks/asr.py, st.py, er.py) -> the base model's task prompts.
BASE_TASK_PROMPTS: dict[str, str] = {
    "Based on the attached audio, generate a comprehensive text transcription of the spoken content.":
        "Detect the language and recognize the speech: <|en|>",
    "Translate the audio clip into German.": "Detect the language and translate the speech into German: <|en|>",
    "Can you describe the emotional condition of the speaker in the provided audio clip?":
        "Recognize the emotion with keywords in English:",
}


class _Qwen2AudioAdapter(HFAudioChatAdapter):
    """Loading and inputs shared by the base and Instruct checkpoints."""

    decoding = DecodingConfig(do_sample=False, num_beams=1)
    max_audio_s = MAX_AUDIO_S
    chat: ClassVar[bool] = False
    prompt_format: ClassVar[str] = ""
    required_files: ClassVar[tuple[str, ...]] = (
        "config.json", "model.safetensors|model.safetensors.index.json", "tokenizer.json|vocab.json",
        "tokenizer_config.json", "preprocessor_config.json|processor_config.json",
    )

    def __init__(self, model: Any, processor: Any, path: Path, options: LoadOptions, dtype: Any, device: str) -> None:
        super().__init__(model, processor.tokenizer, path, options, dtype, device)
        self.processor = processor

    @classmethod
    def load(cls, path: Path | None, options: LoadOptions) -> _Qwen2AudioAdapter:
        from transformers import AutoConfig, AutoProcessor, Qwen2AudioForConditionalGeneration

        missing = missing_entries(path, cls.required_files)
        if path is None or missing:
            raise InputError(path, f"not a Qwen2-Audio folder: missing {', '.join(missing)}",
                             "pass --model-path with the hub folder of Qwen/Qwen2-Audio-7B"
                             f"{'-Instruct' if cls.chat else ''} (config, safetensors, tokenizer, preprocessor)")
        path = Path(path)
        config = AutoConfig.from_pretrained(path)
        if config.model_type != "qwen2_audio":
            raise InputError(path / "config.json", f"model_type is {config.model_type!r}, not 'qwen2_audio'",
                             "point --model-path at a Qwen2-Audio checkpoint")
        device = resolve_device(options.device)
        dtype = torch_dtype(options.dtype, device)
        processor = AutoProcessor.from_pretrained(path)
        processor.tokenizer.padding_side = "left"  # as eval_audio/*.py; right padding shifts scores
        if processor.audio_token_id != config.audio_token_index:
            raise InputError(path, f"the tokenizer's <|AUDIO|> id {processor.audio_token_id} is not the config's "
                             f"audio_token_index {config.audio_token_index}", "use the tokenizer shipped with the model")
        model = Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=dtype, device_map=device).eval()
        return cls(model, processor, path, options, dtype, device)

    def build_inputs(self, texts: Sequence[str], waveforms: Sequence[Any]):
        # `audio=` is the keyword transformers 5.x reads; `audios=` would raise (and dropped audio on 4.5x).
        return self.processor(text=list(texts), audio=list(waveforms), sampling_rate=SAMPLE_RATE_HZ,
                              return_tensors="pt", padding=True)

    def audio_encoder(self):
        return self.model.model.audio_tower

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "prompt_format": self.prompt_format, "processor_audio_keyword": "audio="}


@register_model("qwen2-audio")
class Qwen2AudioBaseAdapter(_Qwen2AudioAdapter):
    """Qwen2-Audio-7B base (the model behind the paper's numbers): raw audio span + task prompt, greedy."""

    prompt_format = ("raw: <|audio_bos|><|AUDIO|><|audio_eos|> per clip + task prompt (WavLLM default "
                     "instructions mapped to the Qwen2-Audio eval prompts, others verbatim)")
    task_prompts: ClassVar[Mapping[str, str]] = BASE_TASK_PROMPTS

    def prompt_text(self, prompt: Prompt) -> str:
        instruction = prompt.text.strip()
        return AUDIO_SPAN * len(prompt.waveforms) + self.task_prompts.get(instruction, instruction)

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "task_prompts": dict(self.task_prompts)}


@register_model("qwen2-audio-instruct")
class Qwen2AudioInstructAdapter(_Qwen2AudioAdapter):
    """Qwen2-Audio-7B-Instruct: the released ChatML template, one audio part per clip, greedy."""

    chat = True
    prompt_format = "chat template: system default, user = one audio part per clip + instruction"

    def prompt_text(self, prompt: Prompt) -> str:
        content: list[dict[str, str]] = [{"type": "audio", "audio": f"clip-{i + 1}"}
                                         for i in range(len(prompt.waveforms))]
        content.append({"type": "text", "text": prompt.text})
        return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True, tokenize=False)
