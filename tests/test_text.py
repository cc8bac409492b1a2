"""Normalisers and answer cleaning on the cases that move WER numbers."""

from __future__ import annotations

import pytest

from wavllm_eval.text import LOWERCASE_NO_PUNCTUATION, RAW, strip_transcript_preamble, whisper_english


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("twenty one apples", "21 apples"),  # spelled numbers -> digits
        ("I'm gonna", "i am going to"),  # contractions
        ("won't", "will not"),
        ("The colour of the theatre", "the color of the theater"),  # British -> American
        ("Mr. Smith", "mister smith"),
        ("uh hello [noise] world", "hello world"),  # fillers and bracketed spans
    ],
)
def test_whisper_english(text, expected):
    assert whisper_english()(text).split() == expected.split()


def test_whisper_identity_names_the_implementation():
    from importlib.metadata import version

    assert whisper_english().identity == f"whisper-english/whisper-normalizer=={version('whisper-normalizer')}"


def test_lowercase_no_punctuation():
    assert LOWERCASE_NO_PUNCTUATION("Don't stop, FLOUR-fattened!") == "dont stop flour fattened"
    assert RAW("  Hello   World ") == "Hello World"


@pytest.mark.parametrize(
    ("answer", "transcript"),
    [
        ("The transcription is: he hoped there would be stew", "he hoped there would be stew"),
        ('Sure! Here is the transcript: "he hoped"', "he hoped"),
        ("Transcription of the audio: hello world", "hello world"),
        ("the text was long", "the text was long"),  # no colon: not a preamble
        ("he hoped there would be stew", "he hoped there would be stew"),
        # the lead-ins WavLLM's released outputs use (the test data's README lists them)
        ("The audio transcription is: three films from asia", "three films from asia"),
        ("The audio clip's transcription reads: in the year", "in the year"),
        ("Here's the text from the audio recording: o no i missed the bus", "o no i missed the bus"),
        ("The speech transcript: hello", "hello"),
        ("The audio was clear: hello", "The audio was clear: hello"),  # not a transcript lead-in
    ],
)
def test_strip_transcript_preamble(answer, transcript):
    assert strip_transcript_preamble(answer) == transcript
