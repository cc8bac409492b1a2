"""Tiny WavLLM folders (the released layout, real LLaMA-2 tokenizer) and the bundled PocketSphinx."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA


def _wavllm(root: Path) -> Path:
    tokenizer = SHARED_DATA / "llama2_tokenizer.model"
    if not tokenizer.is_file():
        pytest.skip(f"the LLaMA-2 tokenizer of the shared test data is not at {tokenizer}")
    from tests.wavllm_tiny import build_tiny_wavllm

    return build_tiny_wavllm(root / "wavllm", tokenizer)[0]


BUILDERS: dict[str, Callable[[Path], Path | None]] = {
    "wavllm": _wavllm,
    "wavllm-greedy": _wavllm,
    "pocketsphinx": lambda root: None,  # the en-US model the wheel bundles: no folder needed
}


def _replay(root: Path) -> Path:
    """Answers for the contract test's two prompts ("a", "b"), with candidate log-probs for "b"."""
    import json

    path = root / "answers.jsonl"
    path.write_text(json.dumps({"id": "a", "prediction": "he hoped there would be stew"}) + "\n"
                    + json.dumps({"id": "b", "prediction": "Yes", "choice_logprobs": [-0.1, -2.3]}) + "\n")
    return path


BUILDERS["replay"] = _replay
