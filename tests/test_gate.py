"""`wavllm-eval gate` as a CI step: exit 0 on no change, 1 on a planted significant regression,
0 on a planted small non-significant one, 1 when samples were lost."""

from __future__ import annotations

from wavllm_eval.reports.compare import compare_runs
from wavllm_eval.reports.runs import load_run

from tests.test_reports import REFERENCES, make_run
from wavllm_eval.cli import main

N = 60


def perfect():
    return [REFERENCES[i % 4] for i in range(N)]


def gate(baseline, candidate, *extra):
    return main(["gate", "--baseline", str(baseline), "--candidate", str(candidate), *extra])


def test_identical_runs_pass(tmp_path):
    base = make_run(tmp_path / "a", "m", perfect())
    cand = make_run(tmp_path / "b", "m", perfect())
    assert gate(base, cand) == 0


def test_planted_significant_regression_fails(tmp_path):
    base = make_run(tmp_path / "a", "m", perfect())
    worse = [" ".join(text.split()[:-1]) for text in perfect()]  # drop the last word everywhere
    cand = make_run(tmp_path / "b", "m", worse)
    [comparison] = compare_runs(load_run(base), load_run(cand))
    assert comparison.delta > 20 and comparison.significant
    assert gate(base, cand) == 1


def test_planted_small_non_significant_regression_passes(tmp_path):
    base = make_run(tmp_path / "a", "m", perfect())
    slightly = perfect()
    slightly[0] = "the cat sat on the hat"  # one substitution in 60 utterances
    cand = make_run(tmp_path / "b", "m", slightly)
    [comparison] = compare_runs(load_run(base), load_run(cand))
    assert comparison.regression > 0.5 and not comparison.significant  # beyond threshold, but noise
    assert gate(base, cand) == 0


def test_threshold_override_and_config_file(tmp_path):
    base = make_run(tmp_path / "a", "m", perfect())
    worse = [" ".join(text.split()[:-1]) for text in perfect()]
    cand = make_run(tmp_path / "b", "m", worse)
    assert gate(base, cand, "--max-regression", "wer=50") == 0
    config = tmp_path / "wavllm-gate.toml"
    config.write_text("alpha = 0.05\n[max_regression]\nwer = 60.0\n")
    assert gate(base, cand, "--config", str(config)) == 0
    assert gate(base, cand, "--max-regression", "wer=lots") == 2


def test_fewer_scored_samples_fail(tmp_path):
    base = make_run(tmp_path / "a", "m", perfect())
    statuses = ["ok"] * (N - 1) + ["failed"]
    cand = make_run(tmp_path / "b", "m", perfect(), statuses=statuses)
    assert gate(base, cand) == 1


def test_another_test_set_fails(tmp_path):
    base = make_run(tmp_path / "a", "m", perfect())
    cand = make_run(tmp_path / "b", "m", perfect(), data_hash="e" * 64, id_prefix="other")
    assert gate(base, cand) == 1


def test_a_subset_candidate_with_failures_fails(tmp_path):
    """A `--limit` candidate (the first 20 samples) that failed most of them must not pass by
    pairing only the samples both runs scored."""
    base = make_run(tmp_path / "a", "m", perfect())
    subset = perfect()[:20]
    cand = make_run(tmp_path / "b", "m", subset, statuses=["ok"] * 5 + ["failed"] * 15)
    assert gate(base, cand) == 1
    whole = make_run(tmp_path / "c", "m", subset)  # the same subset, every sample scored: a fair subset
    assert gate(base, whole) == 0
