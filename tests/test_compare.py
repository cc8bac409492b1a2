"""Paired significance: BLEU/chrF p-values are sacreBLEU's `--paired-bs` to the printed digit; the
other metrics use the same formulation, checked on a hand-made case."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from wavllm_eval.reports.compare import compare_runs, koehn_p_value
from wavllm_eval.reports.runs import load_run

from tests.run_builder import write_run
from wavllm_eval.types import Record

TASK = "covost2-en-de"
REFERENCES = [f"Das ist Satz Nummer {i} über die Größe des Hauses." for i in range(40)]
BASELINE = [r if i % 3 else r.replace("Größe", "Breite") for i, r in enumerate(REFERENCES)]
CANDIDATE = [r if i % 2 else " ".join(r.split()[:-2]) for i, r in enumerate(REFERENCES)]


def records(hypotheses):
    return [Record(f"clip_{i:02d}", h, r, "ok", task=TASK) for i, (h, r) in enumerate(zip(hypotheses, REFERENCES, strict=True))]


def test_bleu_and_chrf_p_values_are_sacrebleus_paired_bs(tmp_path):
    base = load_run(write_run(tmp_path / "a", "m", {TASK: records(BASELINE)}))
    cand = load_run(write_run(tmp_path / "b", "m", {TASK: records(CANDIDATE)}))
    ours = {c.metric: c for c in compare_runs(base, cand, headline_only=False)}
    # the sacrebleu command line on the same systems (files in id order, as scoring sorts them)
    for name, lines in (("ref.txt", REFERENCES), ("base.txt", BASELINE), ("cand.txt", CANDIDATE)):
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    sacrebleu = Path(sys.executable).with_name("sacrebleu")
    printed = subprocess.run([str(sacrebleu), "ref.txt", "-i", "base.txt", "cand.txt", "-m", "bleu", "chrf",
                              "--paired-bs", "-f", "text"], cwd=tmp_path, capture_output=True, text=True,
                             check=True, env={"SACREBLEU_SEED": "12345", "PATH": ""}).stdout
    p_values = [float(x) for x in re.findall(r"\(p = ([0-9.]+)\)", printed)]
    assert len(p_values) == 2
    assert round(ours["bleu"].p_bootstrap, 4) == p_values[0]
    assert round(ours["chrf"].p_bootstrap, 4) == p_values[1]
    assert ours["bleu"].test.startswith("sacreBLEU")


def test_koehn_p_value_hand_worked():
    # |Δ_b| = 1, 3, 2 -> centred -1, 1, 0; observed |Δ| = 0.5: one centred value is above it
    assert koehn_p_value(np.array([1.0, -3.0, 2.0]), 0.5) == pytest.approx((1 + 1) / (3 + 1))
    # strictly above: a centred value equal to the observed one does not count
    assert koehn_p_value(np.array([1.0, -3.0, 2.0]), 1.0) == pytest.approx(1 / 4)


def test_identical_runs_are_never_a_significant_difference(tmp_path):
    """sacreBLEU's rule (resamples strictly above the observed |Δ|) gives two identical runs its
    smallest p, 1/(B+1); the p is kept as sacreBLEU computes it, but a zero Δ is not significant."""
    base = load_run(write_run(tmp_path / "a", "m", {TASK: records(BASELINE)}))
    same = load_run(write_run(tmp_path / "b", "m", {TASK: records(BASELINE)}))
    comparisons = compare_runs(base, same, headline_only=False)
    assert comparisons and all(c.delta == 0 for c in comparisons)
    assert any(c.p_value < 0.05 for c in comparisons)  # sacreBLEU's number for identical systems
    assert not any(c.significant for c in comparisons)
    assert not any(c.to_json()["significant"] for c in comparisons)


def enumerated_signed_rank_p(differences) -> float:
    """Every sign of the nonzero differences' mid-ranks, counted (the exact conditional null)."""
    import itertools

    from scipy.stats import rankdata

    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    ranks = rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    sums = np.array([np.dot(signs, ranks) for signs in itertools.product((0, 1), repeat=d.size)])
    return min(1.0, 2 * min(np.mean(sums <= observed + 1e-9), np.mean(sums >= observed - 1e-9)))


@pytest.mark.parametrize("differences", [
    [1, 1, 1, 1], [1, 1, 1, 1, 1], [1] * 7 + [-1], [1] * 9 + [-1, -1], [2, 1, 1, 1, 1, 1],
    [3, -1, 2, 2, -2, 1, 1, 0, 0, 0], [1, -1, 2, -2, 3, 1, 1, 1, 2, 4, -1, 1, 1],
])
def test_signed_rank_p_is_exact_under_ties(differences):
    """Per-utterance error differences are tied small integers; scipy's default falls back to the
    normal approximation there (four +1: p 0.046 instead of 0.125, a 'significant' handful)."""
    from wavllm_eval.reports.signed_rank import signed_rank_p

    assert signed_rank_p(np.array(differences + [0] * 50)) == pytest.approx(enumerated_signed_rank_p(differences),
                                                                           rel=1e-12)


def test_signed_rank_p_equals_scipy_where_scipy_is_exact_or_approximate():
    from scipy.stats import wilcoxon
    from wavllm_eval.reports.signed_rank import EXACT_UP_TO, signed_rank_p

    rng = np.random.default_rng(3)
    for _ in range(5):  # no ties, no zeros: scipy's exact distribution
        d = rng.permutation(np.arange(1, 16)) * rng.choice([-1, 1], 15)
        assert signed_rank_p(d) == pytest.approx(wilcoxon(d, method="exact").pvalue, rel=1e-12)
    many = rng.integers(-2, 3, 3 * EXACT_UP_TO)  # beyond the exact range: the tie-corrected normal approximation
    assert signed_rank_p(many) == pytest.approx(wilcoxon(many, zero_method="wilcox", method="approx").pvalue)


def test_four_differing_utterances_are_not_a_significant_wer_change(tmp_path):
    """40 utterances, one word dropped in 4 of them: WER 0 -> 1 %, exact p = 2/16 = 0.125."""
    refs = [f"word{i} " + " ".join(f"w{j}" for j in range(9)) for i in range(40)]
    task = "librispeech-test-clean"
    base = [Record(f"u{i:02d}", r.lower(), r.upper(), "ok", task=task) for i, r in enumerate(refs)]
    cand = [Record(f"u{i:02d}", (r.rsplit(" ", 1)[0] if i < 4 else r).lower(), r.upper(), "ok", task=task)
            for i, r in enumerate(refs)]
    [comparison] = compare_runs(load_run(write_run(tmp_path / "a", "m", {task: base})),
                                load_run(write_run(tmp_path / "b", "m", {task: cand})))
    assert comparison.delta == pytest.approx(1.0)
    assert comparison.p_matched_pairs == pytest.approx(0.125) and not comparison.significant


@pytest.mark.parametrize("n_resamples", [1000, 999, 200])
def test_detectable_difference_is_where_the_bootstrap_p_crosses_alpha(n_resamples):
    from wavllm_eval.reports.compare import detectable_difference

    deltas = np.random.default_rng(n_resamples).normal(0.3, 1.0, n_resamples)
    x = detectable_difference(deltas, 0.05)
    assert koehn_p_value(deltas, x) < 0.05
    assert koehn_p_value(deltas, np.nextafter(x, -np.inf)) >= 0.05  # just below it, not yet significant
    assert detectable_difference(deltas[:10], 0.05) == np.inf  # 10 resamples: p >= 1/11 always
