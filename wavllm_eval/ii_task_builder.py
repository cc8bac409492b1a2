"""Build an II-task set (chained independent instructions) from a LibriSpeech split, official TSV format.

WavLLM released a single II-task row (reference/datasets.md §7). This builder makes a scoreable set:
every sub-instruction has a checkable answer, drawn from what the corpus knows —
- transcription: the utterance's transcript (`ref_transcription`);
- speaker gender: `SPEAKERS.TXT` (`ref_gender`; omitted from the pool when the file is absent);
- an audio-independent question from the shipped catalogue `data/ii_facts_v1.json` (`fact_id`), half of
  them with a format constraint (upper case, a word limit);
- translation of the audio into German, checked by language identification (py3langid);
- a summary under a word limit, and a story continuation (checked for form only).
Columns are the official II-task ones (`id audio n_frames with_speech prompt tgt_text`, `tgt_text` the
task label such as `ASR+GENDER+SFT`), plus the reference columns above. Choices come from one
`random.Random` per utterance seeded with (seed, utterance id), so a row does not depend on which
other utterances are present; the manifest's sha256 is written to `II-task.build.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from wavllm_eval.errors import InputError
from wavllm_eval.instructions import RULES_VERSION, fact_catalogue

BUILDER_VERSION = "ii-builder/v1"
MANIFEST_NAME = "II-task.tsv"
COLUMNS = ("id", "audio", "n_frames", "with_speech", "prompt", "tgt_text",
           "ref_transcription", "ref_gender", "fact_id", "speaker")

TEMPLATES = {
    "ASR": ("Transcribe the audio recording into text, capturing every spoken word",
            "Transcribe the speech in the audio clip into text",
            "Generate a comprehensive text transcription of the spoken content"),
    "GENDER": ("Is the speaker of the audio clip male or female?",
               "What is the gender of the speaker in the audio clip?",
               "Tell me whether the speaker is a man or a woman"),
    "SFT": ("ignore the audio clip, {question}",
            "disregarding the audio, {question}",
            "without considering the audio, {question}"),
    "ST": ("Translate the audio clip into German",
           "Translate the spoken content of the audio into German"),
    "SUMM": ("Summarize the content of the audio clip in no more than {n} words",
             "Summarize what the speaker says in no more than {n} words"),
    "Continue": ("Continue the narrative of given audio clip in a coherent and engaging way",
                 "Continue the story of the audio clip with a few sentences"),
}
FORMAT_SUFFIXES = (" Answer in upper case.", " Answer in no more than {n} words.")
FIRST, MIDDLE, LAST = ("To begin,", "Firstly,", "First of all,"), ("Subsequently,", "Next,", "Furthermore,",
                                                                   "Additionally,"), ("Lastly,", "Finally,")


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str
    transcript: str
    audio: Path


def read_utterances(split_dir: Path) -> list[Utterance]:
    """Transcript lines of `<split>/<speaker>/<chapter>/*.trans.txt`, sorted by utterance id."""
    split_dir = Path(split_dir)
    transcripts = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise InputError(split_dir, "no <speaker>/<chapter>/*.trans.txt files",
                         "point --from librispeech at a split folder, e.g. DATA/LibriSpeech/test-clean")
    out = []
    for trans in transcripts:
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt_id, _, text = line.strip().partition(" ")
            if utt_id and text:
                out.append(Utterance(utt_id, utt_id.split("-")[0], text.strip(), trans.parent / f"{utt_id}.flac"))
    return sorted(out, key=lambda u: u.id)


def read_speakers(split_dir: Path) -> dict[str, str]:
    """Speaker id -> "female" / "male" from LibriSpeech `SPEAKERS.TXT` (`;` comments, `ID | SEX | ...`)."""
    for candidate in (split_dir / "SPEAKERS.TXT", split_dir.parent / "SPEAKERS.TXT"):
        if candidate.is_file():
            genders = {}
            for line in candidate.read_text(encoding="utf-8", errors="replace").splitlines():
                fields = [f.strip() for f in line.split("|")]
                if line.startswith(";") or len(fields) < 2:
                    continue
                if fields[1].upper() in ("F", "M"):
                    genders[fields[0]] = "female" if fields[1].upper() == "F" else "male"
            return genders
    return {}


def _n_frames(path: Path) -> int:
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, sf.LibsndfileError):
        return 0
    return int(round(info.frames * 16_000 / info.samplerate))  # samples at 16 kHz, as the column means


def _sub_instruction(kind: str, rng: random.Random) -> tuple[str, str]:
    """(instruction text, fact id)."""
    template = rng.choice(TEMPLATES[kind])
    if kind == "SFT":
        fact = rng.choice(fact_catalogue()[1])
        text = template.format(question=fact.question)
        if rng.random() < 0.5:
            text += rng.choice(FORMAT_SUFFIXES).format(n=rng.randint(5, 10))
        return text, fact.id
    if kind == "SUMM":
        return template.format(n=rng.randint(10, 20)), ""
    return template, ""


def build_row(utterance: Utterance, seed: int, genders: dict[str, str], manifest_dir: Path) -> dict[str, str]:
    rng = random.Random(f"{BUILDER_VERSION}|{seed}|{utterance.id}")
    pool = ["ASR", "SFT", "ST", "SUMM", "Continue"] + (["GENDER"] if utterance.speaker in genders else [])
    kinds = rng.sample(sorted(pool), rng.randint(2, 4))
    connectives = [rng.choice(FIRST), *(rng.choice(MIDDLE) for _ in kinds[2:]), rng.choice(LAST)]
    pieces, fact_id = [], ""
    for kind, connective in zip(kinds, connectives, strict=True):
        text, fact = _sub_instruction(kind, rng)
        fact_id = fact or fact_id
        pieces.append(f"{connective} {text}")
    return {
        "id": utterance.id,
        "audio": os.path.relpath(utterance.audio.resolve(), manifest_dir.resolve()),
        "n_frames": str(_n_frames(utterance.audio)),
        "with_speech": "True",
        "prompt": "; ".join(pieces),
        "tgt_text": "+".join(kinds),
        "ref_transcription": utterance.transcript,
        "ref_gender": genders.get(utterance.speaker, ""),
        "fact_id": fact_id,
        "speaker": utterance.speaker,
    }


def build_ii_task(librispeech_split_dir: Path, out_dir: Path, seed: int = 1) -> Path:
    """Write `out_dir/II-task.tsv` (+ `II-task.build.json`: seed, versions, sha256) and return its path."""
    split_dir = Path(librispeech_split_dir)
    if not split_dir.is_dir():
        raise InputError(split_dir, "LibriSpeech split folder not found",
                         "pass the split folder, e.g. DATA/LibriSpeech/test-clean")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    genders = read_speakers(split_dir)
    rows = [build_row(u, seed, genders, out_dir) for u in read_utterances(split_dir)]
    lines = ["\t".join(COLUMNS)]
    for row in rows:
        for column in COLUMNS:
            if any(ch in row[column] for ch in "\t\r\n"):
                raise InputError(split_dir, f"utterance {row['id']}: a tab or line break in {column}",
                                 "fix the transcript line")
        lines.append("\t".join(row[c] for c in COLUMNS))
    manifest = out_dir / MANIFEST_NAME
    data = ("\n".join(lines) + "\n").encode("utf-8")
    tmp = manifest.with_suffix(".tsv.tmp")
    tmp.write_bytes(data)
    tmp.replace(manifest)
    facts_version, _ = fact_catalogue()
    build = {"builder": BUILDER_VERSION, "seed": seed, "source": str(split_dir), "rows": len(rows),
             "sha256": hashlib.sha256(data).hexdigest(), "facts": facts_version, "rules": RULES_VERSION,
             "speaker_genders": bool(genders)}
    (out_dir / "II-task.build.json").write_text(json.dumps(build, indent=2) + "\n", encoding="utf-8")
    return manifest


def manifest_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
