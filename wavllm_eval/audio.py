"""Audio I/O with soundfile + soxr (torchaudio does not import beside the pinned torch).

Every clip reaches a model as 16 kHz mono float32; segments are read by seeking, so a MuST-C
sentence never costs a whole talk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from wavllm_eval.errors import AudioReadError
from wavllm_eval.types import SAMPLE_RATE_HZ, AudioRef


def audio_duration_s(path: Path) -> float:
    """Duration from the file header alone (never trust a manifest's n_frames)."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/OSError
        raise AudioReadError(f"cannot read audio header of {path}: {_reason(exc)}") from exc
    return info.frames / info.samplerate if info.samplerate else 0.0


def load_audio(ref: AudioRef, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Decode `ref` to mono float32 at `sample_rate_hz`, reading only the requested segment."""
    path = Path(ref.path)
    if not path.is_file():
        raise AudioReadError(f"audio file not found: {path}")
    try:
        with sf.SoundFile(str(path)) as f:
            native_rate = f.samplerate
            # truncation, as fairseq's MuST-C recipe cuts (frame_offset = int(offset * sr)): a segment
            # starts and ends on the sample the published numbers used
            start = int(ref.offset_s * native_rate)
            if start > f.frames:
                raise AudioReadError(
                    f"offset {ref.offset_s:.3f} s is past the end of {path} ({f.frames / native_rate:.3f} s)"
                )
            n_frames = -1 if ref.duration_s is None else int(ref.duration_s * native_rate)
            if start:
                f.seek(start)
            data = f.read(frames=n_frames, dtype="float32", always_2d=True)
    except AudioReadError:
        raise
    except Exception as exc:
        raise AudioReadError(f"cannot decode audio {path}: {_reason(exc)}") from exc
    if data.shape[0] == 0:
        raise AudioReadError(f"audio is empty: {path}")
    if not np.isfinite(data).all():
        # Float WAVs can hold NaN/inf; one such sample turns every log-mel frame and logit into NaN.
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioReadError(f"audio holds {bad} NaN or infinite samples: {path}")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if native_rate != sample_rate_hz:
        mono = soxr.resample(mono, native_rate, sample_rate_hz, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
