"""The core nouns that flow between modules: samples in, records out.

Everything here is a frozen dataclass so that a task, the runner and an adapter can never mutate
each other's state; the only arrays (decoded waveforms) ride on `Prompt.waveforms`, filled by the runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

SAMPLE_RATE_HZ = 16_000
CLIP_GAP_S = 0.1  # silence between the clips of a multi-clip sample, for single-input models
Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class AudioRef:
    """Where a clip lives; MuST-C segments point into a whole talk with an offset."""

    path: Path
    offset_s: float = 0.0
    duration_s: float | None = None  # None: to the end of the file


@dataclass(frozen=True)
class Sample:
    """One test item as the corpus defines it; `id` is the corpus's own id (resume and pairing key)."""

    id: str
    audio: tuple[AudioRef, ...]
    reference: str
    instruction: str = ""  # when the manifest ships one
    choices: tuple[str, ...] = ()
    duration_s: float = 0.0  # total audio seconds, read from the file header
    meta: Mapping[str, str] = field(default_factory=dict)
    clip_durations_s: tuple[float, ...] = ()  # per clip, when there are several (per-clip model limits)

    @property
    def clip_durations(self) -> tuple[float, ...]:
        return self.clip_durations_s or (self.duration_s,)


@dataclass(frozen=True, eq=False)
class Prompt:
    """A model-neutral request; each adapter applies its own chat template around `text`."""

    sample_id: str
    text: str
    audio: tuple[AudioRef, ...]
    choices: tuple[str, ...] = ()
    max_new_tokens: int = 256
    # Decoded 16 kHz mono float32 audio, one array per AudioRef; filled by the runner.
    waveforms: tuple[np.ndarray, ...] = ()
    # What the adapter's optional `prepare_audio(prompt)` computed from the waveforms (e.g. log-mel
    # features) in a background worker while the previous batch ran; None: the adapter computes it.
    prepared: Any = field(default=None, compare=False, repr=False)

    def single_waveform(self) -> np.ndarray:
        """The one signal a single-input model hears: the clips in order, `CLIP_GAP_S` of silence
        between them (SALMONN's and WavLLM's convention for a verification trial). Every adapter with
        one audio input calls this, so all of them are evaluated on the same signal."""
        if len(self.waveforms) == 1:
            return self.waveforms[0]
        gap = np.zeros(int(round(CLIP_GAP_S * SAMPLE_RATE_HZ)), dtype=np.float32)
        parts: list[np.ndarray] = []
        for i, wave in enumerate(self.waveforms):
            parts.extend([gap, wave] if i else [wave])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Generation:
    """What an adapter returns for one prompt."""

    text: str
    n_new_tokens: int = 0
    choice_logprobs: tuple[float, ...] = ()
    # seconds from the start of the adapter's generate call to the first new token's logits (its
    # batch's time to first token: audio encoding and prefill); None where the adapter cannot tell
    first_token_s: float | None = field(default=None, compare=False)  # a measurement, not an answer


@dataclass(frozen=True)
class Record:
    """One line of samples/<task>.jsonl: raw model output, so better parsers can re-score old runs."""

    id: str
    prediction: str
    reference: str
    status: Status
    error: str = ""
    choice_logprobs: tuple[float, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    task: str = ""  # the task id that wrote it: scoring it as another task is an error

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "id": self.id,
            **({"task": self.task} if self.task else {}),
            "prediction": self.prediction,
            "reference": self.reference,
            "status": self.status,
        }
        if self.error:
            line["error"] = self.error
        if self.choice_logprobs:
            line["choice_logprobs"] = list(self.choice_logprobs)
        if self.meta:
            line["meta"] = dict(self.meta)
        return line

    @classmethod
    def from_json(cls, line: Mapping[str, Any]) -> Record:
        if not isinstance(line, Mapping):
            raise ValueError(f"expected a JSON object, found {type(line).__name__}")
        status = line.get("status", "ok")
        if status not in ("ok", "failed", "skipped"):
            raise ValueError(f"unknown status {status!r}")
        return cls(
            id=str(line["id"]),
            prediction=str(line.get("prediction", "")),
            reference=str(line.get("reference", "")),
            status=status,
            error=str(line.get("error", "")),
            choice_logprobs=tuple(float(x) for x in line.get("choice_logprobs", ())),
            meta=dict(line.get("meta") or {}),
            task=str(line.get("task", "")),
        )


@dataclass(frozen=True)
class TaskResult:
    """One task's entry in results.json (CONTRACT.md): metrics on the scales papers print."""

    metrics: Mapping[str, float]
    ci95: Mapping[str, tuple[float, float]]
    n_total: int
    n_scored: int
    n_failed: int
    n_skipped: int
    headline: str = ""  # the first of `headlines` (kept for readers of the first results.json format)
    headlines: tuple[str, ...] = ()  # every metric a paper prints for the task; `gate` checks each
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)  # normaliser identity, BLEU signature...
    extra: Mapping[str, Any] = field(default_factory=dict)  # parse failures, confusion matrices...
    breakdowns: Mapping[str, Any] = field(default_factory=dict)  # attribute -> value -> n, metrics, ci95

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": {k: _round(v) for k, v in self.metrics.items()},
            "ci95": {k: [_round(lo), _round(hi)] for k, (lo, hi) in self.ci95.items()},
            "n_total": self.n_total,
            "n_scored": self.n_scored,
            "n_failed": self.n_failed,
            "n_skipped": self.n_skipped,
            "headline": self.headline,
            "headlines": list(self.headlines or ((self.headline,) if self.headline else ())),
            "higher_is_better": dict(self.higher_is_better),
            "settings": dict(self.settings),
            **({"extra": dict(self.extra)} if self.extra else {}),
            **({"breakdowns": dict(self.breakdowns)} if self.breakdowns else {}),
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> TaskResult:
        return cls(
            metrics={k: _float(v) for k, v in entry["metrics"].items()},
            ci95={k: (_float(v[0]), _float(v[1])) for k, v in entry.get("ci95", {}).items()},
            n_total=int(entry["n_total"]),
            n_scored=int(entry["n_scored"]),
            n_failed=int(entry["n_failed"]),
            n_skipped=int(entry["n_skipped"]),
            headline=str(entry.get("headline", "")),
            headlines=tuple(entry.get("headlines") or ([entry["headline"]] if entry.get("headline") else [])),
            higher_is_better=dict(entry.get("higher_is_better", {})),
            settings=dict(entry.get("settings", {})),
            extra=dict(entry.get("extra", {})),
            breakdowns=dict(entry.get("breakdowns", {})),
        )


def _round(value: float | None) -> float | None:
    """Six decimals: enough for any published metric, stable in diffs. An undefined value (no scored
    sample) is written as null, so results.json stays strict JSON."""
    if value is None or value != value:
        return None
    return round(float(value), 6)


def _float(value: float | None) -> float:
    return float("nan") if value is None else float(value)
