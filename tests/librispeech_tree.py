"""Builds a LibriSpeech-layout mini corpus for tests (native OpenSLR tree, FLAC + trans.txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import speak, tone

SENTENCES = {
    "121-1000-0000": "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS",
    "121-1000-0001": "GLUE THE SHEET TO THE DARK BLUE BACKGROUND",
    "121-1001-0000": "IT'S EASY TO TELL THE DEPTH OF A WELL",
    "237-2000-0000": "RICE IS OFTEN SERVED IN ROUND BOWLS",
    "237-2000-0001": "THE JUICE OF LEMONS MAKES FINE PUNCH",
}


def build_tree(root: Path, split: str = "test-clean", speech: bool = False,
               sentences: dict[str, str] | None = None) -> Path:
    """Write `root/LibriSpeech/<split>/...`; tones by default (fast), espeak-ng speech if asked."""
    sentences = sentences or SENTENCES
    by_chapter: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for utt_id, text in sentences.items():
        speaker, chapter, _ = utt_id.split("-")
        by_chapter.setdefault((speaker, chapter), []).append((utt_id, text))
    for (speaker, chapter), items in by_chapter.items():
        folder = root / "LibriSpeech" / split / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        for index, (utt_id, text) in enumerate(items):
            if speech:
                speak(text.lower(), folder / f"{utt_id}.flac")
            else:
                tone(folder / f"{utt_id}.flac", seconds=0.5 + 0.25 * index + 0.1 * int(speaker[-1]), fmt="FLAC")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text(
            "".join(f"{u} {t}\n" for u, t in items), encoding="utf-8")
    return root


def corrupt(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        sf.write(str(path), np.zeros(0, dtype=np.float32), 16000, format="FLAC")
    elif how == "garbage":
        path.write_bytes(b"not audio at all" * 64)
    else:
        raise ValueError(how)
