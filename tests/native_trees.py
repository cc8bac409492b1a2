"""A tiny generated tree of each task's native layout (or its official manifest format), for the
registry-wide contract tests. A registered task with no entry here fails those tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import tone
from tests.librispeech_tree import build_tree


def _librispeech(split: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        build_tree(root, split=split)
        return root / "LibriSpeech" / split

    return build


def _family(name: str) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        from tests import test_task_families as families

        writers = {"covost": lambda: families.write_covost(root, tone) / "covost2/covost_v2.en_de.test.tsv",
                   "mustc": lambda: families.write_mustc(root)[0],
                   "voxceleb": lambda: families.write_voxceleb(root, tone) / "veri_test2.txt",
                   "iemocap": lambda: families.write_iemocap(root, tone)}
        return writers[name]()

    return build


def official_manifest(rows: list[dict[str, str]], extra_columns: tuple[str, ...] = ()) -> Callable[[Path], Path]:
    """An official-format WavLLM TSV (id audio n_frames prompt tgt_text with_speech [+ extra]) with tone clips."""

    def build(root: Path) -> Path:
        columns = ["id", "audio", "n_frames", "prompt", "tgt_text", "with_speech", *extra_columns]
        lines = ["\t".join(columns)]
        for i, row in enumerate(rows):
            clip = tone(root / "audio" / f"{i}.wav", seconds=0.5 + 0.25 * i, freq_hz=220 + 110 * i)
            values = {"id": str(i), "audio": f"audio/{clip.name}", "n_frames": "0", "with_speech": "True", **row}
            lines.append("\t".join(values.get(c, "") for c in columns))
        path = root / "manifest.tsv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return build


TREES: dict[str, Callable[[Path], Path]] = {
    "librispeech-test-clean": _librispeech("test-clean"),
    "librispeech-test-other": _librispeech("test-other"),
    "covost2-en-de": _family("covost"),
    "mustc-en-de": _family("mustc"),
    "voxceleb1-sv": _family("voxceleb"),
    "iemocap-er": _family("iemocap"),
    "gaokao-sqa": official_manifest([
        {"prompt": "What does the man want? A. Tea; B. Coffee; C. Water.", "tgt_text": "B"},
        {"prompt": "Where are they? A. At home. B. In a shop. C. At school.", "tgt_text": "C"}]),
    "ii-task": official_manifest([
        {"prompt": "To begin, transcribe the audio. Subsequently, what is the capital of France? "
                   "Lastly, continue the story in one sentence.",
         "tgt_text": "hello world Paris The end."}]),
    "cot": official_manifest([
        {"prompt": "First transcribe the audio, then summarize it, and finally translate the summary into German.",
         "tgt_text": "Ein kurzer Text über das Wetter."}]),
    "cot-story": official_manifest([
        {"prompt": "First transcribe the audio, then summarize it, and finally translate the summary into German.",
         "tgt_text": "Eine Geschichte über einen Hund.", "orig_story": "once upon a time a dog ran home"}],
        extra_columns=("orig_story",)),
    "cot-oneshot": official_manifest([
        {"prompt": "First transcribe the audio, then summarize it, and finally translate the summary into German.",
         "tgt_text": "Ein kurzer Text über das Wetter."}]),
    "sqqa": official_manifest([
        {"prompt": "What is the speaker talking about?", "tgt_text": "The weather tomorrow."}]),
}
