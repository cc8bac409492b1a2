"""The command line: exit codes, one-line errors, `list` stays light, `score` agrees with `run`."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.librispeech_tree import build_tree
from tests.scripted_adapter import ScriptedAdapter
from wavllm_eval.cli import main
from wavllm_eval.evaluate import EvaluationRequest, evaluate
from wavllm_eval.runner import RunOptions


def test_list_json_names_tasks_groups_and_models(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    ids = [t["id"] for t in listing["tasks"]]
    assert len(ids) == len(set(ids))
    assert {"librispeech-test-clean", "librispeech-test-other"} <= set(ids)
    assert listing["groups"]["asr"] == ["librispeech-test-clean", "librispeech-test-other"]
    assert "pocketsphinx" in [m["id"] for m in listing["models"]]


def test_list_imports_no_torch():
    code = "import sys; from wavllm_eval.cli import main; main(['list']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_unknown_task_exits_2_with_a_suggestion(tmp_path, capsys):
    rc = main(["run", "--tasks", "librispeech-test-clen", "--model", "pocketsphinx", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "did you mean 'librispeech-test-clean'" in err
    assert "Traceback" not in err


def test_missing_data_exits_2_naming_the_path(tmp_path, capsys):
    rc = main(["run", "--tasks", "asr", "--model", "pocketsphinx", "--data-dir", str(tmp_path / "nowhere"),
               "--output-dir", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2
    # a group whose every task lacks its data: one line naming each missing path and the fix
    assert err.startswith("error: ") and err.count("\n") == 0
    assert "nowhere/LibriSpeech/test-clean" in err and "nowhere/LibriSpeech/test-other" in err
    assert "--data TASK=PATH" in err


def test_bad_data_override_and_batch_size_exit_2(tmp_path, capsys):
    assert main(["run", "--tasks", "asr", "--model", "pocketsphinx", "--output-dir", str(tmp_path),
                 "--data", "librispeech-test-clean"]) == 2
    assert main(["run", "--tasks", "asr", "--model", "pocketsphinx", "--output-dir", str(tmp_path),
                 "--batch-size", "many"]) == 2


def test_score_agrees_with_the_run(tmp_path, capsys):
    build_tree(tmp_path / "data")
    outcome = evaluate(
        EvaluationRequest(["librispeech-test-clean"], "scripted", tmp_path / "out", tmp_path / "data",
                          options=RunOptions(show_progress=False)),
        adapter=ScriptedAdapter(script=lambda p, s: "the birch canoe slid on the smooth planks"),
    )
    jsonl = tmp_path / "out/scripted/samples/librispeech-test-clean.jsonl"
    assert main(["score", "--task", "librispeech-test-clean", "--predictions", str(jsonl), "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)["librispeech-test-clean"]
    stored = outcome.results["tasks"]["librispeech-test-clean"]
    assert rescored["metrics"] == stored["metrics"] and rescored["ci95"] == stored["ci95"]
    assert rescored["n_total"] == stored["n_total"] == 5


def test_score_on_a_malformed_jsonl_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prediction": "x", "reference": "x", "status": "ok"}\nnot json\n{"id": "b"}\n')
    assert main(["score", "--task", "librispeech-test-clean", "--predictions", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_list_prints_one_line_per_task_group_and_model(capsys):
    from wavllm_eval import registry

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    n = len(registry.task_entries()) + len(registry.groups()) + 1 + len(registry.model_entries())  # + "all"
    assert len(lines) == n and all(line.split()[0] in ("task", "group", "model") for line in lines)
    assert any("data: LibriSpeech/test-clean/" in line for line in lines if line.startswith("task"))


def one_line_error(capsys, rc, *expected):
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(e in err for e in expected), err


def test_bad_inputs_to_gate_report_and_run_are_one_line_errors(tmp_path, capsys):
    """Each of these had crashed with a traceback and exit 1, the code of a failed gate."""
    from tests.test_reports import make_run

    base = make_run(tmp_path / "a", "m", ["hello world"] * 3)
    for text, key in (('default = "abc"\n', "default"), ("max_regression = 3\n", "max_regression"),
                      ('[max_regression]\nwer = "x"\n', "max_regression.wer")):
        (tmp_path / "gate.toml").write_text(text)
        one_line_error(capsys, main(["gate", "--baseline", str(base), "--candidate", str(base), "--config",
                                     str(tmp_path / "gate.toml")]), "gate.toml", key)
    one_line_error(capsys, main(["gate", "--baseline", str(base), "--candidate", str(base), "--config",
                                 str(tmp_path)]), "cannot read the gate config")
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("x")
    one_line_error(capsys, main(["report", str(base), "--output-dir", str(a_file)]), "a-file.txt")
    broken = tmp_path / "broken" / "m"
    broken.mkdir(parents=True)
    for results in ({"model": {}, "tasks": {}}, {"model": {"id": "x"}, "tasks": []}):
        (broken / "results.json").write_text(json.dumps(results))
        one_line_error(capsys, main(["report", str(broken), "--output-dir", str(tmp_path / "r")]), "results.json")
        one_line_error(capsys, main(["score", str(broken)]), "results.json")
    one_line_error(capsys, main(["report", str(base), "--output-dir", str(tmp_path / "r3"), "--format", ""]), "--format")
    one_line_error(capsys, main(["gate", "--baseline", str(base), "--candidate", str(base), "--max-regression", "=0.3"]),
                   "--max-regression")
    one_line_error(capsys, main(["run", "--tasks", "librispeech-test-clean", "--model", "pocketsphinx",
                                 "--output-dir", str(tmp_path / "o"), "--check-batch-invariance", "-1"]),
                   "--check-batch-invariance")


def test_report_of_two_runs_with_the_same_label_writes_both(tmp_path):
    from tests.test_reports import make_run

    a = make_run(tmp_path / "main" / "runs", "m", ["hello world"] * 3)
    b = make_run(tmp_path / "pr" / "runs", "m", ["hello there"] * 3)
    assert main(["report", str(a), str(b), "--output-dir", str(tmp_path / "r"), "--format", "json"]) == 0
    assert main(["report", str(a), str(a), "--output-dir", str(tmp_path / "r2"), "--format", "json"]) == 0
    labels = {row["model"] for row in json.loads((tmp_path / "r" / "leaderboard.json").read_text())["rows"]
              if row["source"] == "measured"}
    assert labels == {"m (runs)", "m (runs) #2"}


def test_a_typo_in_a_tasks_own_data_path_is_an_error_inside_a_group(tmp_path, capsys):
    build_tree(tmp_path)
    build_tree(tmp_path, split="test-other")
    rc = main(["run", "--tasks", "asr", "--model", "pocketsphinx", "--data-dir", str(tmp_path), "--output-dir",
               str(tmp_path / "o"), "--data", f"librispeech-test-clean={tmp_path / 'nofile.tsv'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "nofile.tsv" in err


def test_malformed_run_files_are_one_line_errors(tmp_path, capsys):
    """Valid JSON of the wrong shape, or nested past Python's recursion limit, named in one line
    (these had been KeyError / AttributeError / RecursionError tracebacks, exit 1)."""
    from tests.test_reports import make_run

    base = make_run(tmp_path / "a", "m", ["hello world"] * 3)
    good = json.loads((base / "results.json").read_text())
    deep = "[" * 200_000 + "]" * 200_000
    broken = tmp_path / "broken" / "m"
    broken.mkdir(parents=True)
    task = next(iter(good["tasks"]))
    cases = [deep, json.dumps({**good, "tasks": {task: {}}}), json.dumps({**good, "meta": []}),
             json.dumps({**good, "tasks": {task: {**good["tasks"][task], "metrics": {"wer": "abc"}}}})]
    for text in cases:
        (broken / "results.json").write_text(text)
        one_line_error(capsys, main(["report", str(broken), "--output-dir", str(tmp_path / "r")]), "results.json")
        one_line_error(capsys, main(["gate", "--baseline", str(base), "--candidate", str(broken)]), "results.json")
        one_line_error(capsys, main(["score", str(broken)]), "results.json")
    samples = next((base / "samples").glob("*.jsonl"))
    samples.write_text(samples.read_text() + deep + "\n" + samples.read_text().splitlines()[0] + "\n")
    one_line_error(capsys, main(["score", str(base)]), samples.name)


def test_replay_files_with_deep_or_huge_lines_are_read_or_refused_in_one_line(tmp_path, capsys):
    from wavllm_eval.model_zoo.replay import read_tsv

    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 200_000 + "]" * 200_000 + "\n")
    build_tree(tmp_path / "data")
    rc = main(["run", "--tasks", "librispeech-test-clean", "--model", "replay", "--model-path", str(deep),
               "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err  # the (partial test set) size warning, then the one error line
    assert rc == 2 and "Traceback" not in err and "deep.jsonl:1" in err.strip().splitlines()[-1], err
    long = tmp_path / "long.tsv"
    long.write_text("id\tprediction\nu1\t" + "word " * 60_000 + "\n")  # a run-away 300 kB answer
    assert len(read_tsv(long)["u1"].text) == 300_000
