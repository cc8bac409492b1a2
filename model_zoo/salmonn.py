"""SALMONN (Tang et al., 2024; bytedance/SALMONN): Whisper + BEATs encoders, a window-level Q-Former
and Vicuna with LoRA.

`--model salmonn-13b` is the v1 release (`salmonn_v1.pth`, Vicuna-13B **v1.1**); `--model salmonn-7b`
is SALMONN-7B (`salmonn_7b_v0.pth`, Vicuna-7B **v1.5**). A wrong Vicuna version gives empty output
(bytedance/SALMONN#78).

--model-path is a folder:

    salmonn_v1.pth | salmonn_7b_v0.pth   the released trainable parts (Q-Former, query, projection,
                                         ln_speech/ln_audio, LoRA), or salmonn.safetensors from `convert`
    BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt   the BEATs checkpoint (or beats.safetensors + beats.json)
    whisper/   openai/whisper-large-v2: config.json, preprocessor_config.json, model.safetensors or
               pytorch_model.bin (only the encoder is used)
    vicuna/    lmsys/vicuna-13b-v1.1 or lmsys/vicuna-7b-v1.5: config.json, weights, tokenizer.model
    salmonn.json   optional overrides of `SalmonnDims` (e.g. {"lora_alpha": 28}, SALMONN's
                   "activation tuning" knob; the release evaluates its trained tasks at 32)

Every tensor is checked against its file (see `_salmonn_checkpoint.py`); `describe()` lists which
keys came from which file.

Inference as released (`configs/decode_config.yaml`, `models/salmonn.py::generate`, `cli_inference.py`):
- prompt `USER: <Speech>{speech}</Speech> {instruction}\\nASSISTANT:` after a BOS embedding; the two text
  halves tokenised separately by the LLaMA SentencePiece model (each gets its leading '▁');
- the released per-task test prompts (`prompts/test_prompt.json`) replace the harness's default
  instructions (`NATIVE_PROMPTS`); any other instruction (a manifest's own, a prompt variant, an SQA
  question — SALMONN's `QA` prompt is the question itself) is passed through unchanged;
- beam search, 4 beams, no sampling, at most 200 new tokens (the task's limit when lower), length and
  repetition penalty 1, no EOS as the first token (`min_length=1`); the vocabulary stays at 32,000 as
  in v1 (the April-2024 code adds an untrained [PAD] row, 32,001); left padding uses id 0 under a
  zero attention mask;
- audio: zero-padded to at least 1 s, Whisper always sees 30 s (88 speech tokens); clips over 30 s are
  skipped by the runner (`max_audio_s`); a verification trial (two clips joined by 0.1 s of silence,
  `Prompt.single_waveform()`, the release's SV input) over 30 s is cut at 30 s as the release does,
  and counted in describe();
- precision: on CUDA the LLM in float16 and Whisper, BEATs and the Q-Former in float32 under float16
  autocast (`cli_inference.py`), the BEATs fbank in float32 outside autocast (in float16 the power
  spectrum of speech scaled by 2**15 overflows); on the CPU everything in float32.

Batching: prompts are left-padded `inputs_embeds` (the release right-pads the text in the middle of
the sequence, wrong for mixed prompts) and BEATs runs one clip at a time without a padding mask, so a
batch gives what batch size 1 gives.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from wavllm_eval.types import SAMPLE_RATE_HZ, Generation, Prompt

log = logging.getLogger(__name__)

TEMPLATE = "USER: {}\nASSISTANT:"
SPEECH_SLOT = "<Speech><SpeechHere></Speech> "
SPEECH_HERE = "<SpeechHere>"
BOS, EOS, UNK = 1, 2, 0
VOCAB_SIZE = 32_000
MAX_NEW_TOKENS = 200
MAX_AUDIO_S = 30.0
MIN_AUDIO_S = 1.0  # the April-2024 code pads shorter clips with zeros to 1 s (utils.py::prepare_one_sample)

# SALMONN's released test prompts (prompts/test_prompt.json) for the harness's tasks, keyed by the
# harness's default instructions (tasks/*.py WAVLLM_*_INSTRUCTION, WavLLM's manifests).
SALMONN_TEST_PROMPTS = {
    "asr": "Recognize the speech and give me the transcription.",
    "translation_en2de": "Listen to the speech and translate it into German.",
    "speaker_verification": "Do you only hear the same person talking? Answer yes or no.",
    "emotion_recognition": "Describe the emotion of the speaker in one word.",
}
NATIVE_PROMPTS = {
    "Based on the attached audio, generate a comprehensive text transcription of the spoken content.":
        SALMONN_TEST_PROMPTS["asr"],
    "Translate the audio clip into German.": SALMONN_TEST_PROMPTS["translation_en2de"],
    "Is there only one speaker in the audio clip?": SALMONN_TEST_PROMPTS["speaker_verification"],
    "Can you describe the emotional condition of the speaker in the provided audio clip?":
        SALMONN_TEST_PROMPTS["emotion_recognition"],
}

_TRAINABLE_FILES = {"salmonn-13b": "salmonn_v1.pth", "salmonn-7b": "salmonn_7b_v0.pth"}
_BEATS = "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"
_COMMON_FILES = (f"{_BEATS}|beats.safetensors", "whisper/config.json", "whisper/preprocessor_config.json",
                 "vicuna/config.json", "vicuna/tokenizer.model")


def native_instruction(text: str) -> str:
    """SALMONN's own test prompt for a harness default instruction; anything else unchanged."""
    return NATIVE_PROMPTS.get(text, text)


def prompt_halves(instruction: str) -> tuple[str, str]:
    """The template filled with the speech slot, split at `<SpeechHere>` (the release's `prompt_wrap`)."""
    before, after = TEMPLATE.format(SPEECH_SLOT + instruction).split(SPEECH_HERE)
    return before, after


@dataclass(frozen=True)
class PreparedSpeech:
    """What `prepare_audio` computes ahead of the model for one prompt."""

    wave: np.ndarray  # the signal SALMONN hears (joined clips, padded to its shortest length)
    mel: Any  # (1, n_mels, 3000) Whisper log-mel


@register_model("salmonn-13b")
class Salmonn13BAdapter(SpeechLLMAdapter):
    """SALMONN v1 13B (Whisper-large-v2 + BEATs, window Q-Former, Vicuna-13B v1.1 + LoRA), beam 4."""

    decoding = DecodingConfig(do_sample=False, num_beams=4, max_new_tokens=MAX_NEW_TOKENS)
    max_audio_s = MAX_AUDIO_S
    supports_choice_scoring = True
    default_batch_size = 4
    required_files: ClassVar[tuple[str, ...]] = (f"{_TRAINABLE_FILES['salmonn-13b']}|salmonn.safetensors",
                                                 *_COMMON_FILES)
    vicuna_version = "lmsys/vicuna-13b-v1.1"

    def __init__(self, model: Any, tokenizer: Any, feature_extractor: Any, path: Path, options: LoadOptions,
                 device: str, llm_dtype: Any, autocast_dtype: Any, sources: Any) -> None:
        self.model, self.tokenizer, self.feature_extractor = model, tokenizer, feature_extractor
        self.path, self.options, self.device = path, options, device
        self.llm_dtype, self.autocast_dtype, self.sources = llm_dtype, autocast_dtype, sources
        self.truncated_ids: set[str] = set()  # trials cut at 30 s
        self.read_off = ChoiceReadOff(llm_dtype)  # single-token choices from the first generation step

    # --- loading ----------------------------------------------------------------------------------
    @classmethod
    def trainable_file(cls, root: Path) -> Path:
        name = _TRAINABLE_FILES[cls.id]
        return root / "salmonn.safetensors" if (root / "salmonn.safetensors").is_file() else root / name

    @classmethod
    def load(cls, path: Path | None, options: LoadOptions | None = None) -> Salmonn13BAdapter:
        from transformers import WhisperFeatureExtractor
        from wavllm_eval.model_zoo._salmonn_checkpoint import build_salmonn

        if path is None or not Path(path).is_dir():
            raise InputError(path, "SALMONN needs --model-path, a folder with the checkpoint, BEATs, whisper/ and vicuna/",
                             "see `python -c 'import wavllm_eval.model_zoo.salmonn as m; help(m)'` for the layout")
        root, options = Path(path), options or LoadOptions()
        missing = cls.missing_files(root)
        if missing:
            raise InputError(root, f"missing {', '.join(missing)}", "see the layout in model_zoo/salmonn.py")
        device = resolve_device(options.device)
        llm_dtype, autocast_dtype = _precision(options.dtype, device)
        model, sources = build_salmonn(root, cls.trainable_file(root), llm_dtype)
        model = model.to(device).eval()
        tokenizer = load_tokenizer(root / "vicuna" / "tokenizer.model", model.llm_config.vocab_size)
        features = WhisperFeatureExtractor.from_pretrained(root / "whisper")
        return cls(model, tokenizer, features, root, options, device, llm_dtype, autocast_dtype, sources)

    @classmethod
    def convert(cls, src: Path, out: Path) -> Path:
        """The released folder -> a folder whose every weight file is safetensors (loads the same way)."""
        from wavllm_eval.model_zoo._salmonn_checkpoint import convert_folder

        missing = cls.missing_files(Path(src))
        if missing:
            raise InputError(src, f"missing {', '.join(missing)}", "see the layout in model_zoo/salmonn.py")
        return convert_folder(Path(src), cls.trainable_file(Path(src)), Path(out))

    # --- inputs -----------------------------------------------------------------------------------
    def waveform(self, prompt: Prompt) -> np.ndarray:
        """The model's one audio input: clips joined (0.1 s gap), cut at 30 s, padded to >= 1 s."""
        wave = np.asarray(prompt.single_waveform(), dtype=np.float32)
        limit = int(MAX_AUDIO_S * SAMPLE_RATE_HZ)
        if len(wave) > limit:
            if prompt.sample_id not in self.truncated_ids:
                log.warning("%s: %.1f s of joined audio cut at %.0f s (SALMONN's window)", prompt.sample_id,
                            len(wave) / SAMPLE_RATE_HZ, MAX_AUDIO_S)
            self.truncated_ids.add(prompt.sample_id)
            wave = wave[:limit]
        shortest = int(MIN_AUDIO_S * SAMPLE_RATE_HZ)
        if len(wave) < shortest:
            wave = np.concatenate([wave, np.zeros(shortest - len(wave), dtype=np.float32)])
        return wave

    def prompt_ids(self, instruction: str) -> tuple[list[int], list[int]]:
        """(BOS + "USER: <Speech>", "</Speech> {instruction}\\nASSISTANT:") token ids, each half
        tokenised on its own (no BOS/EOS inside), as the release's slow LlamaTokenizer does."""
        before, after = prompt_halves(native_instruction(instruction))
        return [BOS, *self.tokenizer.encode(before)], self.tokenizer.encode(after)

    def _autocast(self):
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def prepare_audio(self, prompt: Prompt) -> PreparedSpeech:
        """The model's waveform and Whisper log-mel of one prompt, computed by the runner's prefetch
        workers (the mel of a batch is its clips' mels stacked: equal to one call over the batch)."""
        return self.speech_inputs(prompt)

    def speech_inputs(self, prompt: Prompt) -> PreparedSpeech:
        """What `prepare_audio` returns, computed in the model thread when the runner did not call the
        hook (a name of its own: the model thread never goes through the runner's hook)."""
        wave = self.waveform(prompt)
        return PreparedSpeech(wave, self.whisper_mel([wave]))

    def whisper_mel(self, waves: Sequence[np.ndarray]):
        return self.feature_extractor(list(waves), sampling_rate=SAMPLE_RATE_HZ, return_tensors="pt").input_features

    def speech_embeddings(self, waves: Sequence[np.ndarray], mel: Any = None):
        """(B, 88, LLM width) speech tokens for B waveforms (`mel`: their Whisper log-mel, if computed)."""
        import torch

        if mel is None:
            mel = self.whisper_mel(waves)
        model = self.model
        with torch.no_grad(), self._autocast():
            whisper = model.speech_encoder(mel.to(self.device, torch.float32)).last_hidden_state
            beats = [model.beats(torch.from_numpy(w).to(self.device)[None]) for w in waves]
            return model.speech_tokens(whisper, beats)

    def input_embeddings(self, prompts: Sequence[Prompt]) -> list[Any]:
        """One (1, L_i, width) LLM input per prompt: BOS + before + speech + after."""
        import torch

        prepared = [p.prepared if isinstance(p.prepared, PreparedSpeech) else self.speech_inputs(p) for p in prompts]
        speech = self.speech_embeddings([x.wave for x in prepared], torch.cat([x.mel for x in prepared]))
        out = []
        with torch.no_grad():
            for prompt, tokens in zip(prompts, speech, strict=True):
                before, after = self.prompt_ids(prompt.text)
                ids = lambda xs: torch.tensor([xs], device=self.device)  # noqa: E731
                embed = self.model.embed_tokens
                out.append(torch.cat([embed(ids(before)), tokens[None].to(self.llm_dtype), embed(ids(after))], dim=1))
        return out

    # --- generation -------------------------------------------------------------------------------
    def _limit(self, prompt: Prompt) -> int:
        return self.options.cap(min(self.decoding.max_new_tokens or MAX_NEW_TOKENS, prompt.max_new_tokens))

    def _generate_batch(self, prompts: Sequence[Prompt]) -> list[Generation]:
        results: dict[int, Generation] = {}
        by_limit: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_limit.setdefault(self._limit(prompt), []).append(i)
        self.read_off.clear()  # each part below adds its prompts' first steps
        for limit, indices in by_limit.items():  # one generate call per token limit (beam search depends on it)
            for i, generation in zip(indices, self._generate([prompts[i] for i in indices], limit), strict=True):
                results[i] = generation
        return [results[i] for i in range(len(prompts))]

    def _generate(self, prompts: Sequence[Prompt], limit: int) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        timer = FirstTokenTimer()
        inputs, mask = left_pad_embeddings(self.input_embeddings(prompts))
        decoding = self.decoding
        # An explicit config: Vicuna's generation_config.json (sampling, T 0.9) must not leak in.
        # The release's min_length=1 with inputs_embeds (no EOS as the first token) is our processor,
        # after the one that keeps the first step's scores for score_choices.
        config = GenerationConfig(max_new_tokens=limit, min_new_tokens=0, num_beams=decoding.num_beams,
                                  do_sample=decoding.do_sample, length_penalty=1.0, repetition_penalty=1.0,
                                  early_stopping=False, eos_token_id=EOS, bos_token_id=BOS, pad_token_id=UNK)
        first_step = FirstStepLogits(prompts, rows_per_prompt=decoding.num_beams)
        with torch.no_grad(), self._autocast():
            out = self.model.causal_lm.generate(inputs_embeds=inputs, attention_mask=mask, generation_config=config,
                                               logits_processor=[timer, first_step, no_stop_before([EOS], 1, 0)])
        self.read_off.keep(first_step, merge=True)
        generations = []
        for row in out.tolist():
            tokens = row[: row.index(EOS)] if EOS in row else row
            generations.append(Generation(self.tokenizer.decode(tokens).strip(), n_new_tokens=len(tokens)))
        return timer.stamp(generations)

    def next_token_logits(self, prompt: Prompt):
        """The LLM's logits for the token after `prompt`'s "ASSISTANT:" (a forward pass alone)."""
        import torch

        with torch.no_grad(), self._autocast():
            return self.model.causal_lm(inputs_embeds=self.input_embeddings([prompt])[0]).logits[0, -1].float()

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        """log P(choice | audio, prompt): the choice's tokens (SentencePiece, leading '▁', as the
        release tokenises its training targets) right after "ASSISTANT:", log-probabilities summed.
        Right after generating the same Prompt, single-token choices are read off the first step
        (wavllm_eval.first_step); otherwise a forward pass per choice."""
        import torch

        read = {id(p): self.read_off.scores(p, [self.tokenizer.encode(c) for c in p.choices], self.next_token_logits)
                for p in prompts}
        rest = [p for p in prompts if read[id(p)] is None]
        embedded = {id(p): e for p, e in zip(rest, self.input_embeddings(rest) if rest else [], strict=True)}
        scores = []
        for prompt in prompts:
            if read[id(prompt)] is not None:
                scores.append(read[id(prompt)])
                continue
            inputs = embedded[id(prompt)]
            row = []
            for choice in prompt.choices:
                ids = self.tokenizer.encode(choice)
                with torch.no_grad(), self._autocast():
                    choice_embeds = self.model.embed_tokens(torch.tensor([ids], device=self.device))
                    logits = self.model.causal_lm(inputs_embeds=torch.cat([inputs, choice_embeds], dim=1)).logits
                start = inputs.shape[1] - 1
                logprobs = torch.log_softmax(logits[0, start: start + len(ids)].float(), dim=-1)
                row.append(token_logprob_sum(logprobs, ids))
            scores.append(row)
        self.read_off.clear()
        return scores

    def describe(self) -> Mapping[str, Any]:
        import torch

        dims = self.model.dims
        info: dict[str, Any] = {
            "id": self.id, "path": str(self.path), "vicuna": self.vicuna_version,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": self.device, "llm_dtype": str(self.llm_dtype).replace("torch.", ""),
            "encoders_dtype": "float32", "autocast": str(self.autocast_dtype).replace("torch.", "") if self.autocast_dtype else None,
            "decoding": {"num_beams": self.decoding.num_beams, "do_sample": self.decoding.do_sample,
                         "max_new_tokens": MAX_NEW_TOKENS, "cap": self.options.max_new_tokens,
                         "length_penalty": 1.0, "repetition_penalty": 1.0},
            "lora": {"rank": dims.lora_rank, "alpha": dims.lora_alpha, "scaling": dims.lora_scaling,
                     "targets": list(dims.lora_targets)},
            "qformer": {"window_frames": self.model.windows_per_clip()[0], "windows": self.model.windows_per_clip()[1],
                        "queries_per_window": dims.num_query_tokens},
            "prompt": {"template": TEMPLATE, "speech_slot": SPEECH_SLOT, "native_prompts": dict(NATIVE_PROMPTS),
                       "other_instructions": "passed through unchanged"},
            "audio_policy": {"max_audio_s": MAX_AUDIO_S, "longer_clips": "skipped by the runner",
                             "joined_trials_over_30s": "cut at 30 s (the release's truncation)",
                             "n_truncated": len(self.truncated_ids), "min_audio_s": MIN_AUDIO_S,
                             "multi_clip": "Prompt.single_waveform(): clips joined with 0.1 s of silence",
                             "beats_batching": "one clip at a time, no padding mask (batch N equals batch 1)"},
            "weights": self.sources.summary(),
        }
        if self.device.startswith("cuda"):
            info["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return info


@register_model("salmonn-7b")
class Salmonn7BAdapter(Salmonn13BAdapter):
    """SALMONN-7B (Whisper-large-v2 + BEATs, window Q-Former, Vicuna-7B v1.5 + LoRA), beam 4."""

    required_files: ClassVar[tuple[str, ...]] = (f"{_TRAINABLE_FILES['salmonn-7b']}|salmonn.safetensors",
                                                 *_COMMON_FILES)
    vicuna_version = "lmsys/vicuna-7b-v1.5"


def _precision(dtype: str, device: str):
    """(LLM dtype, autocast dtype or None): the release's fp16 LLM under fp16 autocast on the GPU."""
    import torch

    table = {"auto": torch.float16 if device.startswith("cuda") else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise InputError("--dtype", f"{dtype!r} is not supported by SALMONN", "use auto, float32, bfloat16 or float16")
    llm = table[dtype]
    return llm, (llm if device.startswith("cuda") and llm != torch.float32 else None)




def load_tokenizer(path: Path, vocab_size: int):
    """The LLaMA SentencePiece model Vicuna ships (32,000 pieces), used directly: the release's slow
    `LlamaTokenizer` is SentencePiece with a leading '▁' per call; fast tokenizers may differ."""
    import sentencepiece as spm

    tokenizer = spm.SentencePieceProcessor(model_file=str(path))
    if tokenizer.get_piece_size() != vocab_size:
        raise InputError(path, f"{tokenizer.get_piece_size()} pieces, but Vicuna has {vocab_size} embeddings",
                         "use the tokenizer.model of the Vicuna folder (a git clone without LFS corrupts it)")
    return tokenizer
