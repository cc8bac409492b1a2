"""wavllm-eval: the WavLLM paper's evaluation suite, for every speech LLM on equal terms."""

from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# The harness never downloads: Hugging Face lookups stay offline unless the user asks for the network
# by setting HF_HUB_OFFLINE=0 (otherwise every missed lookup also retries for ~50 s).
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
