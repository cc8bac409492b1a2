"""The guarded Whisper normaliser and the ASCII lower-case path give exactly the reference output.

The reference is the unmodified `whisper_normalizer` object (and, for lc_nopunct, the Unicode rule
restated here); inputs are LibriSpeech-style text, the official manifests' references, and
generated strings built from the pieces every guarded step reacts to."""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from whisper_normalizer.english import EnglishTextNormalizer

from wavllm_eval.text import LOWERCASE_NO_PUNCTUATION, whisper_english
from wavllm_eval.whisper_fast import GuardedEnglishTextNormalizer

REFERENCE = EnglishTextNormalizer()
GUARDED = GuardedEnglishTextNormalizer(EnglishTextNormalizer())
SHARED = Path(__file__).resolve().parents[2] / "shared" / "wavllm_test_data"

# every guarded step's trigger: number words and digits, currency, contractions, titles, fillers,
# brackets, British spellings, punctuation, diacritics, ligatures, non-ASCII digits, whitespace kinds
PIECES = (
    "one", "ones", "two", "twenty", "hundred", "thousand", "millionth", "first", "twelfth", "sixties", "and", "a",
    "half", "point", "five", "double", "triple", "oh", "zero", "per", "cent", "percent", "dollars", "pound", "euros",
    "minus", "plus", "$", "£", "€", "¢", "%", "0", "1", "7", "10", "3.5", "1,000", "1960s", "32nd", "th", "s", ",", ".",
    "'", "'s", "'d", "'ll", "'re", "'ve", "'m", "n't", "won't", "can't", "let's", "y'all", "i'ma", "ma'am", "gonna",
    "'d been", "'s got", "mr", "Mrs.", "st", "Dr", "jr", "hmm", "um", "uh", "mm", "mhm", "(", ")", "(aside)", "[", "]",
    "<unk>", ">", "colour", "organise", "theatre", "café", "naïve", "œuvre", "straße", "þing", "ﬁne", "²", "٣", "١٢",
    "—", "-", "\"", "!", "?", ";", ":", "“", "’", "HELLO", "World", "the", "of", "sunday", " ", "  ", "\t", "\n",
    "\u00a0", "\u2009",
)


def librispeech_like(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    syllables = ("ba", "ker", "ton", "mi", "la", "ste", "ven", "or", "an", "the", "ing", "ro", "wa", "ly", "ce")
    vocab = ["".join(rng.choice(syllables, rng.integers(1, 4))) for _ in range(500)]
    vocab += ["one", "twenty", "hundred", "and", "colour", "mr", "don't", "it's", "per", "cent"]
    out = []
    for _ in range(n):
        words = list(rng.choice(vocab, rng.integers(3, 30)))
        text = " ".join(words)
        out.append(text.upper() if rng.random() < 0.5 else text.capitalize() + ".")
    return out


@pytest.mark.parametrize("text", [
    "twenty one apples", "I'm gonna", "won't", "The colour of the theatre", "Mr. Smith", "uh hello [noise] world",
    "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS", "It costs $20 million, or 3.5 percent.",
    "one oh one", "two and a half thousand", "the 1960s and 32nd st", "", "   ", "mrs. o'brien's ma'am",
])
def test_known_strings(text):
    assert GUARDED(text) == REFERENCE(text)


def test_librispeech_like_text():
    texts = librispeech_like(3000, seed=1)
    assert [GUARDED(t) for t in texts] == [REFERENCE(t) for t in texts]


def test_official_manifest_texts():
    manifests = sorted(SHARED.glob("**/*.tsv"))
    if not manifests:
        pytest.skip("../shared/wavllm_test_data is absent")
    texts = []
    for manifest in manifests:
        with manifest.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                texts += [v for k, v in row.items() if k in ("tgt_text", "prompt") and v]
    assert len(texts) > 100
    assert [GUARDED(t) for t in texts] == [REFERENCE(t) for t in texts]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(("", " ", " ", "  "))), max_size=14))
def test_generated_strings(parts):
    text = "".join(piece + sep for piece, sep in parts)
    assert GUARDED(text) == REFERENCE(text)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=40))
def test_arbitrary_unicode(text):
    assert GUARDED(text) == REFERENCE(text)


def test_the_harness_uses_the_guarded_normaliser():
    normalise = whisper_english()
    assert isinstance(normalise.apply, GuardedEnglishTextNormalizer)


def test_another_release_of_the_reference_is_used_unguarded(monkeypatch):
    import wavllm_eval.whisper_fast as fast

    reference = EnglishTextNormalizer()
    assert isinstance(fast.guarded_or_reference(reference), GuardedEnglishTextNormalizer)
    monkeypatch.setattr(fast, "reference_source_sha256", lambda: "0" * 64)  # as if its code had changed
    assert fast.guarded_or_reference(reference) is reference


def lowercase_no_punctuation_reference(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[’'`]", "", text)
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.one_of(st.text(alphabet=st.characters(max_codepoint=127), max_size=40), st.text(max_size=30)))
def test_lowercase_no_punctuation_ascii_path(text):
    assert LOWERCASE_NO_PUNCTUATION.apply(text) == lowercase_no_punctuation_reference(text)
