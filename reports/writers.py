"""Renderers of the one table: Markdown, CSV, JSON (long), LaTeX (booktabs). Model output and ids
are untrusted text: every cell is escaped for its format."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from wavllm_eval.reports.compare import PairedComparison
from wavllm_eval.reports.tables import column_label, metric_name, reference_sets, task_name, wide_table

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#+!|<>~])")

CELL_LEGEND = ("value ± half-width of the bootstrap 95 % CI (no ± from one sample); (N failed): samples that "
               "produced no answer; (X % unparsed): closed-set answers no option could be read from, scored wrong; "
               "bold: best comparable measured value; † n=N: another or smaller test set than the reference, not "
               "ranked; † alone: fewer samples scored or other data than the fullest run, not ranked; "
               "(reported): the model's paper, not measured here")

# the columns of the paired-comparison table that hold words, not numbers (left-aligned)
COMPARISON_TEXT_COLUMNS = ("task", "metric", "candidate", "test", "significant")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_markdown(text: str) -> str:
    """Backslash-escape Markdown syntax (and `|`, `<`, `>`) so a cell renders as the text it holds;
    control characters (a CR or LF in a model id or an output would break the table's row)
    become spaces."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", str(text)))


def markdown_code(text: str) -> str:
    """A value as a code span, which shows `_` and `*` as they are without backslashes. Text that a
    code span cannot hold safely (a backtick, `<`, `>`: raw HTML to some renderers) is escaped instead."""
    text = _CONTROL.sub(" ", str(text))
    if not text:
        return "—"
    if re.search(r"[`<>]", text):
        return escape_markdown(text)
    return f"`{text}`"


def _markdown_table(frame: pd.DataFrame, text_columns: Sequence[str] = ()) -> str:
    header = "| " + " | ".join(escape_markdown(c) for c in frame.columns) + " |"
    rule = "|" + "|".join(":---" if c in text_columns else "---:" for c in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render_markdown(table: pd.DataFrame, comparisons: Sequence[PairedComparison] = (), baseline: str = "",
                    reproducibility: Mapping[str, Any] | None = None, notes: Sequence[str] = (),
                    candidates: Sequence[str] = ()) -> str:
    text, best = wide_table(table)
    lines = ["# wavllm-eval leaderboard", ""]
    if notes:
        lines += [f"> **Note:** {escape_markdown(note)}" for note in notes] + [""]
    if not text.empty:
        shown = text.copy()
        for column in shown.columns:
            shown[column] = [f"**{escape_markdown(v)}**" if b else escape_markdown(v)
                             for v, b in zip(shown[column], best[column], strict=True)]
        shown.insert(0, "model", [escape_markdown(i) for i in shown.index])
        references = "; ".join(f"{escape_markdown(t)}: {escape_markdown(s)}" for t, s in reference_sets(table).items())
        lines += [_markdown_table(shown.reset_index(drop=True), ["model"]), "",
                  f"Cells: {escape_markdown(CELL_LEGEND)}.", "", f"Reference test sets: {references}.", ""]
    if comparisons:
        frame = comparison_frame(comparisons, candidates or sole_candidate(table, baseline, len(comparisons)))
        for column in COMPARISON_TEXT_COLUMNS:  # ids and labels are untrusted; the numbers are ours
            frame[column] = frame[column].map(escape_markdown)
        lines += [f"## Paired comparisons against {escape_markdown(baseline)}", "",
                  _markdown_table(frame, COMPARISON_TEXT_COLUMNS), ""]
    if reproducibility:
        lines += ["## Reproducibility", ""]
        for label, block in reproducibility.items():
            lines += [f"### {escape_markdown(label)}", ""]
            lines += [f"- {escape_markdown(k)}: {markdown_code(compact_text(v))}" for k, v in block.items()]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def sole_candidate(table: pd.DataFrame, baseline: str, n_comparisons: int) -> list[str]:
    """With one measured run besides the baseline, every comparison is against it; with more, the
    caller must name each comparison's candidate (`candidates=`)."""
    measured = list(dict.fromkeys(table.loc[table["source"] == "measured", "model"])) if not table.empty else []
    others = [m for m in measured if m != baseline]
    return others * n_comparisons if len(others) == 1 else []


def comparison_frame(comparisons: Sequence[PairedComparison], candidates: Sequence[str] = ()) -> pd.DataFrame:
    """One row per paired comparison; `candidates` names the run each was compared with the baseline
    (one label per comparison; `—` where the caller did not say)."""
    labels = list(candidates) + ["—"] * (len(comparisons) - len(candidates))
    return pd.DataFrame([{
        "task": c.task, "metric": c.metric, "candidate": label, "baseline": f"{c.baseline:.2f}",
        "candidate value": f"{c.candidate:.2f}", "delta": f"{c.delta:+.2f}",
        "95% CI": f"[{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}]", "p": f"{c.p_value:.4f}",
        "test": "matched pairs (Wilcoxon)" if c.p_matched_pairs is not None else "paired bootstrap",
        "significant": "yes" if c.significant else "no", "n": str(c.n_paired)}
        for c, label in zip(comparisons, labels, strict=False)],
        columns=["task", "metric", "candidate", "baseline", "candidate value", "delta", "95% CI", "p", "test",
                 "significant", "n"])


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet evaluates as a formula (OWASP)


def _inert(cell: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with an apostrophe (shown as text)."""
    return "'" + cell if isinstance(cell, str) and cell.startswith(_FORMULA_START) else cell


def render_csv(table: pd.DataFrame) -> str:
    """Numbers stay numbers; text cells (model ids, labels) never start a formula."""
    safe = table.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):  # bool columns count as numeric
            safe[column] = safe[column].map(_inert)
    return safe.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def render_json(table: pd.DataFrame, comparisons: Sequence[PairedComparison] = (),
                reproducibility: Mapping[str, Any] | None = None, candidates: Sequence[str] = ()) -> str:
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]
    compared = [c.to_json() for c in comparisons]
    baseline = str(table.loc[table["source"] == "measured", "model"].iloc[0]) if compared else ""
    for entry, label in zip(compared, candidates or sole_candidate(table, baseline, len(compared)), strict=False):
        entry["candidate_run"] = label
    payload = {"rows": rows, "comparisons": compared, "breakdowns": table.attrs.get("breakdowns", {}),
               "reproducibility": reproducibility or {}}
    return json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n"


def render_latex(table: pd.DataFrame, caption: str = "", label: str = "tab:wavllm-eval") -> str:
    """A complete `table` float for a paper: booktabs rules, one column group per task, readable
    task and metric names, measured rows then reported ones."""
    text, best = wide_table(table)
    if text.empty:
        return "% no results\n"
    headline = table[table["headline"]].drop_duplicates(["task", "metric"])
    columns = [(str(r.task), str(r.metric), bool(r.higher_is_better)) for r in headline.itertuples()]
    columns = [c for c in columns if column_label(*c) in text.columns]
    groups: list[tuple[str, int]] = []
    for task, _, _ in columns:
        if groups and groups[-1][0] == task:
            groups[-1] = (task, groups[-1][1] + 1)
        else:
            groups.append((task, 1))
    task_row, rules, start = ["Model"], [], 2
    for task, width in groups:
        task_row.append(f"\\multicolumn{{{width}}}{{c}}{{{_escape_latex(task_name(task))}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    metric_row = [""] + [f"{_escape_latex(metric_name(m))} {_escape_latex('↑' if up else '↓')}" for _, m, up in columns]
    body, reported_started = [], False
    for row_label in text.index:
        is_reported = row_label.endswith(" (reported)")
        if is_reported and not reported_started:
            body.append("\\midrule")
            reported_started = True
        cells = []
        for column in (column_label(*c) for c in columns):
            cell = _escape_latex(text.at[row_label, column])
            cells.append(f"\\textbf{{{cell}}}" if best.at[row_label, column] else cell)
        name = _escape_latex(row_label)
        body.append(" & ".join([f"\\textit{{{name}}}" if is_reported else name, *cells]) + " \\\\")
    caption = caption or ("Results measured with wavllm-eval. Cells: value $\\pm$ half-width of the bootstrap 95\\% "
                          "CI; bold: best comparable measured value; $\\dagger$ n=N: another or smaller test set than "
                          "the reference, not ranked; italic: reported by the model's paper.")
    lines = ["% wavllm-eval leaderboard. Needs \\usepackage{booktabs} (\\toprule, \\midrule, \\cmidrule, \\bottomrule).",
             "\\begin{table}[t]", "\\centering", f"\\caption{{{caption}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{l{'r' * len(columns)}}}", "\\toprule", " & ".join(task_row) + " \\\\",
             " ".join(rules), " & ".join(metric_row) + " \\\\", "\\midrule", *body, "\\bottomrule",
             "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"[": "{[}", "]": "{]}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$", "†": r"$\dagger$", "—": "---",
                  "·": r"$\cdot$", "↑": r"$\uparrow$", "↓": r"$\downarrow$"}


def _escape_latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def compact_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={compact_text(v)}" for k, v in value.items())
    return str(value)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
