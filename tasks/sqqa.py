"""SQQA: the question itself is spoken (WavLLM `SQQA.tsv`, empty prompt); free-text answers scored
against the reference answer with ROUGE-L and BERTScore, and with a model judge when `--judge` is given.

The released target is tokenised ("... of the integral .") and the released answer is a paragraph, so
both overlap metrics are low for a correct answer; the judge (1-5, cached) is the closer measure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wavllm_eval.judge import JudgeItem, JudgeScore
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.metrics.similarity import (
    BertScore,
    RougeF,
    UnicodeWordTokenizer,
    bertscore_config_from_env,
    bertscore_settings,
)
from wavllm_eval.registry import register_task
from wavllm_eval.task import BaseTask
from wavllm_eval.types import Record, Sample


def _question(record: Record) -> str:
    return str(record.meta.get("prompt", ""))


def _answer(text: str) -> str:
    return text.replace("**", "").strip()


@register_task("sqqa", group="sqa")
class SQQATask(BaseTask):
    """Spoken-question QA (WavLLM SQQA): ROUGE-L and BERTScore F1 (%), judge score (1-5) with --judge."""

    version = 1
    max_new_tokens = 512
    default_instruction = ""  # the question is in the audio; the official prompt is empty
    headlines = ("rouge-l", "bertscore")

    def default_data_path(self, data_dir: Path) -> Path:
        return data_dir / "wavllm" / "SQQA.tsv"

    def from_manifest(self, sample: Sample) -> Sample:
        return dataclasses.replace(sample, meta={**sample.meta, "prompt": sample.instruction})

    def make_metrics(self) -> list[RowMetric]:
        metrics: list[RowMetric] = [
            RougeF("rouge-l", prediction_cleaner=_answer),
            BertScore("bertscore", config=bertscore_config_from_env(), prediction_cleaner=_answer),
            BertScore("bertscore_precision", "precision", bertscore_config_from_env(), _answer),
            BertScore("bertscore_recall", "recall", bertscore_config_from_env(), _answer),
        ]
        if self.judge is not None:
            metrics.append(JudgeScore(self.judge, _question, prediction_cleaner=_answer))
        return metrics

    def settings(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {
            "rouge-l": {"tokenizer": UnicodeWordTokenizer.identity, "value": "mean per-sample F-measure"},
            "bertscore": bertscore_settings(bertscore_config_from_env()),
        }
        if self.judge is not None:
            out["judge"] = self.judge.describe()
        return out

    def extra(self, records: Sequence[Record]) -> Mapping[str, Any]:
        if self.judge is None:
            return {}
        ok = [r for r in records if r.status == "ok"]
        verdicts = self.judge.verdicts([JudgeItem(_question(r), r.reference, _answer(r.prediction)) for r in ok])
        unparsed = sum(v.score is None for v in verdicts)
        return {"judge_unparsed": unparsed, "judge_scored": len(verdicts) - unparsed}
