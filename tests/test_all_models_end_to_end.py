"""Every registered model through every task on the official WavLLM test manifests (tiny random
models, short generations), then one report with all of them beside the paper rows."""

from __future__ import annotations

import json

import pytest

from tests.test_contract import BUILDERS, MODEL_IDS
from wavllm_eval.evaluate import EvaluationRequest, evaluate
from wavllm_eval.runner import RunOptions

MANIFESTS = {"librispeech-test-clean": "asr.tsv", "covost2-en-de": "en2de.tsv", "voxceleb1-sv": "sv.tsv",
             "iemocap-er": "emo.tsv", "gaokao-sqa": "SQA.tsv", "ii-task": "II-task.tsv", "cot": "CoT-task.tsv",
             "cot-story": "CoT-task-story.tsv", "sqqa": "SQQA.tsv"}


POCKETSPHINX_SLOW = ("cot-story", "voxceleb1-sv")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("all-models")


@pytest.mark.parametrize("model_id", [m for m in MODEL_IDS if m != "replay"])
def test_model_runs_every_task_on_the_official_manifests(model_id, out_dir, shared_data, tmp_path):
    path = BUILDERS[model_id](tmp_path)
    # PocketSphinx decodes at a few times real time on the CPU: its long-clip tasks (22 s, 49 s) are
    # covered by its own tests, so the suite stays fast
    manifests = {t: f for t, f in MANIFESTS.items() if model_id != "pocketsphinx" or t not in POCKETSPHINX_SLOW}
    request = EvaluationRequest(list(manifests), model_id, out_dir, data_overrides={
        t: shared_data / f for t, f in manifests.items()}, model_path=path,
        options=RunOptions(max_new_tokens=4, show_progress=False, device="cpu"))
    results = evaluate(request).results
    for task_id in manifests:
        entry = results["tasks"][task_id]
        assert entry["n_total"] == 1, (model_id, task_id)
        assert entry["n_failed"] == 0, (model_id, task_id, json.dumps(entry.get("extra", {}))[:300])
        if entry["n_skipped"]:  # only a clip over the model's own per-clip limit may be skipped
            record = json.loads((out_dir / model_id / "samples" / f"{task_id}.jsonl").read_text().splitlines()[-1])
            assert "limit" in record["error"], record


def test_one_report_puts_every_model_beside_the_paper_rows(out_dir):
    from wavllm_eval.reports.report import write_report

    runs = sorted(p for p in out_dir.iterdir() if (p / "results.json").is_file())
    if len(runs) < 2:
        pytest.skip("the per-model runs did not run")
    [json_path] = write_report(runs, out_dir / "report", ["json"])
    rows = json.loads(json_path.read_text())["rows"]
    measured = {r["model"] for r in rows if r["source"] == "measured"}
    reported = {r["model"] for r in rows if r["source"] == "reported"}
    assert measured == {p.name for p in runs}
    assert {"wavllm", "salmonn-13b", "qwen-audio", "qwen2-audio", "qwen2.5-omni"} <= reported
