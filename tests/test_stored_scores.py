"""One set of numbers: report and gate read the rows scoring stored, never re-score; a scorer change
after the run is flagged, and `score RUN_DIR` brings results.json and the rows forward together."""

from __future__ import annotations

import json

import pytest
from wavllm_eval.reports.report import write_report
from wavllm_eval.tasks.asr import LibriSpeechASR

from tests.run_builder import write_run
from wavllm_eval.cli import main
from wavllm_eval.metrics.wer import WordErrorRate
from wavllm_eval.text import RAW
from wavllm_eval.types import Record

TASK = "librispeech-test-clean"
REFS = ["HELLO WORLD", "THE CAT SAT", "FOUR BIRDS FLEW HOME"]


def runs(tmp_path):
    base = [Record(f"u{i}", r.lower(), r, "ok", task=TASK) for i, r in enumerate(REFS)]
    cand = [Record(f"u{i}", r.lower().rsplit(" ", 1)[0], r, "ok", task=TASK) for i, r in enumerate(REFS)]
    return write_run(tmp_path / "a", "base", {TASK: base}), write_run(tmp_path / "b", "cand", {TASK: cand})


def change_the_scorer(monkeypatch):
    """A 'normaliser change' after the run: the installed scorer now keeps case (raw WER)."""
    monkeypatch.setattr(LibriSpeechASR, "make_metrics", lambda self: [WordErrorRate(RAW, "wer")])
    monkeypatch.setattr(LibriSpeechASR, "version", 99)


def test_report_shows_the_stored_numbers_in_table_and_comparison(tmp_path, monkeypatch):
    base, cand = runs(tmp_path)
    change_the_scorer(monkeypatch)
    stored_base = json.loads((base / "results.json").read_text())["tasks"][TASK]["metrics"]["wer"]
    stored_cand = json.loads((cand / "results.json").read_text())["tasks"][TASK]["metrics"]["wer"]
    assert (stored_base, stored_cand) == (0.0, pytest.approx(100 * 3 / 9))  # 3 deleted words of 9
    md_path, json_path = write_report([base, cand], tmp_path / "report", ["md", "json"])
    payload = json.loads(json_path.read_text())
    [comparison] = payload["comparisons"]
    assert (comparison["baseline"], comparison["candidate"]) == (stored_base, pytest.approx(stored_cand))
    table = {r["model"]: r["value"] for r in payload["rows"] if r["metric"] == "wer" and r["source"] == "measured"}
    assert table == {"base": stored_base, "cand": pytest.approx(stored_cand, abs=1e-6)}
    assert "re-score with: wavllm-eval score" in md_path.read_text()  # the version mismatch is said


def test_score_run_dir_rescores_results_and_rows_together(tmp_path, monkeypatch):
    base, cand = runs(tmp_path)
    change_the_scorer(monkeypatch)
    assert main(["score", str(cand)]) == 0
    results = json.loads((cand / "results.json").read_text())
    # raw WER of lower-case predictions against upper-case references: every word is wrong
    assert results["tasks"][TASK]["metrics"]["wer"] == pytest.approx(100 * 9 / 9)
    scores = json.loads((cand / "scores" / f"{TASK}.json").read_text())
    assert scores["scoring_version"].startswith(f"{TASK}/v99/")
    assert scores["metrics"]["wer"]["rows"] == [[2, 2], [3, 3], [4, 4]]  # (edits, words) per utterance
    assert results["tasks"][TASK]["settings"]["scoring_version"] == scores["scoring_version"]


def test_scoring_another_tasks_records_is_an_error(tmp_path, capsys):
    _, cand = runs(tmp_path)
    rc = main(["score", "--task", "covost2-en-de", "--predictions", str(cand / "samples" / f"{TASK}.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and f"written by task {TASK}" in err


def test_score_run_dir_keeps_the_runs_sample_set_and_measurements(tmp_path):
    """A `--limit 3` run in a folder whose JSONL also holds an earlier run's samples: re-scoring keeps
    the run's 3 (its stored sample ids), and what the run measured beside the scores."""
    _, cand = runs(tmp_path)
    from wavllm_eval.store import SampleStore

    SampleStore(cand).append(TASK, [Record("u9", "", "AN EARLIER SAMPLE", "failed", "audio file not found: u9.flac",
                                           task=TASK)])
    path = cand / "results.json"
    results = json.loads(path.read_text())
    measured = {"throughput": {"audio_s": 12.5, "model_s": 0.5}, "batch_invariance": {"checked": 2, "n_differing": 0,
                                                                                     "differing": []}}
    results["tasks"][TASK].update(measured)
    path.write_text(json.dumps(results))
    before = results["tasks"][TASK]
    assert main(["score", str(cand)]) == 0
    after = json.loads(path.read_text())["tasks"][TASK]
    assert (after["n_total"], after["n_scored"], after["n_failed"]) == (3, 3, 0)
    assert after["metrics"] == before["metrics"]
    assert {k: after[k] for k in measured} == measured


def test_score_run_dir_of_a_judged_run_asks_for_the_judge(tmp_path, capsys):
    _, cand = runs(tmp_path)
    path = cand / "results.json"
    results = json.loads(path.read_text())
    results["tasks"][TASK]["settings"]["judge"] = {"fingerprint": "x"}
    path.write_text(json.dumps(results))
    assert main(["score", str(cand)]) == 2
    assert "--judge PATH" in capsys.readouterr().err
    assert json.loads(path.read_text()) == results  # nothing rewritten
