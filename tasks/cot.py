"""Speech chain-of-thought (WavLLM CoT): transcribe -> summarise (<= 20 words) -> translate to German.

Only the final German summary has a reference (`tgt_text`), so the answer is first cut into stages
and the last one is scored with sacreBLEU BLEU, ROUGE-1/2/L (Unicode tokens) and BERTScore (MiniLM,
offline). Stages are found by their lead-ins (the released outputs say "The audio transcription is:",
"The audio clip's transcription reads:", "The translation of summary is:", "The summary translates
to:"), else by position when the answer has exactly three parts; an answer whose stages cannot be
found is scored as a whole and counted (`extra.stages`). `**` markers are stripped (reference/
wavllm.md §5). `cot-story` adds the transcript-stage WER against its `orig_story` column.
BERTScore's encoder is the English MiniLM (no multilingual encoder ships offline; bert-score's German default
is mBERT layer 9: set WAVLLM_EVAL_BERTSCORE_MODEL to a local folder and WAVLLM_EVAL_BERTSCORE_LAYER=9).
`cot-oneshot` asks the same manifests directly, under the paper's one-shot instruction (the `SUMM_G`
probe of WavLLM's removed `cot_1.tsv`): the whole answer is the German summary.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from wavllm_eval.instructions import answer_segments, strip_lead_in, words
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.metrics.bleu import CorpusBLEU
from wavllm_eval.metrics.similarity import (
    BertScore,
    RougeF,
    UnicodeWordTokenizer,
    bertscore_config_from_env,
    bertscore_settings,
)
from wavllm_eval.metrics.wer import WordErrorRate
from wavllm_eval.registry import register_task
from wavllm_eval.task import BaseTask
from wavllm_eval.text import whisper_english
from wavllm_eval.types import Record, Sample

WAVLLM_COT_INSTRUCTION = (
    "First of all, transcribe the audio recording into text, capturing every spoken word; Additionally given "
    "this audio clip and text, can you condense it into a clear, concise summary, no more than 20 words?; "
    "Lastly disregarding the sound, translate this English summary into German."
)
ONE_SHOT_INSTRUCTION = "Please summarize the content of the audio in German in no more than 20 words"
STAGE_RULES = "cot-stages/v1"
SUMMARY_MAX_WORDS = 20
_STAGE_OF_LEAD_IN = (  # the first that matches a segment's lead-in (the text before its first colon)
    ("translation", re.compile(r"translat|german|deutsch|übersetz", re.IGNORECASE)),
    ("summary", re.compile(r"summar|condens|concise", re.IGNORECASE)),
    ("transcript", re.compile(r"transcri|spoken (content|words)|the audio (says|reads)", re.IGNORECASE)),
)


@dataclass(frozen=True)
class CotStages:
    transcript: str
    summary: str
    translation: str
    rule: str  # "lead-ins" | "position" | "whole answer"


def _lead_in(segment: str) -> str:
    colon = segment.find(":")
    return segment[:colon] if 0 < colon <= 150 else ""


@lru_cache(maxsize=8192)
def cot_stages(answer: str) -> CotStages:
    """The three stages of a CoT answer (STAGE_RULES); each stage's lead-in and `**` removed."""
    segments = answer_segments(answer, 3)
    found: dict[str, str] = {}
    for segment in segments:
        lead_in = _lead_in(segment)
        stage = next((name for name, pattern in _STAGE_OF_LEAD_IN if lead_in and pattern.search(lead_in)), None)
        if stage is not None and stage not in found:
            found[stage] = strip_lead_in(segment)
        elif stage is None and not found:  # an unlabelled first part is the transcript
            found["transcript"] = strip_lead_in(segment)
        elif found:  # a continuation line of the stage above
            last = list(found)[-1]
            found[last] = (found[last] + " " + strip_lead_in(segment)).strip()
    if "translation" in found:
        return CotStages(found.get("transcript", ""), found.get("summary", ""), found["translation"], "lead-ins")
    if len(segments) == 3:
        transcript, summary, translation = (strip_lead_in(s) for s in segments)
        return CotStages(transcript, summary, translation, "position")
    return CotStages("", "", strip_lead_in(answer), "whole answer")


def final_german(answer: str) -> str:
    return cot_stages(answer).translation


def _transcript(answer: str) -> str:
    return cot_stages(answer).transcript


class _StoryWER(WordErrorRate):
    """WER (%) of the transcript stage against `orig_story`; samples without it contribute nothing."""

    def row(self, record: Record) -> Sequence[float]:
        story = str(record.meta.get("orig_story", ""))
        if not story:
            return (0.0, 0.0)
        return super().row(dataclasses.replace(record, reference=story))


class _CotBase(BaseTask):
    version = 1
    max_new_tokens = 512  # the official --max-len-b 512
    default_instruction = WAVLLM_COT_INSTRUCTION
    headlines = ("bleu", "rouge-l", "bertscore")
    manifest_name = "CoT-task.tsv"

    def default_data_path(self, data_dir: Path) -> Path:
        return data_dir / "wavllm" / self.manifest_name

    def from_manifest(self, sample: Sample) -> Sample:
        return dataclasses.replace(sample, meta={**sample.meta, "prompt": sample.instruction})

    def make_metrics(self) -> list[RowMetric]:
        metrics: list[RowMetric] = [
            CorpusBLEU("bleu", prediction_cleaner=final_german),
            RougeF("rouge-l", prediction_cleaner=final_german),
            BertScore("bertscore", config=bertscore_config_from_env(), prediction_cleaner=final_german),
            RougeF("rouge-1", prediction_cleaner=final_german),
            RougeF("rouge-2", prediction_cleaner=final_german),
            # P and R come from the same encoder pass as F1 (BertScoreModel memoises each pair)
            BertScore("bertscore_precision", "precision", bertscore_config_from_env(), final_german),
            BertScore("bertscore_recall", "recall", bertscore_config_from_env(), final_german),
        ]
        return metrics

    def settings(self) -> Mapping[str, Any]:
        return {
            "scored_text": f"final German stage ({STAGE_RULES}: lead-ins, else position of 3 parts, else whole "
                           "answer; lead-in and ** removed)",
            "bleu": {"signature": CorpusBLEU("bleu").signature},
            "rouge": {"tokenizer": UnicodeWordTokenizer.identity, "value": "mean per-sample F-measure",
                      "stemmer": False},
            "bertscore": bertscore_settings(bertscore_config_from_env()),
        }

    def extra(self, records: Sequence[Record]) -> Mapping[str, Any]:
        ok = [r for r in records if r.status == "ok"]
        stages = [cot_stages(r.prediction) for r in ok]
        rules = {rule: sum(s.rule == rule for s in stages) for rule in ("lead-ins", "position", "whole answer")}
        summaries = [s for s in stages if s.summary]
        within = sum(len(words(s.summary)) <= SUMMARY_MAX_WORDS for s in summaries)
        return {"stages": {**rules, "not_found": rules["whole answer"]},
                "summary_within_20_words": {"n": len(summaries), "within": within}}


@register_task("cot", group="cot")
class CoTTask(_CotBase):
    """WavLLM CoT-task (ASR -> summary -> German): BLEU, ROUGE-L, BERTScore of the final German."""


@register_task("cot-story", group="cot")
class CoTStoryTask(_CotBase):
    """WavLLM CoT-task-story (48.95 s story): final-German BLEU/ROUGE/BERTScore, transcript WER vs orig_story."""

    manifest_name = "CoT-task-story.tsv"

    def make_metrics(self) -> list[RowMetric]:
        return [*super().make_metrics(),
                _StoryWER(whisper_english(), "transcript_wer", prediction_cleaner=_transcript)]

    def settings(self) -> Mapping[str, Any]:
        return {**super().settings(),
                "transcript_wer": {"normaliser": whisper_english().identity, "reference": "orig_story",
                                   "reduction": "corpus"}}


@register_task("cot-oneshot", group="cot")
class CoTOneShotTask(_CotBase):
    """The CoT manifests under the one-shot instruction (summarise in German, <= 20 words), no chain."""

    default_instruction = ONE_SHOT_INSTRUCTION

    def instruction(self, sample: Sample) -> str:
        if self.variant == 1:
            return ONE_SHOT_INSTRUCTION  # the manifest's chained prompt is what this task replaces
        return super().instruction(sample)

    def from_manifest(self, sample: Sample) -> Sample:
        return dataclasses.replace(sample, instruction=ONE_SHOT_INSTRUCTION,
                                   meta={**sample.meta, "prompt": ONE_SHOT_INSTRUCTION,
                                         "manifest_prompt": sample.instruction})

    def settings(self) -> Mapping[str, Any]:
        return {**super().settings(), "instruction": ONE_SHOT_INSTRUCTION}
