"""The short results table that `run`, `score` and `demo` print (the full reports live in reports/)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.table import Table


def results_table(model_id: str, tasks: Mapping[str, Mapping[str, Any]]) -> Table:
    """One row per task: every metric as `value [ci low, ci high]`, and the sample counts."""
    table = Table(title=f"wavllm-eval · {model_id}", title_justify="left")
    for column in ("task", "metric", "value", "95% CI", "scored", "failed", "skipped"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task_id, entry in tasks.items():
        metrics: Mapping[str, float] = entry["metrics"]
        ci95 = entry.get("ci95", {})
        for position, (name, value) in enumerate(metrics.items()):
            low, high = ci95.get(name, (math.nan, math.nan))
            first = position == 0
            table.add_row(
                task_id if first else "",
                f"[bold]{name}[/bold]" if name == entry.get("headline") else name,
                _fmt(value),
                f"[{_fmt(low)}, {_fmt(high)}]",
                f"{entry['n_scored']}/{entry['n_total']}" if first else "",
                str(entry["n_failed"]) if first else "",
                str(entry["n_skipped"]) if first else "",
            )
    return table


def _fmt(value: float) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
