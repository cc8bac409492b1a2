"""Qwen-Audio and Qwen-Audio-Chat (v1; Chu et al., 2023; `QwenLM/Qwen-Audio` at b50fb95), ported natively.

The release's remote code needs transformers 4.32 and does not run on current versions (shared
reference qwen_audio.md §4.2); `trust_remote_code` is never used. The network is rebuilt on
transformers parts (`_qwen_audio_modeling`), the weights renamed (`_qwen_audio_checkpoint`), and the
tiktoken vocabulary read by our own BPE (`_qwen_audio_tokenizer`).

--model-path is the release's folder (Qwen/Qwen-Audio or Qwen/Qwen-Audio-Chat) or the output of
`wavllm-eval convert --model qwen-audio`:

    config.json                   the release's QWenConfig (with its `audio` section)
    qwen.tiktoken                 the BPE ranks
    model-*.safetensors + index   the weights (or pytorch_model*.bin, read with weights_only=True)
    mel_filters.npz               optional: the 80 mel filters (computed identically when absent)

Prompts:
- `qwen-audio` (base) speaks the eval scripts' task tags (`eval_audio/evaluate_*.py`), chosen from the
  instruction's words: transcribe -> ASR tags, translate ... into <language> -> S2TT tags, emotion ->
  SER tags, anything else -> the AQA question format. The base model ignores free-form instructions
  (FAQ), so the tags are the fair test. One audio input: a multi-clip trial is joined by
  `Prompt.single_waveform()`.
- `qwen-audio-chat` builds ChatML exactly as `qwen_generation_utils.make_context` with the default system
  prompt, one `Audio k:<audio>…</audio>` line per clip (`tokenizer.from_list_format`).

Decoding is greedy for both (the eval scripts' setting; the hub generation configs sample), batched
with left padding and equal to batch size 1. Clips over 30 s are skipped (the release truncates).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from wavllm_eval.adapter import (
    DecodingConfig,
    FirstTokenTimer,
    LoadOptions,
    SpeechLLMAdapter,
    left_pad_embeddings,
    resolve_device,
    token_logprob_sum,
)
from wavllm_eval.errors import InputError
from wavllm_eval.first_step import ChoiceReadOff, FirstStepLogits, no_stop_before
from wavllm_eval.registry import register_model
from wavllm_eval.types import Generation, Prompt

log = logging.getLogger(__name__)

SYSTEM = "You are a helpful assistant."  # QWenLMHeadModel.chat's default system prompt
MAX_AUDIO_S = 30.0  # pad_or_trim: 480,000 samples
POSITION_LIMIT = 2048  # seq_length: up to here dynamic NTK and logn attention are inactive (exact)
ASR_TAGS = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"  # evaluate_asr.py
SER_TAGS = "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>"  # evaluate_emotion.py
TARGET_LANGUAGES = {"english": "en", "chinese": "zh", "german": "de", "spanish": "es", "korean": "ko",
                    "french": "fr", "japanese": "ja", "italian": "it"}
_TRANSLATE = re.compile(r"\btranslat\w*\b.*?\b(?:into|to)\s+(" + "|".join(TARGET_LANGUAGES) + r")\b", re.I)


def st_tags(source: str, target: str) -> str:
    """evaluate_st.py: `<|startoftranscript|><|src|><|translate|><|tgt|><|notimestamps|><|itn|>`."""
    return f"<|startoftranscript|><|{source}|><|translate|><|{target}|><|notimestamps|><|itn|>"


def aqa_tags(question: str) -> str:
    """evaluate_aqa.py: `<|startofanalysis|><|en|><|question|>{question}<|answer|>`."""
    return f"<|startofanalysis|><|en|><|question|>{question}<|answer|>"


def base_task_text(instruction: str) -> str:
    """The task tags the base model gets for a harness instruction (the speech is English)."""
    translate = _TRANSLATE.search(instruction)
    if translate:
        return st_tags("en", TARGET_LANGUAGES[translate.group(1).lower()])
    if re.search(r"\btranscri", instruction, re.I):
        return ASR_TAGS
    if re.search(r"\bemotion", instruction, re.I):
        return SER_TAGS
    return aqa_tags(instruction)


@register_model("qwen-audio")
class QwenAudioAdapter(SpeechLLMAdapter):
    """Qwen-Audio (v1 base, Whisper-large-v2 encoder + Qwen-7B), task-tag prompts, greedy; native port."""

    decoding = DecodingConfig(do_sample=False, num_beams=1)
    max_audio_s = MAX_AUDIO_S
    supports_choice_scoring = True
    default_batch_size = 8
    required_files: ClassVar[tuple[str, ...]] = (
        "config.json", "qwen.tiktoken",
        "model.safetensors.index.json|model.safetensors|pytorch_model.bin.index.json|pytorch_model.bin")
    prompt_format = "task-tags"
    min_new_tokens = 1  # the eval scripts' generate(min_new_tokens=1)

    def __init__(self, model: Any, tokenizer: Any, filters: Any, path: Path, options: LoadOptions, device: str,
                 dtype: Any, layout: str) -> None:
        self.model, self.tokenizer, self.filters = model, tokenizer, filters
        self.path, self.options, self.device, self.dtype, self.layout = path, options, device, dtype, layout
        self._last_batch: dict[int, tuple[Prompt, Any]] = {}
        self.read_off = ChoiceReadOff(dtype)  # single-token choices from the first generation step

    # --- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | None, options: LoadOptions) -> QwenAudioAdapter:
        import torch
        from wavllm_eval.model_zoo._qwen_audio_checkpoint import load_weights
        from wavllm_eval.model_zoo._qwen_audio_tokenizer import QwenTokenizer

        if path is None or not Path(path).is_dir():
            raise InputError(path, f"{cls.id} needs --model-path, the release's folder",
                             "download Qwen/Qwen-Audio(-Chat): config.json, qwen.tiktoken, model-*.safetensors")
        path = Path(path)
        missing = cls.missing_files(path)
        if missing:
            raise InputError(path, "missing " + ", ".join(missing), "copy the release's files into the folder")
        device = resolve_device(options.device)
        dtypes = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                  "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if options.dtype not in dtypes:
            raise InputError("--dtype", f"{options.dtype!r} is not implemented for {cls.id}",
                             "use auto (bf16 on a GPU, as the release), float32, bfloat16 or float16")
        model = build_model(path, empty=True)
        dims = model.dims
        tokenizer = QwenTokenizer.from_file(path / "qwen.tiktoken")  # checked before 17 GB of weights load
        if len(tokenizer) > dims.vocab_size or tokenizer.audio_start_id != dims.audio_start_id:
            raise InputError(path / "qwen.tiktoken", f"{len(tokenizer)} tokens with <audio> = "
                             f"{tokenizer.audio_start_id}, but config.json has vocab_size {dims.vocab_size} and "
                             f"audio_start_id {dims.audio_start_id}", "use the release's qwen.tiktoken and config.json")
        filters = mel_filters(path, dims.n_mels)
        layout = load_weights(model, path)
        model = model.to(device=device, dtype=dtypes[options.dtype]).eval()
        filters = torch.from_numpy(filters).to(device)
        return cls(model, tokenizer, filters, path, options, device, dtypes[options.dtype], layout)

    @classmethod
    def convert(cls, src: Path, out: Path) -> Path:
        """Write one folder whose `model.safetensors` is in this port's names (no mapping at load)."""
        from wavllm_eval.model_zoo._qwen_audio_checkpoint import convert_checkpoint

        src = Path(src)
        missing = cls.missing_files(src)
        if missing:
            raise InputError(src, "missing " + ", ".join(missing), "point --model-path at the release's folder")
        return convert_checkpoint(src, Path(out), build_model(src, empty=True))

    # --- prompts ------------------------------------------------------------------------------------
    def clips(self, prompt: Prompt) -> list[np.ndarray]:
        """The base model has one audio input (clips joined); Chat takes one audio part per clip."""
        return [prompt.single_waveform()]

    def prompt_text(self, instruction: str, n_clips: int) -> str:
        """The release's text before the audio paths are replaced by pad tokens (paths left empty)."""
        return "<audio></audio>" * n_clips + base_task_text(instruction)

    def prompt_ids(self, instruction: str, audio_tokens: Sequence[int]) -> list[int]:
        """Token ids for an instruction and each clip's audio token count: `tokenizer(text)` with all
        special tokens allowed, each `<audio>…</audio>` span holding n_tok pad tokens."""
        return self.expand_audio(self.tokenizer.encode(self.prompt_text(instruction, len(audio_tokens))), audio_tokens)

    def expand_audio(self, ids: list[int], audio_tokens: Sequence[int]) -> list[int]:
        """`_replace_closed_tag`: what lies between `<audio>` and `</audio>` becomes n_tok pad ids."""
        tok = self.tokenizer
        out: list[int] = []
        clip, inside = 0, False
        for token in ids:
            if token == tok.audio_start_id:
                out.extend([token] + [tok.audio_pad_id] * audio_tokens[clip])
                clip, inside = clip + 1, True
            elif token == tok.audio_end_id:
                out.append(token)
                inside = False
            elif not inside:
                out.append(token)
        if clip != len(audio_tokens):
            raise ValueError(f"{clip} audio spans in the prompt for {len(audio_tokens)} clips")
        return out

    def prompt_embeddings(self, prompt: Prompt):
        """(L, dim) input embeddings of one prompt: text ids with each clip's audio spliced in. The
        last batch's are kept, so `score_choices` after `generate` (the runner's order) does not
        encode the same audio twice; the entry holds the prompt itself, so its id is not reused."""
        cached = self._last_batch.get(id(prompt))
        if cached is not None and cached[0] is prompt:
            return cached[1]
        return self._embed(prompt)

    def _embed(self, prompt: Prompt):
        import torch
        from wavllm_eval.model_zoo._qwen_audio_modeling import audio_lengths, log_mel_spectrogram

        mels = []
        for wave in self.clips(prompt):
            if len(wave) < 160:
                raise ValueError(f"a clip of {len(wave)} samples is shorter than one mel frame (160)")
            mels.append((log_mel_spectrogram(wave, self.filters), *audio_lengths(len(wave))))
        ids = self.prompt_ids(prompt.text, [n_tok for _, _, n_tok in mels])
        with torch.no_grad():
            audio = self.model.encode_audio(mels)
            return self.model.embed(torch.tensor(ids, device=self.device), audio)

    @property
    def stop_ids(self) -> list[int]:
        return [self.tokenizer.eod_id]

    # --- generation ---------------------------------------------------------------------------------
    def _generate_batch(self, prompts: Sequence[Prompt]) -> list[Generation]:
        # The eval scripts decode the text before the first eod; special tags are dropped here
        # (the release's skip_special_tokens), as its scorers strip `<|...|>` anyway.
        timer = FirstTokenTimer()
        return timer.stamp([Generation(self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                                       n_new_tokens=len(tokens)) for tokens in self.generate_ids(prompts, timer)])

    def generate_ids(self, prompts: Sequence[Prompt], timer: FirstTokenTimer | None = None) -> list[list[int]]:
        """Greedy new-token ids of each prompt, cut before its first stop token and at its own limit;
        one left-padded batch (positions follow the mask, so each row equals its batch-size-1 run)."""
        import torch

        embeds = [self.prompt_embeddings(p) for p in prompts]
        self._last_batch = {id(p): (p, e) for p, e in zip(prompts, embeds, strict=True)}
        limits = [self.options.cap(p.max_new_tokens) for p in prompts]
        for prompt, embed, limit in zip(prompts, embeds, limits, strict=True):
            if embed.shape[0] + limit > POSITION_LIMIT:
                log.warning("sample %s may reach %d positions; past %d the release rescales RoPE (dynamic NTK) "
                            "and queries (logn), which this port does not", prompt.sample_id,
                            embed.shape[0] + limit, POSITION_LIMIT)
        inputs, mask = left_pad_embeddings(embeds)
        # the first step's logits are kept before min_new_tokens bans the stop token (our processor)
        first_step = FirstStepLogits(prompts)
        processors = [*([timer] if timer is not None else []), first_step,
                      no_stop_before(self.stop_ids, min(self.min_new_tokens, max(limits)), 0)]
        with torch.no_grad():
            out = self.model.llm.generate(
                inputs_embeds=inputs, attention_mask=mask, max_new_tokens=max(limits), min_new_tokens=None,
                do_sample=False, num_beams=1, eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.eod_id,
                logits_processor=processors)
        self.read_off.keep(first_step)
        rows = []
        for row, limit in zip(out.tolist(), limits, strict=True):
            tokens = row[:limit]
            stops = [i for i, t in enumerate(tokens) if t in self.stop_ids]
            rows.append(tokens[: stops[0]] if stops else tokens)
        return rows

    def next_token_logits(self, prompt: Prompt):
        """The LLM's logits for the token after `prompt` (a forward pass alone)."""
        import torch

        with torch.no_grad():
            return self.model.llm(inputs_embeds=self.prompt_embeddings(prompt)[None]).logits[0, -1].float()

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        """log P(choice | audio, prompt): the choice's tokens right after the prompt (its assistant
        turn for Chat), log-probabilities summed. Right after generating the same Prompt, single-token
        choices are read off the first step (wavllm_eval.first_step); otherwise all choices of a prompt
        go in one right-padded batch."""
        import torch

        embed = self.model.llm.model.embed_tokens
        scores = []
        for prompt in prompts:
            if not prompt.choices:
                scores.append([])
                continue
            choice_ids = [self.tokenizer.encode(c, allowed_special=()) for c in prompt.choices]
            read = self.read_off.scores(prompt, choice_ids, self.next_token_logits)
            if read is not None:
                scores.append(read)
                continue
            context = self.prompt_embeddings(prompt)
            longest = max(len(ids) for ids in choice_ids)
            pad = self.tokenizer.eod_id
            padded = torch.tensor([ids + [pad] * (longest - len(ids)) for ids in choice_ids], device=self.device)
            with torch.no_grad():
                full = torch.cat([context[None].expand(len(choice_ids), -1, -1), embed(padded)], dim=1)
                logits = self.model.llm(inputs_embeds=full).logits.float()  # causal: right pads never seen
                start = context.shape[0] - 1
                logprobs = torch.log_softmax(logits[:, start: start + longest], dim=-1)
            row = []
            for i, ids in enumerate(choice_ids):
                row.append(token_logprob_sum(logprobs[i], ids))
            scores.append(row)
        self.read_off.clear()
        return scores

    def describe(self) -> Mapping[str, Any]:
        import torch

        info: dict[str, Any] = {
            "id": self.id, "path": str(self.path), "weights_layout": self.layout,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "dtype": str(self.dtype).replace("torch.", ""), "device": self.device,
            "prompt_format": self.prompt_format, "decoding": {"greedy": True, "min_new_tokens": self.min_new_tokens,
                                                               "stop_ids": self.stop_ids},
            "audio": {"max_clip_s": MAX_AUDIO_S, "long_clip": "skipped by the runner (the release truncates at 30 s)",
                      "multi_clip": "joined by single_waveform (one audio input); truncated at 30 s"
                      if self.prompt_format == "task-tags" else "one 'Audio k:' part per clip",
                      "encoding": "each clip alone on its own 2*T_cnn mel frames (release batch size 1)"},
            "positions": f"exact up to {POSITION_LIMIT} (dynamic NTK / logn attention not ported beyond)",
        }
        if self.device.startswith("cuda"):
            info["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return info


@register_model("qwen-audio-chat")
class QwenAudioChatAdapter(QwenAudioAdapter):
    """Qwen-Audio-Chat (v1): ChatML with the default system prompt, one audio part per clip, greedy."""

    prompt_format = "chatml"
    min_new_tokens = 0  # model.chat sets none

    def clips(self, prompt: Prompt) -> list[np.ndarray]:
        return list(prompt.waveforms)

    def prompt_text(self, instruction: str, n_clips: int) -> str:
        """The user turn: `from_list_format([{'audio': ...}, ..., {'text': instruction}])`."""
        return "".join(f"Audio {k}:<audio></audio>\n" for k in range(1, n_clips + 1)) + instruction

    def prompt_ids(self, instruction: str, audio_tokens: Sequence[int]) -> list[int]:
        """`make_context(chat_format="chatml")`: every piece tokenised on its own; the role and
        content with only the audio specials allowed (AUDIO_ST), as the release does."""
        from wavllm_eval.model_zoo._qwen_audio_tokenizer import AUDIO_SPECIAL_TOKENS

        tok = self.tokenizer
        newline = tok.encode("\n")

        def turn(role: str, content: str) -> list[int]:
            return (tok.encode(role, allowed_special=AUDIO_SPECIAL_TOKENS) + newline
                    + tok.encode(content, allowed_special=AUDIO_SPECIAL_TOKENS))

        user = self.expand_audio(turn("user", self.prompt_text(instruction, len(audio_tokens))), audio_tokens)
        return ([tok.im_start_id, *turn("system", SYSTEM), tok.im_end_id, *newline, tok.im_start_id, *user,
                 tok.im_end_id, *newline, tok.im_start_id, *tok.encode("assistant"), *newline])

    @property
    def stop_ids(self) -> list[int]:
        """chat(): stop words `<|im_end|>`, `<|im_start|>`; the generation config's eos `<|endoftext|>`."""
        return [self.tokenizer.im_end_id, self.tokenizer.im_start_id, self.tokenizer.eod_id]




def mel_filters(path: Path, n_mels: int) -> np.ndarray:
    """(n_mels, 201) filters: the release's mel_filters.npz when present (no pickles), else the same
    Slaney filters computed (equal to 1e-9)."""
    from wavllm_eval.model_zoo._qwen_audio_modeling import mel_filter_matrix

    file = Path(path) / "mel_filters.npz"
    if not file.is_file():
        return mel_filter_matrix(n_mels)
    try:
        with np.load(file, allow_pickle=False) as npz:
            filters = np.asarray(npz[f"mel_{n_mels}"], dtype=np.float32)
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(file, f"no readable mel_{n_mels} array ({exc})", "copy the release's mel_filters.npz") from exc
    if filters.shape != (n_mels, 201):
        raise InputError(file, f"mel_{n_mels} has shape {filters.shape}, expected ({n_mels}, 201)",
                         "copy the release's mel_filters.npz")
    return filters


def build_model(path: Path, empty: bool = False):
    """QwenAudioModel from the release's config.json; `empty`: parameters on the meta device, to be
    assigned from the checkpoint (no 17 GB random init before a 17 GB load)."""
    from wavllm_eval.model_zoo._qwen_audio_modeling import QwenAudioModel, dims_from_config

    config_path = Path(path) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError as exc:
        raise InputError(config_path, "missing", "copy the release's config.json") from exc
    except ValueError as exc:
        raise InputError(config_path, f"not JSON ({exc})", "copy the release's config.json") from exc
    dims = dims_from_config(config, config_path)
    if dims.n_mels != 80:
        raise InputError(config_path, f"audio.n_mels is {dims.n_mels}", "the release's front end has 80 mel bins")
    if not empty:
        return QwenAudioModel(dims)
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return QwenAudioModel(dims)
