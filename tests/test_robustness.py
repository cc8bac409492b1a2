"""Prompt robustness: the report's spread across instruction variants equals a hand computation, and
the gate can check the mean across variants."""

from __future__ import annotations

import json
import statistics

import pytest
from wavllm_eval.reports.report import write_report
from wavllm_eval.reports.robustness import variant_spreads
from wavllm_eval.reports.runs import load_run

from tests.run_builder import write_run
from wavllm_eval.cli import main
from wavllm_eval.types import Record

TASK = "librispeech-test-clean"
REFS = ["THE CAT SAT ON THE MAT", "A QUICK BROWN FOX", "HELLO WORLD", "RED GREEN BLUE YELLOW PINK"]  # 17 words


def drop_last(text: str) -> str:
    return " ".join(text.split()[:-1])


def run_with_variants(tmp_path, name, predictions_per_variant, copies=1):
    refs = REFS * copies
    tasks = {}
    for k, predictions in enumerate(predictions_per_variant, start=1):
        task_id = TASK if k == 1 else f"{TASK}@p{k}"
        tasks[task_id] = [Record(f"u{i:03d}", p, r, "ok", task=task_id)
                          for i, (p, r) in enumerate(zip(predictions * copies, refs, strict=True))]
    return write_run(tmp_path, name, tasks)


def test_spread_across_variants_equals_a_hand_computation(tmp_path):
    perfect = [r.lower() for r in REFS]
    every_last_dropped = [drop_last(r) for r in perfect]  # 4 deletions of 17 words
    one_dropped = [drop_last(perfect[0]), *perfect[1:]]  # 1 deletion of 17 words
    run = run_with_variants(tmp_path / "out", "m", [perfect, every_last_dropped, one_dropped])
    [spread] = variant_spreads([load_run(run)])
    values = [0.0, 100 * 4 / 17, 100 * 1 / 17]
    assert (spread.task, spread.metric, spread.n_variants) == (TASK, "wer", 3)
    assert spread.default == 0.0
    assert spread.mean == pytest.approx(sum(values) / 3, abs=1e-4)
    assert spread.std == pytest.approx(statistics.stdev(values), abs=1e-4)  # sample standard deviation
    assert spread.worst == pytest.approx(100 * 4 / 17, abs=1e-4)  # WER: the highest is the worst
    md, js = write_report([run], tmp_path / "report", ["md", "json"])
    assert "## Prompt robustness" in md.read_text()
    [row] = json.loads(js.read_text())["prompt_robustness"]
    assert row["std"] == pytest.approx(statistics.stdev(values), abs=1e-4)


def test_gate_on_the_mean_across_variants(tmp_path):
    perfect = [r.lower() for r in REFS]
    worse = [drop_last(r) for r in perfect]
    base = run_with_variants(tmp_path / "a", "m", [perfect, perfect, perfect], copies=15)
    regressed = run_with_variants(tmp_path / "b", "m", [worse, worse, worse], copies=15)
    one_variant_off = run_with_variants(tmp_path / "c", "m", [perfect, perfect, [drop_last(perfect[0]), *perfect[1:]]],
                                        copies=15)
    gate = ["gate", "--baseline", str(base), "--variants", "mean", "--max-regression", "wer=3"]
    assert main([*gate, "--candidate", str(regressed)]) == 1  # mean WER up by 23.5 points, significant
    assert main([*gate, "--candidate", str(one_variant_off)]) == 0  # mean up by 2.0 points: within 3
    # gated per variant, the same candidate's third variant (+5.9) fails
    assert main(["gate", "--baseline", str(base), "--candidate", str(one_variant_off), "--max-regression", "wer=3"]) == 1
    assert main([*gate[:-3], "--variants", "median", "--candidate", str(regressed)]) == 2


def test_gate_on_the_mean_fails_a_candidate_that_lost_samples_or_a_variant(tmp_path):
    """The mean mode keeps the per-task gate's coverage rules: a candidate whose samples failed in
    every variant, or that lacks a variant, must not pass on the average of what is left."""
    perfect = [r.lower() for r in REFS]
    base = run_with_variants(tmp_path / "a", "m", [perfect, perfect, perfect], copies=15)
    half_failed = {}
    for k in (1, 2, 3):
        task_id = TASK if k == 1 else f"{TASK}@p{k}"
        half_failed[task_id] = [Record(f"u{i:03d}", p if i % 2 else "", r, "ok" if i % 2 else "failed",
                                       "" if i % 2 else "audio file not found: x.flac", task=task_id)
                                for i, (p, r) in enumerate(zip(perfect * 15, REFS * 15, strict=True))]
    lossy = write_run(tmp_path / "b", "m", half_failed)
    two_variants = run_with_variants(tmp_path / "c", "m", [perfect, perfect], copies=15)
    gate = ["gate", "--baseline", str(base), "--variants", "mean"]
    assert main([*gate, "--candidate", str(base)]) == 0
    assert main([*gate, "--candidate", str(lossy)]) == 1
    assert main([*gate, "--candidate", str(two_variants)]) == 1
