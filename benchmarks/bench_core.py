"""Core speed ratios, measured side by side in one run (no timed assertions anywhere in tests).

1. Bootstrap CI from per-sample rows vs re-scoring every resample with jiwer.
2. A 5 s MuST-C-style segment read by seeking vs decoding the whole 10-minute talk and slicing.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf

from wavllm_eval.audio import load_audio
from wavllm_eval.metrics.base import bootstrap_indices
from wavllm_eval.metrics.wer import WordErrorRate
from wavllm_eval.text import RAW
from wavllm_eval.types import AudioRef, Record


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of `repeat` calls (the best: other load on the machine only ever adds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_bootstrap(n_utts: int = 2620, n_resamples: int = 200) -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(500)]
    refs = [" ".join(rng.choice(vocab, rng.integers(5, 30))) for _ in range(n_utts)]
    hyps = [" ".join(w if rng.random() > 0.1 else "x" for w in r.split()) for r in refs]
    records = [Record(str(i), h, r, "ok") for i, (r, h) in enumerate(zip(refs, hyps, strict=True))]
    metric = WordErrorRate(RAW)
    metric.update(records)
    indices = bootstrap_indices(n_utts, n_resamples, 1)

    def naive() -> None:
        for idx in indices[:20]:  # 20 resamples, scaled up below
            jiwer.wer([refs[i] for i in idx], [hyps[i] for i in idx])

    rows_s = timed(lambda: metric.resampled_values(indices), repeat=3)
    naive_s = timed(naive, repeat=1) * n_resamples / 20
    print(f"bootstrap {n_resamples}x over {n_utts} utterances: rows {rows_s * 1e3:.1f} ms, "
          f"re-scoring {naive_s:.2f} s  -> {naive_s / rows_s:,.0f}x faster from rows")


def bench_slice(talk_s: int = 600, segment_s: float = 5.0) -> None:
    rate = 16_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "talk.flac"
        sf.write(str(path), (np.random.default_rng(0).standard_normal(talk_s * rate) * 0.1).astype(np.float32),
                 rate, format="FLAC")
        offset = talk_s / 2
        seek_s = timed(lambda: load_audio(AudioRef(path, offset_s=offset, duration_s=segment_s)), repeat=5)
        whole_s = timed(lambda: load_audio(AudioRef(path))[int(offset * rate): int((offset + segment_s) * rate)],
                        repeat=3)
        print(f"{segment_s:g} s segment of a {talk_s} s FLAC talk: seek {seek_s * 1e3:.1f} ms, "
              f"whole file {whole_s * 1e3:.0f} ms  -> {whole_s / seek_s:,.0f}x faster by seeking")


if __name__ == "__main__":
    bench_bootstrap()
    bench_slice()
