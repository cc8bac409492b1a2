"""Candidate scores read off the first generation step: no model call for single-token choices.

Generation's first step computes the next-token distribution after the whole prompt, which is all
log P(choice | audio, prompt) needs when every choice is one token (Yes/No, the emotion words,
option letters). `FirstStepLogits`, a pass-through logits processor, keeps those logits; it must run
before any processor that changes them, so an adapter places it right after its FirstTokenTimer and
applies its decoding constraints (min_new_tokens, banned ids) in processors of its own after it.
`ChoiceReadOff` answers score_choices from the kept logits, for the very same Prompt objects only.

Processors that transformers builds from a model folder's generation_config (a repetition penalty,
suppressed tokens) run before any of ours. So the first read-off is checked: the kept distribution
is compared, over the whole vocabulary, with a forward pass over that prompt; a mismatch turns the
read-off off for the adapter's lifetime (with a warning) and every choice is scored by forward passes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from wavllm_eval.types import Prompt

log = logging.getLogger(__name__)

# The largest |log-prob difference| a batched prefill may show against a forward pass alone: float
# rounding, which a processor's change exceeds (a 1.05 repetition penalty moves a logit of 2 by 0.1,
# and a 7B model's prompt tokens have logits well above that). Half precision rounds ~100x coarser.
AGREEMENT = {"float32": 1e-3, "float64": 1e-6, "half": 0.1}


class FirstStepLogits:
    """Keeps, for each prompt with choices, its row of the first step's logits. `rows_per_prompt`:
    beams per prompt (their first-step rows are equal)."""

    def __init__(self, prompts: Sequence[Prompt], rows_per_prompt: int = 1) -> None:
        self.prompts = list(prompts)
        self.rows_per_prompt = rows_per_prompt
        self.logits: dict[int, tuple[Prompt, Any]] = {}
        self.called = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if not self.called:
            self.called = True
            for i, prompt in enumerate(self.prompts):
                if prompt.choices:
                    self.logits[id(prompt)] = (prompt, scores[i * self.rows_per_prompt].detach().clone())
        return scores


class ChoiceReadOff:
    """The kept first-step logits of the last generate call, and whether reading them is trusted
    (None: not checked yet)."""

    def __init__(self, dtype: Any = "float32") -> None:
        """`dtype`: the model's compute dtype (a torch dtype or its name), which sets the tolerance."""
        name = str(dtype).replace("torch.", "")
        self.tolerance = AGREEMENT.get(name, AGREEMENT["half"])
        self.kept: dict[int, tuple[Prompt, Any]] = {}
        self.trusted: bool | None = None

    def keep(self, capture: FirstStepLogits, merge: bool = False) -> None:
        """What the last generate call kept (`merge`: add to it, for a call made in several parts)."""
        self.kept = {**self.kept, **capture.logits} if merge else dict(capture.logits)

    def clear(self) -> None:
        self.kept = {}

    def answerable(self, prompt: Prompt, token_ids: Sequence[Sequence[int]]) -> bool:
        """Whether `scores` can answer: this very prompt generated last, every choice one token."""
        entry = self.kept.get(id(prompt))
        return (self.trusted is not False and entry is not None and entry[0] is prompt and bool(token_ids)
                and all(len(ids) == 1 for ids in token_ids))

    def scores(self, prompt: Prompt, token_ids: Sequence[Sequence[int]],
               next_token_logits: Callable[[Prompt], Any]) -> list[float] | None:
        """log P(choice) for each single-token choice from this very prompt's first-step logits, or
        None (not generated just before, a choice of several tokens, or not trusted).
        `next_token_logits(prompt)` runs the model over the prompt alone (the adapter's method of that
        name): called once, for the check."""
        import torch

        if not self.answerable(prompt, token_ids):
            return None
        logprobs = torch.log_softmax(self.kept[id(prompt)][1].double(), dim=-1)
        if self.trusted is None:
            reference = torch.log_softmax(next_token_logits(prompt).double().to(logprobs.device), dim=-1)
            both = torch.isfinite(reference) & torch.isfinite(logprobs)
            self.trusted = bool(torch.equal(torch.isfinite(reference), torch.isfinite(logprobs))
                                and (reference[both] - logprobs[both]).abs().max() <= self.tolerance)
            if not self.trusted:
                log.warning("the first generation step's logits differ from a forward pass (a processor from the "
                            "model's generation_config?): candidates are scored by forward passes")
                return None
        return [float(logprobs[int(ids[0])]) for ids in token_ids]


def no_stop_before(stop_ids: Sequence[int], min_new_tokens: int, prompt_length: int,
                   always_banned: Sequence[int] = ()):
    """transformers' min_new_tokens (and bad_words_ids of single tokens) as one processor of ours, to
    run after FirstStepLogits: the stop tokens are banned until `min_new_tokens` were generated
    (`prompt_length`: input ids that belong to the prompt, 0 when generating from embeddings), and
    `always_banned` at every step."""
    from transformers import LogitsProcessor

    early, always = list(stop_ids), list(always_banned)

    class NoStopBefore(LogitsProcessor):
        def __call__(self, input_ids, scores):
            banned = always + (early if input_ids.shape[1] - prompt_length < min_new_tokens else [])
            if banned:
                scores = scores.clone()
                scores[:, banned] = float("-inf")
            return scores

    return NoStopBefore()
