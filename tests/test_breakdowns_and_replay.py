"""Scores broken down by stored sample attributes (with CIs), answers replayed from a file through
the whole pipeline, and the gate on a `--limit` subset of its baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.librispeech_tree import SENTENCES, build_tree
from tests.run_builder import write_run
from wavllm_eval.cli import main
from wavllm_eval.registry import make_task
from wavllm_eval.types import Record

TASK = "librispeech-test-clean"


def test_iemocap_breakdown_per_session_and_class_by_hand():
    # session 1: neu right, hap wrong; session 2: sad right, ang right, hap right
    rows = [("a", "neu", "neutral", "Session1"), ("b", "hap", "sad", "Session1"), ("c", "sad", "sad", "Session2"),
            ("d", "ang", "angry", "Session2"), ("e", "hap", "happy", "Session2")]
    records = [Record(i, pred, ref, "ok", meta={"session": s}) for i, ref, pred, s in rows]
    result = make_task("iemocap-er").score(records).result
    sessions = result.breakdowns["session"]
    assert {k: v["n"] for k, v in sessions.items()} == {"Session1": 2, "Session2": 3}
    assert sessions["Session1"]["metrics"] == {"wa": 50.0, "ua": 50.0}  # neu 1/1, hap 0/1
    assert sessions["Session2"]["metrics"] == {"wa": 100.0, "ua": 100.0}
    classes = result.breakdowns["class"]
    assert classes["hap"]["metrics"]["wa"] == 50.0 and classes["hap"]["n"] == 2
    assert set(classes) == {"neu", "hap", "sad", "ang"}
    assert set(sessions["Session1"]["ci95"]) == {"wa", "ua"}


def test_librispeech_breakdown_per_speaker_and_duration_bucket_by_hand():
    records = [Record("1-1-0", "a b", "a b", "ok", meta={"speaker": "1", "duration_s": 3.0}),
               Record("1-1-1", "a", "a b c d", "ok", meta={"speaker": "1", "duration_s": 12.0}),
               Record("2-1-0", "x y z", "x y q", "ok", meta={"speaker": "2", "duration_s": 4.5})]
    result = make_task(TASK).score(records).result
    speakers = result.breakdowns["speaker"]
    assert speakers["1"]["metrics"]["wer"] == pytest.approx(100 * 3 / 6)  # 0 + 3 deletions over 2 + 4 words
    assert speakers["2"]["metrics"]["wer"] == pytest.approx(100 * 1 / 3)
    buckets = result.breakdowns["duration_bucket"]
    assert {k: v["n"] for k, v in buckets.items()} == {"0-5 s": 2, "10-20 s": 1}
    # the CI of a group is the documented bootstrap over that group's rows
    rows = np.array([[0, 2], [3, 4]], dtype=float)
    picks = np.random.default_rng(1).integers(0, 2, size=(1000, 2))
    totals = rows[picks].sum(axis=1)
    expected = np.percentile(100 * totals[:, 0] / totals[:, 1], [2.5, 97.5])
    assert speakers["1"]["ci95"]["wer"] == pytest.approx(list(expected), abs=1e-6)


def test_replayed_answers_go_through_the_whole_pipeline(tmp_path):
    build_tree(tmp_path / "data")
    ids = sorted(SENTENCES)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": i, "prediction": SENTENCES[i].lower()}) + "\n" for i in ids[:-1]))
    # the audio of one answered sample is gone: replaying needs no audio, so it still scores
    (tmp_path / "data/LibriSpeech/test-clean/121/1000/121-1000-0000.flac").unlink()
    rc = main(["run", "--tasks", TASK, "--model", "replay", "--model-path", str(answers), "--data-dir",
               str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    results = json.loads((tmp_path / "out/replay/results.json").read_text())
    entry = results["tasks"][TASK]
    assert (entry["n_total"], entry["n_scored"], entry["n_failed"]) == (5, 4, 1)
    assert entry["metrics"]["wer"] == 0.0
    records = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / f"out/replay/samples/{TASK}.jsonl").read_text().splitlines()}
    assert records[ids[-1]]["status"] == "failed" and str(answers) in records[ids[-1]]["error"]
    assert results["model"]["details"]["answers"] == 4


def test_gate_on_a_limit_subset_compares_the_shared_samples_and_says_so(tmp_path, capsys):
    refs = [f"word{i} common tail" for i in range(40)]
    base = write_run(tmp_path / "a", "m", {TASK: [Record(f"u{i:02d}", r, r, "ok", task=TASK) for i, r in enumerate(refs)]})
    # the candidate ran --limit 10 and dropped one word in each
    subset = [Record(f"u{i:02d}", r.rsplit(" ", 1)[0], r, "ok", task=TASK) for i, r in enumerate(refs[:10])]
    cand = write_run(tmp_path / "b", "m", {TASK: subset})
    rc = main(["gate", "--baseline", str(base), "--candidate", str(cand)])
    out, err = capsys.readouterr()
    assert "candidate ran 10 of the baseline's 40 samples (a subset): compared on the shared samples only" in err
    assert "only 10 paired samples: too few to gate on reliably" in err
    assert "+25.00" in out  # 10 deletions over 40 normalised words ("word0" -> "word 0"), on the shared samples
    assert rc == 1  # worse by 33 points in every one of the 10 utterances: significant even at n = 10


def test_gate_says_when_too_few_utterances_differ_for_the_matched_pairs_test(tmp_path, capsys):
    # the demo-corpus case: a large WER regression carried by 4 utterances cannot be significant
    refs = [f"alpha beta gamma delta {i}" for i in range(13)]
    base = write_run(tmp_path / "a", "m", {TASK: [Record(f"u{i:02d}", r, r, "ok", task=TASK) for i, r in enumerate(refs)]})
    worse = [Record(f"u{i:02d}", "" if i < 4 else r, r, "ok", task=TASK) for i, r in enumerate(refs)]
    cand = write_run(tmp_path / "b", "m", {TASK: worse})
    rc = main(["gate", "--baseline", str(base), "--candidate", str(cand)])
    err = capsys.readouterr().err
    assert rc == 0  # 2 / 2**4 = 0.125: the test cannot reject with 4 differing utterances
    assert "only 4 utterances' errors differ: the matched-pairs test cannot reach p < 0.05 with fewer than 6" in err
