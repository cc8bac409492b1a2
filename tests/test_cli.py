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
