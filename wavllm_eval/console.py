"""The one rich Console (stderr) and logging handler: library code logs, never prints."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

console = Console(stderr=True)
stdout = Console(width=None if Console().is_terminal else 160)  # tables unwrapped in pipes and CI logs

log = logging.getLogger("wavllm_eval")


def setup_logging(verbose: bool = False) -> None:
    """Route the package logger through rich on stderr, once."""
    if any(isinstance(h, RichHandler) for h in log.handlers):
        return
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
