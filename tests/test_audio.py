"""Audio I/O: formats, downmix, resampling, seeking slices, and clear failures."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from wavllm_eval.audio import audio_duration_s, load_audio
from wavllm_eval.errors import AudioReadError
from wavllm_eval.types import AudioRef


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
def test_formats_decode_to_16k_mono_float32(tmp_path, tone_fn, fmt):
    path = tone_fn(tmp_path / f"t.{fmt.lower()}", seconds=1.0, fmt=fmt) if fmt != "MP3" else None
    if fmt == "MP3":
        t = np.arange(16000) / 16000
        path = tmp_path / "t.mp3"
        sf.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="MP3")
    audio = load_audio(AudioRef(path))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1200  # MP3 adds encoder padding
    assert audio_duration_s(path) == pytest.approx(1.0, abs=0.08)


def test_stereo_44k_is_downmixed_and_resampled(tmp_path, tone_fn):
    path = tone_fn(tmp_path / "s.wav", seconds=2.0, sample_rate_hz=44100, channels=2)
    audio = load_audio(AudioRef(path))
    assert audio.shape == (32000,)
    reference = load_audio(AudioRef(tone_fn(tmp_path / "m.wav", seconds=2.0)))
    # same 440 Hz tone: resampled stereo mix matches the native 16 kHz mono rendering
    assert np.abs(audio[1000:-1000] - reference[1000:-1000]).max() < 2e-3


def test_slice_reads_exactly_the_segment(tmp_path):
    rate = 16000
    signal = (np.arange(rate * 5) % 1000 / 1000 - 0.5).astype(np.float32)
    path = tmp_path / "talk.wav"
    sf.write(str(path), signal, rate, subtype="FLOAT")
    segment = load_audio(AudioRef(path, offset_s=1.25, duration_s=2.0))
    np.testing.assert_array_equal(segment, signal[20000:52000])
    tail = load_audio(AudioRef(path, offset_s=4.5))
    np.testing.assert_array_equal(tail, signal[72000:])


def test_missing_empty_and_corrupt_files_raise_audio_read_error(tmp_path):
    with pytest.raises(AudioReadError, match="not found"):
        load_audio(AudioRef(tmp_path / "nope.flac"))
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioReadError, match="empty"):
        load_audio(AudioRef(empty))
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC this is not really flac" * 10)
    with pytest.raises(AudioReadError, match="corrupt.flac"):
        load_audio(AudioRef(corrupt))
    with pytest.raises(AudioReadError, match="past the end"):
        load_audio(AudioRef(_one_second(tmp_path), offset_s=5.0))


def _one_second(tmp_path):
    path = tmp_path / "one.wav"
    sf.write(str(path), np.zeros(16000, dtype=np.float32), 16000)
    return path


def test_segment_bounds_truncate_like_fairseq(tmp_path):
    """fairseq's MuST-C cut: frame_offset = int(offset * sr), num_frames = int(duration * sr)
    (datasets.md §4); 12.609999 s * 16 kHz = 201759.98 starts at sample 201759, not 201760."""
    path = tmp_path / "ramp.wav"
    sf.write(str(path), np.arange(16_000 * 14, dtype=np.float32), 16_000, subtype="FLOAT")
    segment = load_audio(AudioRef(path, offset_s=12.609999, duration_s=0.0999999))
    assert segment[0] == 201_759 and len(segment) == int(0.0999999 * 16_000) == 1599
