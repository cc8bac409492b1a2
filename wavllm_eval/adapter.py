"""The model-adapter contract: a few batched methods over prompt lists (after lm-evaluation-harness).

An adapter never sees a task: it gets model-neutral `Prompt`s (instruction text + decoded audio)
and returns raw text. Speech LLMs subclass `SpeechLLMAdapter`, which keeps sampling reproducible
per sample whatever the batch: with sampling on, each prompt is generated alone under its own seed;
greedy/beam decoding is batched (left padding), and must equal batch size 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from wavllm_eval.types import Generation, Prompt


@dataclass(frozen=True)
class DecodingConfig:
    """How text is generated. `do_sample=False` is deterministic (greedy, or beam when num_beams > 1)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    num_beams: int = 1
    max_new_tokens: int | None = None  # None: the prompt's own limit


@runtime_checkable
class ModelAdapter(Protocol):
    id: str
    max_audio_s: float | None  # longer clips are recorded as `skipped`, not dropped

    @classmethod
    def load(cls, path: Path | None, device: str, dtype: str) -> ModelAdapter: ...

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]: ...

    def describe(self) -> Mapping[str, Any]: ...


class OutOfMemory(RuntimeError):
    """Raised by an adapter (or mapped from torch's OOM) so the runner halves the batch."""


class BaseAdapter:
    """Defaults shared by every adapter."""

    id: str = ""
    max_audio_s: float | None = None
    supports_choice_scoring: bool = False
    default_batch_size: int = 1
    path: Path | None = None

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        raise NotImplementedError

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        """log P(choice | audio, prompt) for each of `prompt.choices` (EER, constrained choice)."""
        raise NotImplementedError(f"model {self.id!r} does not score candidate answers")

    def describe(self) -> Mapping[str, Any]:
        """Identity for results.json: what was loaded and how it decodes (hashed into config_hash)."""
        return {"id": self.id, "path": str(self.path) if self.path else None}


class SpeechLLMAdapter(BaseAdapter):
    """Base for decoder-LLM adapters: per-sample seeding around a batched `_generate_batch`."""

    decoding: DecodingConfig = DecodingConfig()
    default_batch_size = 8

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        if not self.decoding.do_sample:
            return self._generate_batch(prompts)
        out: list[Generation] = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            self._seed(seed)
            out.extend(self._generate_batch([prompt]))
        return out

    def _generate_batch(self, prompts: Sequence[Prompt]) -> list[Generation]:
        raise NotImplementedError

    @staticmethod
    def _seed(seed: int) -> None:
        import torch

        torch.manual_seed(seed)


def model_config(adapter_cls: type, model_id: str, path: Path | None, dtype: str) -> dict[str, Any]:
    """What identifies a model configuration without loading it (hashed into `config_hash`)."""
    config: dict[str, Any] = {
        "id": model_id,
        "path": str(Path(path).resolve()) if path is not None else None,
        "dtype": dtype,
        "adapter": f"{adapter_cls.__module__}.{adapter_cls.__qualname__}",
    }
    decoding = getattr(adapter_cls, "decoding", None)
    if dataclasses.is_dataclass(decoding):
        config["decoding"] = dataclasses.asdict(decoding)
    return config


def resolve_device(device: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu (imports torch: call from `load` only)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
