"""Property tests: no input text crashes a parser or an answer extractor.

Every reader of user files (the WavLLM manifest, MuST-C yaml, CoVoST TSV, VoxCeleb trial list,
LibriSpeech transcripts, IEMOCAP label files, the samples JSONL, results.json) must either return a
clean result or raise InputError (one line, exit 2); every answer extractor must return an answer
or None ("unparsed"). Anything else is a traceback in front of a user. Inputs are both arbitrary
(text, bytes in any encoding) and grammar-shaped (tab-separated fields drawn from the format's own
vocabulary), so the parsers are driven past their header checks. Bounded for CI: at most 100
examples per property, derandomised (the same examples on every run), no example database.
"""

from __future__ import annotations

import importlib
import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wavllm_eval.tasks.asr import read_librispeech_split
from wavllm_eval.tasks.er import read_iemocap
from wavllm_eval.tasks.st import parse_mustc_yaml, read_covost, read_mustc_split
from wavllm_eval.tasks.sv import read_trials

from wavllm_eval.answers import extract_emotion, extract_option, extract_yes_no, parse_options
from wavllm_eval.errors import InputError
from wavllm_eval.store import SampleStore, read_records
from wavllm_eval.types import Record


def _manifest_module():
    for name in ("wavllm_eval.manifest", "wavllm_eval.tasks.wavllm_manifest"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ImportError("no WavLLM manifest reader (wavllm_eval/manifest.py or tasks/wavllm_manifest.py)")


manifest = _manifest_module()

BOUNDED = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- strategies ------------------------------------------------------------------------------------
ANY_TEXT = st.text(max_size=300)
TRICKY = st.sampled_from(["", " ", "\t", "\r", "\r\n", "\n", "\x00", "\ufeff", "\\", '"', "'", "{", "}", ",", ":",
                          "-", "#", "é", "ß", "中", "🙂", "\u2028", "nan", "inf", "-1", "1e309", "0", "1"])


def fields_of(vocabulary: Iterable[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(list(vocabulary)), TRICKY, st.text(max_size=12))


def lines_of(field: st.SearchStrategy[str], separator: str = "\t", max_lines: int = 8) -> st.SearchStrategy[str]:
    line = st.lists(field, max_size=8).map(separator.join)
    return st.tuples(st.lists(line, max_size=max_lines), st.sampled_from(["\n", "\r\n", "\r"]), st.booleans()).map(
        lambda t: t[1].join(t[0]) + (t[1] if t[2] else ""))


def encoded(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """The text as a user's editor might have saved it, or plain garbage."""
    def encode(pair: tuple[str, str]) -> bytes:
        value, codec = pair
        if codec == "utf-8-sig":
            return b"\xef\xbb\xbf" + value.encode("utf-8", "surrogatepass")
        return value.encode(codec, "replace") if codec != "utf-8" else value.encode("utf-8", "surrogatepass")

    return st.one_of(st.tuples(text, st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"])).map(encode),
                     st.binary(max_size=400))


def drain(result: Any) -> Any:
    """Consume a generator (the readers yield lazily: errors surface while iterating)."""
    if isinstance(result, (list, tuple, dict, str)) or result is None:
        return result
    return list(result)


def clean_or_input_error(call: Callable[[], Any]) -> Any:
    """The property: a clean result, or InputError with a one-line message. Anything else propagates
    and fails the example."""
    try:
        return drain(call())
    except InputError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
        return None


def scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="wavllm-prop-")


# --- WavLLM manifest -------------------------------------------------------------------------------
MANIFEST_WORDS = ("id", "audio", "n_frames", "prompt", "tgt_text", "with_speech", "True", "False", "utt1",
                  "audio/asr.flac", "SpeechT5/WavLLM/fairseq/examples/wavllm/test_data/audio/asr.flac", "166960")


MANIFEST_TEXT = st.one_of(lines_of(fields_of(MANIFEST_WORDS)), lines_of(fields_of(MANIFEST_WORDS)).map(
    lambda body: "id\taudio\tn_frames\tprompt\ttgt_text\twith_speech\n" + body))


@BOUNDED
@given(MANIFEST_TEXT.map(str.encode))
def test_manifest_reader_never_crashes_on_any_text(content):
    _check_manifest(content)


@BOUNDED
@given(encoded(MANIFEST_TEXT))
def test_manifest_reader_never_crashes_on_any_bytes(content):
    _check_manifest(content)


def _check_manifest(content: bytes) -> None:
    with scratch() as tmp:
        path = Path(tmp) / "asr.tsv"
        path.write_bytes(content)
        rows = clean_or_input_error(lambda: manifest.read_manifest(path))
        for row in rows or []:
            assert isinstance(row.id, str) and isinstance(row.target, str)
        clean_or_input_error(lambda: manifest.manifest_samples(path))
        try:
            is_manifest = manifest.is_manifest(path)
        except InputError:
            return
        assert isinstance(is_manifest, bool)


# --- MuST-C ----------------------------------------------------------------------------------------
YAML_KEYS = ("duration", "offset", "wav", "speaker_id", "rW", "uW")
YAML_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                        st.sampled_from(["ted_1.wav", "ted_2.wav", "spk.1", "", "abc", "1,5", "{", "}"]),
                        st.text(max_size=8))
YAML_ENTRY = st.dictionaries(st.one_of(st.sampled_from(YAML_KEYS), st.text(max_size=5)), YAML_VALUES, max_size=6).map(
    lambda d: "- {" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}")


YAML_TEXT = st.one_of(ANY_TEXT, st.lists(YAML_ENTRY, max_size=6).map("\n".join))


@BOUNDED
@given(YAML_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_mustc_yaml_parser_never_crashes_on_any_text(content):
    _check_mustc_yaml(content)


@BOUNDED
@given(encoded(YAML_TEXT))
def test_mustc_yaml_parser_never_crashes_on_any_bytes(content):
    _check_mustc_yaml(content)


def _check_mustc_yaml(content: bytes) -> None:
    with scratch() as tmp:
        path = Path(tmp) / "tst-COMMON.yaml"
        path.write_bytes(content)
        entries = clean_or_input_error(lambda: parse_mustc_yaml(path))
        assert entries is None or all(isinstance(e, dict) for e in entries)


@BOUNDED
@given(st.lists(YAML_ENTRY, min_size=1, max_size=5), st.data())
def test_mustc_split_reader_never_crashes(entries, data):
    """Aligned .en/.de files, so the reader gets past the line-count check to the values."""
    with scratch() as tmp:
        split = Path(tmp) / "tst-COMMON"
        (split / "txt").mkdir(parents=True)
        (split / "wav").mkdir()
        (split / "txt" / "tst-COMMON.yaml").write_text("\n".join(entries) + "\n", encoding="utf-8")
        for lang in ("en", "de"):
            lines = data.draw(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=20),
                                       min_size=len(entries), max_size=len(entries)))
            (split / "txt" / f"tst-COMMON.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        samples = clean_or_input_error(lambda: read_mustc_split(split, "tst-COMMON"))
        for sample in samples or []:
            ref = sample.audio[0]
            assert ref.offset_s >= 0 and (ref.duration_s is None or ref.duration_s >= 0)


# --- CoVoST 2 --------------------------------------------------------------------------------------
COVOST_WORDS = ("path", "sentence", "translation", "client_id", "split", "test", "train", "a.mp3",
                "common_voice_en_1.mp3", 'say "hi', "\\", "\\\\t")


COVOST_TEXT = st.one_of(lines_of(fields_of(COVOST_WORDS)), lines_of(fields_of(COVOST_WORDS)).map(
    lambda body: "path\tsentence\ttranslation\tclient_id\n" + body))


@BOUNDED
@given(COVOST_TEXT.map(str.encode))
def test_covost_reader_never_crashes_on_any_text(content):
    _check_covost(content)


@BOUNDED
@given(encoded(COVOST_TEXT))
def test_covost_reader_never_crashes_on_any_bytes(content):
    _check_covost(content)


def _check_covost(content: bytes) -> None:
    with scratch() as tmp:
        tsv = Path(tmp) / "covost_v2.en_de.test.tsv"
        tsv.write_bytes(content)
        (Path(tmp) / "clips").mkdir()
        clean_or_input_error(lambda: read_covost(tsv))


# --- VoxCeleb1 -------------------------------------------------------------------------------------
TRIAL_WORDS = ("0", "1", "2", "id10270/x6uYqmx31kE/00001.wav", "id10300/ize_eiCFEg0/00003.wav", "../../x.wav", "")


TRIAL_TEXT = st.one_of(ANY_TEXT, lines_of(fields_of(TRIAL_WORDS), separator=" "))


@BOUNDED
@given(TRIAL_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_voxceleb_trial_reader_never_crashes_on_any_text(content):
    _check_trials(content)


@BOUNDED
@given(encoded(TRIAL_TEXT))
def test_voxceleb_trial_reader_never_crashes_on_any_bytes(content):
    _check_trials(content)


def _check_trials(content: bytes) -> None:
    with scratch() as tmp:
        path = Path(tmp) / "veri_test2.txt"
        path.write_bytes(content)
        samples = clean_or_input_error(lambda: read_trials(path))
        for sample in samples or []:
            assert sample.reference in ("Yes", "No") and len(sample.audio) == 2
        if samples:
            assert len({s.id for s in samples}) == len(samples)  # duplicate trials get distinct ids


# --- LibriSpeech -----------------------------------------------------------------------------------
TRANSCRIPT_WORDS = ("121-1000-0000", "121-1000-0001", "HELLO", "WORLD", "IT'S", "121-1000-0000 HELLO WORLD")


TRANSCRIPT_TEXT = st.one_of(ANY_TEXT, lines_of(fields_of(TRANSCRIPT_WORDS), separator=" "))


@BOUNDED
@given(TRANSCRIPT_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_librispeech_transcript_reader_never_crashes_on_any_text(content):
    _check_transcripts(content)


@BOUNDED
@given(encoded(TRANSCRIPT_TEXT))
def test_librispeech_transcript_reader_never_crashes_on_any_bytes(content):
    _check_transcripts(content)


def _check_transcripts(content: bytes) -> None:
    with scratch() as tmp:
        split = Path(tmp) / "test-clean"
        chapter = split / "121" / "1000"
        chapter.mkdir(parents=True)
        (chapter / "121-1000.trans.txt").write_bytes(content)
        samples = clean_or_input_error(lambda: read_librispeech_split(split))
        for sample in samples or []:
            assert sample.id.strip() and isinstance(sample.reference, str)


# --- IEMOCAP ---------------------------------------------------------------------------------------
IEMOCAP_WORDS = ("[6.2901 - 8.2357]", "Ses01F_impro01_F000", "neu", "hap", "exc", "ang", "sad", "xxx",
                 "[2.5000, 2.5000, 2.5000]", "C-E2:")


@BOUNDED
@given(st.one_of(encoded(ANY_TEXT), encoded(lines_of(fields_of(IEMOCAP_WORDS)))))
def test_iemocap_label_reader_never_crashes(content):
    with scratch() as tmp:
        session = Path(tmp) / "Session1"
        labels = session / "dialog" / "EmoEvaluation"
        labels.mkdir(parents=True)
        (labels / "Ses01F_impro01.txt").write_bytes(content)
        samples = clean_or_input_error(lambda: read_iemocap(session))
        for sample in samples or []:
            assert sample.reference in ("neu", "hap", "ang", "sad")


# --- samples JSONL and results.json ----------------------------------------------------------------
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3), max_leaves=6)
RECORD_LIKE = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=6), st.integers())},
    optional={"prediction": JSON_VALUES, "reference": JSON_VALUES,
              "status": st.sampled_from(["ok", "failed", "skipped", "OK", "", "done"]) | JSON_VALUES,
              "error": JSON_VALUES, "choice_logprobs": JSON_VALUES, "meta": JSON_VALUES})
JSONL_LINE = st.one_of(
    RECORD_LIKE.map(lambda d: json.dumps(d, ensure_ascii=False).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[]", b"null", b"{}", b'"text"', b"42", b"not json", b"{", b"\xff\xfe", b'{"id": "a\xc3']),
    st.binary(max_size=40),
)


@BOUNDED
@given(st.lists(JSONL_LINE, max_size=6), st.booleans())
def test_jsonl_reader_never_crashes(lines, trailing_newline):
    with scratch() as tmp:
        path = Path(tmp) / "task.jsonl"
        path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline else b""))
        records = clean_or_input_error(lambda: read_records(path))
        for record in records or []:
            assert isinstance(record, Record) and record.status in ("ok", "failed", "skipped")
            assert isinstance(record.id, str)


@BOUNDED
@given(st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=60),
                 st.sampled_from([b"[]", b"null", b'"x"', b"1", b'{"tasks": []}', b'{"model": "x"}', b"\xef\xbb\xbf{}"])))
def test_results_json_reader_never_crashes(content):
    with scratch() as tmp:
        store = SampleStore(Path(tmp))
        store.results_path.write_bytes(content)
        results = clean_or_input_error(store.read_results)
        assert results is None or isinstance(results, dict)


# --- answer extractors -----------------------------------------------------------------------------
ANSWER_WORDS = ("yes", "No", "YES.", "the same speaker", "two different speakers", "only one speaker", "sad",
                "happy", "neu", "exc", "frustrated", "A", "B.", "(C)", "option B", "the answer is", "A. x; B. y; C. z.",
                "Washington, D.C.", "?", "；", "？")
ANSWER_TEXT = st.one_of(ANY_TEXT, st.lists(fields_of(ANSWER_WORDS), max_size=10).map(" ".join))


@BOUNDED
@given(ANSWER_TEXT)
def test_yes_no_and_emotion_extractors_never_crash(text):
    assert extract_yes_no(text) in ("yes", "no", None)
    assert extract_emotion(text) in ("neu", "hap", "ang", "sad", None)


@BOUNDED
@given(ANSWER_TEXT, ANSWER_TEXT)
def test_option_parser_and_extractor_never_crash(prompt, answer):
    question, options = parse_options(prompt)
    assert isinstance(question, str)
    assert set(options) <= set("ABC") and all(isinstance(v, str) for v in options.values())
    choice = extract_option(answer, options)
    assert choice is None or choice in (options or dict.fromkeys("ABC"))


@BOUNDED
@given(ANSWER_TEXT, st.dictionaries(st.sampled_from("ABCDE"), ANY_TEXT, max_size=5))
def test_option_extractor_with_any_option_texts_never_crashes(answer, options):
    choice = extract_option(answer, options)
    assert choice is None or choice in (options or dict.fromkeys("ABC"))
