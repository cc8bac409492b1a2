"""Prompt splitting, answer splitting and the II-task rules (wavllm_eval.instructions), on the official
II-task / CoT rows, the released model's README outputs, and hand-written answers with known verdicts."""

from __future__ import annotations

import pytest

from wavllm_eval.instructions import (
    CONTINUATION,
    FOLLOWED,
    MULTIPLE_CHOICE,
    NOT_FOLLOWED,
    SPEAKER_GENDER,
    SUMMARY,
    TEXT_QUESTION,
    TRANSCRIPTION,
    TRANSLATION,
    UNDECIDABLE,
    UPPER_CASE,
    WORD_LIMIT,
    classify_instruction,
    contains_answer,
    fact_catalogue,
    judge_answer,
    known_fact,
    parse_instructions,
    sample_outcome,
    split_answer,
    split_instructions,
    strip_lead_in,
)
from wavllm_eval.manifest import read_manifest

# The released model's II-task answer, as quoted in ../shared/wavllm_test_data/README.md (`\n` = newline).
RELEASED_II_ANSWER = (
    "Here's the text from the audio recording: o no i missed the bus home it's already half past ten now i don't "
    "think there would be another bus to come don't worry i can take you home thanks but we go in different "
    "directions i'll just call my dad to pick me up\n"
    "Addressing the prompt 'How does the woman finally decide to go home? A. By bus; B. In the man’s car; C. In "
    "her father’s car.', the answer is: C\n"
    "The response to 'What is the capital of New Zealand? is: The capital of New Zealand is Wellington.\n"
    "Continuing the story, we have: The woman looked at the man with gratitude and relief. She had been worried "
    "about how she would get home after missing the bus."
)
RELEASED_COT_ANSWER = (
    "The audio transcription is: three films from asia pacific are in the running for the coveted golden palms at "
    "this year's cannes film festival competing in a field dominated by european productions organizers announced "
    "monday; The audio clip have been summarized as follows: Three films from Asia-Pacific are competing for Golden "
    "Palms at this year's Cannes Film Festival, challenging European productions.; The translation of summary is: "
    "**Drei Filme aus Asien-Pazifik nehmen an diesem Jahr an den Filmfestspielen von Cannes teil und konkurrieren "
    "mit europäischen Produktionen um die Goldenen Palmen.**"
)


@pytest.fixture(scope="module")
def ii_prompt(shared_data) -> str:
    return read_manifest(shared_data / "II-task.tsv")[0].prompt


@pytest.fixture(scope="module")
def cot_prompt(shared_data) -> str:
    return read_manifest(shared_data / "CoT-task.tsv")[0].prompt


def test_official_ii_prompt_splits_into_its_four_sub_tasks(ii_prompt):
    assert split_instructions(ii_prompt) == [
        "To begin, Transcribe the audio recording into text, capturing every spoken word",
        "Subsequently, How does the woman finally decide to go home? A. By bus; B. In the man’s car; "
        "C. In her father’s car.",
        "Furthermore, ignore the audio clip, What is the capital of New Zealand?",
        "Lastly, Continue the narrative of given audio clip in a coherent and engaging way",
    ]
    subs = parse_instructions(ii_prompt)
    # tgt_text of the row names them: ASR+SQA+SFT+Continue
    assert [s.kind for s in subs] == [TRANSCRIPTION, MULTIPLE_CHOICE, TEXT_QUESTION, CONTINUATION]
    assert [s.connective for s in subs] == ["To begin", "Subsequently", "Furthermore", "Lastly"]
    assert dict(subs[1].options) == {"A": "By bus", "B": "In the man’s car", "C": "In her father’s car"}


def test_official_cot_prompt(cot_prompt):
    subs = parse_instructions(cot_prompt)
    assert [s.kind for s in subs] == [TRANSCRIPTION, SUMMARY, TRANSLATION]
    assert [s.connective for s in subs] == ["First of all", "Additionally", "Lastly"]
    assert subs[1].max_words == 20 and subs[2].target_language == "de"


def test_semicolon_split_keeps_multiple_choice_options_together():
    prompt = "Transcribe the audio; Which city is named? A. Paris; B. Rome; C. Oslo"
    assert split_instructions(prompt) == ["Transcribe the audio", "Which city is named? A. Paris; B. Rome; C. Oslo"]


@pytest.mark.parametrize("text, kind, constraints", [
    ("Is the speaker of the audio clip male or female?", SPEAKER_GENDER, ()),
    ("ignore the audio clip, What is the capital of Japan? Answer in upper case.", TEXT_QUESTION, ((UPPER_CASE, 0),)),
    ("Summarize what the speaker says in no more than 12 words", SUMMARY, ((WORD_LIMIT, 12),)),
    ("Translate the audio clip into German", TRANSLATION, ()),
    ("Continue the story of the audio clip with a few sentences", CONTINUATION, ()),
])
def test_classification(text, kind, constraints):
    sub = classify_instruction(text)
    assert (sub.kind, sub.constraints) == (kind, constraints)


def test_every_catalogue_question_is_an_audio_independent_question():
    for fact in fact_catalogue()[1]:
        sub = classify_instruction(f"ignore the audio clip, {fact.question}")
        assert sub.kind == TEXT_QUESTION, fact.question
        assert known_fact(sub.text) == fact


def test_released_ii_answer_splits_into_four_parts_and_follows_all(ii_prompt):
    parts = split_answer(RELEASED_II_ANSWER, parse_instructions(ii_prompt))
    contents = [strip_lead_in(p) for p in parts]
    assert contents[0].startswith("o no i missed the bus home") and contents[0].endswith("to pick me up")
    assert contents[1] == "C"
    assert contents[2] == "The capital of New Zealand is Wellington."
    assert contents[3].startswith("The woman looked at the man")
    verdicts = judge_answer(ii_prompt, RELEASED_II_ANSWER)
    assert [v.outcome for v in verdicts] == [FOLLOWED] * 4
    assert sample_outcome(verdicts) == FOLLOWED
    assert contains_answer(contents[2], known_fact(verdicts[2].instruction.text).answers)


def test_released_cot_answer_splits_on_semicolons_before_lead_ins(cot_prompt):
    parts = split_answer(RELEASED_COT_ANSWER, parse_instructions(cot_prompt))
    assert [strip_lead_in(p)[:25] for p in parts] == [
        "three films from asia pac", "Three films from Asia-Pac", "Drei Filme aus Asien-Pazi"]
    assert [v.outcome for v in judge_answer(cot_prompt, RELEASED_COT_ANSWER)] == [FOLLOWED] * 3


def test_some_followed(ii_prompt):
    answer = ("Transcription: o no i missed the bus\n"
              "I am not sure which one.\n"  # no option chosen
              "The capital of New Zealand is Wellington.\n"
              "Then it ended.")  # three words: too short for a continuation
    verdicts = judge_answer(ii_prompt, answer)
    assert [v.outcome for v in verdicts] == [FOLLOWED, NOT_FOLLOWED, FOLLOWED, NOT_FOLLOWED]
    assert sample_outcome(verdicts) == NOT_FOLLOWED


def test_none_followed(ii_prompt):
    verdicts = judge_answer(ii_prompt, "")
    assert [v.outcome for v in verdicts] == [NOT_FOLLOWED] * 4
    assert sample_outcome(verdicts) == NOT_FOLLOWED


def test_open_audio_question_is_undecidable_and_never_followed():
    prompt = "To begin, transcribe the audio; Lastly, what is the speaker's main point?"
    verdicts = judge_answer(prompt, "the birch canoe slid\nThat canoes slide.")
    assert [v.outcome for v in verdicts] == [FOLLOWED, UNDECIDABLE]
    assert sample_outcome(verdicts) == UNDECIDABLE
    # an undecidable part never hides a failure elsewhere
    assert sample_outcome(judge_answer(prompt, "\nThat canoes slide.")) == NOT_FOLLOWED


def test_format_constraints_and_language():
    prompt = ("To begin, ignore the audio clip, What is the capital of Japan? Answer in upper case.; "
              "Subsequently, Summarize what the speaker says in no more than 5 words; "
              "Lastly, Translate the audio clip into German")
    good = "TOKYO\nA canoe slides on planks.\nDas Birkenkanu glitt über die glatten Planken."
    bad = "Tokyo\nThe birch canoe slid over the smooth planks\nThe birch canoe slid on the smooth planks."
    assert [v.outcome for v in judge_answer(prompt, good)] == [FOLLOWED] * 3
    verdicts = judge_answer(prompt, bad)
    assert [v.outcome for v in verdicts] == [NOT_FOLLOWED] * 3
    assert [v.reason for v in verdicts][:2] == ["not upper case", "8 words > 5"]
    assert verdicts[2].reason.startswith("language en")


def test_fewer_lines_than_instructions_align_by_fit():
    prompt = "To begin, transcribe the audio; Subsequently, Which is right? A. yes; B. no; Lastly, continue the story"
    parts = split_answer("The answer is B\nOnce upon a time there was a canoe that slid on planks.",
                         parse_instructions(prompt))
    assert parts == ["", "The answer is B", "Once upon a time there was a canoe that slid on planks."]


def test_story_paragraphs_join_the_last_part():
    prompt = "To begin, transcribe the audio; Lastly, continue the story"
    answer = "Here is the transcript: the canoe slid\nThe canoe kept going.\nIt reached the shore at dawn."
    assert split_answer(answer, parse_instructions(prompt)) == [
        "Here is the transcript: the canoe slid", "The canoe kept going.\nIt reached the shore at dawn."]


def test_numbered_markdown_answer(ii_prompt):
    answer = ("1. **Transcription:** o no i missed the bus home\n2. C\n3. Wellington is the capital.\n"
              "4. The woman called her father, who drove through the rain to fetch her.")
    verdicts = judge_answer(ii_prompt, answer)
    assert [strip_lead_in(v.answer_part) for v in verdicts][:3] == [
        "o no i missed the bus home", "C", "Wellington is the capital."]
    assert sample_outcome(verdicts) == FOLLOWED


def test_one_paragraph_for_four_instructions_goes_to_the_best_fitting_one(ii_prompt):
    verdicts = judge_answer(ii_prompt, "The answer is C.")
    assert [v.outcome for v in verdicts] == [NOT_FOLLOWED, FOLLOWED, NOT_FOLLOWED, NOT_FOLLOWED]


def test_preamble_line_is_not_an_answer(ii_prompt):
    answer = "Sure! Here are my answers:\n" + RELEASED_II_ANSWER
    assert [v.outcome for v in judge_answer(ii_prompt, answer)] == [FOLLOWED] * 4
    assert strip_lead_in(split_answer(answer, parse_instructions(ii_prompt))[1]) == "C"


def test_options_win_over_task_words():
    assert classify_instruction("Which summary fits the clip? A. a storm; B. a party; C. a trial").kind == MULTIPLE_CHOICE
    assert classify_instruction("Summarize the transcription in 10 words").kind == SUMMARY
