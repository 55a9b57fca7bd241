"""The job setup that MAE pretraining and fine-tuning share: process group and run directory, the
training loader, the learning rate scaled by the effective batch, warmup + cosine, the loop's
settings. Each command's own choices (model, data, loss, callbacks) stay in it.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..common.distributed import DistInfo, barrier, cleanup_distributed, init_distributed
from ..common.logs import parse_log_to
from ..config import setting, to_dict
from ..data import resolve_workers
from . import fsdp
from .checkpoint import check_sharding, claim_run_dir, find_checkpoint
from .loop import TrainConfig


def run_job(job: Callable[..., Any], cfg: Any, resume: Any, dist_info: Optional[DistInfo]) -> Any:
    """`job(cfg, resume, dist_info)` for a training command whose settings have `out`, `overwrite` and
    `device`. With no `dist_info`, the process group is set up here (from torchrun's environment, or a
    single process) and torn down afterwards. `--fsdp` and a resumed checkpoint's sharding are checked
    first; a fresh run then claims its directory (checkpoint.py)."""
    own = dist_info is None
    dist_info = dist_info or init_distributed(cfg.device)
    try:
        if cfg.fsdp:  # refused before anything is built, written or deleted (--overwrite)
            fsdp.check_fsdp(cfg.precision, dist_info)
        if resume is not None:
            check_sharding(find_checkpoint(resume), cfg.fsdp, resume)
        claim_run_dir(cfg.out, resume, cfg.overwrite)
        result = job(cfg, resume, dist_info)
        barrier()  # the processes leave together, once the main one has written everything
        return result
    finally:
        if own:
            cleanup_distributed()


def fsdp_setting() -> Any:
    """The `--fsdp` setting the training commands share."""
    return setting(False, "shard the weights, gradients and optimizer state over the processes (PyTorch FSDP2, "
                          "one unit per block; launch with torchrun; --precision bf16 or fp32): for models whose "
                          "training does not fit one GPU. Checkpoints are sharded; the final one also holds the "
                          "whole weights")


def place_model(model: torch.nn.Module, cfg: Any, dist: DistInfo) -> torch.nn.Module:
    """The model on `dist.device`: moved whole, or with `cfg.fsdp` sharded over the processes (fsdp.py:
    moved unit by unit as it is sharded, 1/world_size of each weight kept). Call it before building the
    optimizer (FSDP replaces the parameters)."""
    if cfg.fsdp:
        return fsdp.shard(model, cfg.precision, dist)
    return model.to(dist.device)


def train_loader(dataset: Dataset, cfg: Any, dist: DistInfo) -> DataLoader:
    """Shuffled, per-process shards of `dataset` (a `DistributedSampler` seeded with `cfg.seed`; the
    loop reshuffles each epoch), `cfg.batch_size` images per process, the last partial batch dropped."""
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    workers = resolve_workers(cfg.workers, dataset)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                      drop_last=True, pin_memory=dist.device.type == "cuda", persistent_workers=workers > 0)


def scaled_lr(cfg: Any, dist: DistInfo) -> Tuple[float, int]:
    """(learning rate, effective batch): `cfg.lr` if given, else `cfg.blr` x effective batch / 256
    (effective batch = batch x accumulation steps x processes), the MAE / DeiT rule."""
    eff_batch = cfg.batch_size * cfg.accum_iter * dist.world_size
    return (cfg.lr if cfg.lr is not None else cfg.blr * eff_batch / 256), eff_batch


def warmup_cosine(optimizer: torch.optim.Optimizer, cfg: Any, batches_per_epoch: int):
    """timm's `CosineLRScheduler` stepped per optimizer update: linear warmup from 0 over
    `cfg.warmup_epochs` (fractions allowed), then half-cycle cosine to `cfg.min_lr` over the rest of
    `cfg.epochs`. Raises ValueError when the warmup covers the whole run."""
    from timm.scheduler import CosineLRScheduler

    updates_per_epoch = -(-batches_per_epoch // cfg.accum_iter)
    total, warmup = cfg.epochs * updates_per_epoch, round(cfg.warmup_epochs * updates_per_epoch)
    if warmup >= total:
        raise ValueError(f"--warmup-epochs {cfg.warmup_epochs} covers the whole run of {cfg.epochs} epochs; "
                         f"use fewer warmup epochs")
    return CosineLRScheduler(optimizer, t_initial=total - warmup, lr_min=cfg.min_lr, warmup_t=warmup,
                             warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)


def fused_adamw(device: torch.device, opt: str = "adamw") -> dict:
    """AdamW's `fused=True` (one kernel for the whole update) on CUDA, for the AdamW optimizer; {} elsewhere."""
    return {"fused": True} if device.type == "cuda" and opt.lower() == "adamw" else {}


def trainer_config(cfg: Any) -> TrainConfig:
    """The loop's settings, taken from a command's settings of the same names."""
    return TrainConfig(out_dir=cfg.out, epochs=cfg.epochs, accum_iter=cfg.accum_iter, precision=cfg.precision,
                       clip_grad=cfg.clip_grad, ckpt_every=cfg.ckpt_every, keep_checkpoints=cfg.keep_checkpoints,
                       ckpt_every_steps=cfg.ckpt_every_steps,
                       log_every=cfg.log_every, seed=cfg.seed, progress=cfg.progress,
                       stop_after_epoch=cfg.stop_after_epoch, log_to=parse_log_to(cfg.log_to), settings=to_dict(cfg),
                       compile=cfg.compile)
