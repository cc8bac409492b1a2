"""The report puts each run's recorded efficiency (results.json `throughput`) beside the scores."""

from __future__ import annotations

import json

from wavllm_eval.reports.report import write_report

from tests.run_builder import write_run
from wavllm_eval.store import SampleStore
from wavllm_eval.types import Record

TASK = "librispeech-test-clean"


def test_efficiency_section_shows_what_each_run_recorded(tmp_path):
    records = [Record(f"1-2-{i:04d}", "a b c", "A B C", "ok", task=TASK) for i in range(3)]
    gpu = write_run(tmp_path / "runs", "fast", {TASK: records})
    cpu = write_run(tmp_path / "runs", "slow", {TASK: records})
    recorded = {
        gpu: {"n_samples": 3, "audio_s": 30.0, "model_s": 0.2, "rtfx": 150.0, "tokens_per_s": 412.5, "new_tokens": 82,
              "ttft_s_mean": 0.0315, "ttft_calls": 1, "wall_s": 0.25, "rtfx_wall": 120.0, "batch_size_used": 8,
              "oom_backoffs": 0, "device": "NVIDIA H200", "peak_memory": {"rss_mib": 2048.0, "cuda_reserved_mib": 15360.0}},
        cpu: {"n_samples": 3, "audio_s": 30.0, "model_s": 12.0, "rtfx": 2.5, "tokens_per_s": 6.8, "new_tokens": 82,
              "wall_s": 12.5, "rtfx_wall": 2.4, "batch_size_used": 2, "oom_backoffs": 1, "device": "cpu",
              "peak_memory": {"rss_mib": 900.4}},
    }
    for run_dir, throughput in recorded.items():
        store = SampleStore(run_dir)
        results = store.read_results()
        results["tasks"][TASK]["throughput"] = throughput
        store.write_results(results)
    write_report([gpu, cpu], tmp_path / "report", formats=("md", "json", "html"))
    markdown = (tmp_path / "report/leaderboard.md").read_text()
    section = markdown[markdown.index("## Efficiency"):]
    assert "| fast | librispeech-test-clean | NVIDIA H200 | 8 | 150.0 | 120.0 | 412.5 | 0.032 | 15360 (CUDA) | 3 |" in section
    assert "| slow | librispeech-test-clean | cpu | 2 | 2.5 | 2.4 | 6.8 | — | 900 (RSS) | 3 |" in section  # no TTFT measured
    page = (tmp_path / "report/leaderboard.html").read_text()
    assert page.index("<h2>Efficiency</h2>") < page.index("<h2>Reproducibility</h2>")
    assert "<td>NVIDIA H200</td>" in page and "<td>15360 (CUDA)</td>" in page
    payload = json.loads((tmp_path / "report/leaderboard.json").read_text())
    assert payload["efficiency"] == [{"model": "fast", "task": TASK, **recorded[gpu]},
                                     {"model": "slow", "task": TASK, **recorded[cpu]}]
