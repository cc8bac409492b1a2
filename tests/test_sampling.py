"""The seeded Gumbel-max sampler draws from softmax(logits / T) and depends only on (seed, step)."""

from __future__ import annotations

import numpy as np
import torch

from wavllm_eval.sampling import gumbel_noise, make_sampler


def test_draws_follow_the_tempered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    temperature = 0.5
    expected = torch.softmax(logits[0] / temperature, -1).numpy()
    counts = np.zeros(4)
    for seed in range(4000):
        scores = make_sampler([seed], temperature)(torch.zeros(1, 0, dtype=torch.long), logits.clone())
        counts[int(scores.argmax())] += 1
    observed = counts / counts.sum()
    # 4000 draws: each frequency within 4 standard errors of its probability
    stderr = np.sqrt(expected * (1 - expected) / 4000)
    assert np.all(np.abs(observed - expected) < 4 * stderr + 1e-3), (observed, expected)


def test_rows_use_their_own_seed_and_step():
    logits = torch.randn(3, 50)
    step3 = torch.zeros(3, 3, dtype=torch.long)
    batch = make_sampler([7, 8, 9])(step3, logits.clone())
    alone = torch.cat([make_sampler([s])(step3[:1], logits[i:i + 1].clone()) for i, s in enumerate([7, 8, 9])])
    assert torch.equal(batch, alone)
    assert not torch.equal(gumbel_noise(7, 3, 50), gumbel_noise(7, 4, 50))  # steps differ
    assert torch.equal(gumbel_noise(7, 3, 50), gumbel_noise(7, 3, 50))


def test_top_k_keeps_only_the_k_best():
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    picks = {int(make_sampler([s], 1.0, top_k=2)(torch.zeros(1, 0, dtype=torch.long), logits.clone()).argmax())
             for s in range(300)}
    assert picks == {0, 1}
