"""`build_ii_task`: deterministic, official format, references right for a generated LibriSpeech tree,
and a perfect hand-made answer per row scores IFR 100 with exact quality numbers."""

from __future__ import annotations

import csv
import hashlib
import json
from importlib.resources import files
from pathlib import Path

import pytest
import soundfile as sf

from tests.librispeech_tree import SENTENCES, build_tree
from wavllm_eval.errors import InputError
from wavllm_eval.ii_task_builder import build_ii_task, manifest_sha256
from wavllm_eval.instructions import parse_instructions
from wavllm_eval.registry import make_task
from wavllm_eval.text import whisper_english
from wavllm_eval.types import Record

SPEAKERS_TXT = """; LibriSpeech speakers (test excerpt)
;ID  |SEX| SUBSET           |MINUTES| NAME
121  | F | test-clean       |  8.00 | Reader One
237  | M | test-clean       |  8.00 | Reader Two
"""
GENDER = {"121": "female", "237": "male"}
FACTS = {f["id"]: f for f in json.loads(files("wavllm_eval").joinpath("data", "ii_facts_v1.json").read_text())["facts"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = build_tree(tmp_path_factory.mktemp("ls"))
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text(SPEAKERS_TXT, encoding="utf-8")
    return root / "LibriSpeech" / "test-clean"


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, encoding="utf-8", newline=None) as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_same_seed_same_manifest_and_hash(corpus, tmp_path):
    first = build_ii_task(corpus, tmp_path / "a", seed=1)
    second = build_ii_task(corpus, tmp_path / "b", seed=1)
    other = build_ii_task(corpus, tmp_path / "c", seed=2)
    assert first.read_bytes() == second.read_bytes()
    assert manifest_sha256(first) == hashlib.sha256(first.read_bytes()).hexdigest()
    build = json.loads((tmp_path / "a" / "II-task.build.json").read_text())
    assert build["sha256"] == manifest_sha256(first) and build["seed"] == 1 and build["rows"] == len(SENTENCES)
    assert manifest_sha256(other) != manifest_sha256(first)


def test_rows_are_official_format_with_right_references(corpus, tmp_path):
    manifest = build_ii_task(corpus, tmp_path, seed=1)
    header = manifest.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert header[:6] == ["id", "audio", "n_frames", "with_speech", "prompt", "tgt_text"]  # as II-task.tsv
    rows = _rows(manifest)
    assert [r["id"] for r in rows] == sorted(SENTENCES)
    for row in rows:
        speaker, chapter, _ = row["id"].split("-")
        flac = corpus / speaker / chapter / f"{row['id']}.flac"
        assert (manifest.parent / row["audio"]).resolve() == flac.resolve()
        assert int(row["n_frames"]) == sf.info(str(flac)).frames
        assert row["ref_transcription"] == SENTENCES[row["id"]]
        assert row["ref_gender"] == GENDER[speaker] and row["with_speech"] == "True"
        labels = row["tgt_text"].split("+")
        assert 2 <= len(labels) <= 4 and len(parse_instructions(row["prompt"])) == len(labels)
        if "SFT" in labels:
            assert FACTS[row["fact_id"]]["question"] in row["prompt"]
    samples = list(make_task("ii-task").load(manifest))
    assert [s.id for s in samples] == sorted(SENTENCES)
    assert samples[0].audio[0].path.is_file() and samples[0].meta["ref_gender"] in ("female", "male")


def _perfect_part(label: str, row: dict[str, str]) -> str:
    """A right answer for one sub-task, written from the row's references alone."""
    if label == "ASR":
        return "Here is the transcription: " + row["ref_transcription"].lower()
    if label == "GENDER":
        return f"The speaker is {row['ref_gender']}."
    if label == "SFT":
        return FACTS[row["fact_id"]]["answers"][0].upper()  # also meets "upper case" and any word limit
    if label == "ST":
        return "Das Birkenkanu glitt über die glatten Planken des Stegs."
    if label == "SUMM":
        return "A short summary of the speech."
    return "And then the story went on for a long while, until the evening came."


def test_perfect_answers_score_ifr_100_and_exact_quality(corpus, tmp_path):
    manifest = build_ii_task(corpus, tmp_path, seed=1)
    task = make_task("ii-task")
    samples = {s.id: s for s in task.load(manifest)}
    rows = _rows(manifest)
    records = []
    for row in rows:
        answer = "\n".join(_perfect_part(label, row) for label in row["tgt_text"].split("+"))
        if row["id"] == "237-2000-0000" and "ASR" in row["tgt_text"]:
            answer = answer.replace("rice is often", "rice is")  # one deletion
        records.append(Record(row["id"], answer, row["tgt_text"], "ok", meta=dict(samples[row["id"]].meta)))
    result = task.score(records).result
    assert result.metrics["ifr"] == 100.0 and result.metrics["ifr_undecidable"] == 0.0
    with_asr = [r for r in rows if "ASR" in r["tgt_text"].split("+")]
    if with_asr:
        words = sum(len(whisper_english()(r["ref_transcription"]).split()) for r in with_asr)  # IT'S -> it is
        deleted = 1 if any(r["id"] == "237-2000-0000" for r in with_asr) else 0
        assert result.metrics["transcription_wer"] == pytest.approx(100 * deleted / words)
    if any("GENDER" in r["tgt_text"] for r in rows):
        assert result.metrics["gender_accuracy"] == 100.0
    if any("SFT" in r["tgt_text"] for r in rows):
        assert result.metrics["fact_accuracy"] == 100.0


def test_set_covers_every_sub_task_over_a_larger_split(tmp_path):
    sentences = {f"{spk}-{ch}-{i:04d}": "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS"
                 for spk in ("121", "237") for ch in ("1000",) for i in range(12)}
    root = build_tree(tmp_path / "ls", sentences=sentences)
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text(SPEAKERS_TXT, encoding="utf-8")
    rows = _rows(build_ii_task(root / "LibriSpeech" / "test-clean", tmp_path / "out", seed=1))
    labels = {label for r in rows for label in r["tgt_text"].split("+")}
    assert labels == {"ASR", "GENDER", "SFT", "ST", "SUMM", "Continue"}
    kind_of = {"ASR": "transcription", "GENDER": "speaker_gender", "SFT": "text_question", "ST": "translation",
               "SUMM": "summary", "Continue": "continuation"}
    for row in rows:  # the rules read every built prompt as the builder meant it
        assert [s.kind for s in parse_instructions(row["prompt"])] == [kind_of[k] for k in row["tgt_text"].split("+")]
    assert any("Answer in" in r["prompt"] for r in rows)  # a format constraint on a catalogue question


def test_without_speakers_txt_no_gender_instruction(tmp_path):
    root = build_tree(tmp_path / "ls")
    rows = _rows(build_ii_task(root / "LibriSpeech" / "test-clean", tmp_path / "out", seed=1))
    assert all("GENDER" not in r["tgt_text"] and r["ref_gender"] == "" for r in rows)


def test_missing_split_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        build_ii_task(tmp_path / "nowhere", tmp_path / "out")
