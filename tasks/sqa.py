"""Spoken QA: the WavLLM Gaokao English listening test (2,000 three-option questions), accuracy.

The manifest's prompt holds the question and options A-C; the chosen letter is extracted from free
text (a bare letter, "option B", "(C)", or the option's own words); unparsed answers are counted
and scored wrong. Candidate scoring over "A", "B", "C" gives the constrained-choice accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from wavllm_eval.answers import extract_option, parse_options, unparsed_summary
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.metrics.classification import Accuracy, argmax_choice
from wavllm_eval.registry import register_task
from wavllm_eval.task import BaseTask
from wavllm_eval.types import Record, Sample

LETTERS = ("A", "B", "C")


def _options(record: Record) -> dict[str, str]:
    return parse_options(str(record.meta.get("prompt", "")))[1]


def chosen_option(record: Record) -> str | None:
    return extract_option(record.prediction, _options(record))


def _target(record: Record) -> str:
    return record.reference.strip().upper()


@register_task("gaokao-sqa", group="sqa")
class GaokaoSQA(BaseTask):
    """Gaokao English listening comprehension (WavLLM, 2,000 questions, options A-C): accuracy (%)."""

    version = 1
    max_new_tokens = 64
    choices = LETTERS
    # The manifest's prompt is the question with its options; a variant wraps it in other words.
    instruction_variants = (
        "Listen to the conversation and answer the question. {question}",
        "{question} Reply with the letter of the correct option.",
        "Based on the audio, which option is right? {question}",
        "Answer this listening-comprehension question about the recording: {question}",
    )
    headlines = ("accuracy",)
    data_layout = "wavllm/gaokao.tsv (official WavLLM manifest: id audio n_frames prompt tgt_text with_speech) + its audio"

    def default_data_path(self, data_dir: Path) -> Path:
        return data_dir / "wavllm" / "gaokao.tsv"

    def from_manifest(self, sample: Sample) -> Sample:
        _, options = parse_options(sample.instruction)
        return replace(sample, choices=tuple(options) or LETTERS, meta={**sample.meta, "prompt": sample.instruction})

    def make_metrics(self) -> list[RowMetric]:
        return [
            Accuracy("accuracy", chosen_option, _target),
            Accuracy("accuracy_choice", lambda r: argmax_choice(r, LETTERS), _target, needs_choice_logprobs=True),
        ]

    def settings(self) -> Mapping[str, Any]:
        return {"answer_extraction": "extract_option/v2 (letter patterns, capitals only after \"answer\"; then the one option quoted outside a longer option)"}

    def extra(self, records: Sequence[Record]) -> Mapping[str, Any]:
        return unparsed_summary(records, chosen_option)
