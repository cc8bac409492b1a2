"""Data-parallel sharding under torchrun / accelerate launch (no launcher of our own).

`torchrun --nproc-per-node N -m wavllm_eval run ...` starts N copies; each reads RANK, WORLD_SIZE and
LOCAL_RANK from the environment (accelerate sets the same), takes a deterministic shard of every
task (the samples sorted by id, every N-th from its rank), writes it to its own
`samples/<task>.rank<R>-of-<N>.jsonl` (so resume works per shard), and waits at a barrier. Rank 0
then merges the shards into `samples/<task>.jsonl`, scores once and writes results.json; the
merged run is what one process would have written (records are scored in id order, and each
sample's seed depends on its id alone).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wavllm_eval.store import SampleStore
from wavllm_eval.types import Record, Sample


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Shard:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def suffix(self) -> str:
        return f".rank{self.rank}-of-{self.world_size}" if self.active else ""

    def select(self, samples: Sequence[Sample]) -> list[Sample]:
        """This rank's samples: a fixed function of the ids, whatever the data's order."""
        if not self.active:
            return list(samples)
        ordered = sorted(samples, key=lambda s: s.id)
        return [s for i, s in enumerate(ordered) if i % self.world_size == self.rank]

    def device(self, requested: str) -> str:
        """Each rank drives its own GPU (`cuda:<LOCAL_RANK>`) when the run uses CUDA."""
        if not self.active or requested not in ("auto", "cuda"):
            return requested
        import torch

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    def barrier(self) -> None:
        """Wait for every rank (gloo on CPU, nccl on GPUs), joining the process group on first use."""
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


class ShardStore(SampleStore):
    """A rank's view of a run folder: it appends to its own shard file and counts the merged file as
    done, so a resumed rank runs only what neither holds."""

    def __init__(self, run_dir: Path, shard: Shard) -> None:
        super().__init__(run_dir)
        self.shard = shard

    def samples_path(self, task_id: str) -> Path:
        return super().samples_path(task_id).with_name(f"{task_id}{self.shard.suffix}.jsonl")

    def load(self, task_id: str) -> list[Record]:
        merged = SampleStore(self.run_dir).load(task_id)
        return merged + super().load(task_id)

    def reset(self, task_id: str) -> None:
        super().reset(task_id)
        if self.shard.is_main:
            SampleStore(self.run_dir).reset(task_id)

    @property
    def lock_name(self) -> str:
        return f".lock{self.shard.suffix}"


def merge_shards(run_dir: Path, task_id: str, world_size: int) -> int:
    """Append every shard's records to `samples/<task>.jsonl` (later lines supersede earlier ones) and
    remove the shard files; returns how many records were merged."""
    store = SampleStore(run_dir)
    merged = 0
    for rank in range(world_size):
        shard_store = ShardStore(run_dir, Shard(rank, world_size))
        path = shard_store.samples_path(task_id)
        if not path.exists():
            continue
        records = SampleStore.load(shard_store, task_id)
        store.append(task_id, records)
        merged += len(records)
        path.unlink()
    return merged
