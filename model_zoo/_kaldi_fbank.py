"""Kaldi-compatible log-mel filterbank in plain torch: the front end of BEATs.

BEATs computes `torchaudio.compliance.kaldi.fbank(wave * 2**15, num_mel_bins=128, sample_frequency=16000,
frame_length=25, frame_shift=10)` (microsoft/unilm `beats/BEATs.py::preprocess`). torchaudio does not
import beside this project's torch, so this module re-states that function's definition for the
settings BEATs uses, all of them torchaudio's defaults otherwise:

- frames of 400 samples every 160 (`snip_edges=True`: only whole frames, 1 + (n - 400) // 160 of them);
- no dither (torchaudio's default `dither=0.0`), DC offset removed per frame;
- pre-emphasis 0.97, the first sample of a frame repeated as its predecessor (torchaudio's replicate pad);
- the "povey" window, (0.5 - 0.5 cos(2 pi n / (N - 1)))**0.85;
- zero-padded to 512 samples, power spectrum |rfft|**2;
- 128 triangular mel filters on Kaldi's mel scale 1127 ln(1 + f / 700), 20 Hz to Nyquist, triangles in
  the mel domain, the Nyquist bin weighted zero;
- natural log floored at float32 epsilon.

Computed in float32 like torchaudio (the released model was trained on those features).
"""

from __future__ import annotations

import math

import torch

SAMPLE_RATE_HZ = 16_000
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
NUM_MEL_BINS = 128
PREEMPHASIS = 0.97
LOW_FREQ_HZ = 20.0
POVEY_POWER = 0.85


def mel_scale(freq_hz: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale (natural log, 1127 coefficient)."""
    if isinstance(freq_hz, torch.Tensor):
        return 1127.0 * torch.log(1.0 + freq_hz / 700.0)
    return 1127.0 * math.log(1.0 + freq_hz / 700.0)


def mel_banks(num_bins: int, padded_window: int, sample_rate_hz: float, low_freq_hz: float = LOW_FREQ_HZ,
              high_freq_hz: float = 0.0) -> torch.Tensor:
    """(num_bins, padded_window // 2 + 1) triangular filters; `high_freq_hz <= 0` means Nyquist + it."""
    nyquist = 0.5 * sample_rate_hz
    high = nyquist + high_freq_hz if high_freq_hz <= 0.0 else high_freq_hz
    num_fft_bins = padded_window // 2
    fft_bin_width = sample_rate_hz / padded_window
    mel_low, mel_high = mel_scale(low_freq_hz), mel_scale(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left = mel_low + index * delta
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    mel = mel_scale(fft_bin_width * torch.arange(num_fft_bins, dtype=torch.float32)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin gets weight zero


def povey_window(length: int) -> torch.Tensor:
    n = torch.arange(length, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (length - 1))).pow(POVEY_POWER).to(torch.float32)


def fbank(waveform: torch.Tensor, num_mel_bins: int = NUM_MEL_BINS, sample_rate_hz: int = SAMPLE_RATE_HZ,
          frame_length_ms: float = FRAME_LENGTH_MS, frame_shift_ms: float = FRAME_SHIFT_MS) -> torch.Tensor:
    """(num_frames, num_mel_bins) log-mel energies of a 1-D waveform (already scaled, e.g. by 2**15)."""
    if waveform.dim() != 1:
        raise ValueError(f"fbank expects a 1-D waveform, got shape {tuple(waveform.shape)}")
    wave = waveform.to(torch.float32)
    frame_length = int(sample_rate_hz * frame_length_ms * 0.001)
    frame_shift = int(sample_rate_hz * frame_shift_ms * 0.001)
    if wave.numel() < frame_length:
        return wave.new_zeros(0, num_mel_bins)
    frames = wave.unfold(0, frame_length, frame_shift)  # snip_edges: whole frames only
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - PREEMPHASIS * previous
    frames = frames * povey_window(frame_length).to(frames.device)
    padded = 1 << (frame_length - 1).bit_length()  # round_to_power_of_two
    frames = torch.nn.functional.pad(frames, (0, padded - frame_length))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = mel_banks(num_mel_bins, padded, sample_rate_hz).to(frames.device)
    energies = power @ banks.T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()
