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
from wavllm_eval.reports.tables import wide_table

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#+!|<>~])")


def escape_markdown(text: str) -> str:
    """Backslash-escape Markdown syntax (and `|`, `<`, `>`) so a cell renders as the text it holds."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(escape_markdown(c) for c in frame.columns) + " |"
    rule = "|" + "|".join(["---"] * len(frame.columns)) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render_markdown(table: pd.DataFrame, comparisons: Sequence[PairedComparison] = (), baseline: str = "",
                    reproducibility: Mapping[str, Any] | None = None, notes: Sequence[str] = ()) -> str:
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
        lines += [_markdown_table(shown.reset_index(drop=True)), "",
                  "Cells: value ± half-width of the bootstrap 95 % CI; **bold**: best comparable measured value; "
                  "† fewer samples scored or another test set than the fullest run (not comparable); "
                  "(reported): the model's paper, not measured here.", ""]
    if comparisons:
        lines += [f"## Paired comparisons against {escape_markdown(baseline)}", "",
                  _markdown_table(comparison_frame(comparisons).map(escape_markdown)), ""]
    if reproducibility:
        lines += ["## Reproducibility", ""]
        for label, block in reproducibility.items():
            lines += [f"### {escape_markdown(label)}", ""]
            lines += [f"- {escape_markdown(k)}: {escape_markdown(compact_text(v))}" for k, v in block.items()]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def comparison_frame(comparisons: Sequence[PairedComparison]) -> pd.DataFrame:
    return pd.DataFrame([{
        "task": c.task, "metric": c.metric, "baseline": f"{c.baseline:.2f}", "candidate": f"{c.candidate:.2f}",
        "delta": f"{c.delta:+.2f}", "95% CI": f"[{c.ci95[0]:+.2f}, {c.ci95[1]:+.2f}]", "p": f"{c.p_value:.4f}",
        "test": "matched pairs (Wilcoxon)" if c.p_matched_pairs is not None else "paired bootstrap",
        "significant": "yes" if c.significant else "no", "n": str(c.n_paired)} for c in comparisons])


def render_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def render_json(table: pd.DataFrame, comparisons: Sequence[PairedComparison] = (),
                reproducibility: Mapping[str, Any] | None = None) -> str:
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]
    payload = {"rows": rows, "comparisons": [c.to_json() for c in comparisons],
               "reproducibility": reproducibility or {}}
    return json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n"


def render_latex(table: pd.DataFrame) -> str:
    """A booktabs tabular, ready for a paper (needs \\usepackage{booktabs})."""
    text, best = wide_table(table)
    if text.empty:
        return "% no results\n"
    escaped = text.map(lambda v: _escape_latex(v))
    for column in escaped.columns:
        escaped[column] = [f"\\textbf{{{v}}}" if b else v for v, b in zip(escaped[column], best[column], strict=True)]
    escaped.index = [_escape_latex(i) for i in escaped.index]
    escaped.columns = [_escape_latex(c) for c in escaped.columns]
    escaped.index.name = "model"
    return escaped.style.to_latex(hrules=True, column_format="l" + "r" * len(escaped.columns))


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$", "†": r"$\dagger$", "—": "---",
                  "·": r"$\cdot$"}


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
