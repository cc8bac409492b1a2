"""Audio that no model can hear fails with AudioReadError and its reason; odd but valid audio decodes.

AudioReadError is what the runner turns into a `failed` sample; any other exception would be a
crash (or, caught too broadly, a reason-less failure), so each case checks the exception type and
that the message names both the file and the reason.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.bad_inputs import BAD_CLIPS, ODD_BUT_VALID_CLIPS, long_silence_clip, nan_clip, tone, write_audio
from wavllm_eval.audio import audio_duration_s, load_audio
from wavllm_eval.errors import AudioReadError
from wavllm_eval.types import AudioRef

REASONS = {
    "empty": "empty",
    "nan": "NaN or infinite",
    "posinf": "NaN or infinite",
    "neginf": "NaN or infinite",
}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "posinf", "neginf"])
def test_non_finite_samples_raise_with_their_reason(tmp_path, value):
    path = nan_clip(tmp_path, value)
    with pytest.raises(AudioReadError, match=r"100 NaN or infinite samples") as caught:
        load_audio(AudioRef(path))
    assert str(path) in str(caught.value)


def test_non_finite_sample_in_a_segment_is_found_and_outside_it_is_not(tmp_path):
    """Only the requested MuST-C-style segment is checked: a NaN outside it does not fail it."""
    data = tone(3.0)
    data[2 * 16000 + 5] = np.nan
    path = write_audio(tmp_path / "talk.wav", data, subtype="FLOAT")
    clean = load_audio(AudioRef(path, offset_s=0.0, duration_s=1.5))
    assert np.isfinite(clean).all() and clean.shape == (24000,)
    with pytest.raises(AudioReadError, match="1 NaN or infinite"):
        load_audio(AudioRef(path, offset_s=1.5, duration_s=1.0))


def test_a_nan_in_one_channel_of_stereo_is_caught_before_the_downmix(tmp_path):
    data = tone(0.5, channels=2)
    data[10, 1] = np.nan
    path = write_audio(tmp_path / "stereo_nan.wav", data, subtype="FLOAT")
    with pytest.raises(AudioReadError, match="NaN"):
        load_audio(AudioRef(path))


@pytest.mark.parametrize("case", sorted(BAD_CLIPS))
def test_bad_clip_raises_audio_read_error_naming_the_file(tmp_path, case):
    path = BAD_CLIPS[case](tmp_path)
    with pytest.raises(AudioReadError) as caught:
        load_audio(AudioRef(path))
    message = str(caught.value)
    assert path.name in message
    assert REASONS.get(case, "") in message
    assert "\n" not in message


@pytest.mark.parametrize("case", sorted(set(BAD_CLIPS) - {"nan", "posinf", "neginf"}))
def test_bad_clip_header_raises_audio_read_error_or_reads(tmp_path, case):
    """The duration probe never raises anything but AudioReadError: an empty clip's header says
    0 s, a truncated FLAC keeps its header (1 s) and fails only when decoded."""
    path = BAD_CLIPS[case](tmp_path)
    try:
        duration = audio_duration_s(path)
    except AudioReadError as exc:
        assert path.name in str(exc)
    else:
        assert duration == {"empty": 0.0, "truncated": 1.0}[case]


@pytest.mark.parametrize("case", sorted(ODD_BUT_VALID_CLIPS))
def test_odd_but_valid_clip_decodes_to_16k_mono_float32(tmp_path, case):
    path = ODD_BUT_VALID_CLIPS[case](tmp_path)
    audio = load_audio(AudioRef(path))
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
    expected = 160 if case == "tiny" else 8000
    assert abs(len(audio) - expected) <= 2
    assert audio_duration_s(path) == pytest.approx(expected / 16000, abs=1e-3)
    if case != "tiny":  # the tone survives resampling, downmix and 8-bit quantisation
        reference = tone(0.5)
        assert np.abs(audio[200:-200] - reference[200:-200]).max() < (0.02 if case == "8bit" else 2e-3)


def test_ten_minute_clip_header_is_read_without_decoding(tmp_path):
    path = long_silence_clip(tmp_path)
    assert audio_duration_s(path) == pytest.approx(600.0)
    segment = load_audio(AudioRef(path, offset_s=599.0, duration_s=1.0))
    assert segment.shape == (16000,) and np.abs(segment).max() < 1e-2
