"""Candidate scores read off the first generation step (wavllm_eval/first_step.py)."""

from __future__ import annotations

import math

import pytest
import torch

from wavllm_eval.first_step import ChoiceReadOff, FirstStepLogits, no_stop_before
from wavllm_eval.types import Prompt


def prompt(sample_id: str, choices=("Yes", "No")) -> Prompt:
    return Prompt(sample_id, "Is it one speaker?", (), choices=choices)


def kept(prompts, logits) -> ChoiceReadOff:
    capture = FirstStepLogits(prompts)
    capture(torch.zeros(len(prompts), 0, dtype=torch.long), logits)
    capture(torch.zeros(len(prompts), 1, dtype=torch.long), logits + 5)  # a later step: not kept
    read_off = ChoiceReadOff()
    read_off.keep(capture)
    return read_off


def test_single_token_choices_are_the_first_steps_log_softmax_checked_once():
    a, b = prompt("a"), prompt("b")
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    read_off = kept([a, b], logits)
    forward_calls = []

    def forward(row):
        return lambda _prompt: forward_calls.append(row) or logits[row] + 1e-6  # a forward pass alone: rounding apart

    total = math.log(sum(math.exp(x) for x in (0, 1, 2, 3)))
    by_hand = [2.0 - total, 3.0 - total]
    assert read_off.scores(a, [[2], [3]], forward(0)) == pytest.approx(by_hand, abs=1e-12)
    assert read_off.trusted is True
    assert read_off.scores(b, [[2], [3]], forward(1)) == pytest.approx([1.0 - total, 0.0 - total], abs=1e-12)
    assert forward_calls == [0]  # the check ran once
    # another Prompt object under the same id, a multi-token choice, or a prompt without choices: no answer
    assert read_off.scores(prompt("a"), [[2], [3]], forward(0)) is None
    assert read_off.scores(a, [[2, 1], [3]], forward(0)) is None
    assert not FirstStepLogits([Prompt("c", "?", ())]).logits
    read_off.clear()
    assert read_off.scores(a, [[2], [3]], forward(0)) is None


def test_logits_a_processor_changed_turn_the_read_off_off():
    a, b = prompt("a"), prompt("b")
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    read_off = kept([a, b], logits)
    penalised = logits[0].clone()
    penalised[2] /= 1.1  # what a repetition penalty from a generation_config does before our processors
    assert read_off.scores(a, [[2], [3]], lambda _prompt: penalised) is None
    assert read_off.trusted is False
    assert read_off.scores(b, [[2], [3]], lambda _prompt: logits[1]) is None  # for the adapter's lifetime


def test_no_stop_before_bans_the_stop_ids_until_enough_new_tokens():
    scores = torch.randn(2, 6)
    processor = no_stop_before([2, 5], min_new_tokens=2, prompt_length=3)
    for generated, banned in ((0, True), (1, True), (2, False)):
        out = processor(torch.zeros(2, 3 + generated, dtype=torch.long), scores)
        assert bool(torch.isinf(out[:, [2, 5]]).all()) == banned
        assert torch.equal(out[:, [0, 1, 3, 4]], scores[:, [0, 1, 3, 4]])
    assert not torch.isinf(scores).any()  # the input is not changed in place


@pytest.mark.parametrize(("dtype", "noise", "trusted"), [(torch.float32, 5e-4, True), (torch.float32, 0.02, False),
                                                         (torch.bfloat16, 0.02, True), ("float16", 0.3, False)])
def test_the_check_allows_the_rounding_of_the_models_dtype(dtype, noise, trusted):
    """A bf16 batch's prefill rounds ~100x coarser than fp32's: the check allows that much, and no more."""
    a = prompt("a")
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    capture = FirstStepLogits([a])
    capture(torch.zeros(1, 0, dtype=torch.long), logits)
    read_off = ChoiceReadOff(dtype)
    read_off.keep(capture)
    moved = logits[0] + torch.tensor([0.0, noise, 0.0, 0.0])
    assert (read_off.scores(a, [[2], [3]], lambda _prompt: moved) is not None) is trusted
    assert read_off.trusted is trusted
