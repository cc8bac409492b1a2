"""BLEU/chrF equal sacreBLEU; accuracy and UA equal scikit-learn; EER and minDCF on known answers."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from wavllm_eval.metrics.bleu import CorpusBLEU, CorpusChrF
from wavllm_eval.metrics.classification import Accuracy, BalancedAccuracy
from wavllm_eval.metrics.verification import EqualErrorRate, MinDCF, equal_error_rate, min_detection_cost
from wavllm_eval.types import Record

HYPS = ["Sie wird schon in Ordnung sein.", "Das ist ein kleines Haus.", "Ich habe \"keine\" Zeit", "", "Guten Morgen!"]
REFS = ["Sie wird schon in Ordnung sein.", "Das ist ein kleines Haus", "Ich habe keine Zeit.", "Hallo Welt.",
        "Guten Morgen, wie geht's?"]


def records(hyps, refs):
    return [Record(str(i), h, r, "ok") for i, (h, r) in enumerate(zip(hyps, refs, strict=True))]


def test_bleu_and_chrf_equal_sacrebleu():
    bleu, chrf = CorpusBLEU("bleu"), CorpusChrF("chrf")
    for metric in (bleu, chrf):
        metric.update(records(HYPS, REFS))
    assert bleu.compute() == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert chrf.compute() == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    assert bleu.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    low, high = bleu.bootstrap(n=200)
    assert 0 <= low <= high <= 100


def test_bleu_bootstrap_resample_equals_rescoring_the_resample():
    bleu = CorpusBLEU("bleu")
    bleu.update(records(HYPS, REFS))
    index = np.array([[0, 0, 1, 4, 4]])
    expected = sacrebleu.corpus_bleu([HYPS[i] for i in index[0]], [[REFS[i] for i in index[0]]]).score
    assert bleu.resampled_values(index)[0] == pytest.approx(expected, abs=1e-9)


def test_accuracy_and_balanced_accuracy_equal_sklearn():
    truth = ["neu", "neu", "neu", "hap", "hap", "ang", "sad", "sad", "sad", "sad"]
    pred = ["neu", "hap", None, "hap", "hap", "neu", "sad", "sad", None, "ang"]
    recs = [Record(str(i), p or "", t, "ok") for i, (p, t) in enumerate(zip(pred, truth, strict=True))]
    predict = dict(zip((r.id for r in recs), pred, strict=True)).get
    wa = Accuracy("wa", lambda r: predict(r.id), lambda r: r.reference)
    ua = BalancedAccuracy("ua", ("neu", "hap", "ang", "sad"), lambda r: predict(r.id), lambda r: r.reference)
    wa.update(recs)
    ua.update(recs)
    sk_pred = [p or "unparsed" for p in pred]
    assert wa.compute() == pytest.approx(100 * accuracy_score(truth, sk_pred))
    assert ua.compute() == pytest.approx(100 * balanced_accuracy_score(truth, sk_pred))
    # hand-worked: recalls neu 1/3, hap 2/2, ang 0/1, sad 2/4 -> mean 45.83 %
    assert ua.compute() == pytest.approx(100 * (1 / 3 + 1 + 0 + 0.5) / 4)


def test_equal_error_rate_known_answers():
    # perfectly separated scores: EER 0
    assert equal_error_rate(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0])) == 0.0
    # fully inverted: EER 100
    assert equal_error_rate(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == 100.0
    # one target below one non-target out of 4 each: FAR = FRR = 25 % at the crossing
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert equal_error_rate(scores, labels) == pytest.approx(25.0)


def test_min_dcf_hand_worked():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # thresholds: accept all (P_miss 0, P_fa 1) -> cost 0.99/0.01 = 99; accept top 3 (P_miss .25, P_fa 0)
    # -> 0.25*0.01/0.01 = 0.25; accept top 5 incl. the 0.6 non-target (P_miss 0, P_fa .25) -> 24.75
    assert min_detection_cost(scores, labels, p_target=0.01) == pytest.approx(0.25)
    assert min_detection_cost(scores, labels, p_target=0.05) == pytest.approx(0.25)
    # p_target 0.5: C_def 0.5; best is P_miss .25 or P_fa .25 -> 0.125/0.5
    assert min_detection_cost(scores, labels, p_target=0.5) == pytest.approx(0.25)


def test_trial_metrics_reduce_rows_and_bootstrap():
    recs = [Record(str(i), "", "Yes" if label else "No", "ok", choice_logprobs=(s, 0.0))
            for i, (s, label) in enumerate([(2.0, 1), (1.0, 1), (-1.0, 0), (0.5, 0), (-2.0, 0), (1.5, 1)])]
    eer = EqualErrorRate("eer", lambda r: r.choice_logprobs[0] - r.choice_logprobs[1], lambda r: int(r.reference == "Yes"))
    dcf = MinDCF("dcf", lambda r: r.choice_logprobs[0], lambda r: int(r.reference == "Yes"), p_target=0.05)
    eer.update(recs)
    dcf.update(recs)
    assert eer.compute() == 0.0 and dcf.compute() == 0.0
    low, high = eer.bootstrap(n=50)
    assert low == 0.0 and high == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_roc_points_equal_sklearns_roc_curve(seed):
    from sklearn.metrics import roc_curve

    from wavllm_eval.metrics.verification import equal_error_rate, min_detection_cost, roc_points

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=n) + labels, int(rng.integers(0, 3)))  # rounding makes ties
    fpr, tpr, _ = roc_curve(labels, scores)
    ours_fpr, ours_tpr = roc_points(scores, labels)
    np.testing.assert_allclose(ours_fpr, fpr, atol=1e-12)
    np.testing.assert_allclose(ours_tpr, tpr, atol=1e-12)
    fnr = 1 - tpr
    index = int(np.nanargmin(np.abs(fnr - fpr)))
    assert equal_error_rate(scores, labels) == pytest.approx(100 * max(fpr[index], fnr[index]))
    costs = fnr * 0.01 + fpr * 0.99
    assert min_detection_cost(scores, labels, 0.01) == pytest.approx(costs.min() / 0.01)


@pytest.mark.parametrize("labels", [[1, 0, 0, 1], [0, 1, 1, 0]])
def test_tied_infinite_trial_scores_are_one_threshold(labels):
    """log P(Yes) of -inf gives a score of -inf; tied infinite scores are one threshold, so the
    numbers equal those of the same order with a finite stand-in, whatever the trial order."""
    scores = np.array([np.inf, -np.inf, np.inf, -np.inf])
    finite = np.array([1e300, -1e300, 1e300, -1e300])
    labels = np.array(labels)
    for p_target in (0.01, 0.05):
        assert min_detection_cost(scores, labels, p_target) == min_detection_cost(finite, labels, p_target)
    assert equal_error_rate(scores, labels) == equal_error_rate(finite, labels)


def test_an_undefined_trial_score_is_named():
    from wavllm_eval.errors import InputError
    from wavllm_eval.registry import make_task

    records = [Record("t1", "Yes", "Yes", "ok", choice_logprobs=(-np.inf, -np.inf)),
               Record("t2", "No", "No", "ok", choice_logprobs=(-1.0, -0.5))]
    with pytest.raises(InputError, match="sample t1"):
        make_task("voxceleb1-sv").score(records)
