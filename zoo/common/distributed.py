"""Process-group set-up for multi-process training launched with `torchrun`.

`torchrun --nproc_per_node N -m zoo <command> ...` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them everything runs in one process and these helpers are no-ops.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: global rank, number of processes, rank on this machine, device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (checkpoints, logs, figures)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process (DistributedDataParallel, collective calls)."""
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> this process's CUDA device if there is one, else the CPU; or an explicit 'cpu' / 'cuda[:i]'."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup_distributed() -> None:
    """Tear down the process group, if one was set up. Objects that still hold it (an FSDP model in a
    reference cycle) are collected first: left to the interpreter's exit, gloo's threads can abort it."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce across processes ('sum', 'min' or 'max'); the tensor itself when alone."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                                    "max": dist.ReduceOp.MAX}[op])
    return tensor


def all_gather_objects(value: Any) -> list:
    """One picklable value from every process, in rank order (a one-item list when alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for when alone)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
