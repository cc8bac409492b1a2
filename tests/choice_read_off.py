"""Shared by the adapters' tests of single-token choices read off the first generation step."""

from __future__ import annotations


def read_off_without_a_forward(adapter, prompts, seeds, module) -> list[list[float]]:
    """Generate `prompts`, then score their choices: the adapter's first read-off is checked against
    a forward pass (once, and it must pass); after a second generate, scoring runs no forward of
    `module` at all. Returns those scores, for the caller to compare with its own computation."""
    adapter.generate(prompts, seeds)
    adapter.score_choices(prompts)
    assert adapter.read_off.trusted is True
    adapter.generate(prompts, seeds)
    calls: list[int] = []
    hook = module.register_forward_pre_hook(lambda _module, _args: calls.append(1))
    try:
        scores = adapter.score_choices(prompts)
    finally:
        hook.remove()
    assert calls == [], "score_choices ran the model although generation had computed the answer"
    return scores
