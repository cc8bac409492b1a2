"""`wavllm-eval report`: every format from one long table, with paired comparisons against the first
run and a reproducibility block per run."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wavllm_eval.reports.compare import PairedComparison, compare_runs
from wavllm_eval.reports.efficiency import (
    efficiency_records,
    efficiency_rows,
    insert_efficiency_html,
    render_efficiency_markdown,
)
from wavllm_eval.reports.html import insert_section, render_html
from wavllm_eval.reports.robustness import VariantSpread, variant_spreads
from wavllm_eval.reports.runs import RunResult, load_runs
from wavllm_eval.reports.tables import long_table
from wavllm_eval.reports.writers import render_csv, render_json, render_latex, render_markdown, write_text

from wavllm_eval.errors import InputError
from wavllm_eval.registry import make_task

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "json", "latex", "html")
FILE_NAMES = {"md": "leaderboard.md", "csv": "leaderboard.csv", "json": "leaderboard.json",
              "latex": "leaderboard.tex", "html": "leaderboard.html"}


def reproducibility(runs: Sequence[RunResult]) -> dict[str, dict[str, Any]]:
    """What it takes to reproduce each run: code, data, settings, decoding, hardware, efficiency."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        meta, model = run.results.get("meta", {}), run.results.get("model", {})
        block: dict[str, Any] = {
            "model": model.get("id"), "model path": model.get("path"), "config hash": model.get("config_hash"),
            "decoding": (model.get("config") or {}).get("decoding", "adapter default"),
            "harness": meta.get("harness_version"), "git sha": meta.get("git_sha"), "seed": meta.get("seed"),
            "versions": meta.get("versions", {}), "data hashes": {k: str(v)[:12] for k, v in meta.get("data_hashes", {}).items()},
            "options": meta.get("options", {}), "hardware": meta.get("hardware", {}),
            "peak memory": meta.get("peak_memory", {}), "finished": meta.get("finished"),
        }
        for task_id, entry in run.tasks.items():
            block[f"{task_id} settings"] = entry.get("settings", {})
            installed = make_task(task_id).scoring_version()
            stored = run.scoring_version(task_id) or "unrecorded"
            block[f"{task_id} scoring"] = stored if stored == installed else (
                f"{stored} — the installed scorer is {installed}: re-score with `wavllm-eval score {run.run_dir}`")
            if "throughput" in entry:
                block[f"{task_id} throughput"] = entry["throughput"]
        out[run.label] = block
    return out


def scoring_notes(runs: Sequence[RunResult]) -> list[str]:
    """One line per task scored by another scoring version than the installed one."""
    notes = []
    for run in runs:
        for task_id in run.tasks:
            stored, installed = run.scoring_version(task_id), make_task(task_id).scoring_version()
            if stored != installed:
                notes.append(f"{run.label} · {task_id}: scored by {stored or 'an unrecorded version'}, the installed "
                             f"scorer is {installed}; re-score with: wavllm-eval score {run.run_dir}")
    return notes


def comparisons_against_first(runs: Sequence[RunResult]) -> tuple[list[PairedComparison], list[str]]:
    """Every later run paired with the first; the second list names each comparison's candidate."""
    comparisons: list[PairedComparison] = []
    candidates: list[str] = []
    for candidate in runs[1:]:
        found = compare_runs(runs[0], candidate)
        comparisons += found
        candidates += [candidate.label] * len(found)
    return comparisons, candidates


def write_report(run_dirs: Sequence[Path], out_dir: Path, formats: Sequence[str] = FORMATS,
                 include_reported: bool = True) -> list[Path]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError("--format", f"unknown format(s) {', '.join(unknown)}", f"choose from {','.join(FORMATS)}")
    runs = load_runs(run_dirs)
    notes = scoring_notes(runs)
    spreads = variant_spreads(runs)
    for note in notes:
        log.warning("%s", note)
    table = long_table(runs, include_reported)
    comparisons, candidates = comparisons_against_first(runs)
    baseline = runs[0].label if runs else ""
    repro = reproducibility(runs)
    efficiency = efficiency_rows(runs)
    renderers: Mapping[str, Any] = {
        "md": lambda: (render_markdown(table, comparisons, baseline, repro, notes, candidates)
                       + render_spreads_markdown(spreads) + render_efficiency_markdown(efficiency)),
        "csv": lambda: render_csv(table),
        "json": lambda: with_spreads_json(render_json(table, comparisons, repro, candidates), spreads,
                                            efficiency_records(runs)),
        "latex": lambda: render_latex(table),
        "html": lambda: insert_efficiency_html(insert_spreads_html(
            render_html(runs, table, comparisons, baseline, repro, notes, candidates), spreads), efficiency),
    }
    return [write_text(Path(out_dir) / FILE_NAMES[f], renderers[f]()) for f in formats]


SPREAD_COLUMNS = ("model", "task", "metric", "default", "mean", "std", "worst", "variants")


def _spread_cells(spread: VariantSpread) -> list[str]:
    number = lambda v: "—" if v != v else f"{v:.2f}"  # noqa: E731
    return [spread.model, spread.task, spread.metric, number(spread.default), number(spread.mean),
            number(spread.std), number(spread.worst), str(spread.n_variants)]


def render_spreads_markdown(spreads: Sequence[VariantSpread]) -> str:
    """The prompt-robustness section of the Markdown report (empty when no task ran under variants)."""
    if not spreads:
        return ""
    from wavllm_eval.reports.writers import escape_markdown

    lines = ["", "## Prompt robustness", "",
             "Each task under its shipped instruction variants (`task@pK`): the default-prompt score beside the "
             "mean, the sample standard deviation and the worst case across the variants.", "",
             "| " + " | ".join(SPREAD_COLUMNS) + " |", "|" + "|".join(["---"] * len(SPREAD_COLUMNS)) + "|"]
    lines += ["| " + " | ".join(escape_markdown(c) for c in _spread_cells(s)) + " |" for s in spreads]
    return "\n".join(lines) + "\n"


def with_spreads_json(text: str, spreads: Sequence[VariantSpread], efficiency: Sequence[Mapping[str, Any]] = ()) -> str:
    import json

    payload = json.loads(text)
    payload["prompt_robustness"] = [s.to_json() for s in spreads]
    payload["efficiency"] = list(efficiency)
    return json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n"


def insert_spreads_html(page: str, spreads: Sequence[VariantSpread]) -> str:
    if not spreads:
        return page
    import html

    head = "".join(f"<th>{c}</th>" for c in SPREAD_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _spread_cells(s)) + "</tr>" for s in spreads)
    section = (f"<h2>Prompt robustness</h2><p>Default-prompt score beside the mean, standard deviation and worst case "
               f"across each task's instruction variants.</p><table><thead><tr>{head}</tr></thead><tbody>{body}"
               "</tbody></table>")
    return insert_section(page, section, before="<h2>Worst samples</h2>")
