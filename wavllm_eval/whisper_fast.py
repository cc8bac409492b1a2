"""Whisper's English normaliser, output-identical, with the steps skipped that cannot change a string.

`whisper_normalizer.english.EnglishTextNormalizer` runs ~40 regular-expression substitutions, a
per-character Unicode pass and a per-word number parser on every string: ~300 µs each, which made
re-scoring 100,000 utterances (four normalisations each) take over half a minute on two cores. Here
the same steps run in the same order, on the same objects, but each one is guarded by a cheap test
that is *necessary* for it to change anything:

* a pattern with a literal core only runs when that literal is in the string;
* a `\\bword\\b` pattern only runs when `word` is one of the string's maximal `\\w` runs (exactly the
  places where the pattern can match);
* the symbol/diacritic pass of an ASCII string is a `str.translate` table built from the same rule
  (NFKD leaves ASCII unchanged, and no ASCII character is a combining mark or in the diacritic map);
* the number normaliser of an ASCII string with no digit, no `$` and no number word only collapses
  whitespace (its pre/post-processing needs a digit or a currency sign, and every word passes
  through `process_words` unchanged).

Anything else falls back to the reference code, so a string that could differ is never taken on a
shortcut. tests/test_whisper_fast.py checks equality with the reference on generated and real text.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

log = logging.getLogger(__name__)

# The guards restate the steps of the code below as released in whisper-normalizer 0.1.15 (read and
# checked by tests/test_whisper_fast.py); when that code differs, `guarded_or_reference` keeps the
# package's own normaliser (slower, never different).
VERIFIED_SOURCE_SHA256 = {"224958575465090800f2ba024fb58f7315250692988c4568685288ddf8c04202"}
_WORD = re.compile(r"\w+")
_WORD_PATTERN = re.compile(r"\\b(\w+)\\b")


def _literal_core(pattern: str) -> str:
    """The text a replacer pattern must contain to match: the pattern minus its `\\b` anchors."""
    core = pattern.replace(r"\b", "")
    if not re.fullmatch(r"[\w' ]+", core):  # a pattern with any other syntax would need real analysis
        raise ValueError(f"not a literal pattern: {pattern!r}")
    return core


def reference_source_sha256() -> str | None:
    """sha256 over the source of every reference step the guards reason about (None: unreadable)."""
    import hashlib
    import inspect

    from whisper_normalizer.basic import remove_symbols_and_diacritics
    from whisper_normalizer.english import EnglishNumberNormalizer, EnglishTextNormalizer

    digest = hashlib.sha256()
    try:
        for step in (EnglishTextNormalizer.__call__, EnglishNumberNormalizer.__call__, EnglishNumberNormalizer.preprocess,
                     EnglishNumberNormalizer.postprocess, EnglishNumberNormalizer.process_words,
                     remove_symbols_and_diacritics):
            digest.update(inspect.getsource(step).encode())
    except (OSError, TypeError):
        return None
    return digest.hexdigest()


def guarded_or_reference(reference: Any) -> Any:
    """The guarded normaliser where the installed reference is the verified code, else the reference."""
    if reference_source_sha256() in VERIFIED_SOURCE_SHA256:
        try:
            return GuardedEnglishTextNormalizer(reference)
        except (ValueError, AttributeError):  # a replacer that is not a plain literal, a renamed member
            pass
    log.info("whisper-normalizer differs from the verified release: using its normaliser unguarded (slower)")
    return reference


class GuardedEnglishTextNormalizer:
    """Same output as the wrapped `EnglishTextNormalizer` for every input; see the module docstring."""

    def __init__(self, reference: Any) -> None:
        from whisper_normalizer.basic import remove_symbols_and_diacritics

        self._remove_symbols = remove_symbols_and_diacritics
        self._numbers = reference.standardize_numbers
        self._spellings = reference.standardize_spellings
        self._number_words = frozenset(self._numbers.words)
        self._brackets = re.compile(r"[<\[][^>\]]*[>\]]")
        self._parentheses = re.compile(r"\(([^)]+?)\)")
        self._ignore = re.compile(reference.ignore_patterns)
        self._ignore_words = frozenset(re.fullmatch(r"\\b\((.*)\)\\b", reference.ignore_patterns).group(1).split("|"))
        self._space_apostrophe = re.compile(r"\s+'")
        self._replacers = []  # (compiled, replacement, word or None, literal)
        for pattern, replacement in reference.replacers.items():
            whole_word = _WORD_PATTERN.fullmatch(pattern)
            self._replacers.append((re.compile(pattern), replacement,
                                    whole_word.group(1) if whole_word else None, _literal_core(pattern)))
        self._digit_commas = re.compile(r"(\d),(\d)")
        self._periods = re.compile(r"\.([^0-9]|$)")
        self._symbol_prefix = re.compile(r"[.$¢€£]([^0-9])")
        self._percent = re.compile(r"([^0-9])%")
        self._spaces = re.compile(r"\s+")
        keep = ".%$¢€£"
        self._ascii_symbols = {
            code: " " for code in range(128)
            if chr(code) not in keep and unicodedata.category(chr(code))[0] in "MSP"
        }

    def __call__(self, s: str) -> str:
        s = s.lower()
        if "<" in s or "[" in s:
            s = self._brackets.sub("", s)
        if "(" in s:
            s = self._parentheses.sub("", s)
        words = set(_WORD.findall(s))
        if not self._ignore_words.isdisjoint(words):
            s = self._ignore.sub("", s)
            words = set(_WORD.findall(s))
        if "'" in s:
            s = self._space_apostrophe.sub("'", s)
            words = set(_WORD.findall(s))
        for pattern, replacement, word, literal in self._replacers:
            if (word in words) if word is not None else (literal in s):
                replaced = pattern.sub(replacement, s)
                if replaced != s:
                    s = replaced
                    words = set(_WORD.findall(s))
        if "," in s:
            s = self._digit_commas.sub(r"\1\2", s)
        if "." in s:
            s = self._periods.sub(r" \1", s)
        ascii_only = s.isascii()
        s = s.translate(self._ascii_symbols) if ascii_only else self._remove_symbols(s, keep=".%$¢€£")
        if ascii_only and not any(c in s for c in "0123456789$") and self._number_words.isdisjoint(s.split()):
            s = " ".join(s.split())
        else:
            s = self._numbers(s)
        s = self._spellings(s)
        if any(c in s for c in ".$¢€£"):
            s = self._symbol_prefix.sub(r" \1", s)
        if "%" in s:
            s = self._percent.sub(r"\1 ", s)
        return self._spaces.sub(" ", s)
