"""`zoo pretrain-mae`: masked-autoencoder pretraining (He et al. 2021) as a whole job.

    from zoo.training.mae import MAEPretrainConfig, pretrain_mae
    summary = pretrain_mae(MAEPretrainConfig(data="digits", epochs=20, out=Path("runs/mae")))

The recipe is the paper's: RandomResizedCrop(scale 0.2-1) + flip; AdamW(0.9, 0.95), weight decay
0.05 except biases, norms, positions and tokens; lr = blr x effective batch / 256; per-iteration
linear warmup then half-cycle cosine; 75% masking; normalised-pixel loss. The run directory gets
`config.yaml`, `metrics.jsonl`, `training_curves.png`, `reconstruction.png` (and one per
checkpoint under `reconstructions/`), `checkpoints/`, `summary.json`, and the trained encoder as an
ordinary ViT under `encoder/`.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from timm.optim import param_groups_weight_decay

from ..factory import create, save_pretrained
from ..registry import list_models, model_info
from ..config import compile_setting, setting
from ..data import denormalize, eval_transform, pretrain_datasets, pretrain_transform
from ..common.distributed import DistInfo
from ..common.plots import plot_reconstructions
from .loop import PRECISIONS, Callback, StepOutput, Trainer, seed_everything
from .setup import (fsdp_setting, fused_adamw, place_model, run_job, scaled_lr, train_loader, trainer_config,
                    warmup_cosine)


@dataclass
class MAEPretrainConfig:
    model: str = setting("mae_vit_tiny_patch4_dec128d2b", "a registered MAE variant (zoo list 'mae*')")
    model_args: Dict[str, Any] = setting({}, "extra model arguments as YAML, e.g. '{depth: 4, drop_path_rate: 0.1}'")
    data: str = setting("digits", "'digits' or a folder of images, searched recursively (no labels needed)")
    out: Path = setting(Path("runs/pretrain-mae"), "run directory (created; holds checkpoints, logs, figures)")
    epochs: int = setting(100, "epochs in the whole run (the schedule's length)")
    batch_size: int = setting(128, "images per process per step")
    accum_iter: int = setting(1, "gradient accumulation steps per optimizer update")
    blr: float = setting(1.5e-4, "base learning rate; lr = blr * effective batch / 256")
    lr: Optional[float] = setting(None, "absolute learning rate; overrides --blr")
    min_lr: float = setting(0.0, "learning rate at the end of the cosine")
    weight_decay: float = setting(0.05, "AdamW weight decay (not applied to biases, norms, positions, tokens)")
    warmup_epochs: float = setting(10.0, "linear warmup length in epochs (fractions allowed)")
    mask_ratio: float = setting(0.75, "fraction of patches removed")
    norm_pix_loss: bool = setting(True, "predict per-patch normalised pixels")
    img_size: Optional[int] = setting(None, "input size (default: the model's)")
    crop_scale: Tuple[float, float] = setting((0.2, 1.0), "RandomResizedCrop area range")
    hflip: float = setting(0.5, "horizontal flip probability")
    compile: Optional[str] = compile_setting()
    fsdp: bool = fsdp_setting()
    precision: str = setting("fp32", "fp32, bf16 (autocast, CPU or CUDA) or fp16 (CUDA, with a grad scaler)",
                             choices=PRECISIONS)
    clip_grad: Optional[float] = setting(None, "clip the gradient norm to this value")
    ckpt_every: int = setting(10, "write a checkpoint every N epochs (and always at the end)")
    ckpt_every_steps: int = setting(0, "also write a checkpoint every N optimizer steps inside epochs (0: off); "
                                       "--resume continues exactly from it")
    log_to: str = setting("tensorboard,csv", "where metrics go besides metrics.jsonl: comma-separated tensorboard "
                                             "(event files in tensorboard/), csv (metrics.csv), wandb (needs the wandb "
                                             "package); none for metrics.jsonl only")
    keep_checkpoints: int = setting(2, "checkpoints kept on disk (the newest)")
    stop_after_epoch: Optional[int] = setting(None, "stop after this epoch, with a checkpoint; --resume continues")
    overwrite: bool = setting(False, "start afresh in --out even if it holds another run's checkpoints "
                                     "(they are deleted); without it such a directory is refused")
    log_every: int = setting(10, "optimizer steps between metrics.jsonl lines")
    seed: int = setting(0, "random seed (data order, augmentation, masking, initialisation)")
    workers: Optional[int] = setting(None, "data-loading worker processes per training process (default: CPUs - 1, at most 8, for image files; 0 for digits)")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    num_held_out: int = setting(8, "held-out images shown in the reconstruction figures")
    grad_checkpointing: bool = setting(False, "recompute encoder activations in backward (less memory)")
    progress: bool = setting(True, "show a progress bar")


class ReconstructionFigures(Callback):
    """At each checkpoint: reconstruct the fixed held-out images with a fixed masking and save the grid."""

    name = "reconstructions"
    needs_whole_model = True  # the figures run the whole model (under FSDP gathered at each checkpoint)

    def __init__(self, held_out, input_cfg: dict, out_dir: Path, seed: int) -> None:
        self.images = torch.stack([held_out[i] for i in range(len(held_out))])  # (K, C, H, W), normalised
        self.input_cfg, self.out_dir, self.seed = input_cfg, Path(out_dir), seed

    @torch.no_grad()
    def on_checkpoint(self, trainer: Trainer, epoch: int) -> None:
        model = trainer.unsharded_model()  # under FSDP a gathered copy, on the CPU
        was_training = model.training
        model.eval()
        imgs = self.images.to(next(model.parameters()).device)
        N = model.grid_size[0] * model.grid_size[1]
        noise = torch.rand(imgs.shape[0], N, generator=torch.Generator().manual_seed(self.seed)).to(imgs.device)
        loss, pred, mask = model(imgs, noise=noise)
        recon, pasted, removed = model.reconstruct(imgs, pred, mask)
        show = lambda t: denormalize(t, self.input_cfg)  # noqa: E731
        folder = self.out_dir / "reconstructions"
        folder.mkdir(exist_ok=True)
        png = plot_reconstructions(show(imgs), removed.clamp(0, 1), show(recon), show(pasted),
                                   folder / f"epoch_{epoch + 1:04d}.png",
                                   title=f"epoch {epoch + 1}: held-out images, loss {loss.item():.3f}")
        shutil.copyfile(png, self.out_dir / "reconstruction.png")
        model.train(was_training)


def build_mae(cfg: MAEPretrainConfig):
    overrides = {**cfg.model_args, "mask_ratio": cfg.mask_ratio, "norm_pix_loss": cfg.norm_pix_loss}
    if cfg.img_size is not None:
        overrides["img_size"] = cfg.img_size
    info = model_info(cfg.model)
    if info.family != "mae":
        raise ValueError(f"--model {cfg.model}: family {info.family!r} is not an MAE model; "
                         f"choose one of {', '.join(list_models(family='mae'))}")
    return create(cfg.model, **overrides)


def pretrain_mae(cfg: MAEPretrainConfig, resume: Optional[Path] = None, dist: Optional[DistInfo] = None) -> dict:
    """Run MAE pretraining; returns a summary (also written to `summary.json`). `resume` is a run
    directory or checkpoint folder to continue from."""
    return run_job(_pretrain, cfg, resume, dist)


def _pretrain(cfg: MAEPretrainConfig, resume: Optional[Path], dist: DistInfo) -> dict:
    seed_everything(cfg.seed + dist.rank)
    model = build_mae(cfg)
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    input_cfg = model.zoo_config["input"]
    model = place_model(model, cfg, dist)
    train_ds, held_out = pretrain_datasets(
        cfg.data, pretrain_transform(input_cfg, cfg.crop_scale, cfg.hflip), eval_transform(input_cfg),
        num_held_out=cfg.num_held_out, seed=cfg.seed)
    loader = train_loader(train_ds, cfg, dist)
    lr, eff_batch = scaled_lr(cfg, dist)
    groups = param_groups_weight_decay(model, cfg.weight_decay, no_weight_decay_list=model.no_weight_decay())
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), **fused_adamw(dist.device))
    scheduler = warmup_cosine(optimizer, cfg, len(loader))

    def step(train_model, imgs) -> StepOutput:
        imgs = imgs.to(dist.device, non_blocking=True)
        loss, _, _ = train_model(imgs)
        return StepOutput(loss=loss, batch_size=imgs.shape[0])

    callbacks = [ReconstructionFigures(held_out, input_cfg, cfg.out, cfg.seed)]
    trainer = Trainer(trainer_config(cfg), model, optimizer, scheduler, loader, step, dist, callbacks)
    summary = trainer.train(resume=resume)
    summary.update({"model": cfg.model, "lr": lr, "effective_batch": eff_batch, "world_size": dist.world_size,
                    "train_images": len(train_ds), "out": str(cfg.out)})
    finished = trainer.epoch >= cfg.epochs
    whole = trainer.unsharded_model() if finished else None  # FSDP: gathered (a collective: every process asks)
    if dist.is_main:
        if finished:
            summary["encoder"] = str(export_encoder(whole, Path(cfg.out) / "encoder"))
        summary["finished"] = finished
        (Path(cfg.out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def export_encoder(model, out_dir: Path) -> Path:
    """Save the MAE encoder as an ordinary ViT directory (`zoo.save_pretrained`): `zoo.create(out_dir)`
    rebuilds it, and its weights load into the matching registry ViT apart from the head."""
    encoder = model.encoder
    source = getattr(model, "zoo_config", {})
    encoder.zoo_config = {"name": None, "family": "vit", "tag": None, "args": dict(model.encoder_args),
                          "input": source.get("input"), "pretrained_from": source.get("name")}
    return save_pretrained(encoder, out_dir)
