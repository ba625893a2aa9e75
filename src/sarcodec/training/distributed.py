"""Multi-process data parallelism under ``torchrun`` (DDP): one code path with the single process.

``torchrun --nproc_per_node N -m sarcodec train --config ...`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; :func:`from_env` then joins the process group (NCCL on CUDA, gloo on CPU) and each
process trains on ``batch_size`` patches of its own (global batch = N x batch_size), drawn with its
own seed (:func:`rank_seed`). Gradients are averaged by DDP; the decisions every rank must share
(skip a non-finite batch, stop on the time budget, the validation result behind the LR plateau and
early stopping) come from collectives, so the ranks never diverge or deadlock. Only rank 0 writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str | torch.device) -> torch.device:
        """The process's device: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
        d = torch.device(device)
        if self.enabled and d.type == "cuda" and d.index is None:
            return torch.device("cuda", self.local_rank)
        return d

    # -- collectives (no-ops in a single process) ------------------------------------------------
    def max(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise maximum over ranks."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors over ranks, in place."""
        if not self.enabled:
            return
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(self.world)

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def from_env(device: str | torch.device = "cpu") -> DistEnv:
    """The torchrun environment, joining its process group on first use; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return env


def rank_seed(seed: int) -> int:
    """The data seed of this process's rank: rank 0 keeps ``seed`` (a single process is unchanged)."""
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    return seed + 7919 * rank
