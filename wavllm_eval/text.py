"""Versioned text normalisers. Records keep raw model text; normalisation happens at scoring time,
so a better normaliser re-scores old runs, and results name the normaliser that produced them."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.metadata import PackageNotFoundError, version


@dataclass(frozen=True)
class Normaliser:
    """A named text normaliser. Each distinct string is normalised once (a bounded cache): references
    repeat across the three WER variants and runs, and the Whisper normaliser costs ~300 µs a string."""

    name: str
    identity: str  # recorded in results.json: name, version and the package that implements it
    apply: Callable[[str], str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cached", lru_cache(maxsize=NORMALISED_CACHE)(self.apply))

    def __call__(self, text: str) -> str:
        return self._cached(text)  # type: ignore[attr-defined]


NORMALISED_CACHE = 1 << 18


@cache
def whisper_english() -> Normaliser:
    """OpenAI Whisper's EnglishTextNormalizer with its full British->American spelling map.

    The `whisper-normalizer` wheel ships `english.json` (1,739 entries); transformers' copy of the
    class needs that map passed in and gives identical output with it. This is the normaliser behind
    the 2023-2025 open_asr_leaderboard numbers and the WavLLM/Qwen2-Audio papers' comparisons.
    """
    from whisper_normalizer.english import EnglishTextNormalizer

    from wavllm_eval.whisper_fast import guarded_or_reference

    # the package's own steps, each skipped where it provably cannot change the string (~8x faster;
    # identical output, so the identity stays the package's)
    impl = guarded_or_reference(EnglishTextNormalizer())
    return Normaliser(
        "whisper_english", f"whisper-english/whisper-normalizer=={_version('whisper-normalizer')}", impl
    )


_ASCII_PUNCTUATION_TO_SPACE = {code: " " for code in range(128) if unicodedata.category(chr(code)).startswith("P")}
_ASCII_APOSTROPHES = {ord("'"): None, ord("`"): None}


def _lowercase_no_punctuation(text: str) -> str:
    if text.isascii():  # NFKC leaves ASCII alone: the same rule as below, as two translate tables
        return " ".join(text.lower().translate(_ASCII_APOSTROPHES).translate(_ASCII_PUNCTUATION_TO_SPACE).split())
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[’'`]", "", text)  # apostrophes join: "don't" and "dont" compare equal
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


LOWERCASE_NO_PUNCTUATION = Normaliser("lc_nopunct", "lc_nopunct/v1", _lowercase_no_punctuation)
"""Lower-case, apostrophes deleted, other Unicode punctuation -> space (hyphenated words split)."""

RAW = Normaliser("raw", "raw/v1", lambda text: " ".join(text.split()))
"""Whitespace split only: fairseq `--scoring wer` defaults, what WavLLM's released script prints."""


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


_SOURCE = r"(?:audio\s+clip|audio\s+recording|audio|speech|clip|recording)"
# WavLLM's own lead-ins vary between runs: "The audio transcription is:", "The audio clip's
# transcription reads:", "Here's the text from the audio recording:" (the test data's README)
_ANSWER_PREFIX = re.compile(
    rf"""^\s*(?:sure[,!.]?\s*)?(?:here\s+is\s+|here['’]s\s+)?(?:the\s+)?(?:{_SOURCE}(?:['’]s)?\s+)?
        (?:transcription|transcript|text|spoken\s+content)(?:\s+(?:of|from|in)\s+the\s+{_SOURCE})?
        \s*(?:is|reads)?\s*[:：]\s*""",
    re.IGNORECASE | re.VERBOSE,
)


def strip_transcript_preamble(text: str) -> str:
    """Drop a chatty lead-in ("The transcription is: ...") and wrapping quotes from an ASR answer.

    Only a lead-in that ends in a colon is removed, so a transcript that happens to start with
    "the text" is left alone.
    """
    stripped = _ANSWER_PREFIX.sub("", text, count=1).strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "\"'“”":
        stripped = stripped[1:-1].strip()
    elif len(stripped) >= 2 and stripped[0] == "“" and stripped[-1] == "”":
        stripped = stripped[1:-1].strip()
    return stripped
