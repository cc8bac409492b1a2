"""The scores decoding sees at each step, as the tests read them."""

from __future__ import annotations


def record_step_scores(monkeypatch) -> list:
    """Every generating adapter passes each step's scores (batch x vocab) through its FirstTokenTimer:
    from now on, a float copy of each is appended to the returned list (clear it between calls)."""
    from wavllm_eval.adapter import FirstTokenTimer

    steps: list = []
    timer_call = FirstTokenTimer.__call__
    monkeypatch.setattr(FirstTokenTimer, "__call__",
                        lambda self, ids, scores: steps.append(scores.detach().float().clone()) or
                        timer_call(self, ids, scores))
    return steps
