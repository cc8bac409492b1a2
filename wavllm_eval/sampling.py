"""Sampling that is reproducible per sample and batched: Gumbel-max with per-row, per-step seeds.

Drawing the next token as argmax(log softmax(logits / T) + g), g i.i.d. standard Gumbel, samples
exactly from softmax(logits / T) (the Gumbel-max trick). If each row's noise comes from its own
generator seeded by (sample seed, step), a row's tokens depend on nothing but its own prompt and
seed: batch 1, 3 or 8, any order, any resume point, give the same output. The processor runs
under greedy search (`do_sample=False`), so the model's own batched `generate` does the rest.

Top-k and top-p filtering, when asked for, are applied per row before the noise, as transformers'
warpers do. The noise is drawn on the CPU (a fixed algorithm across devices) and moved to the logits'
device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

GUMBEL_VERSION = "gumbel-max/v1"  # recorded in results: a change of scheme changes sampled outputs


def step_seed(sample_seed: int, step: int) -> int:
    digest = hashlib.sha256(f"{sample_seed}\x1f{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def gumbel_noise(sample_seed: int, step: int, size: int):
    """Standard Gumbel noise of one row at one step (float32, CPU)."""
    import torch

    generator = torch.Generator().manual_seed(step_seed(sample_seed, step))
    uniform = torch.rand(size, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    return (-torch.log(-torch.log(uniform))).float()


def make_sampler(seeds: Sequence[int], temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 prompt_length: int = 0):
    """A transformers LogitsProcessor sampling row i with seed `seeds[i]` (see the module docstring).
    `prompt_length`: tokens of `input_ids` that belong to the prompt (0 when generating from
    `inputs_embeds`), so the step number counts generated tokens only."""
    import torch
    from transformers import LogitsProcessor

    class SeededGumbelSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - prompt_length
            logits = scores.float() / max(temperature, 1e-6)
            if top_k and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p < 1.0:
                ordered, order = torch.sort(logits, descending=True, dim=-1)
                cumulative = ordered.softmax(-1).cumsum(-1)
                drop = cumulative - ordered.softmax(-1) > top_p  # keep the smallest set reaching top_p
                logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
            logprobs = torch.log_softmax(logits, dim=-1)
            noise = torch.stack([gumbel_noise(int(seed), step, logprobs.shape[-1]) for seed in seeds])
            return logprobs + noise.to(logprobs.device)

    return SeededGumbelSampler()
