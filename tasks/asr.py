"""LibriSpeech ASR (test-clean, test-other): corpus WER after the Whisper English normaliser.

Reads the native OpenSLR layout `LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`
with its `.flac` files, or an official WavLLM manifest (`asr.tsv`). Three WERs are reported:
`wer` (Whisper EnglishTextNormalizer, the papers' convention, headline), `wer_lc_nopunct`
(lower-case, punctuation removed) and `wer_raw` (whitespace split only, fairseq's `--scoring wer`
defaults: what WavLLM's released script prints).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from wavllm_eval.errors import InputError
from wavllm_eval.manifest import header_duration_s
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.metrics.wer import WordErrorRate
from wavllm_eval.registry import register_task
from wavllm_eval.task import BaseTask
from wavllm_eval.text import LOWERCASE_NO_PUNCTUATION, RAW, strip_transcript_preamble, whisper_english
from wavllm_eval.textfile import read_lines
from wavllm_eval.types import AudioRef, Sample

log = logging.getLogger(__name__)

# The instruction of WavLLM's released asr.tsv (microsoft/SpeechT5 WavLLM/wavllm/test_data/asr.tsv).
WAVLLM_ASR_INSTRUCTION = (
    "Based on the attached audio, generate a comprehensive text transcription of the spoken content."
)

SPLITS = {"librispeech-test-clean": "test-clean", "librispeech-test-other": "test-other"}
RELEASED_SIZES = {"test-clean": 2620, "test-other": 2939}


@register_task(*SPLITS, group="asr")
class LibriSpeechASR(BaseTask):
    """LibriSpeech test-clean / test-other speech recognition, corpus WER (%)."""

    version = 1
    max_new_tokens = 256
    default_instruction = WAVLLM_ASR_INSTRUCTION
    instruction_variants = (
        "Transcribe the speech in this audio clip into text.",
        "Please write down exactly what the speaker says in the audio.",
        "What is being said in this recording? Give a verbatim transcript.",
        "Convert the spoken words of the attached audio into written English.",
    )
    headlines = ("wer",)
    breakdown_keys = ("speaker", "duration_bucket")
    data_layout = "LibriSpeech/{split}/<speaker>/<chapter>/*.flac + <speaker>-<chapter>.trans.txt (OpenSLR 12), or a WavLLM asr.tsv"
    size_hint = "a partial or altered copy; the Hub copies AudioBench and AU-Harness use hold 2617 / 2935 utterances"

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.split = SPLITS[self.base_id]
        self.released_size = RELEASED_SIZES[self.split]

    def default_data_path(self, data_dir: Path) -> Path:
        candidates = [data_dir / "LibriSpeech" / self.split, data_dir / self.split]
        if data_dir.name == self.split:
            candidates.append(data_dir)
        return next((c for c in candidates if c.is_dir()), candidates[0])

    def load_native(self, data: Path) -> Iterator[Sample]:
        yield from read_librispeech_split(data)

    def make_metrics(self) -> list[RowMetric]:
        return [
            WordErrorRate(whisper_english(), "wer", prediction_cleaner=strip_transcript_preamble),
            WordErrorRate(LOWERCASE_NO_PUNCTUATION, "wer_lc_nopunct", prediction_cleaner=strip_transcript_preamble),
            # WavLLM's script scores against its asr.tsv, whose targets are LibriSpeech's transcripts
            # lower-cased: a native trans.txt reference (upper-case) is brought to that form first
            WordErrorRate(RAW, "wer_raw", reference_form=str.lower),
        ]

    def settings(self) -> Mapping[str, Any]:
        return {
            "wer": {"normaliser": whisper_english().identity, "reduction": "corpus", "scale": "percent",
                    "prediction_cleaning": "strip_transcript_preamble/v2"},
            "wer_lc_nopunct": {"normaliser": LOWERCASE_NO_PUNCTUATION.identity, "reduction": "corpus",
                               "prediction_cleaning": "strip_transcript_preamble/v2"},
            "wer_raw": {"normaliser": RAW.identity, "reduction": "corpus",
                        "reference": "lower-cased, as WavLLM's asr.tsv holds it"},
        }


def read_librispeech_split(split_dir: Path) -> Iterator[Sample]:
    """Every transcript line of a LibriSpeech split, sorted by utterance id.

    One sample per transcript line: an utterance whose .flac is missing is still yielded (the runner
    records it as failed, naming the file), so the count always equals the official one.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise InputError(split_dir, "LibriSpeech split folder not found",
                         "unpack test-clean.tar.gz / test-other.tar.gz under --data-dir, or pass --data TASK=PATH")
    transcripts = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise InputError(split_dir, "no <speaker>/<chapter>/*.trans.txt files",
                         "point at the split folder, e.g. DATA/LibriSpeech/test-clean")
    entries: list[tuple[str, str, Path]] = []
    for trans in transcripts:
        for number, line in enumerate(read_lines(trans), start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            if not text:
                log.warning("%s:%d: utterance %s has an empty transcript", trans, number, utt_id)
            entries.append((utt_id, text, trans.parent / f"{utt_id}.flac"))
    listed = {e[0] for e in entries}
    unlisted = [p for p in split_dir.glob("*/*/*.flac") if p.stem not in listed]
    if unlisted:
        log.warning("%d .flac files under %s have no transcript line (e.g. %s); they are not scored",
                    len(unlisted), split_dir, unlisted[0])
    for utt_id, text, flac in sorted(entries):
        speaker, chapter, _ = (utt_id.split("-") + ["", ""])[:3]
        yield Sample(
            id=utt_id,
            audio=(AudioRef(flac),),
            reference=text,
            duration_s=header_duration_s(flac),
            meta={"speaker": speaker, "chapter": chapter},
        )
