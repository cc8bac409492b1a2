"""The bad-input corpus: writers for broken audio, manifests and layouts, and a console-script runner.

Every writer takes a folder (a pytest tmp dir) and returns the path it made, so a test builds only
the cases it checks. Audio is tones or silence (cheap, exact); manifests follow the official WavLLM
TSV (microsoft/SpeechT5 WavLLM/wavllm/test_data: id, audio, n_frames, prompt, tgt_text, with_speech).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE_HZ = 16_000
MANIFEST_HEADER = ("id", "audio", "n_frames", "prompt", "tgt_text", "with_speech")
ASR_PROMPT = "Based on the attached audio, generate a comprehensive text transcription of the spoken content."
CONSOLE_SCRIPT = Path(sys.executable).with_name("wavllm-eval")  # .venv/bin/wavllm-eval


# --- running the installed console script ------------------------------------------------------------
@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip().lower().startswith("error:")]


def run_cli(args: Sequence[str], cwd: Path | None = None, timeout_s: float = 120.0,
            env: dict[str, str] | None = None) -> CliResult:
    """`.venv/bin/wavllm-eval ARGS` in a subprocess, offline, with wide unwrapped output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "400",
                **(env or {})}
    done = subprocess.run([str(CONSOLE_SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout_s, env=full_env)
    def tidy(text: str) -> str:  # rich pads log lines to the console width
        return "\n".join(line.rstrip() for line in text.splitlines())

    return CliResult(done.returncode, tidy(done.stdout), tidy(done.stderr))


def assert_one_error_line(result: CliResult, *must_contain: str) -> str:
    """Exit 2, no traceback, exactly one `error:` line on stderr, naming what it must name."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.error_lines
    assert len(lines) == 1, result.stderr[-3000:]
    for text in must_contain:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def run_args(task: str, data: Path, out: Path, *extra: str, model: str = "pocketsphinx") -> list[str]:
    return ["run", "--tasks", task, "--model", model, "--data", f"{task}={data}", "--output-dir", str(out),
            "--batch-size", "1", "--no-progress", *extra]


def read_samples(out: Path, task: str, model: str = "pocketsphinx") -> list[dict]:
    path = out / model / "samples" / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_results(out: Path, model: str = "pocketsphinx") -> dict:
    return json.loads((out / model / "results.json").read_text(encoding="utf-8"))


# --- audio -----------------------------------------------------------------------------------------
def tone(seconds: float, rate: int = SAMPLE_RATE_HZ, channels: int = 1, freq_hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    signal = (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return np.stack([signal] * channels, axis=1) if channels > 1 else signal


def write_audio(path: Path, data: np.ndarray, rate: int = SAMPLE_RATE_HZ, subtype: str | None = "PCM_16",
                fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype, format=fmt)
    return path


def good_clip(folder: Path, name: str = "good.wav", seconds: float = 0.5) -> Path:
    return write_audio(folder / name, tone(seconds))


def empty_clip(folder: Path) -> Path:
    return write_audio(folder / "empty.wav", np.zeros(0, dtype=np.float32))


def zero_byte_clip(folder: Path) -> Path:
    path = folder / "zero.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated_clip(folder: Path) -> Path:
    """A FLAC cut in the middle of its frames (a broken download)."""
    whole = write_audio(folder / "whole.flac", tone(1.0), fmt="FLAC")
    data = whole.read_bytes()
    path = folder / "truncated.flac"
    path.write_bytes(data[: len(data) // 3])
    whole.unlink()
    return path


def truncated_header_clip(folder: Path) -> Path:
    """A WAV holding only the first 20 bytes of its header."""
    whole = write_audio(folder / "whole.wav", tone(0.5))
    path = folder / "header_only.wav"
    path.write_bytes(whole.read_bytes()[:20])
    whole.unlink()
    return path


def corrupt_clip(folder: Path) -> Path:
    path = folder / "corrupt.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    return path


def nan_clip(folder: Path, value: float = float("nan")) -> Path:
    """A float WAV whose samples hold NaN (or ±inf): decodes fine, poisons every feature."""
    data = tone(0.5)
    data[100:200] = value
    name = {"nan": "nan", "inf": "posinf", "-inf": "neginf"}[str(value)]
    return write_audio(folder / f"{name}.wav", data, subtype="FLOAT")


def stereo_clip(folder: Path) -> Path:
    return write_audio(folder / "stereo.wav", tone(0.5, channels=2))


def rate_clip(folder: Path, rate: int) -> Path:
    return write_audio(folder / f"rate{rate}.wav", tone(0.5, rate=rate), rate=rate)


def depth_clip(folder: Path, subtype: str) -> Path:
    """8-bit (PCM_U8 in WAV) or 24-bit PCM."""
    return write_audio(folder / f"{subtype.lower()}.wav", tone(0.5), subtype=subtype)


def tiny_clip(folder: Path) -> Path:
    """0.01 s: 160 samples, shorter than one 25 ms analysis window."""
    return write_audio(folder / "tiny.wav", tone(0.01))


def long_silence_clip(folder: Path, seconds: float = 600.0) -> Path:
    """Ten minutes of silence at 8 kHz, 8-bit: ~4.8 MB, written in a blink."""
    path = folder / "ten_minutes.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(path), "w", samplerate=8000, channels=1, subtype="PCM_U8") as f:
        block = np.zeros(8000 * 60, dtype=np.float32)
        for _ in range(int(seconds // 60)):
            f.write(block)
    return path


def symlink_loop(folder: Path) -> Path:
    """a.flac -> b.flac -> a.flac."""
    folder.mkdir(parents=True, exist_ok=True)
    a, b = folder / "loop_a.flac", folder / "loop_b.flac"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def directory_named_flac(folder: Path) -> Path:
    path = folder / "folder.flac"
    path.mkdir(parents=True)
    return path


BAD_CLIPS = {
    "empty": empty_clip,
    "zero_bytes": zero_byte_clip,
    "truncated": truncated_clip,
    "header_only": truncated_header_clip,
    "corrupt": corrupt_clip,
    "nan": nan_clip,
    "posinf": lambda folder: nan_clip(folder, float("inf")),
    "neginf": lambda folder: nan_clip(folder, float("-inf")),
    "symlink_loop": symlink_loop,
    "directory": directory_named_flac,
    "missing": lambda folder: folder / "never_written.flac",
}
"""Clips no model can hear: each must come back as a `failed` sample naming its reason."""

ODD_BUT_VALID_CLIPS = {
    "stereo": stereo_clip,
    "8khz": lambda folder: rate_clip(folder, 8000),
    "44k1": lambda folder: rate_clip(folder, 44100),
    "48khz": lambda folder: rate_clip(folder, 48000),
    "8bit": lambda folder: depth_clip(folder, "PCM_U8"),
    "24bit": lambda folder: depth_clip(folder, "PCM_24"),
    "tiny": tiny_clip,
}
"""Unusual but decodable clips: each must be scored (`ok`), resampled and downmixed to 16 kHz mono."""


# --- WavLLM manifests ------------------------------------------------------------------------------
def manifest_text(rows: Sequence[Sequence[str]], header: Sequence[str] = MANIFEST_HEADER) -> str:
    lines = ["\t".join(header)] if header else []
    lines += ["\t".join(row) for row in rows]
    return "\n".join(lines) + "\n"


def manifest_row(sample_id: str, audio: Path | str, target: str = "hello world", prompt: str = ASR_PROMPT,
                 n_frames: str = "8000") -> tuple[str, ...]:
    return (sample_id, str(audio), n_frames, prompt, target, "True")


def write_manifest(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode(encoding))
    return path


def good_manifest(folder: Path, n: int = 2, name: str = "asr.tsv") -> Path:
    rows = [manifest_row(f"utt{i}", good_clip(folder / "audio", f"utt{i}.wav", 0.3 + 0.1 * i)) for i in range(n)]
    return write_manifest(folder / name, manifest_text(rows))


# --- JSONL -----------------------------------------------------------------------------------------
def record_line(sample_id: str, prediction: str = "hello world", reference: str = "hello world",
                status: str = "ok") -> str:
    return json.dumps({"id": sample_id, "prediction": prediction, "reference": reference, "status": status},
                      ensure_ascii=False)


def torn_utf8_line(text: str = "grüße an die straße") -> bytes:
    """A JSONL line cut inside a two-byte UTF-8 character (a kill mid-write), no trailing newline."""
    data = record_line("torn", prediction=text).encode("utf-8")
    cut = data.index("ü".encode()) + 1
    return data[:cut]
