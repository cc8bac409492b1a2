"""The static HTML leaderboard: one self-contained file (inline CSS/JS, plots as embedded PNG).

Sortable table (greyed cells: not on the reference test set, never ranked), per-task bar charts with
CI whiskers on percent axes (a 0 is a labelled bar, not an empty plot), a heat-map across tasks whose
colours span the comparable runs only, the paired comparisons with their candidate, each task's
breakdowns (per session, speaker, ...), per-sample drill-down of the worst errors, and the
reproducibility block. Every piece of text from results or model output passes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from wavllm_eval.reports.compare import PairedComparison
from wavllm_eval.reports.runs import RunResult
from wavllm_eval.reports.tables import reference_sets, wide_table
from wavllm_eval.reports.writers import (
    CELL_LEGEND,
    COMPARISON_TEXT_COLUMNS,
    compact_text,
    comparison_frame,
    sole_candidate,
)

WORST_SAMPLES = 10

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}th{background:#f0f0f0;cursor:pointer}
td:first-child,th:first-child,td.text,th.text{text-align:left;white-space:normal}.scroll{overflow-x:auto}
.best{font-weight:bold;background:#e6f4ea}.samples th{text-align:left}#leaderboard td,#leaderboard th{white-space:nowrap}
.offref{color:#555;background:#f6f6f6}.reported{color:#555;font-style:italic}img{max-width:100%}
details{margin:.5em 0}summary{cursor:pointer}.samples td{text-align:left;max-width:40em;word-break:break-word;white-space:normal}
.repro th,.repro td{text-align:left;white-space:normal}code{font-size:90%;word-break:break-word}.legend{max-width:60em}
"""

_SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], column = th.cellIndex;
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = th.dataset.order !== 'asc'; th.dataset.order = ascending ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[column].innerText, y = b.cells[column].innerText;
      var nx = parseFloat(x), ny = parseFloat(y);
      var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return ascending ? cmp : -cmp;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
document.body.dataset.sortable = 'ready';
"""


def render_html(runs: Sequence[RunResult], table: pd.DataFrame, comparisons: Sequence[PairedComparison] = (),
                baseline: str = "", reproducibility: Mapping[str, Any] | None = None, notes: Sequence[str] = (),
                candidates: Sequence[str] = ()) -> str:
    candidates = candidates or sole_candidate(table, baseline, len(comparisons))
    references = "; ".join(f"{t}: {s}" for t, s in reference_sets(table).items())
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>wavllm-eval leaderboard</title>", f"<style>{_STYLE}</style></head><body>",
             "<h1>wavllm-eval leaderboard</h1>",
             *(f'<p class="note"><strong>Note:</strong> {html.escape(note)}</p>' for note in notes),
             _leaderboard(table),
             f'<p class="legend">Cells: {html.escape(CELL_LEGEND)}. Greyed cells are not ranked. '
             "Click a column header to sort.</p>",
             f'<p class="legend">Reference test sets: {html.escape(references)}.</p>' if references else ""]
    charts = _bar_charts(table)
    if charts:
        parts += ["<h2>Per task</h2>", *charts]
    heatmap = _heatmap(table)
    if heatmap:
        parts += ["<h2>Across tasks</h2>", heatmap]
    if comparisons:
        parts += [f"<h2>Paired comparisons against {html.escape(baseline)}</h2>",
                  _html_table(comparison_frame(comparisons, candidates), COMPARISON_TEXT_COLUMNS)]
    breakdowns = _breakdowns(runs)
    if breakdowns:
        parts += ["<h2>Breakdowns</h2>", *breakdowns]
    parts += ["<h2>Worst samples</h2>", *_drilldown(runs)]
    if reproducibility:
        parts.append("<h2>Reproducibility</h2>")
        for label, block in reproducibility.items():
            rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(compact_text(v))}</code></td></tr>"
                           for k, v in block.items())
            parts.append(f'<details><summary>{html.escape(label)}</summary><table class="repro">{rows}</table></details>')
    parts += [f"<script>{_SORT_SCRIPT}</script>", "</body></html>"]
    return "\n".join(p for p in parts if p) + "\n"


def insert_section(page: str, section: str, before: str) -> str:
    """`section` put before the page's first `before` (a heading), or at the end of its body."""
    marker = before if before in page else "</body>"
    return page.replace(marker, section + marker, 1)


def _leaderboard(table: pd.DataFrame) -> str:
    text, best = wide_table(table)
    if text.empty:
        return "<p>No results.</p>"
    header = '<tr><th class="text">model</th>' + "".join(f"<th>{html.escape(c)}</th>" for c in text.columns) + "</tr>"
    rows = []
    for label in text.index:
        css = ' class="reported"' if label.endswith("(reported)") else ""
        cells = []
        for v, b in zip(text.loc[label], best.loc[label], strict=True):
            cls = "best" if b else ("offref" if "†" in v else "")
            cells.append(f'<td class="{cls}">{html.escape(v)}</td>' if cls else f"<td>{html.escape(v)}</td>")
        rows.append(f'<tr{css}><td class="text">{html.escape(label)}</td>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="sortable" id="leaderboard"><thead>{header}</thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _html_table(frame: pd.DataFrame, text_columns: Sequence[str] = (), sortable: bool = True) -> str:
    """A table of strings, escaped; words left-aligned, numbers right-aligned."""
    def cell(tag: str, column: str, value: Any) -> str:
        css = ' class="text"' if column in text_columns else ""
        return f"<{tag}{css}>{html.escape(str(value))}</{tag}>"

    head = "<tr>" + "".join(cell("th", c, c) for c in frame.columns) + "</tr>"
    body = "".join("<tr>" + "".join(cell("td", c, v) for c, v in zip(frame.columns, row, strict=True)) + "</tr>"
                   for row in frame.itertuples(index=False))
    css = ' class="sortable"' if sortable else ""
    return f"<table{css}><thead>{head}</thead><tbody>{body}</tbody></table>"


def _figure_tag(figure, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    # labels are model ids and folder names, untrusted text: "$...$" in one must be drawn as written,
    # not parsed as mathtext (a malformed formula made savefig raise, and the page was not written)
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def y_limits(metric: str, values: Sequence[float]) -> tuple[float, float]:
    """Every metric here is on a percent scale: bounded ones (accuracy, EER, BLEU, ...) get 0–100, so
    two plots read alike and a 0 is a visible floor, not a collapsed axis; an error rate (WER), which
    can pass 100 and is read near 0, starts at 0 and ends above the largest bar (at least 1)."""
    top = max([v for v in values if not math.isnan(v)] or [0.0])
    if re.match(r"^(\w+_)?[wc]er(_|$)", metric):  # wer, wer_raw, transcription_wer; not answer_rate
        return 0.0, max(1.0, 1.15 * top)
    return 0.0, max(100.0, 1.05 * top)


def _bar_charts(table: pd.DataFrame) -> list[str]:
    headline = table[table["headline"]]
    if headline.empty or headline["value"].isna().all():
        return []
    plt = _pyplot()
    out = []
    for (task, metric), group in headline.groupby(["task", "metric"], sort=False):
        labels = [m + (" (reported)" if s == "reported" else ("" if ok else " †"))
                  for m, s, ok in zip(group["model"], group["source"], group["comparable"], strict=True)]
        values = group["value"].to_numpy(dtype=float)
        lower = (group["value"] - group["ci_low"]).fillna(0).clip(lower=0).to_numpy()
        upper = (group["ci_high"] - group["value"]).fillna(0).clip(lower=0).to_numpy()
        figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(labels)), 3))
        colours = ["#9e9e9e" if s == "reported" else ("#1f77b4" if ok else "#9ecae1")
                   for s, ok in zip(group["source"], group["comparable"], strict=True)]
        heights = [0.0 if math.isnan(v) else v for v in values]
        measured = (group["source"] == "measured").to_numpy()
        bars = axis.bar(range(len(labels)), heights, color=colours)
        if measured.any():  # whiskers only where a CI exists (a paper's number has none)
            axis.errorbar(np.flatnonzero(measured), np.asarray(heights)[measured],
                          yerr=[lower[measured], upper[measured]], fmt="none", ecolor="black", capsize=4)
        for bar, ok, source in zip(bars, group["comparable"], group["source"], strict=True):
            if source == "measured" and not ok:
                bar.set_hatch("//")
                bar.set_edgecolor("#1f77b4")
        low, high = y_limits(str(metric), list(values + upper))
        axis.set_ylim(low, high)
        for x, (v, failed) in enumerate(zip(values, group["n_failed"], strict=True)):
            # the number on every bar: a 0 bar has no height, its label is the visible mark
            note = f"{v:.2f}" if not math.isnan(v) else f"— ({int(failed)} failed)"
            axis.annotate(note, (x, heights[x] + upper[x]), xytext=(0, 3), textcoords="offset points",
                          ha="center", va="bottom", fontsize=8)
            if not math.isnan(v) and v == 0:
                axis.plot([x - 0.35, x + 0.35], [0, 0], color="#d62728", linewidth=3, solid_capstyle="butt")
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axis.set_title(f"{task}: {metric}", pad=14)  # room for the value labels above a full bar
        axis.set_ylabel(metric + (" (lower is better)" if not group["higher_is_better"].iloc[0] else ""))
        out.append(_figure_tag(figure, f"{task} {metric} by model with 95% CI"))
    return out


def heatmap_grid(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measured headline values (models × `task · metric`) and their colour scale: per column 0 (worst)
    .. 1 (best) over the comparable runs only; NaN where a run is not comparable (grey, unscaled)."""
    measured = table[table["headline"] & (table["source"] == "measured") & table["value"].notna()].copy()
    if measured.empty:
        return pd.DataFrame(), pd.DataFrame()
    measured["column"] = measured["task"] + " · " + measured["metric"]
    columns = list(dict.fromkeys(measured["column"]))
    models = list(dict.fromkeys(measured["model"]))
    grid = measured.pivot_table(index="model", columns="column", values="value", aggfunc="first").reindex(
        index=models, columns=columns)
    comparable = measured[measured["comparable"]].pivot_table(
        index="model", columns="column", values="value", aggfunc="first").reindex(index=models, columns=columns)
    direction = measured.groupby("column")["higher_is_better"].first()
    scaled = comparable.copy()
    for column in columns:
        values = comparable[column]
        span = values.max() - values.min()
        score = (values - values.min()) / span if span else values * 0 + 0.5  # no rival: neutral, not "best"
        scaled[column] = score if direction[column] else 1 - score
    return grid, scaled


def _heatmap(table: pd.DataFrame) -> str:
    grid, scaled = heatmap_grid(table)
    if grid.empty or len(grid.columns) < 2:
        return ""
    plt = _pyplot()
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#e0e0e0")  # not comparable: grey, outside the scale
    figure, axis = plt.subplots(figsize=(1.5 * len(grid.columns) + 2.5, 0.55 * len(grid.index) + 1.8))
    image = axis.imshow(np.ma.masked_invalid(scaled.to_numpy(dtype=float)), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(range(len(grid.columns)), grid.columns, rotation=30, ha="right")
    axis.set_yticks(range(len(grid.index)), grid.index)
    for i in range(len(grid.index)):
        for j in range(len(grid.columns)):
            value, score = grid.iat[i, j], scaled.iat[i, j]
            if math.isnan(value):  # not run (or nothing scored): a blank cell, not a grey "not comparable"
                axis.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="white"))
                axis.text(j, i, "—", ha="center", va="center", fontsize=9, color="#888888")
                continue
            if math.isnan(score):
                label, colour = f"{value:.2f} †", "#333333"
            else:
                red, green, blue, _ = cmap(score)
                # relative luminance (sRGB weights): dark text on light cells, white on the dark ends
                label = f"{value:.2f}"
                colour = "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.45 else "white"
            axis.text(j, i, label, ha="center", va="center", fontsize=10, color=colour, fontweight="bold")
    figure.colorbar(image, ax=axis, label="relative score (1 = best comparable)")
    axis.set_title("† grey: not on the reference test set, outside the colour scale", fontsize=8)
    return _figure_tag(figure, "heat-map of headline scores across tasks")


def _breakdowns(runs: Sequence[RunResult]) -> list[str]:
    """Each task's `breakdowns` (per IEMOCAP session, per speaker, ...): value, n and the headline
    metrics with their CI, one collapsible section per run × task × attribute."""
    out = []
    for run in runs:
        for task_id, entry in run.tasks.items():
            for attribute, by_value in (entry.get("breakdowns") or {}).items():
                present = {m for cell in by_value.values() for m in (cell.get("metrics") or {})}
                metrics = [m for m in run.headlines(task_id) if m in present] or sorted(present)
                head = ('<tr><th class="text">' + html.escape(str(attribute)) + "</th><th>n</th>"
                        + "".join(f"<th>{html.escape(m)}</th>" for m in metrics) + "</tr>")
                rows = []
                for value, cell in by_value.items():
                    texts = []
                    for m in metrics:
                        v = (cell.get("metrics") or {}).get(m)
                        ci = (cell.get("ci95") or {}).get(m)
                        n = int(cell.get("n", 0))
                        text = "—" if v is None else f"{float(v):.2f}"
                        if v is not None and ci and None not in ci and n > 1:
                            text += f" ± {(float(ci[1]) - float(ci[0])) / 2:.2f}"
                        texts.append(f"<td>{html.escape(text)}</td>")
                    rows.append(f'<tr><td class="text">{html.escape(str(value))}</td><td>{int(cell.get("n", 0))}</td>'
                                f'{"".join(texts)}</tr>')
                out.append(f"<details><summary>{html.escape(run.label)} · {html.escape(task_id)} · by "
                           f"{html.escape(str(attribute))} ({len(by_value)})</summary>"
                           f'<table class="sortable breakdown"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
                           "</table></details>")
    return out


def _drilldown(runs: Sequence[RunResult]) -> list[str]:
    out = []
    for run in runs:
        for task_id, entry in run.tasks.items():
            records = run.records(task_id)
            if not records:
                continue
            failed = [r for r in records if r.status != "ok"][:WORST_SAMPLES]
            metric = next((m for m in run.metrics(task_id) if m.name == entry.get("headline")), None)
            worst: list[tuple[float, str]] = []
            if metric is not None and metric.sum_decomposable and metric.ids:
                per_sample = metric.per_sample_values()
                order = sorted(range(len(per_sample)), key=lambda i: _badness(per_sample[i], metric.higher_is_better))
                worst = [(float(per_sample[i]), metric.ids[i]) for i in order[:WORST_SAMPLES]]
            by_id = {r.id: r for r in records}
            rows = [f"<tr><td>{html.escape(r.id)}</td><td>{html.escape(r.status)}</td><td>—</td>"
                    f"<td>{html.escape(r.reference)}</td><td>{html.escape(r.error or r.prediction)}</td></tr>" for r in failed]
            rows += [f"<tr><td>{html.escape(i)}</td><td>ok</td><td>{_fmt(v)}</td><td>{html.escape(by_id[i].reference)}</td>"
                     f"<td>{html.escape(by_id[i].prediction)}</td></tr>" for v, i in worst]
            head = (f"<tr><th>id</th><th>status</th><th>{html.escape(entry.get('headline', ''))}</th>"
                    "<th>reference</th><th>prediction / error</th></tr>")
            out.append(f"<details><summary>{html.escape(run.label)} · {html.escape(task_id)}</summary>"
                       f'<table class="samples"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></details>')
    return out or ["<p>No sample files found.</p>"]


def _badness(value: float, higher_is_better: bool) -> float:
    if math.isnan(value):
        return -math.inf
    return value if higher_is_better else -value


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"

