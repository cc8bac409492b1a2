"""The model-adapter contract: a few batched methods over prompt lists (after lm-evaluation-harness).

An adapter never sees a task: it gets model-neutral `Prompt`s (instruction text + decoded audio)
and returns raw text. Everything the runner, `evaluate` and the CLI ask of an adapter is declared in
`ModelAdapter`; `BaseAdapter` gives the defaults, so an adapter file states only what differs.

Multi-clip samples (a verification trial's two utterances) arrive as one waveform per clip in
`Prompt.waveforms`. A model with a single audio input calls `Prompt.single_waveform()`, which joins
the clips with `CLIP_GAP_S` of silence (SALMONN's and WavLLM's convention), so every single-input
model hears exactly the same signal; a chat model that takes several audio parts passes one part per
clip. The model's audio limit (`max_audio_s`) applies to each clip, never to a trial's sum.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from wavllm_eval.types import Generation, Prompt

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
ATTENTION = ("auto", "eager", "sdpa", "flash_attention_2")


@dataclass(frozen=True)
class DecodingConfig:
    """How text is generated. `do_sample=False` is deterministic (greedy, or beam when num_beams > 1)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    num_beams: int = 1
    max_new_tokens: int | None = None  # None: the prompt's own limit


@dataclass(frozen=True)
class LoadOptions:
    """How `run` asks an adapter to load: all of it is part of the run's configuration hash.

    `max_new_tokens` caps every generation (the model's own limit, or the task's, whichever is
    smaller still applies): a quick look at a big model, and the short limit tests give tiny random
    models, which never emit EOS.
    """

    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int | None = None
    # "auto": the adapter's faithful default (WavLLM: eager fp32 softmax attention, as released);
    # "sdpa" / "flash_attention_2": faster kernels on request, recorded in the configuration.
    attn: str = "auto"
    # TF32 tensor-core matmuls and convolutions for fp32 weights on CUDA (--tf32); off: full IEEE fp32,
    # also for cuDNN convolutions, which PyTorch would otherwise run in TF32 by default
    tf32: bool = False

    def attention(self, faithful: str = "eager") -> str:
        return faithful if self.attn == "auto" else self.attn

    def cap(self, limit: int) -> int:
        """`limit` under the user's cap."""
        return min(limit, self.max_new_tokens) if self.max_new_tokens else limit


@runtime_checkable
class ModelAdapter(Protocol):
    """What the core calls on a model. Optional abilities are flags with defaults in BaseAdapter."""

    id: str
    max_audio_s: float | None  # per clip; a longer clip makes its sample `skipped`, with the reason
    supports_choice_scoring: bool  # True: `score_choices` gives log P(choice | audio, prompt)
    default_batch_size: int  # samples per batch under --batch-size auto (capped by an audio-seconds budget)
    required_files: ClassVar[tuple[str, ...]]  # what --model-path must hold ("a|b": either); () = no path needed
    needs_audio: bool  # False: the runner does not decode audio (answers replayed from a file)

    @classmethod
    def load(cls, path: Path | None, options: LoadOptions) -> ModelAdapter: ...

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]: ...

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]: ...

    def describe(self) -> Mapping[str, Any]: ...


class OutOfMemory(RuntimeError):
    """Raised by an adapter (or mapped from torch's OOM) so the runner halves the batch."""


class BaseAdapter:
    """Defaults shared by every adapter.

    `convert(src, out)` is an optional classmethod: an adapter whose released checkpoint needs a
    one-off conversion defines it, and `wavllm-eval convert --model ID` finds it there.
    `prepare_audio(prompt)` is an optional method: what depends only on the decoded audio (features),
    computed by the runner's prefetch workers and handed back as `prompt.prepared`; `generate` must
    give the same answer with or without it.
    """

    id: str = ""
    max_audio_s: float | None = None
    supports_choice_scoring: bool = False
    default_batch_size: int = 1
    required_files: ClassVar[tuple[str, ...]] = ()
    needs_audio: bool = True
    path: Path | None = None
    options: LoadOptions = LoadOptions()

    @classmethod
    def load(cls, path: Path | None, options: LoadOptions) -> BaseAdapter:
        raise NotImplementedError

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        raise NotImplementedError

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        """log P(choice | audio, prompt) for each of `prompt.choices` (EER, constrained choice)."""
        raise NotImplementedError(f"model {self.id!r} does not score candidate answers")

    def describe(self) -> Mapping[str, Any]:
        """Identity for results.json: what was loaded and how it decodes."""
        return {"id": self.id, "path": str(self.path) if self.path else None}

    @classmethod
    def missing_files(cls, path: Path | None) -> list[str]:
        """Every entry of `required_files` absent under `path` (all at once, before anything loads)."""
        if not cls.required_files:
            return []
        if path is None:
            return list(cls.required_files)
        root = Path(path)
        return [entry for entry in cls.required_files
                if not any((root / option).exists() for option in entry.split("|"))]


class SpeechLLMAdapter(BaseAdapter):
    """Base for decoder-LLM adapters: per-sample seeding around a batched `_generate_batch`.

    Sampling adapters that set `batched_sampling = True` take the per-row seeded inverse-CDF sampler
    (`wavllm_eval.sampling`) into their `generate` call: batched, and equal to batch size 1. Others
    are generated one prompt at a time under the prompt's own torch seed."""

    decoding: DecodingConfig = DecodingConfig()
    default_batch_size = 8
    batched_sampling: bool = False

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        if not self.decoding.do_sample:
            return self._generate_batch(prompts)
        if self.batched_sampling:
            return self._generate_batch(prompts, seeds)
        out: list[Generation] = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            self._seed(seed)
            out.extend(self._generate_batch([prompt]))
        return out

    def _generate_batch(self, prompts: Sequence[Prompt], seeds: Sequence[int] | None = None) -> list[Generation]:
        raise NotImplementedError

    def next_token_logits(self, prompt: Prompt) -> Any:
        """(vocab,) the LLM's logits for the first token after `prompt`, from a forward pass alone. The
        contract tests compare it with what decoding sees at its first step, and wavllm_eval.first_step
        checks its read-off against it: each LLM adapter defines it."""
        raise NotImplementedError

    def sampler(self, seeds: Sequence[int], prompt_length: int = 0):
        """The seeded inverse-CDF logits processor for this adapter's decoding (batched sampling)."""
        from wavllm_eval.sampling import make_sampler

        d = self.decoding
        if d.num_beams != 1:  # the processor leaves one finite score per row: every beam would be the same
            raise ValueError(f"{type(self).__name__}: batched sampling draws one token per row and step; "
                             f"it cannot run under beam search (num_beams={d.num_beams}): set num_beams=1 "
                             "or batched_sampling = False")
        return make_sampler(seeds, d.temperature, d.top_k, d.top_p, prompt_length)

    @staticmethod
    def _seed(seed: int) -> None:
        import torch

        torch.manual_seed(seed)


def convert_method(adapter_cls: type):
    """The adapter's `convert(src, out) -> Path` classmethod, or None when it needs no conversion."""
    return getattr(adapter_cls, "convert", None)


def model_config(adapter_cls: type, model_id: str, path: Path | None, options: LoadOptions) -> dict[str, Any]:
    """What identifies a model configuration without loading it (hashed into `config_hash`)."""
    config: dict[str, Any] = {
        "id": model_id,
        "path": str(Path(path).resolve()) if path is not None else None,
        "dtype": options.dtype,
        "adapter": f"{adapter_cls.__module__}.{adapter_cls.__qualname__}",
    }
    if options.max_new_tokens is not None:
        config["max_new_tokens"] = options.max_new_tokens
    if options.attn != "auto":
        config["attn"] = options.attn
    if options.tf32:
        config["tf32"] = True
    decoding = getattr(adapter_cls, "decoding", None)
    if dataclasses.is_dataclass(decoding):
        config["decoding"] = dataclasses.asdict(decoding)
        if decoding.do_sample and getattr(adapter_cls, "batched_sampling", False):
            from wavllm_eval.sampling import SAMPLER_VERSION

            config["decoding"]["sampler"] = SAMPLER_VERSION
        revision = getattr(adapter_cls, "decoding_revision", None)
        if revision:  # a change of how the adapter decodes: earlier runs' outputs are not resumed into
            config["decoding"]["revision"] = revision
    return config


def set_fp32_precision(tf32: bool) -> str:
    """Set how CUDA runs fp32 matmuls and convolutions for this process; returns the setting's name.

    The faithful default is IEEE fp32 everywhere (PyTorch's own default lets cuDNN convolutions, e.g.
    Whisper's front end, use TF32); `--tf32` trades ~3 decimal digits of mantissa for tensor-core
    speed on Ampere and later. No effect on the CPU."""
    import torch

    precision = "tf32" if tf32 else "ieee"
    try:
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cudnn.rnn.fp32_precision = precision
    except AttributeError:  # torch < 2.9: the older switches
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return precision


class FirstTokenTimer:
    """A logits processor that changes nothing and notes when it is first called: the moment the
    first new token's logits exist, i.e. after audio encoding and prefill. Created when an adapter's
    generate call starts; `stamp` puts the measured time to first token on that call's answers."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
        return scores

    def stamp(self, generations: Sequence[Generation]) -> list[Generation]:
        if self.first is None:
            return list(generations)
        seconds = self.first - self.started
        return [dataclasses.replace(g, first_token_s=seconds) for g in generations]


def left_pad_embeddings(sequences: Sequence[Any]) -> tuple[Any, Any]:
    """Stack per-prompt input embeddings, each (L_i, dim) or (1, L_i, dim), into (B, L, dim) with zeros
    on the left, plus the (B, L) attention mask: the batching every decoder-LLM adapter needs so that
    generation continues from the last real token of each row."""
    import torch

    rows = [s[0] if s.dim() == 3 else s for s in sequences]
    longest = max(r.shape[0] for r in rows)
    inputs = rows[0].new_zeros(len(rows), longest, rows[0].shape[-1])
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=rows[0].device)
    for i, row in enumerate(rows):
        inputs[i, longest - row.shape[0]:] = row
        mask[i, longest - row.shape[0]:] = 1
    return inputs, mask


def token_logprob_sum(logprobs: Any, token_ids: Any) -> float:
    """Σ_i logprobs[i, token_ids[i]]: a candidate answer's log-probability from the log-softmax rows
    (one per candidate token) that predict its tokens — the last step of every `score_choices`."""
    import torch

    ids = torch.as_tensor(token_ids, device=logprobs.device)
    return float(logprobs[torch.arange(len(ids), device=logprobs.device), ids].sum())


def resolve_device(device: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu (imports torch: call from `load` only)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
