"""Headless Chromium for the report tests: the page's DOM after its scripts ran, its console errors,
and a screenshot in test-artifacts/ (what a person sees)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ARTEFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def render(page: Path, profile: Path, screenshot: str, window: str = "1200,1400") -> tuple[str, list[str], Path]:
    """(DOM after scripts, console error lines, screenshot path); skips where Chromium is absent."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (scripts/setup.sh --test installs it)")
    ARTEFACTS.mkdir(exist_ok=True)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if re.search(r"CONSOLE|Uncaught", line)]
    shot = ARTEFACTS / screenshot
    subprocess.run([*flags, f"--window-size={window}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return dom.stdout, console, shot
