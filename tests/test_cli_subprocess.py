"""The installed console script as a user meets it: one line and exit 2 for every usage or input
mistake (never a traceback), exit 3 for a run that scored nothing, JSON on stdout where asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.librispeech_tree import build_tree

EXE = str(Path(sys.executable).with_name("wavllm-eval"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "first_line"), [
    ((), "error: no command given — choose one of list, run, score, demo, report, build, gate, convert "
         "(wavllm-eval --help)"),
    (("run", "--tasks", "asr", "--output-dir", "o"), "error: Missing option '--model'. — see `wavllm-eval run --help`"),
    (("run", "--tasks", "asr", "--model", "pocketsphinx", "--output-dir", "o", "--limt", "5"),
     "error: No such option: --limt (Possible options: --limit) — see `wavllm-eval run --help`"),
    (("run", "--tasks", "asr", "--model", "pocketsphinx", "--output-dir", "o", "--limit", "ten"),
     "error: Invalid value for '--limit': Input should be a valid integer, unable to parse string as an integer — "
     "see `wavllm-eval run --help`"),
    (("frobnicate",), "error: No such command 'frobnicate'. — see `wavllm-eval --help`"),
    (("run", "--tasks", "asr", "--model", "pocketsphinx", "--output-dir", "o", "--dtype", "banana"),
     "error: --dtype: unknown dtype 'banana' — use one of auto, float32, bfloat16, float16, int8"),
    (("run", "--tasks", "asr", "--model", "pocketsphinx", "--output-dir", "o", "--device", "tpu"),
     "error: --device: unknown device 'tpu' — use auto, cpu, cuda or cuda:N"),
    (("run", "--tasks", "asr", "--model", "wavllm", "--output-dir", "o", "--model-path", "/nonexistent/wavllm"),
     "error: /nonexistent/wavllm: --model-path does not exist — pass the folder that holds the model files"),
    (("run", "--tasks", "asrr", "--model", "pocketsphinx", "--output-dir", "o"),
     "error: unknown task or group 'asrr' — did you mean 'asr'? (`wavllm-eval list` shows all)"),
])
def test_usage_mistakes_are_one_line_and_exit_2(tmp_path, args, first_line):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result) == first_line


def test_a_model_folder_missing_files_names_them_all_at_once(tmp_path):
    folder = tmp_path / "wavllm"
    (folder / "whisper").mkdir(parents=True)
    (folder / "whisper" / "config.json").write_text("{}")
    result = cli("run", "--tasks", "asr", "--model", "wavllm", "--output-dir", str(tmp_path / "o"),
                 "--model-path", str(folder), "--data-dir", str(tmp_path))
    line = one_error_line(result)
    assert result.returncode == 2
    for name in ("final.pt|model.safetensors", "tokenizer.model", "whisper/preprocessor_config.json",
                 "wavlm/config.json", "llama/config.json"):
        assert name in line
    assert "whisper/config.json," not in line.split("needs")[1].split("here")[0]  # present: not listed


def test_a_run_that_scores_nothing_exits_3(tmp_path, shared_data):
    # the Gaokao manifest without its audio: every sample fails
    result = cli("run", "--tasks", "gaokao-sqa", "--model", "pocketsphinx", "--output-dir", str(tmp_path / "o"),
                 "--data", f"gaokao-sqa={shared_data / 'gaokao.tsv'}", "--limit", "3", "--no-progress")
    assert result.returncode == 3, result.stderr
    assert "gaokao-sqa: 0/3 scored, 3 failed, 0 skipped" in result.stderr
    assert "Traceback" not in result.stderr


def test_group_runs_the_tasks_with_data_and_names_the_skipped_ones(tmp_path):
    build_tree(tmp_path / "data")  # test-clean only
    result = cli("run", "--tasks", "asr", "--model", "pocketsphinx", "--output-dir", str(tmp_path / "o"),
                 "--data-dir", str(tmp_path / "data"), "--no-progress", "--json", "--max-failed", "0")
    assert result.returncode == 0, result.stderr
    assert f"skipped librispeech-test-other: no data at {tmp_path / 'data/LibriSpeech/test-other'}" in result.stderr
    assert "librispeech-test-clean: 5/5 scored, 0 failed, 0 skipped" in result.stderr
    results = json.loads(result.stdout)
    assert set(results["tasks"]) == {"librispeech-test-clean"}
    assert results["meta"]["skipped_tasks"] == {"librispeech-test-other": f"no data at {tmp_path / 'data/LibriSpeech/test-other'}"}
    # a task named explicitly whose data is absent stays an error
    named = cli("run", "--tasks", "librispeech-test-other", "--model", "pocketsphinx", "--output-dir",
                str(tmp_path / "o2"), "--data-dir", str(tmp_path / "data"))
    assert named.returncode == 2 and "data for librispeech-test-other not found" in one_error_line(named)


def test_max_failed_fraction_exits_3(tmp_path):
    split = build_tree(tmp_path / "data")
    (split / "LibriSpeech/test-clean/121/1000/121-1000-0000.flac").unlink()  # 1 of 5 fails
    base = ("run", "--tasks", "librispeech-test-clean", "--model", "pocketsphinx", "--data-dir", str(tmp_path / "data"),
            "--no-progress")
    assert cli(*base, "--output-dir", str(tmp_path / "a"), "--max-failed", "0.1").returncode == 3
    assert cli(*base, "--output-dir", str(tmp_path / "b"), "--max-failed", "0.25").returncode == 0


def test_list_describes_layouts_and_required_files():
    result = cli("list", "--json")
    listing = json.loads(result.stdout)
    tasks = {t["id"]: t for t in listing["tasks"]}
    assert tasks["librispeech-test-clean"]["data"] != tasks["librispeech-test-other"]["data"]
    assert "LibriSpeech/test-other/" in tasks["librispeech-test-other"]["data"]
    models = {m["id"]: m for m in listing["models"]}
    assert "tokenizer.model" in models["wavllm"]["requires"] and models["pocketsphinx"]["requires"] == []


def test_gate_help_documents_the_default_thresholds():
    result = cli("gate", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "wer=0.5" in text and "bleu=1" in text and "alpha 0.05" in text
