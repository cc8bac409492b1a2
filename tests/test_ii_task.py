"""The ii-task task: the official row read as is, IFR and per-type quality scored from hand-made records."""

from __future__ import annotations

import pytest

from tests.test_instructions import RELEASED_II_ANSWER
from wavllm_eval.instructions import RULES_VERSION
from wavllm_eval.registry import make_task
from wavllm_eval.types import Record


@pytest.fixture(scope="module")
def official(shared_data):
    task = make_task("ii-task")
    samples = list(task.load(shared_data / "II-task.tsv"))
    return task, samples


def test_official_row_is_read_as_is(official, shared_data):
    task, samples = official
    assert len(samples) == 1
    sample = samples[0]
    assert sample.reference == "ASR+SQA+SFT+Continue"
    assert sample.instruction.startswith("To begin, Transcribe the audio recording into text")
    assert sample.meta["prompt"] == sample.instruction
    assert task.build_prompt(sample).text == sample.instruction
    assert sample.audio[0].path == shared_data / "audio" / "II-task.wav"
    assert task.default_data_path(shared_data.parent) == shared_data.parent / "wavllm" / "II-task.tsv"


def test_ifr_from_hand_made_records(official):
    task, samples = official
    meta = dict(samples[0].meta)
    open_prompt = "To begin, transcribe the audio; Lastly, what is the speaker's main point?"
    records = [
        Record("all", RELEASED_II_ANSWER, "ASR+SQA+SFT+Continue", "ok", meta=meta),  # 4 of 4 followed
        Record("some", "Transcription: o no i missed the bus\nI am not sure which one.\n"
                       "The capital of New Zealand is Wellington.\nThen it ended.",
               "ASR+SQA+SFT+Continue", "ok", meta=meta),  # 2 of 4
        Record("none", "", "ASR+SQA+SFT+Continue", "ok", meta=meta),  # 0 of 4
        Record("open", "the birch canoe slid\nThat canoes slide.", "ASR+QA", "ok",
               meta={"prompt": open_prompt}),  # 1 followed, 1 undecidable
        Record("lost", "", "ASR+SQA+SFT+Continue", "failed", error="CUDA error", meta=meta),
    ]
    result = task.score(records).result
    assert result.metrics["ifr"] == pytest.approx(100 * 1 / 4)
    assert result.metrics["ifr_instruction"] == pytest.approx(100 * (4 + 2 + 0 + 1) / (4 + 4 + 4 + 2))
    assert result.metrics["ifr_undecidable"] == pytest.approx(100 * 1 / 4)
    # capital of New Zealand (catalogue fact): right in "all" and "some", missing in "none"
    assert result.metrics["fact_accuracy"] == pytest.approx(100 * 2 / 3)
    assert "transcription_wer" not in result.metrics and "gender_accuracy" not in result.metrics
    assert (result.headline, result.n_scored, result.n_failed) == ("ifr", 4, 1)
    assert result.extra["sample_outcomes"] == {"followed": 1, "not_followed": 2, "undecidable": 1}
    per_type = result.extra["per_type"]
    assert per_type["multiple_choice"]["followed"] == 1 and per_type["multiple_choice"]["n"] == 3
    assert per_type["audio_question"] == {"followed": 0, "not_followed": 0, "undecidable": 1, "n": 1,
                                          "follow_rate": 0.0}
    assert result.settings["ifr_rules"] == RULES_VERSION
    assert result.settings["language_identification"].startswith("py3langid==")


def test_choice_accuracy_where_a_set_gives_the_option(official):
    task, samples = official
    meta = {**samples[0].meta, "ref_option": "C"}
    records = [Record("right", RELEASED_II_ANSWER, "ASR+SQA+SFT+Continue", "ok", meta=meta),
               Record("wrong", RELEASED_II_ANSWER.replace("the answer is: C", "the answer is: B"),
                      "ASR+SQA+SFT+Continue", "ok", meta=meta)]
    result = task.score(records).result
    assert result.metrics["choice_accuracy"] == 50.0 and result.metrics["ifr"] == 100.0


def test_literal_backslash_n_separators_split_like_newlines(official):
    task, samples = official
    record = Record("0", RELEASED_II_ANSWER.replace("\n", "\\n"), "ASR+SQA+SFT+Continue", "ok",
                    meta=dict(samples[0].meta))
    assert task.score([record]).result.metrics["ifr"] == 100.0


def test_jsonl_round_trip_scores_the_same(official):
    task, samples = official
    records = [Record("0", RELEASED_II_ANSWER, "ASR+SQA+SFT+Continue", "ok", meta=dict(samples[0].meta))]
    again = [Record.from_json(r.to_json()) for r in records]
    assert task.score(records).result.metrics == task.score(again).result.metrics


def test_end_to_end_through_evaluate(shared_data, tmp_path):
    """ii-task and cot through the real pipeline (runner, JSONL, results.json) with a scripted model
    that gives the released model's answers; a second run re-scores from the JSONL, asking nothing."""
    from tests.scripted_adapter import ScriptedAdapter
    from tests.test_cot import COT_REFERENCE, RELEASED_GERMAN
    from tests.test_instructions import RELEASED_COT_ANSWER
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions

    def script(prompt, seed):
        return RELEASED_II_ANSWER if prompt.text.startswith("To begin") else RELEASED_COT_ANSWER

    request = EvaluationRequest(["ii-task", "cot"], "scripted", tmp_path / "out",
                                data_overrides={"ii-task": shared_data / "II-task.tsv",
                                                "cot": shared_data / "CoT-task.tsv"},
                                options=RunOptions(show_progress=False))
    adapter = ScriptedAdapter(script=script)
    tasks = evaluate(request, adapter=adapter).results["tasks"]
    assert tasks["ii-task"]["metrics"]["ifr"] == 100.0 and tasks["ii-task"]["headlines"] == ["ifr"]
    import sacrebleu

    assert tasks["cot"]["metrics"]["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu([RELEASED_GERMAN], [[COT_REFERENCE]]).score, abs=1e-6)
    assert tasks["cot"]["headlines"] == ["bleu", "rouge-l", "bertscore"]
    again = ScriptedAdapter(script=script)
    assert evaluate(request, adapter=again).results["tasks"] == tasks
    assert again.calls == []
