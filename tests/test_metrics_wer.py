"""WER equals jiwer's corpus WER; the row state merges and bootstraps exactly."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from wavllm_eval.metrics.base import bootstrap_indices
from wavllm_eval.metrics.wer import WordErrorRate, word_edits
from wavllm_eval.text import LOWERCASE_NO_PUNCTUATION, RAW, whisper_english
from wavllm_eval.types import Record

PAIRS = [
    ("the cat sat on the mat", "the cat sat on mat"),
    ("a quick brown fox", "a quick brown fox jumps"),
    ("hello world", "hollow word"),
    ("one two three four five", "one two three four five"),
    ("to be or not to be", "be or not to be that"),
]


def records(pairs):
    return [Record(str(i), hyp, ref, "ok") for i, (ref, hyp) in enumerate(pairs)]


def test_corpus_wer_equals_jiwer():
    metric = WordErrorRate(RAW)
    metric.update(records(PAIRS))
    expected = 100 * jiwer.wer([r for r, _ in PAIRS], [h for _, h in PAIRS])
    assert metric.compute() == pytest.approx(expected, abs=1e-12)
    # Σ edits / Σ words, not the mean of per-utterance rates
    mean_of_rates = 100 * np.mean([jiwer.wer(r, h) for r, h in PAIRS])
    assert metric.compute() != pytest.approx(mean_of_rates)


def test_hand_worked_cases():
    assert word_edits("a b c", "") == (3, 3)  # empty hypothesis: 100 % WER, not 0
    assert word_edits("", "x y") == (2, 0)  # empty reference: insertions still count
    assert word_edits("a b c d", "a x c") == (2, 4)
    metric = WordErrorRate(RAW)
    metric.update([Record("1", "", "a b c", "ok")])
    assert metric.compute() == 100.0


def test_whisper_normalised_wer_matches_independent_computation():
    refs = ["HE HOPED THERE WOULD BE STEW FOR DINNER", "MISTER SMITH'S COLOUR IS TWENTY ONE"]
    hyps = ["He hoped there'd be stew for dinner.", "Mr. Smith's color is 21!"]
    metric = WordErrorRate(whisper_english())
    metric.update(records(list(zip(refs, hyps, strict=True))))
    # an independent implementation: transformers' copy of Whisper's normaliser with the spelling map
    # the whisper-normalizer wheel ships (the project uses the wheel's class)
    import json
    from importlib.resources import files

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spelling = json.loads(files("whisper_normalizer").joinpath("normalizers/english.json").read_text())
    independent = EnglishTextNormalizer(spelling)
    assert independent(hyps[1]) == "mister smith is color is 21"  # Whisper's rules: Mr. -> mister, 's -> is, digits
    expected = 100 * jiwer.wer([independent(r) for r in refs], [independent(h) for h in hyps])
    assert metric.compute() == pytest.approx(expected, abs=1e-12)


def test_shards_merge_to_the_whole():
    whole, first, second = WordErrorRate(RAW), WordErrorRate(RAW), WordErrorRate(RAW)
    whole.update(records(PAIRS))
    first.update(records(PAIRS[:2]))
    second.update(records(PAIRS)[2:])
    merged = first.merge(second)
    assert merged.ids == whole.ids
    assert merged.compute() == pytest.approx(whole.compute(), abs=1e-12)
    assert merged.bootstrap(n=100, seed=3) == whole.bootstrap(n=100, seed=3)
    with pytest.raises(ValueError, match="share sample id"):
        WordErrorRate(RAW).merge(whole, whole)


def test_bootstrap_is_seeded_and_equals_a_naive_loop():
    metric = WordErrorRate(LOWERCASE_NO_PUNCTUATION)
    metric.update(records(PAIRS * 4))
    low, high = metric.bootstrap(n=200, seed=7)
    assert (low, high) == metric.bootstrap(n=200, seed=7)
    assert low <= metric.compute() <= high
    rows = metric.rows
    naive = [100 * rows[i, 0].sum() / rows[i, 1].sum() for i in bootstrap_indices(len(rows), 200, 7)]
    assert (low, high) == pytest.approx(tuple(np.percentile(naive, [2.5, 97.5])))


def test_chunked_resamples_are_the_same_resamples(monkeypatch):
    import wavllm_eval.metrics.base as base

    monkeypatch.setattr(base, "BOOTSTRAP_CHUNK_BYTES", 8 * 5 * 3)  # 3 resamples per chunk of 5 rows
    plan = base.Resamples(5, 10, seed=4)
    assert plan.chunk == 3
    assert np.array_equal(np.concatenate(list(plan)), bootstrap_indices(5, 10, 4))
    metric = WordErrorRate(RAW)
    metric.update(records(PAIRS))
    rows = metric.rows
    naive = [100 * rows[i, 0].sum() / rows[i, 1].sum() for i in bootstrap_indices(5, 10, 4)]
    assert metric.resampled_values(plan) == pytest.approx(naive, abs=1e-12)
