"""Every registered model through every task on the official WavLLM test manifests (tiny random
models, short generations), then one report with all of them beside the paper rows.

The manifests' rows (prompts, references, extra columns) are used as released; their clips are cut to
their first seconds, so thirteen models times nine tasks stay a small part of the suite (full-length
clips go through each family's own tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_contract import BUILDERS, MODEL_IDS
from wavllm_eval.evaluate import EvaluationRequest, evaluate
from wavllm_eval.runner import RunOptions

MANIFESTS = {"librispeech-test-clean": "asr.tsv", "covost2-en-de": "en2de.tsv", "voxceleb1-sv": "sv.tsv",
             "iemocap-er": "emo.tsv", "gaokao-sqa": "SQA.tsv", "ii-task": "II-task.tsv", "cot": "CoT-task.tsv",
             "cot-story": "CoT-task-story.tsv", "sqqa": "SQQA.tsv"}


# Long enough that every clip still holds speech (PocketSphinx hears words in each one); what is under
# test is that each model runs each task, not clip length (full-length clips: each family's own tests).
# PocketSphinx decodes at ~0.5x real time here, so 3 s clips cost its run ~13 s of CPU, 1.5 s ~7 s.
CLIP_S = 1.5


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("all-models")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory, shared_data):
    """The official manifests, their audio cut to CLIP_S seconds (rows otherwise byte-identical)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("short-manifests")
    for name in set(MANIFESTS.values()):
        lines = (shared_data / name).read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t")
        audio_col = header.index("audio")
        out_lines = [lines[0]]
        for line in lines[1:]:
            fields = line.split("\t")
            source = shared_data / "audio" / Path(fields[audio_col]).name
            data, rate = sf.read(str(source), dtype="float32")
            clip = root / f"{Path(name).stem}-{source.stem}.wav"
            sf.write(str(clip), data[: int(CLIP_S * rate)], rate)
            fields[audio_col] = clip.name
            out_lines.append("\t".join(fields))
        (root / name).write_text("\n".join(out_lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("model_id", [m for m in MODEL_IDS if m != "replay"])
def test_model_runs_every_task_on_the_official_manifests(model_id, out_dir, manifests, tmp_path):
    path = BUILDERS[model_id](tmp_path)
    request = EvaluationRequest(list(MANIFESTS), model_id, out_dir, data_overrides={
        t: manifests / f for t, f in MANIFESTS.items()}, model_path=path,
        options=RunOptions(max_new_tokens=4, show_progress=False, device="cpu"))
    results = evaluate(request).results
    for task_id in MANIFESTS:
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
