"""Two processes under torchrun (gloo on the CPU) write what one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.librispeech_tree import build_tree
from wavllm_eval.distributed import Shard
from wavllm_eval.types import AudioRef, Sample

BIN = Path(sys.executable).parent


def test_shards_split_by_sorted_id_and_cover_every_sample():
    samples = [Sample(s, (AudioRef("x"),), "") for s in ["d", "a", "c", "b", "e"]]
    shards = [Shard(r, 2).select(samples) for r in range(2)]
    assert [[s.id for s in shard] for shard in shards] == [["a", "c", "e"], ["b", "d"]]


def _run(*prefix: str, out: Path, data: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [*prefix, "run", "--tasks", "librispeech-test-clean", "--model", "pocketsphinx", "--data-dir", str(data),
            "--output-dir", str(out), "--batch-size", "2", "--no-progress"]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "pocketsphinx/results.json").read_text())


def test_two_ranks_under_torchrun_equal_one_process(tmp_path):
    data = tmp_path / "data"
    build_tree(data)
    single = _run(str(BIN / "wavllm-eval"), out=tmp_path / "one", data=data)
    torchrun = [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", "29531", "-m", "wavllm_eval"]
    double = _run(*torchrun, out=tmp_path / "two", data=data)
    task = "librispeech-test-clean"
    assert double["tasks"][task]["metrics"] == single["tasks"][task]["metrics"]
    assert double["tasks"][task]["n_total"] == single["tasks"][task]["n_total"] == 5
    assert double["meta"]["world_size"] == 2

    def lines(root: Path) -> list[dict]:
        records = [json.loads(x) for x in (root / f"pocketsphinx/samples/{task}.jsonl").read_text().splitlines()]
        return sorted(({k: v for k, v in r.items() if k != "meta"} for r in records), key=lambda r: r["id"])

    assert lines(tmp_path / "two") == lines(tmp_path / "one")
    assert not list((tmp_path / "two/pocketsphinx/samples").glob("*.rank*"))  # shards merged away
