"""The one table every report renders: long format (model × task × metric), plus its wide view.

Measured rows come from results.json; reported rows from the versioned `paper_results.json`,
marked `reported` and never ranked.

Comparability. Each task has a reference test set: the paper's split when `paper_results.json`
records its size (LibriSpeech test-clean 2620, ...), else the fullest measured run. A measured run is
`comparable` (ranked, bold, coloured in the heat-map) only on that set: the same n_total, the data
hash of the fullest run on it, and as many scored samples. A run on another or smaller set (a
`--limit 5` run, the demo corpus) keeps its number but is marked `† n=5`; its difference to the
paper's number is left empty, since the paper measured something else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import pandas as pd
from wavllm_eval.reports.runs import RunResult

from wavllm_eval.task import split_task_id

LONG_COLUMNS = ["model", "source", "task", "metric", "headline", "value", "ci_low", "ci_high", "higher_is_better",
                "n_total", "n_scored", "n_failed", "n_skipped", "unparsed_rate", "reference_n", "on_reference",
                "comparable", "reported_value", "delta_vs_reported", "reference", "data_hash"]


TASK_NAMES = {"librispeech-test-clean": "LibriSpeech test-clean", "librispeech-test-other": "LibriSpeech test-other",
              "covost2-en-de": "CoVoST2 En-De", "mustc-en-de": "MuST-C En-De", "voxceleb1-sv": "VoxCeleb1-O SV",
              "iemocap-er": "IEMOCAP ER", "gaokao-sqa": "Gaokao SQA", "ii-task": "II-task", "cot": "CoT",
              "cot-story": "CoT story", "cot-oneshot": "CoT one-shot", "sqqa": "SQQA"}
METRIC_NAMES = {"wer": "WER", "wer_raw": "WER (raw)", "bleu": "BLEU", "accuracy": "Acc.", "eer": "EER", "wa": "WA",
                "ua": "UA", "ifr": "IFR", "rouge_l": "ROUGE-L", "bertscore_f1": "BERTScore"}


@cache
def _paper_file() -> Mapping[str, Any]:
    return json.loads(files("wavllm_eval.reports").joinpath("paper_results.json").read_text(encoding="utf-8"))


def paper_rows() -> list[dict]:
    return [dict(r) for r in _paper_file()["rows"]]


def paper_split_size(task_id: str) -> int | None:
    """Samples in the split the papers report on (a prompt variant `<id>@pK` runs the same split)."""
    size = _paper_file().get("split_sizes", {}).get(split_task_id(task_id)[0])
    return int(size) if size is not None else None


def task_name(task_id: str) -> str:
    """A task's name as a paper prints it: `LibriSpeech test-clean`, `... (prompt 2)` for a variant."""
    base, variant = split_task_id(task_id)
    name = TASK_NAMES.get(base, base)
    return f"{name} (prompt {variant})" if base != task_id else name


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _reads_text(metric: str) -> bool:
    """False for metrics scored from choice log-probabilities (EER, minDCF, `*_choice`), which an
    unparsed text answer does not touch: the unparsed rate is shown beside the others only."""
    return not (metric.startswith(("eer", "min_dcf")) or metric.endswith("_choice"))


def _lower_is_better(metric: str) -> bool:
    return metric.startswith(("wer", "eer", "min_dcf"))


def long_table(runs: Sequence[RunResult], include_reported: bool = True) -> pd.DataFrame:
    reported = {(r["model"], r["task"], r["metric"]): r for r in paper_rows()} if include_reported else {}
    rows: list[dict] = []
    breakdowns: dict[str, dict[str, Any]] = {}
    for run in runs:
        for task_id, entry in run.tasks.items():
            headlines = set(run.headlines(task_id))
            unparsed = (entry.get("extra") or {}).get("unparsed_rate")
            if entry.get("breakdowns"):
                breakdowns.setdefault(run.label, {})[task_id] = entry["breakdowns"]
            for metric, value in entry["metrics"].items():
                ci = entry.get("ci95", {}).get(metric, [None, None])
                paper = reported.get((run.model_id, task_id, metric))
                rows.append({
                    "model": run.label, "source": "measured", "task": task_id, "metric": metric,
                    "headline": metric in headlines, "value": _num(value), "ci_low": _num(ci[0]),
                    "ci_high": _num(ci[1]), "higher_is_better": bool(entry.get("higher_is_better", {}).get(metric, True)),
                    "n_total": entry["n_total"], "n_scored": entry["n_scored"], "n_failed": entry["n_failed"],
                    "n_skipped": entry["n_skipped"],
                    "unparsed_rate": float(unparsed) if unparsed is not None and _reads_text(metric) else math.nan,
                    "reference_n": 0, "on_reference": True, "comparable": True,
                    "reported_value": paper["value"] if paper else math.nan, "delta_vs_reported": math.nan,
                    "reference": "", "data_hash": run.results.get("meta", {}).get("data_hashes", {}).get(task_id, ""),
                })
    measured_tasks = {r["task"] for r in rows}
    for (model, task_id, metric), paper in reported.items():
        if task_id in measured_tasks:
            rows.append({
                "model": model, "source": "reported", "task": task_id, "metric": metric, "headline": True,
                "value": float(paper["value"]), "ci_low": math.nan, "ci_high": math.nan,
                "higher_is_better": not _lower_is_better(metric), "n_total": paper_split_size(task_id) or 0,
                "n_scored": 0, "n_failed": 0, "n_skipped": 0, "unparsed_rate": math.nan,
                "reference_n": paper_split_size(task_id) or 0, "on_reference": True, "comparable": False,
                "reported_value": math.nan, "delta_vs_reported": math.nan,
                "reference": f"{paper['source']} ({paper['split']}; {paper['status']})", "data_hash": "",
            })
    table = pd.DataFrame(rows, columns=LONG_COLUMNS)
    if not table.empty:
        _mark_comparable(table)
    table = table.reset_index(drop=True)
    table.attrs["breakdowns"] = breakdowns  # {run label: {task: results.json `breakdowns`}}, for the JSON and HTML
    return table


def _mark_comparable(table: pd.DataFrame) -> None:
    measured = table["source"] == "measured"
    for task_id, group in table[measured].groupby("task"):
        reference_n = paper_split_size(str(task_id)) or int(group["n_total"].max())
        on_reference = group["n_total"] == reference_n
        table.loc[group.index, "reference_n"] = reference_n
        table.loc[group.index, "on_reference"] = on_reference
        table.loc[group.index, "comparable"] = False
        candidates = group[on_reference]
        if candidates.empty:
            continue
        # on the reference set: the data of its most complete run, and as many scored samples
        fullest = candidates.loc[candidates["n_scored"].idxmax()]
        comparable = (candidates["data_hash"] == fullest["data_hash"]) & (candidates["n_scored"] >= fullest["n_scored"])
        table.loc[candidates.index, "comparable"] = comparable
        if paper_split_size(str(task_id)) is not None:  # the paper measured this split: the difference means something
            table.loc[candidates.index, "delta_vs_reported"] = candidates["value"] - candidates["reported_value"]
    table["reference_n"] = table["reference_n"].astype(int)
    table["on_reference"] = table["on_reference"].astype(bool)
    table["comparable"] = table["comparable"].astype(bool)


def best_mask(table: pd.DataFrame) -> pd.Series:
    """True on the best comparable measured value of each task × metric (ties all marked), when at
    least two comparable runs compete."""
    best = pd.Series(False, index=table.index)
    eligible = table[(table["source"] == "measured") & table["comparable"] & table["value"].notna()]
    for _, group in eligible.groupby(["task", "metric"]):
        if len(group) < 2:
            continue
        target = group["value"].max() if group["higher_is_better"].iloc[0] else group["value"].min()
        best[group.index[group["value"] == target]] = True
    return best


def cell_text(row: pd.Series) -> str:
    """`value ± CI half-width`, then what a reader must know to trust it: failed/skipped counts,
    the share of unparsed answers, and `† n=N` for a run off the reference test set (`†` alone:
    on it, but fewer samples scored or other data than the fullest run). One scored sample has no
    CI, so no `±`; a run whose every sample failed shows its failure count instead of a number."""
    notes = [f"{int(row[k])} {k[2:]}" for k in ("n_failed", "n_skipped") if row[k]]
    if pd.notna(row["unparsed_rate"]) and row["unparsed_rate"] > 0:
        notes.append(f"{row['unparsed_rate']:.3g} % unparsed")
    if pd.isna(row["value"]):
        text = "—"
    else:
        text = f"{row['value']:.2f}"
        if pd.notna(row["ci_low"]) and pd.notna(row["ci_high"]) and row["n_scored"] > 1:
            text += f" ± {(row['ci_high'] - row['ci_low']) / 2:.2f}"
    if notes:
        text += f" ({', '.join(notes)})"
    if row["source"] == "measured" and not row["on_reference"]:
        text += f" † n={int(row['n_total'])}"
    elif row["source"] == "measured" and not row["comparable"]:
        text += " †"
    return text


def column_label(task: str, metric: str, higher_is_better: bool) -> str:
    return f"{task} · {metric} {'↑' if higher_is_better else '↓'}"


def wide_table(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Models as rows, `task · metric` (every headline metric) as columns: display strings and a
    same-shaped frame of best-marks, so each writer decides how to emphasise."""
    headline = table[table["headline"]].copy()
    if headline.empty:
        return pd.DataFrame(), pd.DataFrame()
    headline["row"] = headline["model"] + headline["source"].map({"measured": "", "reported": " (reported)"})
    headline["column"] = [column_label(t, m, h) for t, m, h in
                          zip(headline["task"], headline["metric"], headline["higher_is_better"], strict=True)]
    headline["text"] = headline.apply(cell_text, axis=1)
    headline["best"] = best_mask(table)[headline.index]
    order_rows = list(dict.fromkeys(headline.sort_values("source", kind="stable")["row"]))
    order_columns = list(dict.fromkeys(headline["column"]))
    text = headline.pivot(index="row", columns="column", values="text").reindex(index=order_rows, columns=order_columns)
    best = headline.pivot(index="row", columns="column", values="best").reindex(index=order_rows, columns=order_columns)
    text.index.name, text.columns.name = "model", None
    return text.fillna("—"), best.fillna(False).astype(bool)


def reference_sets(table: pd.DataFrame) -> dict[str, str]:
    """Per task, the test set runs are ranked on, in words: `2620 samples (the paper's split)`."""
    measured = table[table["source"] == "measured"]
    out = {}
    for task_id, group in measured.groupby("task", sort=False):
        n = int(group["reference_n"].iloc[0])
        source = "the paper's split" if paper_split_size(str(task_id)) else "the fullest run"
        out[str(task_id)] = f"{n} samples ({source})"
    return out


def _num(value) -> float:
    return math.nan if value is None else float(value)
