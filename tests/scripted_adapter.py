"""A scripted model for runner and pipeline tests (after inspect_ai's mockllm): fast and exact.

Its answer for a prompt is a pure function of (prompt text, audio length, seed), so tests can check
that batching, ordering and resuming never change an output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from wavllm_eval.adapter import BaseAdapter, LoadOptions
from wavllm_eval.types import Generation, Prompt


class ScriptedAdapter(BaseAdapter):
    """Answers with `script(prompt, seed)`; counts calls; can fail on chosen sample ids."""

    id = "scripted"

    def __init__(self, script: Callable[[Prompt, int], str] | None = None, fail_ids: Sequence[str] = (),
                 oom_above: int | None = None, batch_size: int = 4,
                 choice_scores: Callable[[Prompt], list[float]] | None = None) -> None:
        self.script = script or (lambda prompt, seed: f"{prompt.sample_id} {len(prompt.waveforms[0])} {seed}")
        self.fail_ids = set(fail_ids)
        self.oom_above = oom_above
        self.default_batch_size = batch_size
        self.calls: list[list[str]] = []
        self.attempts: list[int] = []  # every batch size asked for, out-of-memory ones included
        self.prompts: list[Prompt] = []
        self.choice_scores = choice_scores
        self.supports_choice_scoring = choice_scores is not None

    @classmethod
    def load(cls, path: Path | None = None, options: LoadOptions = LoadOptions()) -> ScriptedAdapter:
        return cls()

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        self.attempts.append(len(prompts))
        if self.oom_above is not None and len(prompts) > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.calls.append([p.sample_id for p in prompts])
        self.prompts.extend(prompts)
        for p in prompts:
            if p.sample_id in self.fail_ids:
                raise ValueError(f"scripted failure for {p.sample_id}")
        return [Generation(self.script(p, s), n_new_tokens=3) for p, s in zip(prompts, seeds, strict=True)]

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        assert self.choice_scores is not None
        return [self.choice_scores(p) for p in prompts]
