"""The gate's built-in thresholds (metric units), in a module of their own so `wavllm-eval --help`
can show them without importing the statistics behind the gate."""

from __future__ import annotations

DEFAULT_MAX_REGRESSION = {"wer": 0.5, "bleu": 1.0, "accuracy": 1.0, "wa": 1.0, "ua": 1.0, "eer": 1.0, "ifr": 1.0}
DEFAULT_THRESHOLD = 1.0  # metrics not listed
DEFAULT_ALPHA = 0.05
