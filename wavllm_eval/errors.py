"""User mistakes become one clear line and exit code 2; a traceback always means a bug."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A problem with the user's input: names the file, what is wrong, and the fix."""

    def __init__(self, path: Path | str | None, problem: str, fix: str = "") -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{problem}" + (f" — {fix}" if fix else ""))


class AudioReadError(Exception):
    """One clip could not be decoded; the runner records the sample as failed and goes on."""
