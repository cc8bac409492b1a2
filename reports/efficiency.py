"""The efficiency protocol beside the scores: one row per run and task, from results.json `throughput`.

Scores without their cost mislead (a model that is 2 points better at a tenth of the speed is a
different choice); every figure here is what the run itself recorded, none is recomputed."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from wavllm_eval.reports.html import insert_section
from wavllm_eval.reports.runs import RunResult

COLUMNS = ("model", "task", "device", "batch", "RTFx model", "RTFx wall", "tokens/s", "TTFT s", "peak MiB", "samples")


def _number(value: Any, digits: int = 1) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{value:.{digits}f}"


def _peak_mib(peak: Mapping[str, Any]) -> str:
    """CUDA reserved memory where a GPU ran, else the process's peak RSS (the larger figure a user sizes for)."""
    value = peak.get("cuda_reserved_mib", peak.get("rss_mib"))
    unit = " (CUDA)" if "cuda_reserved_mib" in peak else " (RSS)" if "rss_mib" in peak else ""
    return _number(value, 0) + unit if value is not None else "—"


def efficiency_records(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """The recorded throughput entries as they are (numbers stay numbers), labelled by run and task."""
    return [{"model": run.label, "task": task_id, **entry["throughput"]}
            for run in runs for task_id, entry in run.tasks.items() if isinstance(entry.get("throughput"), Mapping)]


def efficiency_rows(runs: Sequence[RunResult]) -> list[dict[str, str]]:
    """The table's cells, as text (one per `efficiency_records` entry)."""
    return [{
        "model": record["model"], "task": record["task"], "device": str(record.get("device", "—")),
        "batch": str(record.get("batch_size_used", "—")),
        "RTFx model": _number(record.get("rtfx")), "RTFx wall": _number(record.get("rtfx_wall")),
        "tokens/s": _number(record.get("tokens_per_s")),
        "TTFT s": _number(record.get("ttft_s_mean"), 3),
        "peak MiB": _peak_mib(record.get("peak_memory") or {}),
        "samples": str(record.get("n_samples", "—")),
    } for record in efficiency_records(runs)]


INTRO = ("What each run recorded while it generated: real-time factor over model time and over wall time "
         "(audio seconds per second), generated tokens per second, mean time to first token per model call "
         "(audio encoding and prefill), the batch size in force at the end, and peak memory.")


def render_efficiency_markdown(rows: Sequence[Mapping[str, str]]) -> str:
    if not rows:
        return ""
    from wavllm_eval.reports.writers import escape_markdown

    lines = ["", "## Efficiency", "", INTRO, "", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * len(COLUMNS)) + "|"]
    lines += ["| " + " | ".join(escape_markdown(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def insert_efficiency_html(page: str, rows: Sequence[Mapping[str, str]]) -> str:
    """The same table on the page, before the reproducibility blocks (or at the end)."""
    if not rows:
        return page
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(row[c])}</td>" for c in COLUMNS) + "</tr>" for row in rows)
    section = f"<h2>Efficiency</h2><p>{html.escape(INTRO)}</p><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return insert_section(page, section, before="<h2>Reproducibility</h2>")
