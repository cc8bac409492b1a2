"""Shared fixtures: offline hub, synthetic speech, the shared WavLLM test data, a scripted adapter."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported anywhere
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread, inherited by the CLI processes the tests launch. The tests' tiny models gain
# nothing from a second thread, which only spins at every op's barrier; and one xdist worker per core
# already fills the machine, so torch's threads on top oversubscribe it (one worker's spinning threads
# take the core the other needs): the suite took 115 s instead of 154 s on 2 cores. Set before torch
# is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import io  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "wavllm_test_data"
if not SHARED_DATA.is_dir():  # a clone elsewhere: look beside the checkout, as CI lays it out
    SHARED_DATA = Path(os.environ.get("WAVLLM_TEST_DATA", Path.cwd().parent / "shared" / "wavllm_test_data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/wavllm_test_data (official WavLLM manifests, audio, LLaMA-2 tokenizer); skip if absent."""
    if not (SHARED_DATA / "asr.tsv").is_file():
        pytest.skip(f"shared WavLLM test data not found at {SHARED_DATA}")
    return SHARED_DATA


def speak(text: str, out: Path, voice: str = "en-us", speed_wpm: int = 150, sample_rate_hz: int = 16_000,
          fmt: str = "FLAC") -> Path:
    """espeak-ng speech written at `sample_rate_hz` (deterministic bytes for the same arguments)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is required for the tests: apt-get install espeak-ng")
    wav = subprocess.run([exe, "-v", voice, "-s", str(speed_wpm), "--stdout", text],
                         capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if rate != sample_rate_hz:
        audio = soxr.resample(audio, rate, sample_rate_hz)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), audio, sample_rate_hz, format=fmt, subtype="PCM_16")
    return out


def tone(out: Path, seconds: float = 1.0, freq_hz: float = 440.0, sample_rate_hz: int = 16_000,
         channels: int = 1, fmt: str = "WAV") -> Path:
    """A sine tone (cheap, exact audio for I/O tests)."""
    t = np.arange(int(seconds * sample_rate_hz)) / sample_rate_hz
    signal = 0.3 * np.sin(2 * np.pi * freq_hz * t).astype(np.float32)
    data = np.stack([signal] * channels, axis=1) if channels > 1 else signal
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), data, sample_rate_hz, format=fmt, subtype="PCM_16")
    return out


@pytest.fixture(scope="session")
def speak_fn():
    return speak


@pytest.fixture(scope="session")
def tone_fn():
    return tone
