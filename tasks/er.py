"""IEMOCAP emotion recognition, 4 classes (neu, hap + exc, ang, sad): WA and UA.

Labels come from `SessionN/dialog/EmoEvaluation/<dialog>.txt` (top-level files only), audio from
`SessionN/sentences/wav/<dialog>/<utt>.wav`. The standard set keeps neu/hap/exc/ang/sad and merges
exc into hap: 5,531 utterances over Sessions 1-5. Point the data at a single `SessionN` folder to score
that session alone as the test fold (e.g. `--data iemocap-er=DATA/IEMOCAP_full_release/Session5`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from wavllm_eval.answers import EMOTION_CODES, EMOTION_SYNONYMS, extract_emotion, unparsed_summary
from wavllm_eval.errors import InputError
from wavllm_eval.manifest import header_duration_s
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.metrics.classification import Accuracy, BalancedAccuracy, argmax_choice
from wavllm_eval.registry import register_task
from wavllm_eval.task import BaseTask
from wavllm_eval.types import AudioRef, Record, Sample

WAVLLM_ER_INSTRUCTION = "Can you describe the emotional condition of the speaker in the provided audio clip?"
CLASSES = ("neu", "hap", "ang", "sad")
CHOICE_WORDS = ("neutral", "happy", "angry", "sad")  # candidate answers for constrained choice


def reference_label(record: Record) -> str:
    """IEMOCAP codes as they are; a manifest's word ("sad") through the synonym table."""
    label = extract_emotion(record.reference)
    if label is None:
        raise ValueError(f"sample {record.id}: reference {record.reference!r} is not a 4-class emotion")
    return label


def _choice(record: Record) -> str:
    return CLASSES[CHOICE_WORDS.index(argmax_choice(record, CHOICE_WORDS))]


def _free(record: Record) -> str | None:
    return extract_emotion(record.prediction)


# 4-class utterances per Session (s3prl's test_meta_data.json; 5,531 in all)
SESSION_SIZES = {"Session1": 1085, "Session2": 1023, "Session3": 1151, "Session4": 1031, "Session5": 1241}


@register_task("iemocap-er", group="er")
class IEMOCAPEmotion(BaseTask):
    """IEMOCAP 4-class emotion (exc merged into hap, 5,531 utterances): WA and UA (%)."""

    version = 1
    max_new_tokens = 64
    default_instruction = WAVLLM_ER_INSTRUCTION
    instruction_variants = (
        "What emotion does the speaker express in this audio clip?",
        "How does the speaker feel? Answer with one word: neutral, happy, angry or sad.",
        "Describe the speaker's emotional state in the recording.",
        "Listen to the voice and name the emotion it conveys.",
    )
    choices = CHOICE_WORDS
    headlines = ("wa", "ua")
    breakdown_keys = ("session", "class")
    data_layout = "IEMOCAP_full_release/Session1..5/{dialog/EmoEvaluation/*.txt, sentences/wav/<dialog>/*.wav} (one SessionN: that fold), or a WavLLM emo.tsv"

    def breakdown_value(self, record: Record, key: str) -> str | None:
        if key == "class":  # per reference class: the per-class recalls behind UA
            return reference_label(record)
        return super().breakdown_value(record, key)

    def default_data_path(self, data_dir: Path) -> Path:
        return data_dir / "IEMOCAP_full_release"

    size_hint = "the 4-class set (exc merged into hap) of IEMOCAP_full_release"

    def official_size(self, data: Path) -> int | None:
        """5,531 over Sessions 1-5, or the one Session's own count (datasets.md)."""
        data = Path(data)
        if (data / "dialog" / "EmoEvaluation").is_dir():
            return SESSION_SIZES.get(data.name)
        present = [name for name in SESSION_SIZES if (data / name / "dialog" / "EmoEvaluation").is_dir()]
        return sum(SESSION_SIZES[name] for name in present) if present else None

    def load_native(self, data: Path) -> Iterator[Sample]:
        yield from read_iemocap(data)

    def make_metrics(self) -> list[RowMetric]:
        return [
            Accuracy("wa", _free, reference_label),
            BalancedAccuracy("ua", CLASSES, _free, reference_label),
            Accuracy("wa_choice", _choice, reference_label, needs_choice_logprobs=True),
            BalancedAccuracy("ua_choice", CLASSES, _choice, reference_label, needs_choice_logprobs=True),
        ]

    def settings(self) -> Mapping[str, Any]:
        return {"classes": list(CLASSES), "merge": {"exc": "hap"}, "synonyms": {k: list(v) for k, v in EMOTION_SYNONYMS.items()},
                "ua": "mean per-class recall over reference classes (sklearn balanced_accuracy_score)"}

    def extra(self, records: Sequence[Record]) -> Mapping[str, Any]:
        ok = [r for r in records if r.status == "ok"]
        columns = [*CLASSES, "unparsed"]
        matrix = {truth: dict.fromkeys(columns, 0) for truth in CLASSES}
        for record in ok:
            matrix[reference_label(record)][_free(record) or "unparsed"] += 1
        return {"confusion_matrix": {"rows": "reference", "columns": columns, "counts": matrix},
                **unparsed_summary(records, _free)}


def read_iemocap(root: Path) -> Iterator[Sample]:
    """4-class utterances of every Session under `root` (or of `root` itself if it is one Session)."""
    if not root.is_dir():
        raise InputError(root, "IEMOCAP folder not found", "unpack IEMOCAP_full_release under --data-dir")
    sessions = [root] if (root / "dialog" / "EmoEvaluation").is_dir() else sorted(
        p for p in root.glob("Session[1-5]") if p.is_dir())
    if not sessions:
        raise InputError(root, "no Session1..5 folders with dialog/EmoEvaluation",
                         "point at IEMOCAP_full_release (or one SessionN folder for a single test fold)")
    for session in sessions:
        entries = []
        for evaluation in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            if evaluation.name.startswith("."):
                continue  # AppleDouble copies
            for line in evaluation.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.startswith("["):
                    continue
                fields = line.split("\t")
                if len(fields) < 3:
                    raise InputError(evaluation, f"malformed label line {line!r}", "re-extract IEMOCAP_full_release")
                utt_id, code = fields[1].strip(), fields[2].strip()
                if code in EMOTION_CODES:
                    entries.append((utt_id, EMOTION_CODES[code], code))
        for utt_id, label, code in sorted(entries):
            dialog = utt_id.rsplit("_", 1)[0]
            wav = session / "sentences" / "wav" / dialog / f"{utt_id}.wav"
            yield Sample(id=utt_id, audio=(AudioRef(wav),), reference=label, duration_s=header_duration_s(wav),
                         meta={"session": session.name, "original_label": code})
