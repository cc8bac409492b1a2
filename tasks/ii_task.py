"""II-task: several independent instructions in one prompt (WavLLM), instruction-following rate (IFR).

Reads the official `II-task.tsv` as is (its `tgt_text` is a task label such as `ASR+SQA+SFT+Continue`,
not an answer) or a set made by `wavllm-eval build ii-task`, whose extra columns carry references.
The prompt is split into sub-instructions, the answer into parts, and each part judged by the rules
of `wavllm_eval.instructions` (RULES_VERSION, recorded). Quality where a reference exists:
transcript WER (`ref_transcription`), speaker-gender accuracy (`ref_gender`), multiple-choice accuracy
(`ref_option`), and the accuracy of
audio-independent questions found in the shipped fact catalogue (the official row's "capital of New
Zealand" included). Per-type follow rates and outcome counts go to `extra`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from wavllm_eval.answers import extract_option
from wavllm_eval.instructions import (
    MULTIPLE_CHOICE,
    RULES_VERSION,
    SPEAKER_GENDER,
    TEXT_QUESTION,
    TRANSCRIPTION,
    Verdict,
    contains_answer,
    fact_catalogue,
    judge_answer,
    known_fact,
    language_identifier_identity,
    spoken_gender,
    strip_lead_in,
)
from wavllm_eval.metrics.base import RowMetric, safe_ratio
from wavllm_eval.metrics.ifr import ifr_breakdown, ifr_metrics
from wavllm_eval.metrics.wer import word_edits
from wavllm_eval.registry import register_task
from wavllm_eval.task import BaseTask
from wavllm_eval.text import whisper_english
from wavllm_eval.types import Record, Sample

# The official row's instruction: the default when a sample carries none.
WAVLLM_II_INSTRUCTION = (
    "To begin, Transcribe the audio recording into text, capturing every spoken word; Subsequently, How does "
    "the woman finally decide to go home? A. By bus; B. In the man’s car; C. In her father’s car.; "
    "Furthermore, ignore the audio clip, What is the capital of New Zealand?; Lastly, Continue the narrative "
    "of given audio clip in a coherent and engaging way"
)


@lru_cache(maxsize=8192)
def _verdicts(prompt: str, prediction: str) -> tuple[Verdict, ...]:
    return tuple(judge_answer(prompt, prediction))


def record_prompt(record: Record) -> str:
    return str(record.meta.get("prompt", "")) or WAVLLM_II_INSTRUCTION


def record_verdicts(record: Record) -> tuple[Verdict, ...]:
    return _verdicts(record_prompt(record), record.prediction)


def _part(record: Record, kind: str) -> Verdict | None:
    return next((v for v in record_verdicts(record) if v.instruction.kind == kind), None)


class _PartQuality(RowMetric):
    """Rows (hits or edits, count): count 0 for a sample without this sub-instruction or its reference."""

    n_stats = 2

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        return safe_ratio(totals[..., 0], totals[..., 1])


class TranscriptionWER(_PartQuality):
    """Corpus WER (%) of the transcription part against `ref_transcription` (Whisper normaliser)."""

    higher_is_better = False

    def row(self, record: Record) -> Sequence[float]:
        verdict, reference = _part(record, TRANSCRIPTION), str(record.meta.get("ref_transcription", ""))
        if verdict is None or not reference:
            return (0.0, 0.0)
        normalise = whisper_english()
        return word_edits(normalise(reference), normalise(strip_lead_in(verdict.answer_part)))


class GenderAccuracy(_PartQuality):
    """% of speaker-gender answers that name the `SPEAKERS.TXT` gender."""

    higher_is_better = True

    def row(self, record: Record) -> Sequence[float]:
        verdict, reference = _part(record, SPEAKER_GENDER), str(record.meta.get("ref_gender", ""))
        if verdict is None or not reference:
            return (0.0, 0.0)
        return (float(spoken_gender(strip_lead_in(verdict.answer_part)) == reference), 1.0)


class ChoiceAccuracy(_PartQuality):
    """% of multiple-choice parts whose chosen letter is `ref_option` (where a set supplies one)."""

    higher_is_better = True

    def row(self, record: Record) -> Sequence[float]:
        verdict, reference = _part(record, MULTIPLE_CHOICE), str(record.meta.get("ref_option", "")).strip().upper()
        if verdict is None or not reference:
            return (0.0, 0.0)
        chosen = extract_option(strip_lead_in(verdict.answer_part), verdict.instruction.options)
        return (float(chosen == reference), 1.0)


class FactAccuracy(_PartQuality):
    """% of catalogue questions whose answer part contains an accepted answer."""

    higher_is_better = True

    def row(self, record: Record) -> Sequence[float]:
        hits = total = 0
        for verdict in record_verdicts(record):
            fact = known_fact(verdict.instruction.text) if verdict.instruction.kind == TEXT_QUESTION else None
            if fact is not None:
                total += 1
                hits += contains_answer(strip_lead_in(verdict.answer_part), fact.answers)
        return (float(hits), float(total))


QUALITY = ("transcription_wer", "gender_accuracy", "choice_accuracy", "fact_accuracy")


@register_task("ii-task", group="ii-task")
class IITask(BaseTask):
    """WavLLM II-task: chained independent instructions, IFR (%) by versioned rules."""

    version = 1
    max_new_tokens = 512  # the official decoding budget (--max-len-b 512): four answers in one
    default_instruction = WAVLLM_II_INSTRUCTION
    headlines = ("ifr",)

    def default_data_path(self, data_dir: Path) -> Path:
        return data_dir / "wavllm" / "II-task.tsv"

    def from_manifest(self, sample: Sample) -> Sample:
        return dataclasses.replace(sample, meta={**sample.meta, "prompt": sample.instruction})

    def make_metrics(self) -> list[RowMetric]:
        return [*ifr_metrics(record_verdicts), TranscriptionWER("transcription_wer"),
                GenderAccuracy("gender_accuracy"), ChoiceAccuracy("choice_accuracy"), FactAccuracy("fact_accuracy")]

    def scored_metrics(self, records: Sequence[Record]) -> list[RowMetric]:
        """Quality metrics appear only where some sample has the reference (absent, never null or 0)."""
        metrics = super().scored_metrics(records)
        return [m for m in metrics if m.name not in QUALITY or (len(m.rows) and m.rows[:, 1].sum() > 0)]

    def settings(self) -> Mapping[str, Any]:
        return {
            "ifr_rules": RULES_VERSION,
            "ifr": "samples whose every sub-instruction is followed / all scored samples (undecidable counted, "
                   "not followed)",
            "answer_split": "lines, grouped by lead-ins; monotone best-fit alignment when lines are fewer",
            "language_identification": language_identifier_identity(),
            "fact_catalogue": fact_catalogue()[0],
            "transcription_wer": {"normaliser": whisper_english().identity, "reduction": "corpus"},
            "quality": "only where a reference exists: ref_transcription, ref_gender, ref_option columns; "
                       "catalogue facts (answer contained as a whole phrase)",
        }

    def extra(self, records: Sequence[Record]) -> Mapping[str, Any]:
        return ifr_breakdown(records, record_verdicts)
