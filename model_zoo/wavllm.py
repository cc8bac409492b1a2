"""WavLLM (Hu et al., 2024; microsoft/SpeechT5 WavLLM): the model the harness is named after.

`--model wavllm` decodes as the released script does (sampling, T = 0.5, one beam, at most 512
generator steps counting the forced prompt tokens, fp32, clips over 40 s skipped); `wavllm-greedy`
is the deterministic variant (batched with left padding, equal to batch size 1).

--model-path is a folder:

    final.pt              the released checkpoint (fairseq), or model.safetensors from `wavllm-eval convert`
    tokenizer.model       the LLaMA-2 SentencePiece model (32,000 pieces)
    whisper/config.json   + preprocessor_config.json   (openai/whisper-large-v2)
    wavlm/config.json     + preprocessor_config.json   (microsoft/wavlm-base)
    llama/config.json     LLaMA-2-7B-chat; its rms_norm_eps is pinned to the release's 1e-6 (below)
    wavllm.json           optional: adapter sizes (defaults: the released model's)

`wavllm.json` fields (all optional; each defaults to the released model's size, derived from the
configs where it can be): `whisper_dim` / `wavlm_dim` / `llm_dim` (encoder and LLM widths, from the
configs), `whisper_sub_mid` / `wavlm_sub_mid` (Conv1d+GLU subsampler widths), `adapter_dim` /
`adapter_bottleneck` (the bottleneck adapters), `projector_dim` (llm_dim / 2), `prompt_hidden`
(the prompt-aware LoRA scale MLP), `lora_r` / `lora_alpha` (LoRA rank and alpha), `n_heads`.

RMSNorm eps: WavLLM's own LLaMA code uses 1e-6, while a stock LLaMA-2-7B-chat `config.json` says
1e-5; that difference moves the logits by about 0.4. The loader always builds the LLM with
1e-6 (`RELEASED_RMS_NORM_EPS`) and records that it overrode the config, so a user who copied the
stock config still gets the released model.

Whisper and WavLM are built from their configs alone: every weight comes from the checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

SYSTEM = ("As a helpful language and speech assistant, you are able to understand the speech content provided by "
          "the user, and assist the user with a variety of tasks using natural language.")
LEFT_TEXT = "[INST]<<SYS>>\n" + SYSTEM + "\n<</SYS>>\n\n<SPEECH>"
BOS, EOS, UNK = 1, 2, 0
MAX_STEPS = 512  # --max-len-b 512: generator steps, the forced right-prompt tokens included
CHUNK_SAMPLES = 30 * SAMPLE_RATE_HZ
MAX_AUDIO_S = 40.0  # the released task's max_positions 640,000 samples
RELEASED_RMS_NORM_EPS = 1e-6
PROMPT_SCALE_CACHE = 4096  # instructions whose LoRA scale is kept  # WavLLM's LLaMA code (llama/model.py ModelArgs.norm_eps)


def right_text(instruction: str) -> str:
    return " </SPEECH> " + instruction + " [/INST]"


@dataclass(frozen=True)
class AudioFeatures:
    """The encoders' inputs of one signal (what `prepare_audio` computes ahead of the model)."""

    whisper_mel: Any  # (n_chunks, n_mels, 3000) log-mel, each chunk padded to 30 s
    mel_lengths: tuple[int, ...]  # unpadded mel frames of each chunk
    wavlm_values: Any  # (1, n_samples)
    wavlm_mask: Any  # (1, n_samples)


def released_constraints():
    """The release's decoding constraints as one logits processor: id 0 (pad = unk) is never drawn,
    and EOS not at the first step (min_new_tokens=1; generating from inputs_embeds, no prompt ids
    precede). Ours rather than transformers' own, so that the processors before it see the logits as
    the model gave them."""
    return no_stop_before([EOS], 1, 0, always_banned=[UNK])


@register_model("wavllm")
class WavLLMAdapter(SpeechLLMAdapter):
    """WavLLM (Whisper + WavLM encoders, LLaMA-2-7B-chat, prompt-aware LoRA), released decoding: sampling T=0.5."""

    decoding = DecodingConfig(do_sample=True, temperature=0.5, top_k=0, top_p=1.0, num_beams=1)
    batched_sampling = True  # seeded inverse-CDF draws per row (wavllm_eval.sampling): batch 8 equals batch 1
    max_audio_s = MAX_AUDIO_S
    supports_choice_scoring = True
    default_batch_size = 4
    required_files = ("final.pt|model.safetensors", "tokenizer.model", "whisper/config.json",
                      "whisper/preprocessor_config.json", "wavlm/config.json", "wavlm/preprocessor_config.json",
                      "llama/config.json")

    def __init__(self, model: Any, tokenizer: Any, whisper_features: Any, wavlm_features: Any, path: Path,
                 device: str, dtype: Any, options: LoadOptions = LoadOptions()) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.whisper_features, self.wavlm_features = whisper_features, wavlm_features
        self.path, self.device, self.dtype = path, device, dtype
        self.options = options
        self.quantised = any("quantized" in type(m).__module__ for m in model.modules())
        self.read_off = ChoiceReadOff(dtype)  # single-token choices from the first generation step

    # --- loading ----------------------------------------------------------------------------------
    @classmethod
    def convert(cls, source: Path, destination: Path, trusted: bool = False) -> Path:
        """The released final.pt -> a model.safetensors folder in this implementation's key layout.
        `trusted`: unpickle final.pt fully (only a file the user vouches for)."""
        from wavllm_eval.model_zoo._wavllm_checkpoint import convert_checkpoint

        return convert_checkpoint(source, destination, trusted=trusted)

    @classmethod
    def load(cls, path: Path | None, options: LoadOptions = LoadOptions()) -> WavLLMAdapter:
        import torch
        from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

        missing = cls.missing_files(path)
        if path is None or not Path(path).is_dir() or missing:
            raise InputError(path or "--model-path", "a WavLLM model folder needs " + ", ".join(missing or cls.required_files),
                             "see `python -c 'import wavllm_eval.model_zoo.wavllm as m; help(m)'` for the layout")
        path = Path(path)
        device, dtype = resolve_device(options.device), options.dtype
        int8 = dtype in ("int8", "8bit")
        torch_dtype = {"auto": torch.float32, "float32": torch.float32, "fp32": torch.float32,
                       "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                       "fp16": torch.float16, "int8": torch.float32, "8bit": torch.float32}.get(dtype)
        if torch_dtype is None:
            raise InputError("--dtype", f"unknown dtype {dtype!r}", "use float32, bfloat16, float16 or int8")
        if int8 and device != "cpu":
            raise InputError("--dtype int8", "8-bit weights are implemented for the CPU only (dynamic int8)",
                             "use --device cpu, or bfloat16/float16 on the GPU")
        from wavllm_eval.model_zoo._wavllm_checkpoint import load_weights, read_official

        weights = path / "model.safetensors" if (path / "model.safetensors").is_file() else path / "final.pt"
        # final.pt is read (and a refused or damaged pickle reported) before the model is built
        official = read_official(weights) if weights.suffix != ".safetensors" else None
        model = build_model(path, empty=True, attention=options.attention("eager"))
        load_weights(model, weights, official=official)
        model = model.to(device=device, dtype=torch_dtype).eval()
        if int8:
            # Dynamic int8 for every Linear of the LLM (7B: ~7 GB instead of ~27 GB); a documented
            # deviation from the fp32 release, recorded as the dtype in results.json.
            torch.ao.quantization.quantize_dynamic(model.llama, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        tokenizer = load_tokenizer(path / "tokenizer.model", model.llama.config.vocab_size)
        return cls(model, tokenizer, WhisperFeatureExtractor.from_pretrained(path / "whisper"),
                   Wav2Vec2FeatureExtractor.from_pretrained(path / "wavlm"), path, device, torch_dtype, options)

    # --- inputs -----------------------------------------------------------------------------------
    def audio_embeddings(self, waveform: np.ndarray):
        """(1, T, llm_dim): the fused speech tokens of one clip."""
        return self.audio_embeddings_batch([waveform])[0]

    def prepare_audio(self, prompt: Prompt) -> AudioFeatures:
        """The encoders' inputs of one prompt's signal; the runner calls this in a background worker
        while the previous batch runs, so the model thread starts from features. On a GPU they are
        pinned here, so the model thread's copies to the device are asynchronous."""
        features = self.audio_features(prompt.single_waveform())
        if str(self.device).startswith("cuda"):
            features = AudioFeatures(features.whisper_mel.pin_memory(), features.mel_lengths,
                                     features.wavlm_values.pin_memory(), features.wavlm_mask.pin_memory())
        return features

    def audio_features(self, waveform: np.ndarray) -> AudioFeatures:
        """Log-mel of each 30 s chunk (each padded to 30 s) and the WavLM input of the whole signal."""
        chunks = [waveform[i: i + CHUNK_SAMPLES] for i in range(0, max(len(waveform), 1), CHUNK_SAMPLES)]
        mel = self.whisper_features(chunks, sampling_rate=SAMPLE_RATE_HZ, return_attention_mask=True,
                                    return_tensors="pt")
        wavlm_in = self.wavlm_features(waveform, sampling_rate=SAMPLE_RATE_HZ, return_attention_mask=True,
                                       return_tensors="pt")
        return AudioFeatures(mel.input_features, tuple(int(n) for n in mel.attention_mask.sum(-1)),
                             wavlm_in.input_values, wavlm_in.get("attention_mask"))

    def audio_embeddings_batch(self, waveforms: Sequence[np.ndarray]) -> list[Any]:
        """The fused speech tokens of each clip (see `embed_audio`)."""
        return self.embed_audio([self.audio_features(w) for w in waveforms])

    def embed_audio(self, features: Sequence[AudioFeatures]) -> list[Any]:
        """The fused speech tokens of each clip, as the official code computes them one clip at a time.

        Whisper: every clip is cut into 30 s chunks, each padded to 30 s, so a chunk's encoding does not
        depend on its neighbours: the chunks of all clips go through the encoder in one call (equal to
        clip by clip within float rounding). WavLM stays per clip: its group-norm feature encoder would
        see the zeros of a padded batch and change the numbers."""
        import torch

        model = self.model
        embeddings = []
        with torch.no_grad():
            # each clip's (pinned) features go to the device on their own, then are joined there
            mel = torch.cat([f.whisper_mel.to(self.device, non_blocking=True) for f in features])
            hidden = model.whisper(mel.to(self.dtype))
            counts = [len(f.mel_lengths) for f in features]
            for feature, per_clip in zip(features, hidden.last_hidden_state.split(counts), strict=True):
                whisper_stream = model.whisper_stream(per_clip, feature.mel_lengths)
                wavlm_stream = model.encode_wavlm(feature.wavlm_values.to(self.device, non_blocking=True).to(self.dtype),
                                                  feature.wavlm_mask.to(self.device, non_blocking=True))
                embeddings.append(model.fuse(whisper_stream, wavlm_stream))
        return embeddings

    def prompt_pieces(self, instruction: str) -> tuple[list[int], list[int], list[int]]:
        """Token ids: left (BOS + system + <SPEECH>), right as fed at inference (its leading '▁'
        replaced by BOS, the released generator's quirk), and the prompt-scale ids."""
        left = [BOS, *self.tokenizer.encode(LEFT_TEXT)]
        right = self.tokenizer.encode(right_text(instruction))
        scale_ids = self.tokenizer.encode('"' + instruction + '"')
        return left, [BOS, *right[1:]], scale_ids

    def prompt_scale(self, instruction: str):
        """The (1, dim) prompt-aware LoRA scale: a function of the instruction alone, so it is cached
        (a task asks the same instruction thousands of times)."""
        cache = self.__dict__.setdefault("_scale_cache", {})
        if instruction not in cache:
            if len(cache) >= PROMPT_SCALE_CACHE:
                cache.clear()
            import torch

            with torch.no_grad():
                cache[instruction] = self.model.prompt_scale(self.prompt_pieces(instruction)[2])
        return cache[instruction]

    def input_embeddings(self, prompt: Prompt, audio: Any = None):
        """(1, L, dim) inputs, the (1, dim) prompt scale and the right-prompt length of one prompt."""
        import torch

        left, right, _ = self.prompt_pieces(prompt.text)
        embed = self.model.llama.model.embed_tokens
        if audio is None:
            audio = self.audio_embeddings(prompt.single_waveform())
        with torch.no_grad():
            ids = lambda xs: torch.tensor([xs], device=self.device)  # noqa: E731
            inputs = torch.cat([embed(ids(left)), audio.to(embed.weight.dtype), embed(ids(right))], dim=1)
        return inputs, self.prompt_scale(prompt.text), len(right)

    def build_inputs(self, prompts: Sequence[Prompt]) -> list[tuple[Any, Any, int]]:
        audio = self.embed_audio([p.prepared if isinstance(p.prepared, AudioFeatures) else
                                  self.audio_features(p.single_waveform()) for p in prompts])
        built = [self.input_embeddings(p, a) for p, a in zip(prompts, audio, strict=True)]
        # kept for score_choices on the same prompts (the runner scores right after generating); keyed by
        # the Prompt object itself, so another prompt under the same sample id never gets this prefix
        self._prefix_cache = {id(p): (p, b[0], b[1]) for p, b in zip(prompts, built, strict=True)}
        return built

    # --- generation -------------------------------------------------------------------------------
    def _generate_batch(self, prompts: Sequence[Prompt], seeds: Sequence[int] | None = None) -> list[Generation]:
        import torch

        timer = FirstTokenTimer()
        built = self.build_inputs(prompts)
        # 512 generator steps include the forced right prompt (its first token is the BOS)
        limits = [self.options.cap(MAX_STEPS - (n_right - 1)) for _, _, n_right in built]
        inputs, mask = left_pad_embeddings([b[0] for b in built])
        self.model.lora_scale.value = torch.cat([b[1] for b in built])
        decoding = self.decoding
        # In order: the timer (pass-through: it notes when the first logits exist), the first step's
        # raw logits kept for score_choices, the release's constraints, and for sampling the seeded
        # inverse-CDF processor under greedy search (so the batch equals batch 1).
        first_step = FirstStepLogits(prompts, rows_per_prompt=decoding.num_beams)
        processors = [timer, first_step, released_constraints()]
        if decoding.do_sample and seeds is not None:
            processors.append(self.sampler(seeds))
        try:
            with torch.no_grad():
                out = self.model.llama.generate(
                    inputs_embeds=inputs, attention_mask=mask, max_new_tokens=max(limits), do_sample=False,
                    num_beams=decoding.num_beams, eos_token_id=EOS, pad_token_id=UNK, logits_processor=processors)
        finally:
            self.model.lora_scale.value = None
        self.read_off.keep(first_step)
        generations = []
        for row, limit in zip(out.tolist(), limits, strict=True):
            tokens = row[:limit]
            if EOS in tokens:
                tokens = tokens[: tokens.index(EOS)]
            generations.append(Generation(self.tokenizer.decode(tokens), n_new_tokens=len(tokens)))
        return timer.stamp(generations)

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        """log P(choice | audio, prompt): summed log-probabilities of each choice's tokens after the
        prompt, under the sample's own prompt scale.

        Right after generating the same Prompt, choices that are all single tokens (Yes/No, the
        emotion words and option letters are single LLaMA tokens) are read off the first generation
        step's logits: no model call (wavllm_eval.first_step; checked once against a forward pass).
        Otherwise the prompt (audio included) is encoded once,
        reusing the inputs generation built; one forward over it gives every single-token choice, and
        a longer choice continues from a copy of its key/value cache."""

        token_ids = {id(p): [self.tokenizer.encode(c) for c in p.choices] for p in prompts}
        prefixes = dict(getattr(self, "_prefix_cache", {}))

        def prefix(prompt: Prompt) -> tuple[Any, Any]:
            entry = prefixes.get(id(prompt))
            if entry is None or entry[0] is not prompt:
                self.build_inputs([prompt])
                prefixes.update(self._prefix_cache)
                entry = prefixes[id(prompt)]
            return entry[1], entry[2]

        def next_token_logits(prompt: Prompt):
            return self.next_token_logits(prompt, *prefix(prompt))

        # the prompts that need forward passes have their audio encoded together
        unbuilt = [p for p in prompts if not self.read_off.answerable(p, token_ids[id(p)])
                   and prefixes.get(id(p), (None,))[0] is not p]
        if unbuilt:
            self.build_inputs(unbuilt)
            prefixes.update(self._prefix_cache)
        scores = []
        for prompt in prompts:
            row = self.read_off.scores(prompt, token_ids[id(prompt)], next_token_logits)
            scores.append(row if row is not None else self.forward_choice_scores(token_ids[id(prompt)], *prefix(prompt)))
        self._prefix_cache = {}
        self.read_off.clear()
        return scores

    def next_token_logits(self, prompt: Prompt, inputs: Any = None, scale: Any = None):
        """The LLM's logits for the token after `prompt` (a forward pass alone, under its prompt scale);
        `inputs`, `scale`: the prompt's embeddings and scale when already built."""
        import torch

        if inputs is None:
            inputs, scale, _ = self.input_embeddings(prompt)
        self.model.lora_scale.value = scale
        try:
            with torch.no_grad():
                return self.model.llama(inputs_embeds=inputs).logits[0, -1]
        finally:
            self.model.lora_scale.value = None

    def forward_choice_scores(self, token_ids: Sequence[Sequence[int]], inputs: Any, scale: Any) -> list[float]:
        """log P of each choice's tokens after the prompt's inputs: one forward over the prefix, and a
        longer choice continues from a copy of its key/value cache."""
        import copy

        import torch

        llama = self.model.llama
        self.model.lora_scale.value = scale
        row = []
        try:
            with torch.no_grad():
                prefix = llama(inputs_embeds=inputs, use_cache=True)
                first = torch.log_softmax(prefix.logits[0, -1].float(), dim=-1)
                for ids in token_ids:
                    total = float(first[ids[0]])
                    if len(ids) > 1:
                        rest = llama(input_ids=torch.tensor([ids[:-1]], device=self.device),
                                     past_key_values=copy.deepcopy(prefix.past_key_values), use_cache=True)
                        logprobs = torch.log_softmax(rest.logits[0].float(), dim=-1)
                        total += token_logprob_sum(logprobs, ids[1:])
                    row.append(total)
        finally:
            self.model.lora_scale.value = None
        return row

    def describe(self) -> Mapping[str, Any]:
        import torch

        n_params = sum(p.numel() for p in self.model.parameters())
        info: dict[str, Any] = {"id": self.id, "path": str(self.path), "parameters": n_params,
                                "dtype": "int8-dynamic" if self.quantised else str(self.dtype).replace("torch.", ""),
                                "device": self.device, "rms_norm_eps": RELEASED_RMS_NORM_EPS,
                                "attention": self.model.llama.config._attn_implementation,
                                "rms_norm_eps_in_config": getattr(self.model, "config_rms_norm_eps", None),
                                "max_new_tokens_cap": self.options.max_new_tokens,
                                "long_audio_policy": f"skip clips over {MAX_AUDIO_S:g} s (released max_positions)",
                                "decoding": dict(vars(self.decoding)) if hasattr(self.decoding, "__dict__") else {},
                                "wavlm_do_normalize": bool(getattr(self.wavlm_features, "do_normalize", False))}
        if self.device.startswith("cuda"):
            info["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return info


@register_model("wavllm-greedy")
class WavLLMGreedyAdapter(WavLLMAdapter):
    """WavLLM with deterministic greedy decoding (batched, equal to batch size 1)."""

    decoding = DecodingConfig(do_sample=False, num_beams=1)
    default_batch_size = 8




def load_tokenizer(path: Path, vocab_size: int):
    """SentencePiece, as the official code tokenises (HF tokenizers may split leading spaces differently)."""
    import sentencepiece as spm

    if not path.is_file():
        raise InputError(path, "tokenizer not found", "copy the LLaMA-2 tokenizer.model into --model-path")
    tokenizer = spm.SentencePieceProcessor(model_file=str(path))
    if tokenizer.get_piece_size() != vocab_size:
        raise InputError(path, f"{tokenizer.get_piece_size()} pieces, but the LLM has {vocab_size} embeddings",
                         "use the LLaMA-2 tokenizer.model shipped with WavLLM")
    return tokenizer


def build_model(path: Path, empty: bool = False, attention: str = "eager"):
    """WavLLMModel from the folder's configs. `empty`: parameters on the meta device, to be assigned
    from the checkpoint (no 30 GB of random init before a 30 GB load); buffers stay real."""
    from transformers import LlamaConfig, LlamaForCausalLM, WavLMConfig, WavLMModel, WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    from wavllm_eval.model_zoo._wavllm_modeling import WavLLMDims, WavLLMModel

    for sub in ("whisper", "wavlm", "llama"):
        if not (path / sub / "config.json").is_file():
            raise InputError(path / sub / "config.json", "missing", f"put the {sub} config in {path / sub}")
    llama_config = LlamaConfig.from_pretrained(path / "llama")
    # eager fp32 softmax attention, as the official code; sdpa/flash only when asked (--attn)
    llama_config._attn_implementation = attention
    config_eps = float(llama_config.rms_norm_eps)
    if config_eps != RELEASED_RMS_NORM_EPS:
        log.warning("%s: rms_norm_eps %g differs from the released WavLLM's %g; using %g",
                    path / "llama" / "config.json", config_eps, RELEASED_RMS_NORM_EPS, RELEASED_RMS_NORM_EPS)
    llama_config.rms_norm_eps = RELEASED_RMS_NORM_EPS
    whisper_config = WhisperConfig.from_pretrained(path / "whisper")
    wavlm_config = WavLMConfig.from_pretrained(path / "wavlm")
    overrides = json.loads((path / "wavllm.json").read_text()) if (path / "wavllm.json").is_file() else {}
    dims = WavLLMDims(**{"whisper_dim": whisper_config.d_model, "whisper_sub_mid": whisper_config.d_model,
                         "wavlm_dim": wavlm_config.hidden_size, "llm_dim": llama_config.hidden_size,
                         "projector_dim": llama_config.hidden_size // 2,
                         "n_heads": llama_config.num_attention_heads, **overrides})
    if empty:
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            model = WavLLMModel(WhisperEncoder(whisper_config), WavLMModel(wavlm_config),
                                LlamaForCausalLM(llama_config), dims)
    else:
        model = WavLLMModel(WhisperEncoder(whisper_config), WavLMModel(wavlm_config), LlamaForCausalLM(llama_config), dims)
    model.config_rms_norm_eps = config_eps
    return model
