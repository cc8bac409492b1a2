"""Instruction following for chained prompts (WavLLM II-task): split, classify, align, judge by rule.

WavLLM's II-task prompt chains independent instructions with ordinal connectives ("To begin, ...;
Subsequently, ...; Furthermore, ...; Lastly, ...") and the released model answers each one on its own
line (README of microsoft/SpeechT5 WavLLM, `\\n`-joined sub-answers). No IFR definition or scorer was
released (reference/metrics.md §9), so the rules here are the harness's own and are versioned:
results record `RULES_VERSION`, and a change of any rule bumps it.

A sub-instruction is judged `followed`, `not_followed` or `undecidable`. Undecidable is an outcome in
its own right (an open question about the audio with no reference, a translation when no language
identifier is installed): it is counted, never dropped and never counted as followed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

from wavllm_eval.answers import extract_emotion, extract_option, parse_options

RULES_VERSION = "ii-rules/v1"

FOLLOWED, NOT_FOLLOWED, UNDECIDABLE = "followed", "not_followed", "undecidable"
OUTCOMES = (FOLLOWED, NOT_FOLLOWED, UNDECIDABLE)

# Instruction types (a sub-instruction has one primary type, plus optional format constraints).
TRANSCRIPTION = "transcription"
MULTIPLE_CHOICE = "multiple_choice"
AUDIO_QUESTION = "audio_question"
TEXT_QUESTION = "text_question"  # "ignore the audio clip, What is the capital of New Zealand?"
CONTINUATION = "continuation"
TRANSLATION = "translation"
SUMMARY = "summary"
SPEAKER_GENDER = "speaker_gender"
EMOTION = "emotion"
FORMAT = "format"  # a sub-instruction that is only a constraint on the whole answer
OTHER = "other"

# Format constraints.
WORD_LIMIT = "word_limit"
UPPER_CASE = "upper_case"
LOWER_CASE = "lower_case"
LIST_FORMAT = "list"

# Ordinal / additive connectives that open a sub-instruction: at the start of the prompt or after
# ; . ? ! (never mid-sentence, so "then" inside a question does not split it). Longest first.
CONNECTIVES = (
    "to begin with", "to begin", "to start with", "to start", "first of all", "firstly", "first",
    "secondly", "second", "thirdly", "third", "fourthly", "fourth", "subsequently", "after that",
    "afterwards", "next", "then", "furthermore", "moreover", "additionally", "in addition", "also",
    "last but not least", "lastly", "finally", "last",
)
_CONNECTIVE = re.compile(
    r"(?:^|(?<=[;.?!]))\s*(" + "|".join(re.escape(c) for c in CONNECTIVES) + r")\b\s*,?\s*",
    re.IGNORECASE,
)
_OPTION_PIECE = re.compile(r"^\s*[B-E]\.\s")

LANGUAGES = {
    "german": "de", "english": "en", "french": "fr", "spanish": "es", "italian": "it", "chinese": "zh",
    "japanese": "ja", "portuguese": "pt", "dutch": "nl", "russian": "ru", "catalan": "ca", "arabic": "ar",
}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "fifty": 50}
_N = r"(\d+|" + "|".join(_NUMBER_WORDS) + r")"
_WORD_LIMIT = re.compile(
    r"\b(?:no more than|not more than|at most|up to|fewer than|less than|within|under|maximum of|in)\s+"
    r"(?:exactly\s+)?" + _N + r"\s+words?\b", re.IGNORECASE)
_AUDIO_INDEPENDENT = re.compile(
    r"\b(ignor(?:e|ing)|disregard(?:ing)?|regardless of|without (?:considering|referring to|using)|"
    r"independent(?:ly)? of|apart from|setting aside|forget about)\b[^,;?]*\b(audio|sound|speech|clip|recording)",
    re.IGNORECASE)
_WH_START = re.compile(r"^(what|who|whom|whose|which|when|where|why|how|is|are|was|were|do|does|did|can|could|"
                       r"will|would|should|name|tell me|explain|describe)\b", re.IGNORECASE)


@dataclass(frozen=True)
class SubInstruction:
    index: int
    text: str  # the sub-instruction without its connective
    kind: str
    connective: str = ""
    constraints: tuple[tuple[str, int], ...] = ()  # (constraint, parameter): ("word_limit", 20), ("upper_case", 0)
    options: Mapping[str, str] = field(default_factory=dict)  # multiple choice: letter -> option text
    target_language: str = ""  # translation: ISO 639-1 code

    @property
    def max_words(self) -> int | None:
        return next((value for name, value in self.constraints if name == WORD_LIMIT), None)


@dataclass(frozen=True)
class Verdict:
    instruction: SubInstruction
    outcome: str  # followed | not_followed | undecidable
    answer_part: str
    reason: str


def split_instructions(prompt: str) -> list[str]:
    """The sub-instructions of a chained prompt, connectives kept (for display and classification).

    Connectives win when there are at least two; otherwise the prompt is split on ';', re-joining the
    pieces of a multiple-choice question ("A. By bus; B. In the man's car; C. ...").
    """
    prompt = unicodedata.normalize("NFC", prompt).strip()
    starts = [m.start(1) for m in _CONNECTIVE.finditer(prompt)]
    if len(starts) >= 2:
        if starts[0] > 0 and prompt[: starts[0]].strip(" ;"):
            starts.insert(0, 0)
        bounds = [*starts, len(prompt)]
        pieces = [prompt[a:b].strip().rstrip(";").strip() for a, b in zip(bounds, bounds[1:], strict=False)]
        return [p for p in pieces if p]
    pieces: list[str] = []
    for piece in prompt.split(";"):
        if pieces and _OPTION_PIECE.match(piece):
            pieces[-1] += ";" + piece
        elif piece.strip():
            pieces.append(piece)
    return [p.strip() for p in pieces if p.strip()] or ([prompt] if prompt else [])


def _strip_connective(text: str) -> tuple[str, str]:
    match = _CONNECTIVE.match(text)
    if match is None:
        return "", text.strip()
    return match.group(1), text[match.end():].strip()


def _number(token: str) -> int:
    return int(token) if token.isdigit() else _NUMBER_WORDS[token.lower()]


def _constraints(text: str) -> tuple[tuple[str, int], ...]:
    found: list[tuple[str, int]] = []
    low = text.lower()
    match = _WORD_LIMIT.search(text)
    if match:
        found.append((WORD_LIMIT, _number(match.group(1))))
    elif re.search(r"\b(in|with|using) (a single|one|1) word\b|\bone-word\b", low):
        found.append((WORD_LIMIT, 1))
    if re.search(r"\b(upper[- ]?case|all capital letters|in capitals|all caps|capital letters only)\b", low):
        found.append((UPPER_CASE, 0))
    elif re.search(r"\b(lower[- ]?case|small letters)\b", low):
        found.append((LOWER_CASE, 0))
    if re.search(r"\b(as|in) a (bulleted |numbered |bullet )?list\b|\bbullet points\b|\blist format\b", low):
        found.append((LIST_FORMAT, 0))
    return tuple(found)


def _options(text: str) -> dict[str, str]:
    for letters in ("ABCD", "ABC", "AB"):
        _, options = parse_options(text, letters)
        if options:
            return options
    return {}


def classify_instruction(text: str, index: int = 0) -> SubInstruction:
    """Type and constraints of one sub-instruction (rules in order; the first that matches wins)."""
    connective, body = _strip_connective(text)
    low = body.lower()
    constraints = _constraints(body)
    options = _options(body)
    language = next((code for name, code in LANGUAGES.items()
                     if re.search(rf"\b(into|to|in) {name}\b", low)), "")
    # Structure first (lettered options), then the task words; "summarise the transcription" is a summary.
    if options:
        kind = MULTIPLE_CHOICE
    elif "translat" in low and language:
        kind = TRANSLATION
    elif re.search(r"\bsummar|\bcondense\b|\bsum up\b|\bgist\b", low):
        kind = SUMMARY
    elif re.search(r"\btranscri|\bspeech recognition\b|\bwrite down (what|every)|\bverbatim\b", low):
        kind = TRANSCRIPTION
    elif re.search(r"\bcontinu|\bnarrative\b|\bwhat happens next\b|\bstory\b", low):
        kind = CONTINUATION
    elif re.search(r"\bgender\b|\bmale or (a )?female\b|\b(a )?man or (a )?woman\b|\bsex of the speaker\b", low):
        kind = SPEAKER_GENDER
    elif re.search(r"\bemotion|\bfeeling\b|\bmood\b", low):
        kind = EMOTION
    elif _AUDIO_INDEPENDENT.search(low):
        kind = TEXT_QUESTION
    elif "?" in body or _WH_START.match(body):
        kind = AUDIO_QUESTION
    elif constraints:
        kind = FORMAT
    else:
        kind = OTHER
    return SubInstruction(index, body, kind, connective, constraints, options, language)


def parse_instructions(prompt: str) -> list[SubInstruction]:
    return [classify_instruction(piece, i) for i, piece in enumerate(split_instructions(prompt))]


# --- answers ---------------------------------------------------------------------------------------

# A lead-in ends in a colon and names the part: "Here's the text from the audio recording:",
# "Addressing the prompt '...', the answer is:", "Continuing the story, we have:".
_LEAD_IN_END = re.compile(
    r"\b(is|are|was|reads|read|follows|have|has|goes|says|to|as|below|answer|transcription|transcript|translation|"
    r"summary|text|recording|story|response|continuation|result|output|version|here|german|english)\W{0,3}$",
    re.IGNORECASE)
_PART_START = re.compile(
    r"^\s*(here('s| is| are)|addressing|the (response|answer|reply|transcription|transcript|translation|summary|"
    r"continuation|audio)|in response|continuing|regarding|as for|concerning|for the|answer\b|\d+[.)]\s|"
    r"(" + "|".join(re.escape(c) for c in CONNECTIVES) + r")\b\s*,)", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


def strip_lead_in(part: str) -> str:
    """The content of an answer part: list numbering ("2. "), a leading "… is:" phrase, `**` markers and
    wrapping quotes removed."""
    text = re.sub(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+", "", part.strip())
    colon = text.find(":")
    if 0 < colon <= 300 and _LEAD_IN_END.search(text[:colon]):
        text = text[colon + 1:].strip()
    text = text.replace("**", "").strip()
    if len(text) >= 2 and text[0] in "\"'“‘" and text[-1] in "\"'”’":
        text = text[1:-1].strip()
    return text


def words(text: str) -> list[str]:
    """Unicode word tokens (letters and digits of any script; an inner apostrophe stays in the word)."""
    return _WORD.findall(text)


def answer_segments(answer: str, n: int) -> list[str]:
    """Non-empty lines; a single line meant for several instructions is cut at "; " before a lead-in."""
    lines = [line.strip() for line in answer.replace("\\n", "\n").splitlines() if line.strip()]
    if len(lines) == 1 and n > 1:
        # One line for several instructions: "...; The audio clip have been summarized as follows: ...".
        pieces = [p.strip() for p in re.split(r";\s+(?=\S)", lines[0]) if p.strip()]
        starts = [p for p in pieces[1:] if _PART_START.match(p)]
        if starts:
            merged: list[str] = [pieces[0]]
            for piece in pieces[1:]:
                if _PART_START.match(piece):
                    merged.append(piece)
                else:
                    merged[-1] += "; " + piece
            return merged
    return lines


def split_answer(answer: str, instructions: Sequence[SubInstruction]) -> list[str]:
    """One answer part per sub-instruction ("" where none was found), in prompt order.

    Lines first (the released model's `\\n` joins; a literal backslash-n too); a short first line ending in
    a colon is a preamble and is dropped when there are more lines than instructions. With more lines than
    instructions, lines that open a new part (a lead-in such as "Here's", "The response to", an ordinal)
    start a group and the others join the group above (a story told in paragraphs); failing that the
    surplus joins the last part. With fewer, each line goes to the instruction it fits best, keeping
    the order (a monotone alignment), and the rest get "".
    """
    n = len(instructions)
    if n == 0:
        return []
    segments = answer_segments(answer, n)
    if len(segments) > n and segments[0].rstrip().endswith(":") and len(words(segments[0])) <= 12:
        segments = segments[1:]  # a preamble ("Sure, here are the answers:")
    if len(segments) == n:
        return segments
    if len(segments) > n:
        starts = [0] + [i for i in range(1, len(segments)) if _PART_START.match(segments[i])]
        if len(starts) == n:
            bounds = [*starts, len(segments)]
            return ["\n".join(segments[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        return [*segments[: n - 1], "\n".join(segments[n - 1:])]
    return _align(segments, instructions)


def _fit(segment: str, instruction: SubInstruction) -> float:
    """How well a segment fits an instruction: it quotes it or names its type (2), passes a specific
    check (1) or a generic one (0.5)."""
    low = segment.lower()
    quoted = instruction.text and instruction.text[:40].lower() in low
    names = {TRANSCRIPTION: "transcri", TRANSLATION: "translat", SUMMARY: "summar", CONTINUATION: "stor",
             SPEAKER_GENDER: "gender"}.get(instruction.kind, "")
    colon = low.find(":")
    lead_in = low[:colon] if 0 < colon <= 150 else ""  # only a lead-in names a part ("history" is no story)
    if quoted or (names and names in lead_in):
        return 2.0
    content = strip_lead_in(segment)
    if _primary_outcome(instruction, content)[0] != FOLLOWED:
        return 0.0
    # A passed check that is specific (a chosen option, a named gender, the right language, a known
    # fact's answer) fits better than one any text passes (a transcript, a summary).
    if instruction.kind in (MULTIPLE_CHOICE, SPEAKER_GENDER, EMOTION, TRANSLATION):
        return 1.0
    fact = known_fact(instruction.text) if instruction.kind == TEXT_QUESTION else None
    return 1.0 if fact is not None and contains_answer(content, fact.answers) else 0.5


def _align(segments: Sequence[str], instructions: Sequence[SubInstruction]) -> list[str]:
    n, m = len(instructions), len(segments)
    # best[i][j]: best score using the first i instructions and the first j segments.
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            best[i][j] = max(best[i - 1][j], best[i][j - 1],
                             best[i - 1][j - 1] + _fit(segments[j - 1], instructions[i - 1]) + 1e-3)
    parts = [""] * n
    i, j = n, m
    while i > 0 and j > 0:
        if best[i][j] == best[i - 1][j - 1] + _fit(segments[j - 1], instructions[i - 1]) + 1e-3:
            parts[i - 1] = segments[j - 1]
            i, j = i - 1, j - 1
        elif best[i][j] == best[i - 1][j]:
            i -= 1
        else:
            j -= 1
    return parts


# --- rules -----------------------------------------------------------------------------------------

_REFUSAL = re.compile(r"^(i('m| am) (sorry|unable|not able)|sorry,|i cannot|i can't|as an ai)", re.IGNORECASE)
_GENDER = re.compile(r"\b(male|female|man|woman|men|women|boy|girl|masculine|feminine|he|she)\b", re.IGNORECASE)
_FEMALE = {"female", "woman", "women", "girl", "feminine", "she"}
MIN_CONTINUATION_WORDS = 5


@cache
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def identify_language(text: str) -> str | None:
    """ISO 639-1 code from py3langid (its shipped 97-language model), None when it is not installed."""
    try:
        identifier = _language_identifier()
    except ImportError:
        return None
    return str(identifier.classify(text)[0])


def language_identifier_identity() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"py3langid=={version('py3langid')} (shipped model, all languages)"
    except PackageNotFoundError:
        return "none (translation checks undecidable)"


def spoken_gender(text: str) -> str | None:
    """'female' / 'male' from the first gender word of an answer; None when there is none."""
    match = _GENDER.search(text)
    if match is None:
        return None
    return "female" if match.group(1).lower() in _FEMALE else "male"


def _primary_outcome(instruction: SubInstruction, content: str) -> tuple[str, str]:
    kind, n_words = instruction.kind, len(words(content))
    if n_words == 0:
        return NOT_FOLLOWED, "no answer part"
    if _REFUSAL.match(content):
        return NOT_FOLLOWED, "refusal"
    if kind == MULTIPLE_CHOICE:
        letter = extract_option(content, instruction.options)
        return (FOLLOWED, f"option {letter}") if letter else (NOT_FOLLOWED, "no option chosen")
    if kind == SPEAKER_GENDER:
        gender = spoken_gender(content)
        return (FOLLOWED, f"gender {gender}") if gender else (NOT_FOLLOWED, "no gender named")
    if kind == EMOTION:
        label = extract_emotion(content)
        return (FOLLOWED, f"emotion {label}") if label else (NOT_FOLLOWED, "no emotion named")
    if kind == TRANSLATION:
        language = identify_language(content)
        if language is None:
            return UNDECIDABLE, "no language identifier installed"
        if language == instruction.target_language:
            return FOLLOWED, f"language {language}"
        return NOT_FOLLOWED, f"language {language}, expected {instruction.target_language}"
    if kind == CONTINUATION:
        if n_words < MIN_CONTINUATION_WORDS:
            return NOT_FOLLOWED, f"{n_words} words, a continuation needs {MIN_CONTINUATION_WORDS}"
        return FOLLOWED, f"{n_words} words"
    if kind in (TRANSCRIPTION, SUMMARY, TEXT_QUESTION, FORMAT):
        return FOLLOWED, f"{n_words} words"
    # An open question about the audio, or an instruction of unknown type: an answer is there, but
    # whether it addresses the instruction cannot be told by rule.
    return UNDECIDABLE, f"{kind}: an answer is present, no rule decides it"


def _constraint_failures(instruction: SubInstruction, content: str) -> list[str]:
    failures: list[str] = []
    letters = [ch for ch in content if ch.isalpha()]
    for name, value in instruction.constraints:
        if name == WORD_LIMIT and len(words(content)) > value:
            failures.append(f"{len(words(content))} words > {value}")
        elif name == UPPER_CASE and any(ch.islower() for ch in letters):
            failures.append("not upper case")
        elif name == LOWER_CASE and any(ch.isupper() for ch in letters):
            failures.append("not lower case")
        elif name == LIST_FORMAT:
            items = [line for line in content.splitlines() if re.match(r"^\s*([-*•]|\d+[.)])\s+\S", line)]
            if len(items) < 2:
                failures.append("not a list")
    return failures


def judge_part(instruction: SubInstruction, part: str) -> Verdict:
    """The rule verdict for one sub-instruction and its answer part."""
    content = strip_lead_in(part)
    outcome, reason = _primary_outcome(instruction, content)
    if outcome != NOT_FOLLOWED:
        failures = _constraint_failures(instruction, content)
        if failures:
            outcome, reason = NOT_FOLLOWED, "; ".join(failures)
    return Verdict(instruction, outcome, part, reason)


def judge_answer(prompt: str, answer: str) -> list[Verdict]:
    """One verdict per sub-instruction of `prompt`. A sub-instruction that only constrains the format
    ("Lastly, answer in upper case") is judged on the whole answer and takes no answer part."""
    instructions = parse_instructions(prompt)
    own = [s for s in instructions if s.kind != FORMAT]
    parts = dict(zip((s.index for s in own), split_answer(answer, own), strict=True))
    verdicts = []
    for instruction in instructions:
        if instruction.kind == FORMAT:
            content = "\n".join(strip_lead_in(p) for p in parts.values() if p) or strip_lead_in(answer)
            failures = _constraint_failures(instruction, content)
            outcome = NOT_FOLLOWED if failures or not content.strip() else FOLLOWED
            verdicts.append(Verdict(instruction, outcome, answer, "; ".join(failures) or "format kept"))
        else:
            verdicts.append(judge_part(instruction, parts[instruction.index]))
    return verdicts


def sample_outcome(verdicts: Sequence[Verdict]) -> str:
    """followed when every sub-instruction was; not_followed when any was not; else undecidable."""
    outcomes = {v.outcome for v in verdicts}
    if not verdicts or NOT_FOLLOWED in outcomes:
        return NOT_FOLLOWED
    return UNDECIDABLE if UNDECIDABLE in outcomes else FOLLOWED


# --- known facts (audio-independent questions with checkable answers) -----------------------------

FACTS_FILE = "ii_facts_v1.json"


@dataclass(frozen=True)
class Fact:
    id: str
    category: str
    question: str
    answers: tuple[str, ...]


def _question_key(text: str) -> str:
    return " ".join(words(unicodedata.normalize("NFKC", text).lower()))


@cache
def fact_catalogue() -> tuple[str, tuple[Fact, ...]]:
    """(catalogue version, facts) of the shipped `wavllm_eval/data/ii_facts_v1.json`."""
    import json
    from importlib.resources import files

    data = json.loads(files("wavllm_eval").joinpath("data", FACTS_FILE).read_text(encoding="utf-8"))
    facts = tuple(Fact(f["id"], f["category"], f["question"], tuple(f["answers"])) for f in data["facts"])
    return str(data["version"]), facts


def known_fact(instruction_text: str) -> Fact | None:
    """The catalogue fact whose question the sub-instruction asks (after any "ignore the audio clip, ")."""
    key = _question_key(instruction_text)
    for fact in fact_catalogue()[1]:
        question = _question_key(fact.question)
        if key == question or key.endswith(" " + question):
            return fact
    return None


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    """True when one accepted answer occurs as a whole phrase (case-insensitive, Unicode word bounds)."""
    plain = unicodedata.normalize("NFKC", text).lower()
    for answer in answers:
        needle = unicodedata.normalize("NFKC", answer).lower()
        if re.search(r"(?<![^\W_])" + re.escape(needle) + r"(?![^\W_])", plain):
            return True
    return False
