"""The seeded inverse-CDF sampler draws from softmax(logits / T) and depends only on (seed, step)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from wavllm_eval.sampling import draw_tokens, make_sampler, step_uniform


def drawn(scores: torch.Tensor) -> list[int]:
    """The token the greedy search will pick: the processor leaves 0 there and -inf everywhere else."""
    assert torch.all((scores == 0) | torch.isneginf(scores))
    assert torch.all((scores == 0).sum(-1) == 1)
    return scores.argmax(-1).tolist()


def test_draws_follow_the_tempered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    temperature = 0.5
    expected = torch.softmax(logits[0] / temperature, -1).numpy()
    counts = np.zeros(4)
    for seed in range(4000):
        counts[drawn(make_sampler([seed], temperature)(torch.zeros(1, 0, dtype=torch.long), logits.clone()))[0]] += 1
    observed = counts / counts.sum()
    # 4000 draws: each frequency within 4 standard errors of its probability
    stderr = np.sqrt(expected * (1 - expected) / 4000)
    assert np.all(np.abs(observed - expected) < 4 * stderr + 1e-3), (observed, expected)


def test_draws_equal_an_independent_inverse_cdf():
    """numpy float64 softmax and cumulative sum, the uniform from the documented hash: the same tokens."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (6, 200)).astype(np.float32)
    seeds, step, temperature = [11, 12, 13, 14, 15, 16], 5, 0.5
    expected = []
    for row, seed in zip(logits, seeds, strict=True):
        digest = hashlib.sha256(f"{seed}\x1f{step}".encode()).digest()
        u = (int.from_bytes(digest[:8], "big") >> 11) / 2 ** 53
        z = row.astype(np.float64) / temperature
        p = np.exp(z - z.max())
        cdf = np.cumsum(p / p.sum())
        expected.append(int(np.searchsorted(cdf, u * cdf[-1], side="right")))
    scores = make_sampler(seeds, temperature)(torch.zeros(6, step, dtype=torch.long), torch.from_numpy(logits))
    assert drawn(scores) == expected
    assert len(set(expected)) > 1


def test_rows_use_their_own_seed_and_step():
    logits = torch.randn(3, 50)
    step3 = torch.zeros(3, 3, dtype=torch.long)
    batch = make_sampler([7, 8, 9])(step3, logits.clone())
    alone = torch.cat([make_sampler([s])(step3[:1], logits[i:i + 1].clone()) for i, s in enumerate([7, 8, 9])])
    assert torch.equal(batch, alone)
    assert step_uniform(7, 3) != step_uniform(7, 4)  # steps differ
    assert step_uniform(7, 3) != step_uniform(8, 3)  # seeds differ
    assert step_uniform(7, 3) == step_uniform(7, 3)
    assert 0.0 <= step_uniform(7, 3) < 1.0
    # the prompt's tokens do not count as steps
    assert torch.equal(make_sampler([7], prompt_length=4)(torch.zeros(1, 7, dtype=torch.long), logits[:1].clone()),
                       make_sampler([7])(step3[:1], logits[:1].clone()))


def test_zero_probability_tokens_are_never_drawn():
    """Banned tokens (bad_words_ids, top-k) get -inf before the sampler: no uniform, not even 0 or
    the largest below 1, reaches them."""
    inf = float("-inf")
    logits = torch.tensor([[inf, 0.0, inf, 0.0, inf], [inf, inf, 1.0, inf, inf]])
    for u in (0.0, 0.5, 1 - 2 ** -53):
        tokens = draw_tokens(logits, [u, u]).tolist()
        assert tokens[0] in (1, 3) and tokens[1] == 2
    assert draw_tokens(logits[:1], [0.0]).tolist() == [1]
    assert draw_tokens(logits[:1], [1 - 2 ** -53]).tolist() == [3]


def test_top_k_keeps_only_the_k_best():
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    picks = {drawn(make_sampler([s], 1.0, top_k=2)(torch.zeros(1, 0, dtype=torch.long), logits.clone()))[0]
             for s in range(300)}
    assert picks == {0, 1}


def test_top_p_keeps_the_smallest_set_reaching_p():
    # probabilities ~ 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps the first two
    logits = torch.log(torch.tensor([[0.64, 0.24, 0.09, 0.03]]))
    picks = {drawn(make_sampler([s], 1.0, top_p=0.8)(torch.zeros(1, 0, dtype=torch.long), logits.clone()))[0]
             for s in range(300)}
    assert picks == {0, 1}


def test_the_scheme_is_part_of_the_sampling_model_config():
    """results.json's model.config (and so config_hash) names the scheme: runs sampled under another
    scheme are never resumed into, or compared as, the same configuration."""
    from wavllm_eval.model_zoo.wavllm import WavLLMAdapter, WavLLMGreedyAdapter

    from wavllm_eval.adapter import LoadOptions, model_config

    assert model_config(WavLLMAdapter, "wavllm", None, LoadOptions())["decoding"]["sampler"] == "inverse-cdf/v1"
    assert "sampler" not in model_config(WavLLMGreedyAdapter, "wavllm-greedy", None, LoadOptions())["decoding"]


def test_batched_sampling_refuses_beam_search():
    """One finite score per row would make every beam the same: refused with the fix named."""
    import pytest

    from wavllm_eval.adapter import DecodingConfig, SpeechLLMAdapter

    class Beamed(SpeechLLMAdapter):
        decoding = DecodingConfig(do_sample=True, temperature=0.5, num_beams=4)
        batched_sampling = True

    with pytest.raises(ValueError, match="num_beams=4"):
        Beamed().sampler([1, 2])
    Beamed.decoding = DecodingConfig(do_sample=True, temperature=0.5)
    assert Beamed().sampler([1, 2]) is not None
