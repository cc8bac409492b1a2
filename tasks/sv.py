"""Speaker verification on VoxCeleb1-O (cleaned list `veri_test2.txt`): yes/no accuracy, EER, minDCF.

Each trial line is `<label> <enroll> <test>` with paths under `wav/`; label 1 is the same speaker.
A sample carries both clips; a single-input model hears them joined by 0.1 s of silence
(`Prompt.single_waveform`, SALMONN's convention, the same for every such model), a multi-audio chat
model one audio part per clip; a model's audio limit applies to each clip. The question follows WavLLM's sv.tsv, whose single clip holds two
utterances: "only one speaker" = Yes = same speaker (a target trial). With candidate scoring, the
trial score is log P(Yes) − log P(No), giving EER and minDCF at P_target 0.01 and 0.05.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from wavllm_eval.answers import extract_yes_no, unparsed_summary
from wavllm_eval.errors import InputError
from wavllm_eval.manifest import header_duration_s
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.metrics.classification import Accuracy, argmax_choice
from wavllm_eval.metrics.verification import EqualErrorRate, MinDCF
from wavllm_eval.registry import register_task
from wavllm_eval.task import BaseTask
from wavllm_eval.textfile import read_lines
from wavllm_eval.types import AudioRef, Record, Sample

WAVLLM_SV_INSTRUCTION = "Is there only one speaker in the audio clip?"
CHOICES = ("Yes", "No")


def _target(record: Record) -> str:
    return record.reference.strip().lower()


def _trial_label(record: Record) -> int:
    return int(_target(record) == "yes")


def _trial_score(record: Record) -> float:
    if len(record.choice_logprobs) != 2:
        raise ValueError(f"sample {record.id}: expected log-probs for {CHOICES}, got {record.choice_logprobs}")
    score = record.choice_logprobs[0] - record.choice_logprobs[1]
    if score != score:  # both -inf (or a NaN given): no threshold can place it
        raise InputError(f"sample {record.id}", f"log P(Yes), log P(No) = {list(record.choice_logprobs)}: the trial "
                         "score is undefined", "check the model's candidate scores (a replay file's choice_logprobs)")
    return score


@register_task("voxceleb1-sv", group="sv")
class VoxCeleb1Verification(BaseTask):
    """VoxCeleb1-O cleaned (37,611 trials): yes/no accuracy, and EER/minDCF from log P(yes) − log P(no)."""

    version = 1
    max_new_tokens = 64
    default_instruction = WAVLLM_SV_INSTRUCTION
    instruction_variants = (
        "Do both utterances in this audio come from the same speaker? Answer yes or no.",
        "Is the same person speaking throughout this recording?",
        "Listen to the audio: is it a single speaker? Reply Yes or No.",
        "Are the voices in the clip those of one and the same speaker?",
    )
    choices = CHOICES
    headlines = ("accuracy", "eer")
    breakdown_keys = ("genders",)
    data_layout = "voxceleb1/veri_test2.txt + voxceleb1/wav/idXXXXX/<video>/<n>.wav (vox1_meta.csv optional: gender), or a WavLLM sv.tsv"

    def default_data_path(self, data_dir: Path) -> Path:
        return data_dir / "voxceleb1" / "veri_test2.txt"

    def load_native(self, data: Path) -> Iterator[Sample]:
        yield from read_trials(data)

    size_hint = "veri_test2.txt, the cleaned VoxCeleb1-O list, has 37,611 trials (18,802 target)"

    def official_size(self, data: Path) -> int | None:
        return 37_611 if Path(data).name == "veri_test2.txt" else None  # other lists (E, H, original) differ

    def make_metrics(self) -> list[RowMetric]:
        return [
            Accuracy("accuracy", lambda r: extract_yes_no(r.prediction), _target),
            Accuracy("accuracy_choice", lambda r: argmax_choice(r, CHOICES).lower(), _target,
                     needs_choice_logprobs=True),
            EqualErrorRate("eer", _trial_score, _trial_label),
            MinDCF("min_dcf_0.01", _trial_score, _trial_label, p_target=0.01),
            MinDCF("min_dcf_0.05", _trial_score, _trial_label, p_target=0.05),
        ]

    def settings(self) -> Mapping[str, Any]:
        # the ROC is metrics.verification.roc_points (sklearn roc_curve's operating points, tested equal),
        # so no sklearn import or version belongs here
        return {"answer_extraction": "extract_yes_no/v1 (first yes|no word, then speaker-count phrases)",
                "score": "log P(Yes) - log P(No)", "eer": "roc_points (sklearn roc_curve's operating points, "
                "drop_intermediate), max(FPR, FNR) at argmin |FNR - FPR| (voxceleb_trainer)",
                "min_dcf": "normalised, C_miss = C_fa = 1"}

    def extra(self, records: Sequence[Record]) -> Mapping[str, Any]:
        return unparsed_summary(records, lambda r: extract_yes_no(r.prediction))


def read_trials(path: Path) -> Iterator[Sample]:
    """Every trial of a VoxCeleb trial list, in file order; clips resolve under `<list dir>/wav/`."""
    if not path.is_file():
        raise InputError(path, "trial list not found", "put veri_test2.txt in DATA/voxceleb1/ beside wav/")
    wav_root = path.parent / "wav"
    genders = read_genders(path.parent / "vox1_meta.csv")
    seen: dict[str, int] = {}
    durations: dict[Path, float] = {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise InputError(f"{path}:{number}", f"expected `<0|1> <enroll.wav> <test.wav>`, found {line!r}",
                             "use the official veri_test2.txt")
        label, enroll, test = fields
        trial_id = f"{enroll} {test}"
        seen[trial_id] = seen.get(trial_id, 0) + 1
        if seen[trial_id] > 1:
            trial_id = f"{trial_id} #{seen[trial_id]}"
        clips = (wav_root / enroll, wav_root / test)
        for clip in clips:
            if clip not in durations:
                durations[clip] = header_duration_s(clip)
        yield Sample(
            id=trial_id,
            audio=tuple(AudioRef(c) for c in clips),
            reference="Yes" if label == "1" else "No",
            duration_s=durations[clips[0]] + durations[clips[1]],
            clip_durations_s=(durations[clips[0]], durations[clips[1]]),
            meta={"enroll_speaker": enroll.split("/")[0], "test_speaker": test.split("/")[0],
                  **({"genders": "/".join(sorted(genders.get(c.split("/")[0], "?") for c in (enroll, test)))}
                     if genders else {})},
        )


def read_genders(meta_csv: Path) -> dict[str, str]:
    """Speaker id -> "f"/"m" from VoxCeleb1's `vox1_meta.csv` (tab-separated, header
    `VoxCeleb1 ID  VGGFace1 ID  Gender  Nationality  Set`), when it lies beside the trial list."""
    if not meta_csv.is_file():
        return {}
    lines = read_lines(meta_csv)
    header = [h.strip().lower() for h in lines[0].split("\t")] if lines else []
    if "voxceleb1 id" not in header or "gender" not in header:
        raise InputError(meta_csv, f"unexpected header {lines[0][:80] if lines else ''!r}",
                         "use VoxCeleb1's vox1_meta.csv (tab-separated, with VoxCeleb1 ID and Gender columns)")
    id_col, gender_col = header.index("voxceleb1 id"), header.index("gender")
    out: dict[str, str] = {}
    for line in lines[1:]:
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) > max(id_col, gender_col):
            out[fields[id_col]] = fields[gender_col].lower()
    return out
