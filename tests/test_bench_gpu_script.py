"""benchmarks/bench_gpu.py, the script a session with a GPU runs, stays runnable: its full-size
configs build the released architecture's 7.5 B parameters (on the meta device: nothing allocated),
and a tiny CPU run goes through the harness's adapter end to end. No timing is asserted."""

from __future__ import annotations

import sys

from wavllm_eval.model_zoo.wavllm import build_model

from benchmarks.bench_gpu import main, write_folder


def test_full_size_configs_are_the_released_architecture(tmp_path, shared_data):
    model = build_model(write_folder(tmp_path / "wavllm", tiny=False), empty=True)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    # tests/../shared/reference/wavllm.md: Whisper encoder ~0.64 B, WavLM ~0.095 B, LLaMA 6.74 B + LoRA 0.034 B
    assert round(count(model.whisper) / 1e9, 2) == 0.64
    assert round(count(model.wavlm) / 1e9, 3) == 0.094
    assert round(count(model.llama) / 1e9, 2) == 6.77
    assert round(count(model) / 1e9, 1) == 7.6


def test_tiny_cpu_run_prints_a_row_per_batch_size(monkeypatch, capsys, shared_data):
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--tiny", "--device", "cpu", "--dtype", "float32",
                                      "--clips", "3", "--batches", "1,3", "--max-new-tokens", "2"])
    main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| cpu |")]
    assert [row.split(" | ")[2] for row in rows] == ["1", "3"]
    assert all(row.endswith("| 3/3 |") for row in rows), rows  # fp32: every batch equals batch size 1


def test_without_a_gpu_it_says_so_and_succeeds(monkeypatch, capsys):
    """`nox -s bench` runs every bench_*.py; on a machine without CUDA this one must not fail the session."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py"])
    main()
    assert "no CUDA device here" in capsys.readouterr().out
