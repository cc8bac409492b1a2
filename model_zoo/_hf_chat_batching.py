"""Shared machinery of the native-transformers Qwen audio adapters (Qwen2-Audio, Qwen2.5-Omni thinker).

Both models take processor-built inputs (`input_ids` with each `<|AUDIO|>` expanded to the clip's
token count, `input_features`, `feature_attention_mask`), decode greedily with left padding as the
official `QwenLM/Qwen2-Audio` `eval_audio/*.py` scripts do (`padding_side='left'`, `do_sample=False`,
`min_new_tokens=1`, decode with `skip_special_tokens=True, clean_up_tokenization_spaces=False`), and
score candidate answers the same way. An adapter subclass says only how a `Prompt` becomes processor
inputs (`build_inputs`) and how its folder loads.

Private module: discovery does not import it, and it imports torch only inside functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wavllm_eval.adapter import FirstTokenTimer, SpeechLLMAdapter, token_logprob_sum
from wavllm_eval.errors import InputError
from wavllm_eval.first_step import ChoiceReadOff, FirstStepLogits, no_stop_before
from wavllm_eval.types import SAMPLE_RATE_HZ, Generation, Prompt

MIN_NEW_TOKENS = 1  # the official eval scripts' generate(min_new_tokens=1)
# Both Qwen chat formats end a turn with <|im_end|>; the base model ends raw text with <|endoftext|>.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def torch_dtype(name: str, device: str):
    """--dtype -> torch dtype. `auto`: bfloat16 on a GPU (the released weights' dtype, the official
    scripts' torch_dtype='auto'), float32 on the CPU (bf16 matmuls there are slow and less exact)."""
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in table:
        raise InputError("--dtype", f"dtype {name!r} is not supported by this adapter",
                         "use auto, float32, bfloat16 or float16")
    return table[name]


def check_clip_lengths(prompts: Sequence[Prompt], max_audio_s: float | None) -> None:
    """Refuse a clip over the model's window before it reaches the processor, which would cut it
    silently (`padding='max_length'` truncates at `n_samples`). The runner skips such samples first;
    this guards every other caller."""
    if max_audio_s is None:
        return
    for prompt in prompts:
        if not prompt.waveforms:
            raise ValueError(f"sample {prompt.sample_id}: no audio (the runner fills Prompt.waveforms)")
        for i, wave in enumerate(prompt.waveforms):
            seconds = len(wave) / SAMPLE_RATE_HZ
            if seconds > max_audio_s:
                raise ValueError(f"sample {prompt.sample_id}: clip {i + 1} is {seconds:.2f} s, longer than the "
                                 f"model's {max_audio_s:g} s window (the processor would truncate it)")


def stop_token_ids(tokenizer: Any, generation_config: Any) -> list[int]:
    """EOS ids: the checkpoint's generation_config, the tokenizer's eos, and both Qwen turn ends."""
    ids: list[int] = []
    configured = getattr(generation_config, "eos_token_id", None)
    for value in ([configured] if isinstance(configured, int) else list(configured or [])):
        ids.append(int(value))
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[token] for token in STOP_TOKENS if token in vocab)
    return sorted(set(ids))


def inherited_settings(generation_config: Any) -> dict[str, Any]:
    """Search-shaping settings a greedy call does not override (a repetition penalty changes greedy)."""
    if generation_config is None:
        return {}
    names = ("repetition_penalty", "no_repeat_ngram_size", "length_penalty", "bad_words_ids", "suppress_tokens")
    return {name: getattr(generation_config, name) for name in names
            if getattr(generation_config, name, None) not in (None, 1.0, 0, [])}


def missing_entries(path: Path | None, required: Sequence[str]) -> list[str]:
    if path is None:
        return list(required)
    return [entry for entry in required if not any((Path(path) / option).exists() for option in entry.split("|"))]


class HFAudioChatAdapter(SpeechLLMAdapter):
    """A transformers audio-LLM driven through processor-built inputs; subclasses give `build_inputs`."""

    supports_choice_scoring = True
    default_batch_size = 8
    max_audio_s: float | None = 30.0  # the Whisper front end's window

    def __init__(self, model: Any, tokenizer: Any, path: Path, options: Any, dtype: Any, device: str) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.path, self.options, self.dtype, self.device = path, options, dtype, device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
        self.read_off = ChoiceReadOff(dtype)  # single-token choices from the first generation step

    # --- what a subclass defines -----------------------------------------------------------------
    def prompt_text(self, prompt: Prompt) -> str:
        """The model's full text for one prompt, with one `<|AUDIO|>` placeholder per clip."""
        raise NotImplementedError

    def build_inputs(self, texts: Sequence[str], waveforms: Sequence[Any]):
        """Processor output (left-padded) for `texts` whose placeholders take `waveforms` in order."""
        raise NotImplementedError

    def audio_encoder(self):
        """The audio tower module (tests hook its input)."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------------
    def inputs_for(self, prompts: Sequence[Prompt]):
        """Batched, left-padded processor inputs on the model's device (floats in the model's dtype)."""
        check_clip_lengths(prompts, self.max_audio_s)
        texts = [self.prompt_text(p) for p in prompts]
        waves = [w for p in prompts for w in p.waveforms]
        return self._to_device(self.build_inputs(texts, waves))

    def _to_device(self, inputs):
        import torch

        out = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            out[key] = value
        return out

    def _generate_batch(self, prompts: Sequence[Prompt]) -> list[Generation]:
        import torch

        if not prompts:
            return []
        timer = FirstTokenTimer()
        inputs = self.inputs_for(prompts)
        limit = self.options.cap(max(p.max_new_tokens for p in prompts))
        prompt_len = inputs["input_ids"].shape[1]
        # the first step's logits are kept before min_new_tokens bans the stop tokens (in our processor)
        first_step = FirstStepLogits(prompts)
        processors = [timer, first_step, no_stop_before(self.stop_ids, MIN_NEW_TOKENS, prompt_len)]
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=limit, min_new_tokens=None,
                                      do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                                      eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                                      logits_processor=processors)
        self.read_off.keep(first_step)
        generations = []
        for row, prompt in zip(out[:, prompt_len:].tolist(), prompts, strict=True):
            row = row[: self.options.cap(prompt.max_new_tokens)]  # one batch limit; each prompt keeps its own
            for i, token in enumerate(row):
                if token in self.stop_ids:
                    row = row[:i]
                    break
            text = self.tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            generations.append(Generation(text, n_new_tokens=len(row)))
        return timer.stamp(generations)

    def choice_token_ids(self, choice: str) -> list[int]:
        """A candidate's tokens as the assistant's first words (no leading space, no special tokens)."""
        return list(self.tokenizer(choice, add_special_tokens=False)["input_ids"])

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        """log P(choice | audio, prompt), summed over the choice's tokens after the generation prompt.
        Right after generating the same Prompt, single-token choices are read off the first step
        (wavllm_eval.first_step); otherwise one forward per prompt over all its choices (the prefix
        repeated, the choices right-padded: padding after a causal row changes none of its earlier
        logits)."""
        import torch

        scores: list[list[float]] = []
        for prompt in prompts:
            if not prompt.choices:
                scores.append([])
                continue
            choices = [self.choice_token_ids(c) for c in prompt.choices]
            read = self.read_off.scores(prompt, choices, self.next_token_logits)
            if read is not None:
                scores.append(read)
                continue
            prefix = self.inputs_for([prompt])
            ids = prefix["input_ids"][0]
            longest = max(len(c) for c in choices)
            k, n = len(choices), ids.shape[0]
            rows = torch.full((k, n + longest), self.pad_id, dtype=ids.dtype, device=ids.device)
            mask = torch.zeros_like(rows)
            for j, choice in enumerate(choices):
                rows[j, :n] = ids
                rows[j, n: n + len(choice)] = torch.tensor(choice, dtype=ids.dtype)
                mask[j, :n] = prefix["attention_mask"][0]
                mask[j, n: n + len(choice)] = 1
            batch = {"input_ids": rows, "attention_mask": mask}
            for key in ("input_features", "feature_attention_mask"):
                if key in prefix:
                    batch[key] = torch.cat([prefix[key]] * k)  # each row's clips, in row order
            with torch.no_grad():
                logits = self.model(**batch).logits.float()
            logprobs = torch.log_softmax(logits[:, n - 1: n - 1 + longest], dim=-1)
            row_scores = []
            for j, choice in enumerate(choices):
                row_scores.append(token_logprob_sum(logprobs[j], choice))
            scores.append(row_scores)
        self.read_off.clear()
        return scores

    def next_token_logits(self, prompt: Prompt):
        """The model's logits for the token after `prompt`'s generation prompt (a forward pass alone)."""
        import torch

        with torch.no_grad():
            return self.model(**self.inputs_for([prompt])).logits[0, -1]

    def describe(self) -> Mapping[str, Any]:
        info: dict[str, Any] = {
            "id": self.id,
            "path": str(self.path),
            "class": type(self.model).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": self.device,
            "decoding": {**dataclasses.asdict(self.decoding), "min_new_tokens": MIN_NEW_TOKENS,
                         "eos_token_ids": self.stop_ids, "padding_side": "left"},
            # What generate() still takes from the checkpoint's generation_config (the official eval
            # scripts pass only do_sample/min/max_new_tokens, so these apply there too).
            "inherited_from_generation_config": inherited_settings(getattr(self.model, "generation_config", None)),
            "max_audio_s": self.max_audio_s,
            "long_audio_policy": "skip (a longer clip is never truncated)",
            "choice_scoring": "sum of log P(choice tokens | audio, prompt) after the generation prompt",
        }
        if self.device.startswith("cuda"):
            import torch

            info["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return info
