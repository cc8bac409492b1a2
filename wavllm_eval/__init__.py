"""wavllm-eval: the WavLLM paper's evaluation suite, for every speech LLM on equal terms."""

from __future__ import annotations

__version__ = "0.1.0"
