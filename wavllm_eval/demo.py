"""The bundled demo suite: a LibriSpeech-layout mini corpus, built at run time, scored for real.

It holds one genuine LibriSpeech test-clean utterance (shipped in the package, CC BY 4.0) and
sentences spoken by espeak-ng in two voices, written as FLAC in the native OpenSLR layout, so the
demo goes through exactly the loader, runner and scorer a real LibriSpeech run uses.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import soundfile as sf
import soxr

from wavllm_eval.errors import InputError
from wavllm_eval.types import SAMPLE_RATE_HZ

REAL_UTTERANCE_ID = "1089-134686-0000"
REAL_TRANSCRIPT = (
    "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS AND BRUISED POTATOES AND FAT MUTTON "
    "PIECES TO BE LADLED OUT IN THICK PEPPERED FLOUR FATTENED SAUCE"
)

DEMO_SENTENCES = (
    "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS",
    "GLUE THE SHEET TO THE DARK BLUE BACKGROUND",
    "IT IS EASY TO TELL THE DEPTH OF A WELL",
    "THESE DAYS A CHICKEN LEG IS A RARE DISH",
    "RICE IS OFTEN SERVED IN ROUND BOWLS",
    "THE JUICE OF LEMONS MAKES FINE PUNCH",
)
"""Harvard sentences (IEEE 1969 recommended practice): public-domain phonetically balanced text."""

# (speaker id, espeak-ng arguments): a US and a British voice, as LibriSpeech has many readers.
DEMO_VOICES = (("9001", ["-v", "en-us", "-s", "140"]), ("9002", ["-v", "en-gb", "-s", "150"]))
DEMO_CHAPTER = "1"


def build_demo_corpus(root: Path) -> Path:
    """Write `root/LibriSpeech/test-clean/...` and return `root` (the --data-dir of the demo)."""
    split = Path(root) / "LibriSpeech" / "test-clean"
    real_dir = split / "1089" / "134686"
    real_dir.mkdir(parents=True, exist_ok=True)
    with files("wavllm_eval.demo_data").joinpath(f"{REAL_UTTERANCE_ID}.flac").open("rb") as src:
        (real_dir / f"{REAL_UTTERANCE_ID}.flac").write_bytes(src.read())
    (real_dir / "1089-134686.trans.txt").write_text(f"{REAL_UTTERANCE_ID} {REAL_TRANSCRIPT}\n", encoding="utf-8")
    for speaker, voice in DEMO_VOICES:
        chapter_dir = split / speaker / DEMO_CHAPTER
        chapter_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for index, sentence in enumerate(DEMO_SENTENCES):
            utt_id = f"{speaker}-{DEMO_CHAPTER}-{index:04d}"
            speak_to_flac(sentence.lower(), voice, chapter_dir / f"{utt_id}.flac")
            lines.append(f"{utt_id} {sentence}\n")
        (chapter_dir / f"{speaker}-{DEMO_CHAPTER}.trans.txt").write_text("".join(lines), encoding="utf-8")
    return Path(root)


def speak_to_flac(text: str, voice_args: list[str], out: Path) -> None:
    """espeak-ng -> 16 kHz mono FLAC (deterministic: the same text gives the same bytes)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise InputError("espeak-ng", "not installed; the demo synthesises its speech with it",
                         "apt-get install espeak-ng (or run ./scripts/demo.sh, which installs it)")
    wav = subprocess.run([exe, *voice_args, "--stdout", text], capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if rate != SAMPLE_RATE_HZ:
        audio = soxr.resample(audio, rate, SAMPLE_RATE_HZ)
    sf.write(str(out), audio, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
