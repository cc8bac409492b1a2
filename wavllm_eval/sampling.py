"""Sampling that is reproducible per sample and batched: inverse-CDF draws with per-row, per-step seeds.

Row i's next token is the first whose cumulative probability under softmax(logits / T) exceeds
u * total, where u in [0, 1) comes from a hash of (sample seed, step): an exact draw from the
tempered softmax. A row's tokens depend on nothing but its own logits and seed, so batch 1, 3 or 8,
any order, any resume point, give the same output, as far as the logits are the same: a batched
matmul rounds differently from a batch of one (~1e-6 of a logit in fp32), so a uniform that falls
that close to a CDF boundary can draw the neighbouring token (README: batching and exactness;
tests/test_wavllm.py finds one such draw, 2e-9 from its boundary). The processor runs under greedy search
(`do_sample=False`): it leaves 0 on the drawn token and -inf elsewhere, and the model's own batched
`generate` does the rest.

Why not Gumbel-max (our v1): it needs a vocabulary of float64 noise per row and step, ~0.5-1 ms of
single-threaded CPU work per row (at batch 32 on a GPU, longer than a 7B decode step). One uniform
per row costs nothing, and the softmax and cumulative sum run once over the whole batch
(benchmarks/bench_performance.py prints both side by side: 7.5x cheaper a step at batch 8).

Top-k and top-p filtering, when asked for, are applied per row first, as transformers' warpers do.
Probabilities are summed in float64 on the CPU (a fixed algorithm on every device, row by row).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SAMPLER_VERSION = "inverse-cdf/v1"  # recorded in results: a change of scheme changes sampled outputs


def step_uniform(sample_seed: int, step: int) -> float:
    """A uniform draw in [0, 1) with 53 random bits, a function of (seed, step) alone."""
    digest = hashlib.sha256(f"{sample_seed}\x1f{step}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) * 2.0 ** -53


def filtered_logits(scores, temperature: float, top_k: int, top_p: float):
    """float32 logits / T with the tokens outside top-k / top-p set to -inf."""
    import torch

    logits = scores.float() / max(temperature, 1e-6)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def draw_tokens(logits, uniforms: Sequence[float]):
    """(batch,) token ids: row i's inverse-CDF draw at `uniforms[i]` (float64, CPU)."""
    import torch

    cdf = torch.softmax(logits.detach().to("cpu", torch.float64), dim=-1).cumsum(dim=-1)
    targets = torch.tensor(uniforms, dtype=torch.float64)[:, None] * cdf[:, -1:]
    # right=True: the first token whose cumulative sum exceeds the target, never a zero-probability one
    return torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[-1] - 1)[:, 0]


def make_sampler(seeds: Sequence[int], temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 prompt_length: int = 0):
    """A transformers LogitsProcessor sampling row i with seed `seeds[i]` (see the module docstring).
    `prompt_length`: tokens of `input_ids` that belong to the prompt (0 when generating from
    `inputs_embeds`), so the step number counts generated tokens only."""
    import torch
    from transformers import LogitsProcessor

    class SeededInverseCDFSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - prompt_length
            tokens = draw_tokens(filtered_logits(scores, temperature, top_k, top_p),
                                 [step_uniform(int(seed), step) for seed in seeds])
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, tokens[:, None].to(scores.device), 0.0)

    return SeededInverseCDFSampler()
