"""The report as researchers read it: runs off the paper's split marked and never ranked, failure
counts and unparsed answers in the cell, every headline metric, a complete LaTeX table, breakdowns,
and the HTML page of several models rendered in Chromium (screenshot in test-artifacts/).

Expected numbers are computed here from the records the test writes (hand counts, numpy), never
read back from the code under test."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from wavllm_eval.reports.html import heatmap_grid, render_html, y_limits
from wavllm_eval.reports.report import comparisons_against_first, reproducibility, write_report
from wavllm_eval.reports.runs import load_runs
from wavllm_eval.reports.tables import best_mask, long_table
from wavllm_eval.reports.writers import render_json, render_latex, render_markdown

from tests.chromium import render
from tests.run_builder import write_run
from wavllm_eval.types import Record

ASR = "librispeech-test-clean"
TEST_CLEAN_SIZE = 2620  # LibriSpeech test-clean utterances (OpenSLR 12), the split the papers report on
GAOKAO_SIZE = 2000
REFERENCE = "the cat sat down"  # four words per utterance (no numbers: the normaliser would join them)
WRONG = "the cat sat up"  # one substitution


def asr_records(n: int, n_wrong: int, prefix: str = "1089-134686-") -> list[Record]:
    return [Record(f"{prefix}{i:04d}", WRONG if i < n_wrong else REFERENCE, REFERENCE, "ok", task=ASR)
            for i in range(n)]


def er_records(predictions: list[str], references: list[str]) -> list[Record]:
    return [Record(f"Ses0{1 + i % 5}F_impro01_F{i:03d}", p, r, "ok", task="iemocap-er")
            for i, (p, r) in enumerate(zip(predictions, references, strict=True))]


def wer_half_width(n: int, n_wrong: int) -> str:
    """The bootstrap CI half-width of a corpus WER over rows (edits, words), resampled as the
    metrics document it: numpy default_rng(1), 1000 resamples of n rows, percentiles 2.5/97.5."""
    rows = np.array([[1, 4]] * n_wrong + [[0, 4]] * (n - n_wrong), dtype=float)
    picks = np.random.default_rng(1).integers(0, n, size=(1000, n))
    totals = rows[picks].sum(axis=1)
    low, high = np.percentile(100 * totals[:, 0] / totals[:, 1], [2.5, 97.5])
    return f"{(high - low) / 2:.2f}"


def accuracy_half_width(hits: list[int]) -> str:
    rows = np.array(hits, dtype=float)
    picks = np.random.default_rng(1).integers(0, len(hits), size=(1000, len(hits)))
    low, high = np.percentile(100 * rows[picks].mean(axis=1), [2.5, 97.5])
    return f"{(high - low) / 2:.2f}"


@pytest.fixture(scope="module")
def leaderboard(tmp_path_factory):
    """alpha and beta on all 2620 test-clean utterances (26 and 262 wrong), tiny on 5 (all right,
    so the lowest WER), alpha and beta on a 4-utterance IEMOCAP subset, broken: every Gaokao item failed."""
    out = tmp_path_factory.mktemp("runs")
    er_refs = ["neu", "hap", "ang", "sad"]
    alpha = write_run(out, "alpha", {ASR: asr_records(TEST_CLEAN_SIZE, 26),
                                     "iemocap-er": er_records(["neutral", "blah", "angry", "happy"], er_refs)})
    beta = write_run(out, "beta", {ASR: asr_records(TEST_CLEAN_SIZE, 262),
                                   "iemocap-er": er_records(["neutral", "happy", "angry", "sad"], er_refs)})
    tiny = write_run(out, "tiny", {ASR: asr_records(5, 0)})
    broken = write_run(out, "broken", {"gaokao-sqa": [
        Record(f"gaokao-{i:04d}", "", "A", "failed", "CUDA out of memory", task="gaokao-sqa") for i in range(GAOKAO_SIZE)]})
    return [alpha, beta, tiny, broken]


def markdown_row(markdown: str, model: str) -> list[str]:
    [line] = [line for line in markdown.splitlines() if line.startswith(f"| {model} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_subset_run_is_marked_and_never_ranked(leaderboard):
    table = long_table(load_runs(leaderboard))
    markdown = render_markdown(table)
    header = markdown_row(markdown, "model")
    column = header.index("librispeech-test-clean · wer ↓")
    alpha_wer = f"{100 * 26 / (TEST_CLEAN_SIZE * 4):.2f}"  # 26 substitutions over 10480 words
    beta_wer = f"{100 * 262 / (TEST_CLEAN_SIZE * 4):.2f}"
    assert (alpha_wer, beta_wer) == ("0.25", "2.50")
    assert markdown_row(markdown, "alpha")[column] == f"**{alpha_wer} ± {wer_half_width(TEST_CLEAN_SIZE, 26)}**"
    assert markdown_row(markdown, "beta")[column] == f"{beta_wer} ± {wer_half_width(TEST_CLEAN_SIZE, 262)}"
    # the lowest WER, but on 5 of 2620 utterances: marked with its n, not bold
    assert markdown_row(markdown, "tiny")[column] == "0.00 ± 0.00 † n=5"
    wer = table[(table["task"] == ASR) & (table["metric"] == "wer") & (table["source"] == "measured")]
    best = best_mask(table)
    assert list(wer.loc[best[wer.index], "model"]) == ["alpha"]
    # the paper's number is set only against runs on the paper's split
    delta = dict(zip(wer["model"], wer["delta_vs_reported"], strict=True))
    assert np.isnan(delta["tiny"]) and "2620 samples (the paper's split)" in markdown

    grid, scaled = heatmap_grid(table)
    wer_column = f"{ASR} · wer"
    assert grid.at["tiny", wer_column] == 0.0  # shown ...
    assert np.isnan(scaled.at["tiny", wer_column])  # ... but outside the colour scale
    assert (scaled.at["alpha", wer_column], scaled.at["beta", wer_column]) == (1.0, 0.0)


def test_all_failed_run_shows_its_failure_count(leaderboard):
    markdown = render_markdown(long_table(load_runs(leaderboard)))
    column = markdown_row(markdown, "model").index("gaokao-sqa · accuracy ↑")
    # 2000 = the paper's Gaokao split: on it, so no dagger; no number, but why there is none
    assert markdown_row(markdown, "broken")[column] == f"— ({GAOKAO_SIZE} failed)"


def test_unparsed_rate_and_every_headline_are_shown(leaderboard):
    markdown = render_markdown(long_table(load_runs(leaderboard)))
    header = markdown_row(markdown, "model")
    wa, ua = header.index("iemocap-er · wa ↑"), header.index("iemocap-er · ua ↑")  # both headlines
    alpha = markdown_row(markdown, "alpha")
    # alpha: neu right, "blah" unparsed (1 of 4 = 25 %, scored wrong), ang right, sad read as happy
    hits = [1, 0, 1, 0]
    assert alpha[wa] == f"{100 * sum(hits) / 4:.2f} ± {accuracy_half_width(hits)} (25 % unparsed) † n=4"
    assert alpha[ua].startswith("50.00 ± ") and alpha[ua].endswith(" (25 % unparsed) † n=4")
    assert "unparsed" not in markdown_row(markdown, "beta")[wa]  # none unparsed: nothing said


def test_unparsed_rate_sits_beside_text_scores_only(tmp_path):
    """PocketSphinx on SV: no yes/no in any answer (100 % unparsed, accuracy 0), while EER, scored
    from log P(Yes) − log P(No), is untouched by parsing and carries no such note."""
    labels = ["yes", "no", "yes", "no"]
    trials = [Record(f"id1000{i}/a.wav id1001{i}/b.wav", "the cat sat down", label, "ok",
                     choice_logprobs=(-0.1 if label == "yes" else -2.0, -1.0), task="voxceleb1-sv")
              for i, label in enumerate(labels)]
    run = write_run(tmp_path, "pocketsphinx", {"voxceleb1-sv": trials})
    markdown = render_markdown(long_table(load_runs([run])))
    header = markdown_row(markdown, "model")
    row = markdown_row(markdown, "pocketsphinx")
    assert row[header.index("voxceleb1-sv · accuracy ↑")] == "0.00 ± 0.00 (100 % unparsed) † n=4"
    # yes trials score 0.9 and no trials -1.0: perfectly separated, EER 0
    eer = row[header.index("voxceleb1-sv · eer ↓")]
    assert eer.startswith("0.00") and "unparsed" not in eer


def test_one_sample_has_no_confidence_interval(tmp_path):
    run = write_run(tmp_path, "single", {"iemocap-er": er_records(["neutral"], ["neu"])})
    markdown = render_markdown(long_table(load_runs([run])))
    assert markdown_row(markdown, "single")[1:] == ["100.00 † n=1", "100.00 † n=1"]
    assert "±" not in markdown_row(markdown, "single")[1]


def test_latex_is_a_complete_table(leaderboard):
    latex = render_latex(long_table(load_runs(leaderboard)))
    assert latex.startswith("% wavllm-eval leaderboard. Needs \\usepackage{booktabs}")
    for piece in ("\\begin{table}", "\\caption{", "\\label{tab:wavllm-eval}", "\\begin{tabular}{lrrrr}",
                  "\\toprule", "\\bottomrule", "\\end{tabular}", "\\end{table}"):
        assert piece in latex
    assert re.search(r"^\s*model\s*&\s*&", latex, flags=re.MULTILINE | re.IGNORECASE) is None
    # readable task names over their metric columns, IEMOCAP spanning its two headlines
    assert ("Model & \\multicolumn{1}{c}{LibriSpeech test-clean} & \\multicolumn{2}{c}{IEMOCAP ER} & "
            "\\multicolumn{1}{c}{Gaokao SQA} \\\\") in latex
    assert " & WER $\\downarrow$ & WA $\\uparrow$ & UA $\\uparrow$ & Acc. $\\uparrow$ \\\\" in latex
    assert "\\textbf{0.25 $\\pm$ " in latex and "tiny & 0.00 $\\pm$ 0.00 $\\dagger$ n=5 &" in latex
    assert "(25 \\% unparsed)" in latex and f"--- ({GAOKAO_SIZE} failed)" in latex
    assert "\\textit{wavllm (reported)} & 2.00 &" in latex


def test_markdown_reproducibility_values_are_code_not_backslashes():
    markdown = render_markdown(long_table([]), reproducibility={"alpha": {
        "options": {"batch_size": 4, "max_failed": 0.1}, "model path": "<script>x</script>"}})
    assert "- options: `batch_size=4, max_failed=0.1`" in markdown
    assert "\\_" not in markdown
    assert "<script>" not in markdown and "\\<script\\>" in markdown  # a code span cannot hold HTML safely


def test_comparisons_name_their_candidate(leaderboard):
    runs = load_runs(leaderboard[:3])
    comparisons, candidates = comparisons_against_first(runs)
    table = long_table(runs)
    markdown = render_markdown(table, comparisons, runs[0].label, candidates=candidates)
    payload = json.loads(render_json(table, comparisons, candidates=candidates))
    assert [c["candidate_run"] for c in payload["comparisons"]] == candidates
    section = markdown.split("## Paired comparisons against alpha")[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| task | metric | candidate | baseline | candidate value |")
    assert lines[1].startswith("|:---|:---|:---|---:|")  # words left, numbers right
    assert [line.split("|")[3].strip() for line in lines[2:]] == candidates
    assert candidates.count("beta") == 3 and candidates.count("tiny") == 1  # wer, wa, ua; wer on 5 shared


def test_report_of_two_runs_names_the_candidate(leaderboard, tmp_path):
    [path] = write_report(leaderboard[:2], tmp_path / "report", ["md"])
    section = path.read_text().split("## Paired comparisons against alpha")[1].split("##")[0]
    rows = [line.split("|")[1:4] for line in section.splitlines() if line.startswith("| librispeech")]
    assert [[c.strip() for c in row] for row in rows] == [["librispeech-test-clean", "wer", "beta"]]
    assert "\\[" not in section  # numbers need no Markdown escapes


def test_breakdowns_in_json_and_page(leaderboard, tmp_path):
    paths = write_report(leaderboard[:2], tmp_path / "report", ["json", "html"])
    payload, page = json.loads(paths[0].read_text()), paths[1].read_text()
    by_class = payload["breakdowns"]["alpha"]["iemocap-er"]["class"]
    assert by_class["hap"]["n"] == 1 and by_class["hap"]["metrics"]["wa"] == 0.0  # "blah" for hap: wrong
    assert "<summary>alpha · iemocap-er · by class (4)</summary>" in page
    assert '<tr><td class="text">ang</td><td>1</td><td>100.00</td><td>100.00</td></tr>' in page  # n=1: no ±


def test_percent_axes_show_zero():
    assert y_limits("accuracy", [0.0, 0.0]) == (0.0, 100.0)
    assert y_limits("eer", [float("nan")]) == (0.0, 100.0)
    assert y_limits("wer", [0.0]) == (0.0, 1.0)  # an error rate: from 0, never a collapsed axis
    assert y_limits("wer", [120.0]) == (0.0, pytest.approx(138.0))


def test_page_of_several_models_renders_in_chromium(leaderboard, tmp_path):
    runs = load_runs(leaderboard)
    comparisons, candidates = comparisons_against_first(runs)
    table = long_table(runs)
    page_text = render_html(runs, table, comparisons, runs[0].label, reproducibility(runs), candidates=candidates)
    assert '<td class="offref">0.00 ± 0.00 † n=5</td>' in page_text
    assert f"<td>— ({GAOKAO_SIZE} failed)</td>" in page_text
    assert '<th class="text">candidate</th>' in page_text and '<td class="text">tiny</td>' in page_text
    page = tmp_path / "leaderboard.html"
    page.write_text(page_text, encoding="utf-8")
    dom, console, shot = render(page, tmp_path / "profile", "leaderboard.png", window="1400,2400")
    assert 'data-sortable="ready"' in dom
    assert console == []
    assert shot.stat().st_size > 10_000
