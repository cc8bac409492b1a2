"""Answer extraction from free model text for closed-set tasks; `None` means "unparsed", an outcome
that is counted and scored as wrong, never dropped (VoiceBench's random fallback is what we avoid)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wavllm_eval.types import Record

_YES_NO = re.compile(r"\b(yes|no)\b")
_SAME_SPEAKER = re.compile(r"\b(only one|one single|a single|just one|the same|same) (speaker|person|voice|individual)")
_DIFFERENT_SPEAKERS = re.compile(
    r"\b(two|2|three|multiple|several|different|more than one|distinct) (speakers|people|persons|voices|individuals)")


def _plain(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def extract_yes_no(text: str) -> str | None:
    """"yes" / "no": the first standalone yes|no word; failing that, a phrase naming one speaker or
    several ("there are two different speakers" -> no)."""
    plain = _plain(text)
    match = _YES_NO.search(plain)
    if match:
        return match.group(1)
    same, different = _SAME_SPEAKER.search(plain), _DIFFERENT_SPEAKERS.search(plain)
    if same and not different:
        return "yes"
    if different and not same:
        return "no"
    return None


EMOTION_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "neu": ("neutral",),
    "hap": ("happy", "happiness", "joy", "excited", "excitement"),
    "ang": ("angry", "anger"),
    "sad": ("sad", "sadness"),
}
"""IEMOCAP 4-class synonym table, exactly metrics.md §4's fixed table, so WA/UA compare with the
convention. Any other word is out of set, hence wrong ("frustrated", and also "annoyed" or
"irritated", which describe IEMOCAP's out-of-set class fru rather than ang)."""

_EMOTION_WORD = re.compile(r"\b(" + "|".join(w for ws in EMOTION_SYNONYMS.values() for w in ws) + r")\b")
_WORD_TO_LABEL = {w: label for label, ws in EMOTION_SYNONYMS.items() for w in ws}
EMOTION_CODES = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}


def extract_emotion(text: str) -> str | None:
    """The label of the first emotion word in the answer ("The speaker sounds sad, not happy" -> sad)."""
    plain = _plain(text)
    if plain.strip(" .") in EMOTION_CODES:
        return EMOTION_CODES[plain.strip(" .")]
    match = _EMOTION_WORD.search(plain)
    return _WORD_TO_LABEL[match.group(1)] if match else None


_OPTION_START = r"(?:^|(?<=[\s;:?？]))"


def parse_options(prompt: str, letters: str = "ABC") -> tuple[str, dict[str, str]]:
    """Split "Question? A. x; B. y; C. z." into the question and {letter: option text}.

    Letters are found in order (A, then B after it, then C), each at the start or after white space
    or ';', so "Washington, D.C." never opens an option; semicolons are optional (122 Gaokao prompts
    lack them)."""
    positions: list[tuple[str, int, int]] = []
    start = 0
    for letter in letters:
        match = re.compile(_OPTION_START + letter + r"\.\s*").search(prompt, start)
        if match is None:
            return prompt.strip(), {}
        positions.append((letter, match.start(), match.end()))
        start = match.end()
    options: dict[str, str] = {}
    for i, (letter, _, text_start) in enumerate(positions):
        text_end = positions[i + 1][1] if i + 1 < len(positions) else len(prompt)
        options[letter] = prompt[text_start:text_end].strip().rstrip(";").strip().rstrip(".").strip()
    return prompt[: positions[0][1]].strip(), options


def extract_option(text: str, options: Mapping[str, str]) -> str | None:
    """The chosen letter: a bare letter, "option B", "the answer is (C)", a leading "B." or "B)",
    else the one option whose text the answer quotes. After "answer" only a capital names an option
    ("the answer is a dog" names none; "option c" does); an option quoted only inside a longer one
    ("About two hours" inside "About two hours and a half") is not quoted on its own."""
    letters = "".join(options) or "ABC"
    stripped = text.strip()
    bare = re.fullmatch(rf"[\s(\[]*([{letters}])[\s).:\]]*", stripped)
    if bare:
        return bare.group(1)
    verb = r"(?i:is|would be|should be|:)?"
    patterns = [
        # "answer is a dog": after "answer" only a capital names an option; "option c" is one
        rf"\b(?:(?i:answer)\s*{verb}\s*[:(\[]?\s*([{letters}])|(?i:option|choice)\s*{verb}\s*[:(\[]?\s*"
        rf"([{letters}{letters.lower()}]))\b",
        rf"^\s*[(\[]?([{letters}])[).:\]]",
        rf"[(\[]([{letters}])[)\]]",
        rf"(?<![\w'’])([{letters}])(?=[.)]\s|[.)]$)",
    ]
    for pattern in patterns:
        match = re.search(pattern, stripped)
        if match:
            return next(g for g in match.groups() if g).upper()
    quoted = _quoted_options(_plain(text), {letter: _plain(option) for letter, option in options.items() if option})
    return quoted[0] if len(quoted) == 1 else None


def _occurrences(text: str, part: str) -> list[tuple[int, int]]:
    spans, start = [], text.find(part)
    while start >= 0:
        spans.append((start, start + len(part)))
        start = text.find(part, start + 1)
    return spans


def _quoted_options(plain: str, options: Mapping[str, str]) -> list[str]:
    """The letters of the options the answer quotes somewhere other than inside a longer option's quote."""
    spans = {letter: _occurrences(plain, option) for letter, option in options.items()}
    inside = lambda span, other: other[0] <= span[0] and span[1] <= other[1] and other != span  # noqa: E731
    return [letter for letter, own in spans.items()
            if any(not any(inside(span, other) for o, theirs in spans.items() if o != letter for other in theirs)
                   for span in own)]


def unparsed_summary(records: Sequence[Record], extract: Callable[[Record], Any]) -> dict[str, float]:
    """How many scored answers the extractor could not read, for a task's `extra` block."""
    ok = [r for r in records if r.status == "ok"]
    unparsed = sum(extract(r) is None for r in ok)
    return {"unparsed": unparsed, "unparsed_rate": round(100 * unparsed / len(ok), 4) if ok else 0.0}
