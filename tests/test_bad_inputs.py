"""The bad-input battery: every broken input ends in one clear line or a counted per-sample status.

Each case runs the installed console script (`.venv/bin/wavllm-eval`, a subprocess, offline) with
the real PocketSphinx model on inputs from `tests/bad_inputs.py`, and is held to one of:

* Unusable: the whole input cannot be evaluated: exit 2, exactly one `error:` line naming the file
  (and the line or field where it applies), no traceback;
* PerSample: the run completes (exit 0) and every sample of the input has exactly one record in
  the JSONL, with the expected status (`ok`, `failed`, `skipped`) and, when not ok, its reason; the
  results.json counts agree. No sample is silently missing;
* Either: for inputs a harness may reasonably accept or reject (a UTF-16 manifest, a 200 KiB
  field), whichever happens must be one of the two above.

The independent CLI cases run four at a time (they are mostly interpreter start-up); three PerSample
cases of three different tasks share one launch (SHARED_LAUNCH), each still checked on its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests import bad_inputs as bad
from tests.bad_inputs import (
    CliResult,
    assert_one_error_line,
    manifest_row,
    manifest_text,
    read_results,
    read_samples,
    record_line,
    run_args,
    run_cli,
    write_manifest,
)
from tests.librispeech_tree import build_tree

ASR = "librispeech-test-clean"
MUSTC = "mustc-en-de"
SV = "voxceleb1-sv"


# --- expectations ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unusable:
    names: tuple[str, ...]  # what the one error line must contain (file, line number, field)


@dataclass(frozen=True)
class PerSample:
    task: str
    statuses: dict[str, str]  # every sample id of the input -> expected status
    reasons: dict[str, str] = field(default_factory=dict)  # id -> text its `error` must contain
    predictions: dict[str, str] = field(default_factory=dict)  # id -> exact prediction (resume kept it)
    references: dict[str, str] = field(default_factory=dict)  # id -> exact reference (parsed cleanly)


@dataclass(frozen=True)
class Scored:
    task: str
    n_total: int  # `score --json` on a JSONL: the records it counted


@dataclass(frozen=True)
class Either:
    unusable: Unusable
    per_sample: PerSample


Expectation = Unusable | PerSample | Scored | Either


@dataclass(frozen=True)
class Case:
    args: list[str]
    expect: Expectation
    out: Path


def check(result: CliResult, case: Case) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    expect = case.expect
    if isinstance(expect, Either):
        expect = expect.unusable if result.returncode == 2 else expect.per_sample
    if isinstance(expect, Unusable):
        assert_one_error_line(result, *expect.names)
    elif isinstance(expect, Scored):
        assert result.returncode == 0, result.stderr[-3000:]
        entry = json.loads(result.stdout)[expect.task]
        assert entry["n_total"] == expect.n_total
    else:
        check_per_sample(result, case.out, expect)


def check_per_sample(result: CliResult, out: Path, expect: PerSample) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    lines = read_samples(out, expect.task)
    ids = [line["id"] for line in lines]
    assert sorted(ids) == sorted(expect.statuses), "every sample has exactly one record"
    by_id = {line["id"]: line for line in lines}
    for sample_id, status in expect.statuses.items():
        line = by_id[sample_id]
        assert line["status"] == status, (sample_id, line)
        if status != "ok":
            assert line.get("error"), (sample_id, "a failed or skipped sample names its reason")
        if sample_id in expect.reasons:
            assert expect.reasons[sample_id] in line["error"], (sample_id, line["error"])
        if sample_id in expect.predictions:
            assert line["prediction"] == expect.predictions[sample_id]
        if sample_id in expect.references:
            assert line["reference"] == expect.references[sample_id]
    entry = read_results(out)["tasks"][expect.task]
    statuses = list(expect.statuses.values())
    assert (entry["n_total"], entry["n_scored"], entry["n_failed"], entry["n_skipped"]) == (
        len(statuses), statuses.count("ok"), statuses.count("failed"), statuses.count("skipped"))


# --- builders: each makes its inputs under `root` and returns the case --------------------------------
def _asr_manifest(root: Path, text: str | bytes, expect: Callable[[Path], Expectation], encoding: str = "utf-8",
                  *extra: str) -> Case:
    path = write_manifest(root / "asr.tsv", text, encoding)
    return Case(run_args(ASR, path, root / "out", *extra), expect(path), root / "out")


def _clips(root: Path, n: int = 2) -> list[Path]:
    return [bad.good_clip(root / "audio", f"utt{i}.wav", 0.3 + 0.1 * i) for i in range(n)]


def _rows(root: Path, n: int = 2, **overrides: tuple[str, ...]) -> list[tuple[str, ...]]:
    rows = [manifest_row(f"utt{i}", clip) for i, clip in enumerate(_clips(root, n))]
    return [overrides.get(row[0], row) for row in rows]


def _all_ok(n: int = 2, **references: str) -> PerSample:
    return PerSample(ASR, {f"utt{i}": "ok" for i in range(n)}, references=references)


def case_short_row(root: Path) -> Case:
    rows = _rows(root, 2)
    rows[1] = rows[1][:5]
    return _asr_manifest(root, manifest_text(rows), lambda p: Unusable((f"{p}:3", "fields")))


def case_tab_inside_text(root: Path) -> Case:
    rows = _rows(root, 2)
    rows[1] = (*rows[1][:4], "hello\tworld", "True")
    return _asr_manifest(root, manifest_text(rows), lambda p: Unusable((f"{p}:3",)))


def case_latin1(root: Path) -> Case:
    rows = _rows(root, 2)
    rows[0] = (*rows[0][:4], "café au lait", "True")
    return _asr_manifest(root, manifest_text(rows), lambda p: Either(Unusable((str(p),)), _all_ok()), "latin-1")


def case_utf16(root: Path) -> Case:
    return _asr_manifest(root, manifest_text(_rows(root, 2)), lambda p: Either(Unusable((str(p),)), _all_ok()),
                         "utf-16")


def case_utf8_bom(root: Path) -> Case:
    return _asr_manifest(root, "\ufeff" + manifest_text(_rows(root, 2)), lambda p: _all_ok(utt0="hello world"))


def case_crlf_and_trailing_blank_lines(root: Path) -> Case:
    text = manifest_text(_rows(root, 2)).replace("\n", "\r\n") + "\r\n\r\n"
    return _asr_manifest(root, text, lambda p: _all_ok(utt0="hello world", utt1="hello world"))


def case_duplicate_ids(root: Path) -> Case:
    rows = _rows(root, 2)
    rows[1] = ("utt0", *rows[1][1:])
    return _asr_manifest(root, manifest_text(rows), lambda p: Unusable((str(p), "utt0")))


def case_empty_manifest(root: Path) -> Case:
    return _asr_manifest(root, b"", lambda p: Unusable((str(p),)))


def case_header_only(root: Path) -> Case:
    return _asr_manifest(root, manifest_text([]), lambda p: Unusable((str(p),)))


def case_field_over_128k(root: Path) -> Case:
    rows = _rows(root, 2)
    rows[0] = (*rows[0][:3], "please transcribe " * 12_000, *rows[0][4:])  # ~210 KiB prompt
    return _asr_manifest(root, manifest_text(rows), lambda p: Either(Unusable((str(p),)), _all_ok()))


def case_no_tgt_text(root: Path) -> Case:
    rows = [row[:4] + row[5:] for row in _rows(root, 2)]
    header = ("id", "audio", "n_frames", "prompt", "with_speech")
    return _asr_manifest(root, manifest_text(rows, header), lambda p: Unusable((str(p),)))


def case_wrong_header(root: Path) -> Case:
    header = ("utt", "wav", "frames", "instruction", "text", "speech")
    return _asr_manifest(root, manifest_text(_rows(root, 2), header), lambda p: Unusable((str(p),)))


def case_empty_header(root: Path) -> Case:
    return _asr_manifest(root, "\n" + manifest_text(_rows(root, 2), header=()), lambda p: Unusable((str(p),)))


def case_ten_minute_clip_beyond_limit(root: Path) -> Case:
    """The 10-minute clip's header is read (cheap); `--limit 1` keeps PocketSphinx off it."""
    rows = [manifest_row("utt0", bad.good_clip(root / "audio")), manifest_row("long", bad.long_silence_clip(root))]
    return _asr_manifest(root, manifest_text(rows), lambda p: PerSample(ASR, {"utt0": "ok"}), "utf-8", "--limit", "1")


# MuST-C: txt/tst-COMMON.{yaml,en,de} and wav/ (fairseq's prep_mustc_data layout)
def _mustc(root: Path, yaml_lines: list[str], n_text: int | None = None) -> Case:
    split = root / "tst-COMMON"
    (split / "txt").mkdir(parents=True)
    bad.write_audio(split / "wav" / "ted_1.wav", bad.tone(2.0))
    n = len(yaml_lines) if n_text is None else n_text
    (split / "txt" / "tst-COMMON.yaml").write_text("".join(line + "\n" for line in yaml_lines), encoding="utf-8")
    (split / "txt" / "tst-COMMON.en").write_text("".join(f"sentence {i}\n" for i in range(n)), encoding="utf-8")
    (split / "txt" / "tst-COMMON.de").write_text("".join(f"Satz {i}\n" for i in range(n)), encoding="utf-8")
    return Case(run_args(MUSTC, split, root / "out"), Unusable(()), root / "out")


def _segment(**fields: str) -> str:
    return "- {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"


GOOD_SEGMENT = _segment(duration="0.500000", offset="0.100000", rW="2", uW="0", speaker_id="spk.1", wav="ted_1.wav")


def _mustc_unusable(root: Path, second: str, *names: str) -> Case:
    case = _mustc(root, [GOOD_SEGMENT, second])
    yaml = root / "tst-COMMON" / "txt" / "tst-COMMON.yaml"
    return Case(case.args, Unusable((f"{yaml}:2", *names)), case.out)


def case_mustc_missing_wav(root: Path) -> Case:
    return _mustc_unusable(root, _segment(duration="0.5", offset="0.7", speaker_id="spk.1"), "wav")


def case_mustc_missing_offset(root: Path) -> Case:
    return _mustc_unusable(root, _segment(duration="0.5", speaker_id="spk.1", wav="ted_1.wav"), "offset")


def case_mustc_missing_duration(root: Path) -> Case:
    return _mustc_unusable(root, _segment(offset="0.7", speaker_id="spk.1", wav="ted_1.wav"), "duration")


def case_mustc_non_number(root: Path) -> Case:
    return _mustc_unusable(root, _segment(duration="half", offset="0.7", speaker_id="spk.1", wav="ted_1.wav"),
                           "duration")


def case_mustc_segment_past_the_end(root: Path) -> Case:
    late = _segment(duration="0.5", offset="30.0", speaker_id="spk.1", wav="ted_1.wav")
    case = _mustc(root, [GOOD_SEGMENT, late])
    return Case(case.args, PerSample(MUSTC, {"ted_1_0": "ok", "ted_1_1": "failed"}, {"ted_1_1": "past the end"}),
                case.out)


# VoxCeleb1: veri_test2.txt beside wav/
def case_voxceleb_absent_files(root: Path) -> Case:
    vox = root / "voxceleb1"
    bad.good_clip(vox / "wav" / "id1" / "v1", "00001.wav")
    bad.good_clip(vox / "wav" / "id2" / "v2", "00001.wav")
    trials = ["1 id1/v1/00001.wav id2/v2/00001.wav", "0 id1/v1/00001.wav id9/gone/00001.wav",
              "1 id8/gone/00002.wav id9/gone/00003.wav"]
    (vox / "veri_test2.txt").write_text("\n".join(trials) + "\n", encoding="utf-8")
    ids = {" ".join(t.split()[1:]): ("ok" if i == 0 else "failed") for i, t in enumerate(trials)}
    reasons = {i: "not found" for i, s in ids.items() if s == "failed"}
    return Case(run_args(SV, vox / "veri_test2.txt", root / "out"), PerSample(SV, ids, reasons), root / "out")


def case_voxceleb_bad_label(root: Path) -> Case:
    vox = root / "voxceleb1"
    vox.mkdir(parents=True)
    (vox / "veri_test2.txt").write_text("1 a/b/1.wav c/d/2.wav\nyes a/b/1.wav c/d/3.wav\n", encoding="utf-8")
    return Case(run_args(SV, vox / "veri_test2.txt", root / "out"), Unusable((f"{vox / 'veri_test2.txt'}:2",)),
                root / "out")


# LibriSpeech native layout (tests/librispeech_tree.py)
SENTENCES = {"121-1000-0000": "HELLO WORLD", "121-1000-0001": "GOOD MORNING", "121-1000-0002": "GOOD NIGHT"}


def _split(root: Path) -> Path:
    return build_tree(root / "data", sentences=dict(SENTENCES)) / "LibriSpeech" / "test-clean"


def case_librispeech_symlink_loop_and_directory(root: Path) -> Case:
    split = _split(root)
    chapter = split / "121" / "1000"
    (chapter / "121-1000-0001.flac").unlink()
    (chapter / "121-1000-0001.flac").mkdir()  # a directory named .flac
    (chapter / "121-1000-0002.flac").unlink()
    (chapter / "121-1000-0002.flac").symlink_to(chapter / "loop.flac")
    (chapter / "loop.flac").symlink_to(chapter / "121-1000-0002.flac")
    expect = PerSample(ASR, {"121-1000-0000": "ok", "121-1000-0001": "failed", "121-1000-0002": "failed"},
                       {"121-1000-0001": "121-1000-0001.flac", "121-1000-0002": "121-1000-0002.flac"})
    return Case(run_args(ASR, split, root / "out"), expect, root / "out")


def case_librispeech_transcript_is_a_directory(root: Path) -> Case:
    split = _split(root)
    (split / "121" / "1001" / "121-1001.trans.txt").mkdir(parents=True)
    expect = Either(Unusable(("121-1001.trans.txt",)), PerSample(ASR, dict.fromkeys(SENTENCES, "ok")))
    return Case(run_args(ASR, split, root / "out"), expect, root / "out")


def case_librispeech_no_transcripts(root: Path) -> Case:
    split = root / "LibriSpeech" / "test-clean"
    (split / "121" / "1000").mkdir(parents=True)
    return Case(run_args(ASR, split, root / "out"), Unusable((str(split),)), root / "out")


def case_librispeech_latin1_transcript(root: Path) -> Case:
    split = _split(root)
    trans = split / "121" / "1000" / "121-1000.trans.txt"
    trans.write_bytes(trans.read_bytes().replace(b"GOOD NIGHT", "GOOD NIGHT CAFÉ".encode("latin-1")))
    expect = Either(Unusable((str(trans),)), PerSample(ASR, dict.fromkeys(SENTENCES, "ok")))
    return Case(run_args(ASR, split, root / "out"), expect, root / "out")


# samples JSONL and results.json in an existing run folder
def _prior_run(root: Path, jsonl: bytes | None = None, results: bytes | None = None) -> tuple[Path, Path]:
    """A LibriSpeech tree and a run folder holding the given samples JSONL / results.json."""
    split = _split(root)
    run_dir = root / "out" / "pocketsphinx"
    (run_dir / "samples").mkdir(parents=True)
    if jsonl is not None:
        (run_dir / "samples" / f"{ASR}.jsonl").write_bytes(jsonl)
    if results is not None:
        (run_dir / "results.json").write_bytes(results)
    return split, run_dir


def _resume_with_middle_line(root: Path, middle: bytes) -> Case:
    jsonl = b"\n".join([record_line("121-1000-0000").encode(), middle, record_line("121-1000-0001").encode()]) + b"\n"
    split, run_dir = _prior_run(root, jsonl)
    return Case(run_args(ASR, split, root / "out"), Unusable((f"{run_dir / 'samples' / ASR}.jsonl:2",)), root / "out")


def case_resume_garbage_line(root: Path) -> Case:
    return _resume_with_middle_line(root, b"this is not json")


def case_resume_list_and_null_lines(root: Path) -> Case:
    return _resume_with_middle_line(root, b"[]\nnull")


def case_resume_invalid_utf8_line(root: Path) -> Case:
    return _resume_with_middle_line(root, b'{"id": "x\xff\xfe", "status": "ok"}')


def _results_case(root: Path, content: bytes, either: bool = False) -> Case:
    split, run_dir = _prior_run(root, results=content)
    unusable = Unusable((str(run_dir / "results.json"),))
    expect = Either(unusable, PerSample(ASR, dict.fromkeys(SENTENCES, "ok"))) if either else unusable
    return Case(run_args(ASR, split, root / "out"), expect, root / "out")


def case_results_json_is_a_list(root: Path) -> Case:
    return _results_case(root, b"[]\n")


def case_results_json_not_json(root: Path) -> Case:
    return _results_case(root, b"{ not json")


def case_results_json_wrong_shape(root: Path) -> Case:
    return _results_case(root, json.dumps({"model": "pocketsphinx", "tasks": []}).encode(), either=True)


def _score(root: Path, content: bytes, expect: Callable[[Path], Expectation]) -> Case:
    path = root / "samples" / f"{ASR}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return Case(["score", "--task", ASR, "--predictions", str(path), "--json"], expect(path), root)


def case_score_torn_last_line(root: Path) -> Case:
    content = "".join(record_line(f"u{i}") + "\n" for i in range(3)).encode() + bad.torn_utf8_line()
    return _score(root, content, lambda p: Scored(ASR, 3))


def case_score_garbage_line(root: Path) -> Case:
    content = (record_line("u0") + "\n{garbage\n" + record_line("u1") + "\n").encode()
    return _score(root, content, lambda p: Unusable((f"{p}:2",)))


def case_score_list_and_null_lines(root: Path) -> Case:
    content = (record_line("u0") + "\n[]\nnull\n" + record_line("u1") + "\n").encode()
    return _score(root, content, lambda p: Unusable((f"{p}:2",)))


def case_score_empty_file(root: Path) -> Case:
    return _score(root, b"", lambda p: Unusable((str(p),)))


CASES: dict[str, Callable[[Path], Case]] = {
    name.removeprefix("case_"): builder for name, builder in dict(globals()).items()
    if name.startswith("case_") and callable(builder)
}


SHARED_LAUNCH = ("crlf_and_trailing_blank_lines", "mustc_segment_past_the_end", "voxceleb_absent_files")
"""PerSample cases of three different tasks, run by one `run --tasks A,B,C` launch: one interpreter
start and one PocketSphinx load instead of three (each model-loading launch costs ~3 s of CPU). Each
case is still checked on its own: its task's JSONL, its task's results.json entry, exit 0."""


def joined_args(cases: list[Case], out: Path) -> list[str]:
    """The one `run` that evaluates every case's task on that case's data, writing under `out`. Each
    case's own args must be exactly `run_args(task, data, its out)`, so no option is lost in the join."""
    tasks: list[str] = []
    data: list[str] = []
    for case in cases:
        pair = case.args[case.args.index("--data") + 1]
        task, _, path = pair.partition("=")
        assert case.args == run_args(task, Path(path), case.out) and isinstance(case.expect, PerSample), case
        assert task not in tasks, f"{task} twice: a shared launch runs each task once"
        tasks.append(task)
        data += ["--data", pair]
    return ["run", "--tasks", ",".join(tasks), "--model", "pocketsphinx", *data, "--output-dir", str(out),
            "--batch-size", "1", "--no-progress"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[Case, CliResult]]:
    """Build every case, then run them four at a time (SHARED_LAUNCH's cases as one launch)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    cases = {name: builder(root / name) for name, builder in CASES.items()}
    shared_out = root / "shared_launch" / "out"
    launches = {name: case.args for name, case in cases.items() if name not in SHARED_LAUNCH}
    launches["<shared>"] = joined_args([cases[name] for name in SHARED_LAUNCH], shared_out)
    for name in SHARED_LAUNCH:
        cases[name] = replace(cases[name], args=launches["<shared>"], out=shared_out)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_cli, args) for name, args in launches.items()}
        results = {name: future.result() for name, future in futures.items()}
    return {name: (case, results["<shared>" if name in SHARED_LAUNCH else name]) for name, case in cases.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(outcomes, name):
    case, result = outcomes[name]
    check(result, case)


# --- the audio corpus: one run, one sample per clip ----------------------------------------------------
CLIP_REASONS = {"empty": "empty", "nan": "NaN or infinite", "posinf": "NaN or infinite", "neginf": "NaN or infinite",
                "missing": "not found"}


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory) -> tuple[CliResult, Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("bad_audio")
    clips: dict[str, Path] = {"good": bad.good_clip(root / "clips")}
    for name, make in {**bad.BAD_CLIPS, **bad.ODD_BUT_VALID_CLIPS}.items():
        clips[name] = make(root / "clips" / name)
    rows = [manifest_row(name, path) for name, path in clips.items()]
    manifest = write_manifest(root / "asr.tsv", manifest_text(rows))
    return run_cli(run_args(ASR, manifest, root / "out")), root / "out", clips


def test_audio_corpus_run_completes_and_counts_every_clip(audio_run):
    result, out, clips = audio_run
    statuses = {name: ("failed" if name in bad.BAD_CLIPS else "ok") for name in clips}
    check_per_sample(result, out, PerSample(ASR, statuses, CLIP_REASONS))


@pytest.mark.parametrize("name", sorted({**bad.BAD_CLIPS, **bad.ODD_BUT_VALID_CLIPS}))
def test_audio_clip_outcome(audio_run, name):
    result, out, clips = audio_run
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = {r["id"]: r for r in read_samples(out, ASR)}.get(name)
    assert line is not None, f"sample {name} is missing from the JSONL"
    if name in bad.BAD_CLIPS:
        assert line["status"] == "failed", line
        assert clips[name].name in line["error"] and CLIP_REASONS.get(name, "") in line["error"], line["error"]
    else:
        assert line["status"] == "ok", line


def test_ten_minute_clip_is_skipped_over_the_model_limit(tmp_path):
    """The documented long-audio policy: a clip over the adapter's `max_audio_s` is `skipped` with
    the reason, counted in results.json, and never decoded."""
    from tests.scripted_adapter import ScriptedAdapter
    from wavllm_eval.evaluate import EvaluationRequest, evaluate
    from wavllm_eval.runner import RunOptions

    rows = [manifest_row("utt0", bad.good_clip(tmp_path / "audio")), manifest_row("long", bad.long_silence_clip(tmp_path))]
    manifest = write_manifest(tmp_path / "asr.tsv", manifest_text(rows))
    adapter = ScriptedAdapter(script=lambda prompt, seed: "hello world")
    adapter.max_audio_s = 40.0
    outcome = evaluate(EvaluationRequest([ASR], "scripted", tmp_path / "out", data_overrides={ASR: manifest},
                                         options=RunOptions(show_progress=False)), adapter=adapter)
    entry = outcome.results["tasks"][ASR]
    assert (entry["n_total"], entry["n_scored"], entry["n_skipped"]) == (2, 1, 1)
    lines = {r["id"]: r for r in read_samples(tmp_path / "out", ASR, model="scripted")}
    assert lines["long"]["status"] == "skipped" and "600.00 s" in lines["long"]["error"]
    assert all("long" not in call for call in adapter.calls)


def test_resume_after_a_line_torn_inside_a_utf8_character(tmp_path):
    """A run killed while writing a line that is cut inside a two-byte character resumes: the torn
    tail is cut, its sample runs again, and the JSONL ends as the uninterrupted run's."""
    sentences = {"121-1000-0000": "GRÜSSE AUS MÜNCHEN", "121-1000-0001": "SCHÖNE GRÜSSE", "121-1000-0002": "ÜBER ALLES"}
    split = build_tree(tmp_path / "data", sentences=sentences) / "LibriSpeech" / "test-clean"
    whole = run_cli(run_args(ASR, split, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = read_samples(tmp_path / "whole", ASR)

    torn_dir = tmp_path / "torn" / "pocketsphinx" / "samples"
    torn_dir.mkdir(parents=True)
    data = (tmp_path / "whole" / "pocketsphinx" / "samples" / f"{ASR}.jsonl").read_bytes()
    first_end = data.index(b"\n") + 1
    cut = data.index("Ü".encode(), first_end) + 1  # inside the second line's first Ü
    (torn_dir / f"{ASR}.jsonl").write_bytes(data[:cut])
    resumed = run_cli(run_args(ASR, split, tmp_path / "torn"))
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    got = read_samples(tmp_path / "torn", ASR)
    assert sorted(json.dumps(r, sort_keys=True) for r in got) == sorted(json.dumps(r, sort_keys=True) for r in expected)
    assert read_results(tmp_path / "torn")["tasks"][ASR]["metrics"] == read_results(tmp_path / "whole")["tasks"][ASR]["metrics"]
