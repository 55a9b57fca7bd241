"""`zoo finetune`: supervised fine-tuning with the recipe ViT papers use (DeiT, MAE, BEiT).

    from zoo.training.finetune import FinetuneConfig, finetune
    summary = finetune(FinetuneConfig(model="runs/mae/encoder", data="digits", epochs=30))

Recipe (each piece a setting; timm's implementations where timm has them): AdamW without weight
decay on biases, norms, positions and tokens; layer-wise lr decay through the model's
`group_matcher` (`timm.optim.param_groups_layer_decay`); linear warmup then cosine, per iteration;
RandAugment, RandomResizedCrop, flip and random erasing (`timm.data.create_transform`); Mixup /
CutMix with a soft-target loss, or label smoothing; drop path; head dropout; gradient clipping
(1.0); gradient accumulation; mixed precision; an EMA of the weights, evaluated beside the raw
weights; gradient checkpointing; early stopping on val top-1.

It runs on the same `Trainer` as MAE pretraining (progress bar, metrics.jsonl, atomic checkpoints,
exact --resume, non-finite loss stops, torchrun DDP). Every epoch both weight sets are scored on the
val split (loss, top-1, top-5, expected calibration error over 15 bins); whichever is best so far
is saved with `zoo.save_pretrained` under `best/` (label names in its config, ready to push). At
the end the best model is scored once on the test split, if there is one, and the run directory
gets confusion_matrix.png and training_curves.png.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..factory import create, save_pretrained
from ..config import command_line, compile_setting, setting
from ..data import eval_transform, finetune_splits, resolve_workers
from ..common.metrics import ClassificationMeter, per_class_report
from ..common.distributed import DistInfo, all_reduce
from . import fsdp
from .checkpoint import atomic_write_text
from .loop import PRECISIONS, Callback, StepOutput, Trainer, autocast, seed_everything
from ..common.plots import plot_confusion_matrix
from .setup import (fsdp_setting, fused_adamw, place_model, run_job, scaled_lr, train_loader, trainer_config,
                    warmup_cosine)


# --sched: zoo's warmup + cosine, and timm's schedules that step per optimizer update
SCHEDULES = ("cosine", "step", "multistep", "poly", "tanh")


@dataclass
class FinetuneConfig:
    model: str = setting("vit_small_patch16_224", "registered name[.tag], a saved model directory (e.g. an MAE "
                                                   "run's encoder/) or hf-hub:org/repo")
    pretrained: Union[bool, str] = setting(False, "load the registry's weights: --pretrained (default tag) or "
                                                  "--pretrained TAG", nargs="?", const=True)
    data: str = setting("digits", "'digits', a folder with train/ and val/ (test/ optional) or with one sub-folder "
                                  "per class, a .csv / .jsonl of path,label rows, or a Hugging Face dataset folder")
    out: Path = setting(Path("runs/finetune"), "run directory")
    img_size: Optional[int] = setting(None, "input size (default: the model's); positions / bias tables are adapted")
    global_pool: Optional[str] = setting(None, "ViT pooling: token or avg (MAE fine-tunes with avg); default: the "
                                               "model's", choices=("token", "avg"))
    epochs: int = setting(30, "epochs in the whole run")
    batch_size: int = setting(64, "images per process per step")
    accum_iter: int = setting(1, "gradient accumulation steps per optimizer update", aliases=("--grad-accum-steps",))
    blr: float = setting(5e-4, "base learning rate; lr = blr * effective batch / 256")
    lr: Optional[float] = setting(None, "absolute learning rate; overrides --blr")
    min_lr: float = setting(1e-6, "learning rate at the end of the cosine")
    weight_decay: float = setting(0.05, "AdamW weight decay (not on biases, norms, positions, tokens)")
    layer_decay: float = setting(0.75, "layer-wise lr decay: layer i of L gets lr * decay^(L + 1 - i); 1 = off")
    warmup_epochs: float = setting(5.0, "linear warmup length in epochs")
    drop_path: float = setting(0.1, "stochastic depth rate")
    head_dropout: float = setting(0.0, "dropout before the classifier")
    smoothing: float = setting(0.1, "label smoothing")
    mixup: float = setting(0.8, "Mixup alpha (0 = off)")
    cutmix: float = setting(1.0, "CutMix alpha (0 = off)")
    mixup_prob: float = setting(1.0, "probability of applying Mixup or CutMix to a batch")
    rand_aug: str = setting("rand-m9-mstd0.5-inc1", "timm RandAugment policy ('' = off)", aliases=("--aa",))
    opt: str = setting("adamw", "optimizer by timm.optim.create_optimizer_v2's name: adamw, sgd, momentum, lamb, "
                                "lars, adan, ... (weight decay and layer decay as set here)")
    momentum: float = setting(0.9, "momentum of sgd / momentum / lars / ... (--opt)")
    sched: str = setting("cosine", "learning-rate schedule, per optimizer update, warmup included in --epochs: "
                                   "cosine (zoo's recipe), or timm's step (x0.1 every third of the run), multistep "
                                   "(x0.1 at 1/2 and 3/4), poly, tanh", choices=SCHEDULES)
    crop_scale: Tuple[float, float] = setting((0.08, 1.0), "RandomResizedCrop area range")
    hflip: float = setting(0.5, "horizontal flip probability")
    reprob: float = setting(0.25, "random erasing probability")
    clip_grad: Optional[float] = setting(1.0, "clip the gradient norm to this value (none: no clipping)")
    ema_decay: float = setting(0.9999, "EMA of the weights, evaluated beside them (0 = off)",
                               aliases=("--model-ema-decay",))
    grad_checkpointing: bool = setting(False, "recompute activations in backward (less memory)")
    patience: Optional[int] = setting(None, "stop after this many epochs without a better val top-1")
    holdout_fraction: float = setting(0.1, "for digits: part of train held out as the val split")
    val_fraction: float = setting(0.2, "share of each class held out as val when --data has no splits (one "
                                       "class-folder tree, a .csv / .jsonl file, a dataset); seeded by --seed")
    compile: Optional[str] = compile_setting()
    fsdp: bool = fsdp_setting()
    precision: str = setting("fp32", "fp32, bf16 (autocast) or fp16 (CUDA, grad scaler)", choices=PRECISIONS)
    ckpt_every: int = setting(1, "write a checkpoint every N epochs (and at the end)")
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
    seed: int = setting(0, "random seed")
    workers: Optional[int] = setting(None, "data-loading worker processes per training process (default: CPUs - 1, at most 8, for image files; 0 for digits)")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    progress: bool = setting(True, "show a progress bar")


def optimizer_and_schedule(model: nn.Module, cfg: "FinetuneConfig", lr: float, batches_per_epoch: int):
    """The optimizer (`cfg.opt`, by timm's `create_optimizer_v2`; AdamW is the recipe) over
    `optimizer_groups`, and the schedule (`cfg.sched`: zoo's warmup + cosine, else timm's
    `create_scheduler_v2` stepped per update, warmup rounded to whole epochs). Raises ValueError for
    names timm does not know."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    groups = optimizer_groups(model, cfg.weight_decay, cfg.layer_decay)
    fused = fused_adamw(next(model.parameters()).device, cfg.opt)
    try:
        optimizer = create_optimizer_v2(groups, opt=cfg.opt, lr=lr, momentum=cfg.momentum, **fused)
    except (AssertionError, ValueError, KeyError):
        raise ValueError(f"--opt {cfg.opt!r}: timm has no optimizer of that name; e.g. adamw, sgd, momentum, lamb, "
                         f"lars, adan (timm.optim.list_optimizers() lists them)") from None
    if cfg.sched == "cosine":
        return optimizer, warmup_cosine(optimizer, cfg, batches_per_epoch)
    if cfg.sched not in SCHEDULES:
        raise ValueError(f"--sched {cfg.sched!r}: one of {', '.join(SCHEDULES)} (schedules stepped per update)")
    updates = -(-batches_per_epoch // cfg.accum_iter)
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs, min_lr=cfg.min_lr,
                                       decay_epochs=max(cfg.epochs / 3, 1), decay_rate=0.1,
                                       decay_milestones=[max(1, cfg.epochs // 2), max(1, cfg.epochs * 3 // 4)],
                                       warmup_lr=0.0, warmup_epochs=int(round(cfg.warmup_epochs)), warmup_prefix=False,
                                       step_on_epochs=False, updates_per_epoch=updates)
    return optimizer, scheduler


def optimizer_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list:
    """AdamW parameter groups: no weight decay on 1-d parameters (biases, norms) and the model's
    `no_weight_decay()` names (positions, tokens, bias tables); with `layer_decay` < 1, timm's layer-wise
    lr scales from the model's `group_matcher` (each group's `lr_scale`, applied by the scheduler)."""
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    if layer_decay < 1.0:
        return param_groups_layer_decay(model, weight_decay, no_weight_decay_list=model.no_weight_decay(),
                                        layer_decay=layer_decay)
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=model.no_weight_decay())


def build_model(cfg: FinetuneConfig, num_classes: int):
    """The model to fine-tune, with a new `num_classes` head, drop path and head dropout; weights from
    the registry (`pretrained`), a saved directory or the Hub are adapted to img_size and reported."""
    overrides: Dict[str, Any] = {"drop_path_rate": cfg.drop_path, "drop_rate": cfg.head_dropout}
    if cfg.img_size is not None:
        overrides["img_size"] = cfg.img_size
    if cfg.global_pool is not None:
        overrides["global_pool"] = cfg.global_pool
    ref, pretrained = cfg.model, cfg.pretrained
    if isinstance(pretrained, str) and pretrained.lower() in ("true", "yes", "default"):
        pretrained = True
    # a saved folder or hf-hub: repo brings its own weights (`pretrained` applies to registry names)
    model = create(ref, pretrained=pretrained, num_classes=num_classes, **overrides)
    if model.zoo_config["family"] == "mae":
        raise ValueError(f"--model {ref}: an MAE pretraining model; fine-tune its encoder (the encoder/ folder of a "
                         f"`zoo pretrain-mae` run) instead")
    return model


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, dist: DistInfo, precision: str, num_classes: int,
             prefix: str = "val_") -> Tuple[Dict[str, float], torch.Tensor]:
    """Score `model` on this process's shard of the loader; sums are combined over processes. A model
    sharded with FSDP gathers each block's weights with every process, so the processes with fewer
    batches run forwards on a blank image (not scored) until every process has run as many."""
    was_training = model.training
    model.eval()
    meter = ClassificationMeter(num_classes)
    for images, labels in loader:
        with autocast(dist.device, precision):
            logits = model(images.to(dist.device))
        meter.update(logits, labels)
    if fsdp.is_sharded(model):
        most = int(all_reduce(torch.tensor([len(loader)], device=dist.device), "max").item())
        size = model.zoo_config["input"]
        blank = torch.zeros(1, len(size["mean"]), *size["img_size"], device=dist.device)
        for _ in range(most - len(loader)):
            with autocast(dist.device, precision):
                model(blank)
    model.train(was_training)
    meter.all_reduce()
    return meter.summary(prefix), meter.confusion


def _shard(dataset, dist: DistInfo):
    """This process's share of an evaluation set: every world_size-th item, no padding or duplicates."""
    return Subset(dataset, range(dist.rank, len(dataset), dist.world_size)) if dist.distributed else dataset


class Validation(Callback):
    """Each epoch: score the raw weights (and the EMA), keep the best under best/, stop on patience."""

    name = "validation"

    def __init__(self, cfg: FinetuneConfig, loader: DataLoader, num_classes: int, classes, ema=None) -> None:
        self.cfg, self.loader, self.num_classes, self.classes, self.ema = cfg, loader, num_classes, classes, ema
        self.best = {"top1": -1.0, "epoch": -1, "weights": None}
        self.epochs_without_improvement = 0
        self.best_confusion: Optional[torch.Tensor] = None

    def on_step_end(self, trainer: Trainer) -> None:
        if self.ema is not None:
            self.ema.update(trainer.model, step=trainer.global_step)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> Dict[str, float]:
        metrics, confusion = evaluate(trainer.model, self.loader, trainer.dist, self.cfg.precision, self.num_classes)
        candidates = [("raw", metrics["val_top1"], trainer.model, confusion)]
        if self.ema is not None:
            ema_metrics, ema_confusion = evaluate(self.ema.module, self.loader, trainer.dist, self.cfg.precision,
                                                  self.num_classes, prefix="ema_val_")
            metrics.update(ema_metrics)
            candidates.append(("ema", ema_metrics["ema_val_top1"], self.ema.module, ema_confusion))
        which, top1, model, confusion = max(candidates, key=lambda c: c[1])
        if top1 > self.best["top1"]:
            self.best = {"top1": top1, "epoch": epoch, "weights": which}
            self.best_confusion = confusion
            self.epochs_without_improvement = 0
            if trainer.sharded:  # the whole weights, gathered on the main process (every process takes part)
                model = trainer.unsharded_model() if which == "raw" else fsdp.gather_full_model(model, trainer.dist)
            if trainer.dist.is_main:
                save_best(model, Path(self.cfg.out) / "best", self.classes, training_record(self.cfg, {"val_top1": top1}))
        else:
            self.epochs_without_improvement += 1
            if self.cfg.patience is not None and self.epochs_without_improvement >= self.cfg.patience:
                trainer.stop_requested = True
        metrics["best_val_top1"] = self.best["top1"]
        return metrics

    def on_checkpoint(self, trainer: Trainer, epoch: int) -> None:
        if self.best_confusion is not None:
            plot_confusion_matrix(self.best_confusion, self.classes, Path(self.cfg.out) / "confusion_matrix.png",
                                  title=f"val, best model (epoch {self.best['epoch'] + 1}, {self.best['weights']} "
                                        f"weights, top-1 {self.best['top1']:.2f}%)")
            report = dict(per_class_report(self.best_confusion, self.classes), split="val", epoch=self.best["epoch"])
            atomic_write_text(Path(self.cfg.out) / "classification_report.json", json.dumps(report, indent=2) + "\n")

    def state_dict(self) -> dict:
        state = {"best": {k: v for k, v in self.best.items()}, "stale": self.epochs_without_improvement}
        if self.best_confusion is not None:
            state["confusion"] = self.best_confusion
        if self.ema is not None and not fsdp.is_sharded(self.ema.module):
            state["ema"] = self.ema.module.state_dict()
        return state

    def sharded_modules(self) -> Dict[str, nn.Module]:
        """Under FSDP the EMA is sharded like the model: it goes into the sharded checkpoint."""
        return {"ema": self.ema.module} if self.ema is not None and fsdp.is_sharded(self.ema.module) else {}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.best = dict(state["best"])
        self.epochs_without_improvement = int(state["stale"])
        self.best_confusion = state.get("confusion")
        if self.ema is not None and "ema" in state:
            self.ema.module.load_state_dict(state["ema"])


def training_record(cfg: "FinetuneConfig", results: dict) -> dict:
    """What the model card says of the run (`zoo.weights.card`): the data, the hyper-parameters, the
    command that reproduces it, and the results it measured (%, rounded to 4 places)."""
    keys = ("epochs", "batch_size", "accum_iter", "opt", "momentum", "sched", "blr", "lr", "min_lr", "weight_decay",
            "layer_decay", "warmup_epochs", "drop_path", "smoothing", "mixup", "cutmix", "rand_aug", "ema_decay",
            "precision", "seed")
    return {"dataset": cfg.data, "hyperparameters": {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)},
            "command": command_line("zoo finetune", cfg), "results": {k: round(float(v), 4) for k, v in results.items()}}


def save_best(model: nn.Module, out_dir: Path, classes, training: dict) -> Path:
    """`zoo.save_pretrained` into a temporary folder, then swapped into place (never half-written); the
    card records `training` (`training_record`)."""
    import logging

    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.zoo_config = {**model.zoo_config, "label_names": list(classes), "training": training}
    weights_log = logging.getLogger("zoo.weights")
    level = weights_log.level
    weights_log.setLevel(logging.WARNING)  # its "saved to <temporary folder>" line would mislead
    try:
        save_pretrained(model, tmp, metrics={})  # the base weights' published numbers no longer apply
    finally:
        weights_log.setLevel(level)
    card = tmp / "README.md"  # the card names where the model lives: the final folder, not this temporary one
    card.write_text(card.read_text().replace(str(tmp), str(out_dir)))
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _safe_posterize(transform) -> None:
    """timm's RandAugment Posterize can ask for 0 bits (magnitude >= 10, or < 2.5 for the non-increasing
    op), which Pillow >= 11 refuses with a ValueError mid-epoch. Swap it, in place, for AutoAugment's
    original Posterize (4 to 8 bits), which is always valid."""
    from timm.data.auto_augment import AugmentOp, RandAugment

    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            t.ops = [AugmentOp("PosterizeOriginal", op.prob, op.magnitude, op.hparams)
                     if op.name in ("Posterize", "PosterizeIncreasing") else op for op in t.ops]


def finetune(cfg: FinetuneConfig, resume: Optional[Path] = None, dist: Optional[DistInfo] = None) -> dict:
    """Fine-tune; returns a summary (also written to summary.json). `resume`: a run directory."""
    return run_job(_finetune, cfg, resume, dist)


def _finetune(cfg: FinetuneConfig, resume: Optional[Path], dist: DistInfo) -> dict:
    from timm.data import Mixup, create_transform
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.utils import ModelEmaV3

    use_mixup = cfg.mixup > 0 or cfg.cutmix > 0
    if use_mixup and cfg.batch_size % 2:
        raise ValueError(f"--batch-size {cfg.batch_size}: Mixup / CutMix pair images within a batch, so the batch "
                         f"size must be even (or turn them off with --mixup 0 --cutmix 0)")

    # The data first: the number of classes and their names come from it; transforms once the model's
    # input config is known.
    splits = finetune_splits(cfg.data, cfg.seed, cfg.holdout_fraction, cfg.val_fraction)
    classes = splits["classes"]
    # seeded after the data: the libraries the data imports on first use (scikit-learn draws from Python's
    # generator when imported) must not shift the run's random streams, or a second run in one process differs
    seed_everything(cfg.seed + dist.rank)
    model = build_model(cfg, len(classes))
    adapted = list(model.zoo_config.get("weights", {}).get("adapted", []))
    model.zoo_config = {**model.zoo_config, "label_names": list(classes)}
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None  # a copy of the initial weights
    model = place_model(model, cfg, dist)
    if ema is not None:
        place_model(ema.module, cfg, dist)  # on the device; under FSDP sharded like the model
    input_cfg = model.zoo_config["input"]
    h, w = input_cfg["img_size"]
    train_tf = create_transform(
        input_size=(3, h, w), is_training=True, scale=tuple(cfg.crop_scale), hflip=cfg.hflip,
        auto_augment=cfg.rand_aug or None, interpolation=input_cfg["interpolation"], mean=tuple(input_cfg["mean"]),
        std=tuple(input_cfg["std"]), re_prob=cfg.reprob, re_mode="pixel", re_count=1)
    _safe_posterize(train_tf)
    splits["train"].transform = train_tf  # timm's transforms take PIL images
    splits["train"].as_pil = True
    for name in ("val", "test"):
        if splits.get(name) is not None:
            splits[name].transform = eval_transform(input_cfg)

    loader = train_loader(splits["train"], cfg, dist)
    val_loader = DataLoader(_shard(splits["val"], dist), batch_size=cfg.batch_size * 2,
                            num_workers=resolve_workers(cfg.workers, splits["val"]))

    lr, eff_batch = scaled_lr(cfg, dist)
    optimizer, scheduler = optimizer_and_schedule(model, cfg, lr, len(loader))

    mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob, label_smoothing=cfg.smoothing,
                  num_classes=len(classes)) if use_mixup else None
    if mixup is not None:
        criterion = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    def step(train_model, batch) -> StepOutput:
        images, targets = batch[0].to(dist.device, non_blocking=True), batch[1].to(dist.device, non_blocking=True)
        if mixup is not None:
            images, targets = mixup(images, targets)
        return StepOutput(loss=criterion(train_model(images), targets), batch_size=images.shape[0])

    validation = Validation(cfg, val_loader, len(classes), classes, ema)
    trainer = Trainer(trainer_config(cfg), model, optimizer, scheduler, loader, step, dist, [validation])
    if dist.is_main:
        for note in adapted:
            print(f"zoo finetune: adapted the weights: {note}", flush=True)
    summary = trainer.train(resume=resume)
    finished = trainer.epoch >= cfg.epochs or trainer.stop_requested
    summary.update({
        "model": cfg.model, "classes": classes, "lr": lr, "effective_batch": eff_batch,
        "world_size": dist.world_size, "train_images": len(splits["train"]), "val_images": len(splits["val"]),
        "adapted": adapted, "best": {k: v for k, v in validation.best.items()}, "finished": finished,
        "early_stopped": trainer.stop_requested, "out": str(cfg.out),
    })
    last = trainer.epoch_logs[-1] if trainer.epoch_logs else {}
    summary["last_epoch"] = {k: v for k, v in last.items() if k.startswith(("val_", "ema_val_"))}
    if finished and splits.get("test") is not None:  # the best model, on the test split, once
        best = place_model(create(str(Path(cfg.out) / "best")), cfg, dist)  # under FSDP sharded, as in training
        test_loader = DataLoader(_shard(splits["test"], dist), batch_size=cfg.batch_size * 2,
                                 num_workers=resolve_workers(cfg.workers, splits["test"]))
        summary["test"], confusion = evaluate(best, test_loader, dist, cfg.precision, len(classes), prefix="test_")
        best = fsdp.gather_full_model(best, dist) if cfg.fsdp else best
        if dist.is_main:
            plot_confusion_matrix(confusion, classes, Path(cfg.out) / "confusion_matrix_test.png",
                                  title=f"test, best model (top-1 {summary['test']['test_top1']:.2f}%)")
            report = dict(per_class_report(confusion, classes), split="test")
            (Path(cfg.out) / "classification_report_test.json").write_text(json.dumps(report, indent=2) + "\n")
            results = {"val_top1": validation.best["top1"], **{k: summary["test"][k] for k in ("test_top1", "test_top5")}}
            save_best(best, Path(cfg.out) / "best", classes, training_record(cfg, results))  # the card gets the test
    if dist.is_main:
        summary["best_dir"] = str(Path(cfg.out) / "best")
        (Path(cfg.out) / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
