"""The static HTML leaderboard: one self-contained file (inline CSS/JS, plots as embedded PNG).

Sortable table, per-task bar charts with CI whiskers, a heat-map across tasks, the paired
comparisons, per-sample drill-down of the worst errors, and the reproducibility block. Every piece of
text from results or model output passes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from wavllm_eval.reports.compare import PairedComparison
from wavllm_eval.reports.runs import RunResult
from wavllm_eval.reports.tables import wide_table
from wavllm_eval.reports.writers import compact_text, comparison_frame

WORST_SAMPLES = 10

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0;cursor:pointer}
td:first-child,th:first-child{text-align:left}.best{font-weight:bold;background:#e6f4ea}
.reported{color:#666;font-style:italic}img{max-width:100%}details{margin:.5em 0}
.samples td{text-align:left;max-width:40em;word-break:break-word}code{font-size:90%}
"""

_SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
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
                baseline: str = "", reproducibility: Mapping[str, Any] | None = None, notes: Sequence[str] = ()) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>wavllm-eval leaderboard</title>", f"<style>{_STYLE}</style></head><body>",
             "<h1>wavllm-eval leaderboard</h1>",
             *(f'<p class="note"><strong>Note:</strong> {html.escape(note)}</p>' for note in notes),
             _leaderboard(table),
             "<p>Cells: value ± half-width of the bootstrap 95 % CI. Bold: best comparable measured value. "
             "† fewer samples scored or another test set than the fullest run. Italic rows: reported by the "
             "model's paper, not measured. Click a column header to sort.</p>"]
    charts = _bar_charts(table)
    if charts:
        parts += ["<h2>Per task</h2>", *charts]
    heatmap = _heatmap(table)
    if heatmap:
        parts += ["<h2>Across tasks</h2>", heatmap]
    if comparisons:
        parts += [f"<h2>Paired comparisons against {html.escape(baseline)}</h2>",
                  _html_table(comparison_frame(comparisons), sortable=True)]
    parts += ["<h2>Worst samples</h2>", *_drilldown(runs)]
    if reproducibility:
        parts.append("<h2>Reproducibility</h2>")
        for label, block in reproducibility.items():
            rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(compact_text(v))}</code></td></tr>"
                           for k, v in block.items())
            parts.append(f"<details><summary>{html.escape(label)}</summary><table>{rows}</table></details>")
    parts += [f"<script>{_SORT_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _leaderboard(table: pd.DataFrame) -> str:
    text, best = wide_table(table)
    if text.empty:
        return "<p>No results.</p>"
    header = "<tr><th>model</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in text.columns) + "</tr>"
    rows = []
    for label in text.index:
        css = ' class="reported"' if label.endswith("(reported)") else ""
        cells = "".join(
            f'<td class="best">{html.escape(v)}</td>' if b else f"<td>{html.escape(v)}</td>"
            for v, b in zip(text.loc[label], best.loc[label], strict=True))
        rows.append(f"<tr{css}><td>{html.escape(label)}</td>{cells}</tr>")
    return f'<table class="sortable" id="leaderboard"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'


def _html_table(frame: pd.DataFrame, sortable: bool = False) -> str:
    return frame.to_html(index=False, escape=True, classes="sortable" if sortable else "", border=0)


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
    import matplotlib.pyplot as plt

    return plt


def _bar_charts(table: pd.DataFrame) -> list[str]:
    headline = table[table["headline"] & table["value"].notna()]
    if headline.empty:
        return []
    plt = _pyplot()
    out = []
    for (task, metric), group in headline.groupby(["task", "metric"], sort=False):
        labels = [m + (" (reported)" if s == "reported" else "") for m, s in zip(group["model"], group["source"], strict=True)]
        values = group["value"].to_numpy()
        lower = (group["value"] - group["ci_low"]).fillna(0).clip(lower=0).to_numpy()
        upper = (group["ci_high"] - group["value"]).fillna(0).clip(lower=0).to_numpy()
        figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(labels)), 3))
        colours = ["#9e9e9e" if s == "reported" else "#1f77b4" for s in group["source"]]
        axis.bar(range(len(labels)), values, yerr=[lower, upper], capsize=4, color=colours)
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axis.set_title(f"{task}: {metric}")
        axis.set_ylabel(metric + (" (lower is better)" if not group["higher_is_better"].iloc[0] else ""))
        out.append(_figure_tag(figure, f"{task} {metric} by model with 95% CI"))
    return out


def _heatmap(table: pd.DataFrame) -> str:
    """Headline scores scaled per column to 0 (worst) .. 1 (best), measured rows only."""
    measured = table[table["headline"] & (table["source"] == "measured") & table["value"].notna()]
    if measured.empty or measured["task"].nunique() < 2:
        return ""
    plt = _pyplot()
    grid = measured.pivot_table(index="model", columns="task", values="value", aggfunc="first")
    direction = measured.groupby("task")["higher_is_better"].first()
    scaled = grid.copy()
    for task in grid.columns:
        column = grid[task]
        span = column.max() - column.min()
        score = (column - column.min()) / span if span else column * 0 + 0.5  # no rival: neutral, not "best"
        scaled[task] = score if direction[task] else 1 - score
    figure, axis = plt.subplots(figsize=(1.3 * len(grid.columns) + 2, 0.5 * len(grid.index) + 1.5))
    image = axis.imshow(scaled.to_numpy(dtype=float), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(range(len(grid.columns)), grid.columns, rotation=30, ha="right")
    axis.set_yticks(range(len(grid.index)), grid.index)
    for i in range(len(grid.index)):
        for j in range(len(grid.columns)):
            value = grid.iat[i, j]
            if not math.isnan(value):
                axis.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=axis, label="relative score (1 = best)")
    return _figure_tag(figure, "heat-map of headline scores across tasks")


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

