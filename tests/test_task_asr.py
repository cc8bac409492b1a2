"""LibriSpeech loader on a generated native tree, and the WavLLM manifest route."""

from __future__ import annotations

import logging
from importlib.metadata import version

import pytest
from wavllm_eval.tasks.asr import WAVLLM_ASR_INSTRUCTION

from tests.librispeech_tree import SENTENCES, build_tree
from wavllm_eval.errors import InputError
from wavllm_eval.manifest import read_manifest
from wavllm_eval.registry import make_task
from wavllm_eval.types import Record


def test_native_layout_yields_every_transcript_line_sorted(tmp_path):
    build_tree(tmp_path)
    task = make_task("librispeech-test-clean")
    path = task.default_data_path(tmp_path)
    assert path == tmp_path / "LibriSpeech" / "test-clean"
    samples = list(task.load(path))
    assert [s.id for s in samples] == sorted(SENTENCES)
    assert {s.id: s.reference for s in samples} == SENTENCES  # byte-identical references
    assert all(s.duration_s > 0 for s in samples)
    assert samples[0].meta == {"speaker": "121", "chapter": "1000"}
    assert task.build_prompt(samples[0]).text == WAVLLM_ASR_INSTRUCTION


def test_missing_flac_still_counts_as_a_sample(tmp_path):
    build_tree(tmp_path)
    (tmp_path / "LibriSpeech/test-clean/121/1000/121-1000-0001.flac").unlink()
    samples = list(make_task("librispeech-test-clean").load(tmp_path / "LibriSpeech" / "test-clean"))
    assert len(samples) == len(SENTENCES)
    missing = next(s for s in samples if s.id == "121-1000-0001")
    assert missing.duration_s == 0.0


def test_a_partial_split_is_named_with_the_released_count(tmp_path, caplog):
    build_tree(tmp_path, split="test-other")
    with caplog.at_level(logging.WARNING):
        list(make_task("librispeech-test-other").load(tmp_path / "LibriSpeech" / "test-other"))
    assert any("5 librispeech-test-other samples, but the released test set has 2939" in r.getMessage()
               and "2617 / 2935" in r.getMessage() for r in caplog.records)


def test_test_other_and_helpful_errors(tmp_path):
    build_tree(tmp_path, split="test-other")
    assert len(list(make_task("librispeech-test-other").load(tmp_path / "LibriSpeech" / "test-other"))) == 5
    with pytest.raises(InputError, match="trans.txt"):
        list(make_task("librispeech-test-clean").load(tmp_path))


def test_scoring_counts_and_headline():
    task = make_task("librispeech-test-clean")
    result = task.score([
        Record("a", "The transcription is: hello world", "HELLO WORLD", "ok"),
        Record("b", "", "GOOD MORNING", "failed", "audio file not found: b.flac"),
        Record("c", "", "LONG ONE", "skipped", "too long"),
    ]).result
    assert result.headline == "wer" and result.headlines == ("wer",) and result.metrics["wer"] == 0.0
    assert (result.n_total, result.n_scored, result.n_failed, result.n_skipped) == (3, 1, 1, 1)
    # raw: case-sensitive, preamble kept (3 insertions over 2 words), against the reference lower-cased
    # as WavLLM's asr.tsv holds it
    assert result.metrics["wer_raw"] == 150.0
    expected_identity = f"whisper-english/whisper-normalizer=={version('whisper-normalizer')}"
    assert result.settings["wer"]["normaliser"] == expected_identity


def test_raw_wer_is_the_same_on_the_native_layout_and_the_official_manifest():
    """WavLLM's script scores raw WER against asr.tsv, whose targets are LibriSpeech's transcripts
    lower-cased; the native trans.txt reference (upper-case) must give the same number, not ~100 %."""
    hypothesis = "he hoped there would be stew for dinner turnips and carrots"
    native, manifest = "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND PARSNIPS", hypothesis.replace("carrots", "parsnips")
    scores = [make_task("librispeech-test-clean").score([Record("u", hypothesis, ref, "ok")]).result.metrics["wer_raw"]
              for ref in (native, manifest)]
    assert scores == [pytest.approx(100 / 11)] * 2  # one substitution in eleven words, both ways
    # a prediction's case still counts: raw scoring is case-sensitive on the hypothesis side
    upper = make_task("librispeech-test-clean").score([Record("u", "HE HOPED", "HE HOPED", "ok")]).result
    assert upper.metrics["wer_raw"] == 100.0 and upper.metrics["wer"] == 0.0


def test_official_manifest(shared_data):
    task = make_task("librispeech-test-clean")
    samples = list(task.load(shared_data / "asr.tsv"))
    assert len(samples) == 1
    sample = samples[0]
    assert sample.id == "0"
    assert sample.audio[0].path == shared_data / "audio" / "asr.flac"
    assert sample.duration_s == pytest.approx(10.435)
    assert sample.reference.startswith("he hoped there would be stew for dinner")
    assert task.build_prompt(sample).text == WAVLLM_ASR_INSTRUCTION


@pytest.mark.parametrize(
    ("name", "n_rows"),
    [("asr", 1), ("en2de", 1), ("sv", 1), ("emo", 1), ("SQA", 1), ("SQQA", 1), ("II-task", 1), ("CoT-task", 1),
     ("CoT-task-story", 1), ("gaokao", 2000)],
)
def test_every_official_manifest_reads(shared_data, name, n_rows):
    rows = read_manifest(shared_data / f"{name}.tsv")
    assert len(rows) == n_rows
    assert all(r.with_speech for r in rows)  # emo.tsv ends its lines in CRLF: still True
    if name != "gaokao":
        assert rows[0].audio_path.is_file()
    if name == "CoT-task-story":
        assert rows[0].extra["orig_story"].startswith("In the year 2500")


def test_malformed_manifest_names_the_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\taudio\tn_frames\tprompt\ttgt_text\twith_speech\n0\ta.wav\t1\tp\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.tsv:2: expected 6 tab-separated fields, found 4"):
        read_manifest(bad)
    no_columns = tmp_path / "cols.tsv"
    no_columns.write_text("id\taudio\n0\ta.wav\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing column"):
        read_manifest(no_columns)
