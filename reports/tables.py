"""The one table every report renders: long format (model × task × metric), plus its wide view.

Measured rows come from results.json; reported rows from the versioned `paper_results.json`,
marked `reported` and never ranked. A score over fewer samples than another run scored on the same
task is flagged `comparable = False` and never marked best.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib.resources import files

import pandas as pd
from wavllm_eval.reports.runs import RunResult

LONG_COLUMNS = ["model", "source", "task", "metric", "headline", "value", "ci_low", "ci_high", "higher_is_better",
                "n_total", "n_scored", "n_failed", "n_skipped", "comparable", "reported_value", "delta_vs_reported",
                "reference", "data_hash"]


def paper_rows() -> list[dict]:
    data = json.loads(files("wavllm_eval.reports").joinpath("paper_results.json").read_text(encoding="utf-8"))
    return list(data["rows"])


def long_table(runs: Sequence[RunResult], include_reported: bool = True) -> pd.DataFrame:
    reported = {(r["model"], r["task"], r["metric"]): r for r in paper_rows()} if include_reported else {}
    rows: list[dict] = []
    for run in runs:
        for task_id, entry in run.tasks.items():
            for metric, value in entry["metrics"].items():
                ci = entry.get("ci95", {}).get(metric, [None, None])
                paper = reported.get((run.model_id, task_id, metric))
                rows.append({
                    "model": run.label, "source": "measured", "task": task_id, "metric": metric,
                    "headline": metric == entry.get("headline"), "value": _num(value), "ci_low": _num(ci[0]),
                    "ci_high": _num(ci[1]), "higher_is_better": bool(entry.get("higher_is_better", {}).get(metric, True)),
                    "n_total": entry["n_total"], "n_scored": entry["n_scored"], "n_failed": entry["n_failed"],
                    "n_skipped": entry["n_skipped"], "comparable": True,
                    "reported_value": paper["value"] if paper else math.nan,
                    "delta_vs_reported": _num(value) - paper["value"] if paper else math.nan, "reference": "",
                    "data_hash": run.results.get("meta", {}).get("data_hashes", {}).get(task_id, ""),
                })
    measured_tasks = {r["task"] for r in rows}
    for (model, task_id, metric), paper in reported.items():
        if task_id in measured_tasks:
            rows.append({
                "model": model, "source": "reported", "task": task_id, "metric": metric, "headline": True,
                "value": float(paper["value"]), "ci_low": math.nan, "ci_high": math.nan,
                "higher_is_better": metric not in ("wer", "eer") and not metric.startswith("min_dcf"),
                "n_total": 0, "n_scored": 0, "n_failed": 0, "n_skipped": 0, "comparable": False,
                "reported_value": math.nan, "delta_vs_reported": math.nan,
                "reference": f"{paper['source']} ({paper['split']}; {paper['status']})", "data_hash": "",
            })
    table = pd.DataFrame(rows, columns=LONG_COLUMNS)
    if table.empty:
        return table
    measured = table["source"] == "measured"
    for _, group in table[measured].groupby("task"):
        # comparable: the same test set (data hash of the most complete run) and as many scored samples
        fullest = group.loc[group["n_scored"].idxmax()]
        same_data = group["data_hash"] == fullest["data_hash"]
        table.loc[group.index, "comparable"] = same_data & (group["n_scored"] >= fullest["n_scored"])
    return table.reset_index(drop=True)


def best_mask(table: pd.DataFrame) -> pd.Series:
    """True on the best comparable measured value of each task × metric (ties all marked)."""
    best = pd.Series(False, index=table.index)
    measured = table[table["source"] == "measured"]
    rivals = measured.groupby(["task", "metric"])["model"].transform("count")
    eligible = measured[(rivals > 1) & measured["comparable"] & measured["value"].notna()]
    for _, group in eligible.groupby(["task", "metric"]):
        target = group["value"].max() if group["higher_is_better"].iloc[0] else group["value"].min()
        best[group.index[group["value"] == target]] = True
    return best


def cell_text(row: pd.Series) -> str:
    """`value ± CI half-width`, with visible counts of failed/skipped samples and a dagger when the
    score covers fewer samples than another run's (not comparable)."""
    if pd.isna(row["value"]):
        return "—"
    text = f"{row['value']:.2f}"
    if pd.notna(row["ci_low"]) and pd.notna(row["ci_high"]):
        text += f" ± {(row['ci_high'] - row['ci_low']) / 2:.2f}"
    lost = [f"{int(row[k])} {k[2:]}" for k in ("n_failed", "n_skipped") if row[k]]
    if lost:
        text += f" ({', '.join(lost)})"
    if row["source"] == "measured" and not row["comparable"]:
        text += " †"
    return text


def wide_table(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Models as rows, `task · metric` (headline metrics) as columns: display strings and a same-shaped
    frame of best-marks, so each writer decides how to emphasise."""
    headline = table[table["headline"]].copy()
    if headline.empty:
        return pd.DataFrame(), pd.DataFrame()
    headline["row"] = headline["model"] + headline["source"].map({"measured": "", "reported": " (reported)"})
    headline["column"] = headline["task"] + " · " + headline["metric"]
    headline["text"] = headline.apply(cell_text, axis=1)
    headline["best"] = best_mask(table)[headline.index]
    order_rows = list(dict.fromkeys(headline.sort_values("source", kind="stable")["row"]))
    order_columns = list(dict.fromkeys(headline["column"]))
    text = headline.pivot(index="row", columns="column", values="text").reindex(index=order_rows, columns=order_columns)
    best = headline.pivot(index="row", columns="column", values="best").reindex(index=order_rows, columns=order_columns)
    text.index.name, text.columns.name = "model", None
    return text.fillna("—"), best.fillna(False).astype(bool)


def _num(value) -> float:
    return math.nan if value is None else float(value)
