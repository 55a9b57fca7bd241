"""The one training loop that MAE pretraining and fine-tuning share.

A command builds its model, data loader, optimizer and scheduler, and a `step` function
`(model, batch) -> StepOutput`; `Trainer` does the rest:

- epochs over the loader (a `DistributedSampler`, reshuffled per epoch), gradient accumulation,
  mixed precision (bf16 autocast on CPU or CUDA; fp16 with a gradient scaler on CUDA), optional
  gradient clipping, a per-iteration learning-rate schedule (`scheduler.step_update(step)`, timm's
  schedulers);
- DistributedDataParallel when launched by torchrun (gloo on CPU, nccl on CUDA), or a model the
  command sharded with `--fsdp` (fsdp.py: sharded checkpoints, the whole weights gathered for
  callbacks and the final checkpoint); only the main process writes;
- a tqdm progress bar (loss, lr, images/s), one printed line per epoch (loss and the callbacks'
  val metrics), a JSONL metrics log (`metrics.jsonl`), and a curves PNG (`training_curves.png`) at
  each checkpoint;
- atomic checkpoints every `ckpt_every` epochs and at the end (weights as safetensors plus
  optimizer, scheduler, scaler, RNG and step state; see checkpoint.py), and `resume` that
  continues exactly where the checkpoint stopped;
- a loss that is not finite stops the run with `NonFiniteLossError` naming the step; the last
  good checkpoint is kept.

Command-specific work (validation, EMA weights, reconstruction figures, early stopping) plugs in
through `Callback`s.
"""
from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import fsdp
from .checkpoint import atomic_write_text, check_sharding, clear_checkpoints, load_checkpoint, save_checkpoint
from ..common.distributed import DistInfo, all_gather_objects, all_reduce
from ..common.logs import RunLog
from ..common.plots import plot_training_curves, read_jsonl

PRECISIONS = ("fp32", "bf16", "fp16")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the last checkpoint."""


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, what backward() runs on
    batch_size: int  # images in this process's batch
    logs: Dict[str, float] = field(default_factory=dict)  # extra per-step numbers to average and log


@dataclass
class TrainConfig:
    out_dir: Path
    epochs: int
    accum_iter: int = 1
    precision: str = "fp32"
    clip_grad: Optional[float] = None
    ckpt_every: int = 1
    ckpt_every_steps: int = 0  # also a checkpoint every N optimizer steps inside epochs (0: off)
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    progress: bool = True
    stop_after_epoch: Optional[int] = None  # pause (with a checkpoint) after this epoch; resume continues
    log_to: Tuple[str, ...] = ("tensorboard", "csv")  # sinks besides metrics.jsonl (zoo.common.logs)
    compile: Optional[str] = None  # torch.compile backend for the model (in place: its keys do not change)
    settings: Optional[Dict[str, Any]] = None  # the command's settings, for the sinks that record them (wandb)


def _wrap(model: nn.Module, cfg: TrainConfig, dist: DistInfo) -> nn.Module:
    """The module the training steps call: `model`, compiled in place when `cfg.compile` names a backend
    (`Module.compile` keeps the state dict's keys), then wrapped in DDP when there are several processes
    (unless the command sharded it with FSDP)."""
    if cfg.compile:
        model.compile(backend=cfg.compile)
    if not dist.distributed or fsdp.is_sharded(model):
        return model
    return DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None)


class Callback:
    """Hooks into `Trainer`. All methods are optional."""

    name = "callback"
    needs_whole_model = False  # under FSDP: gather the whole model for `on_checkpoint` (`unsharded_model`)

    def on_step_end(self, trainer: "Trainer") -> None:
        """Runs on every process after each optimizer update (EMA weights)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int) -> Dict[str, float]:
        """Runs on every process after each epoch; returned numbers join the epoch's log record."""
        return {}

    def on_checkpoint(self, trainer: "Trainer", epoch: int) -> None:
        """Runs on the main process after each checkpoint is written (figures, exports)."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """Runs on every process when training finishes normally."""

    def state_dict(self) -> dict:
        return {}

    def sharded_modules(self) -> Dict[str, nn.Module]:
        """Modules sharded like the model under FSDP (an EMA of its weights), by name: they are saved in
        and restored from the sharded checkpoint instead of `state_dict`."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` ('fp32' = none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; on the CPU use 'bf16' or 'fp32'")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """torch, CUDA, Python and NumPy generator states (timm's Mixup draws from NumPy, RandAugment from
    Python), as plain values that `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore(trainer: "Trainer", run_or_checkpoint: Path) -> Path:
    """`Trainer.resume`: weights, optimizer, scheduler, scaler, RNG, step and callback state from a run's
    latest checkpoint (or a checkpoint folder), a mid-epoch one included; metrics.jsonl keeps only what
    was logged up to it. Returns the checkpoint folder."""
    ckpt, weights, state = load_checkpoint(run_or_checkpoint)
    check_sharding(ckpt, trainer.sharded, run_or_checkpoint)
    if trainer.sharded:
        fsdp.load_sharded(ckpt, trainer.model, trainer.optimizer, fsdp.callback_modules(trainer.callbacks))
    else:
        trainer.model.load_state_dict(weights, strict=True)
        trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    rngs, dist = state["rng"], trainer.dist
    _set_rng_state(rngs[dist.rank] if len(rngs) == dist.world_size else rngs[0])
    if len(rngs) != dist.world_size and dist.rank:  # another number of processes: rank 0's state, offset per rank
        seed_everything(int(torch.randint(2**31 - 1, ())) + dist.rank)
    for cb in trainer.callbacks:
        cb.load_state_dict(state["callbacks"].get(cb.name, {}))
    trainer.epoch, trainer.global_step = int(state["epoch"]), int(state["global_step"])
    trainer.resume_partial = _rank_partial(state.get("partial"), rngs, dist)
    trainer.last_checkpoint = ckpt
    if dist.is_main:  # drop log lines written after this checkpoint by an interrupted run
        inside = trainer.resume_partial is not None  # then the epoch's step lines up to it stay
        kept = [r for r in read_jsonl(trainer.metrics_path) if r.get("step", 0) <= trainer.global_step
                and (r.get("epoch", -1) < trainer.epoch or (inside and r.get("kind") == "step"))]
        atomic_write_text(trainer.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        trainer.epoch_logs = [r for r in kept if r.get("kind") == "epoch"]
    return ckpt


def _rank_partial(partial: Optional[dict], rngs: list, dist: DistInfo) -> Optional[dict]:
    """This process's share of a mid-epoch checkpoint's `partial` state: the batches done, its epoch-start
    and checkpoint generator states, its running sums (None for an end-of-epoch checkpoint)."""
    if not partial:
        return None
    if len(rngs) != dist.world_size:
        raise ValueError(f"this mid-epoch checkpoint was written by {len(rngs)} processes; resume it with {len(rngs)} "
                         f"(--nproc_per_node), or an end-of-epoch one (checkpoints/epoch_NNNN) with another number")
    pick = (lambda values: values[dist.rank] if len(values) == dist.world_size else values[0])
    return {"batches": int(partial["batches"]), "epoch_rng": pick(partial["epoch_rng"]), "rng": pick(rngs),
            "sums": pick(partial["sums"])}


def format_epoch(record: dict, epochs: int) -> str:
    """One line per finished epoch: the training loss and whatever the callbacks measured."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}", f"loss {record['loss']:.4f}"]
    for key, value in record.items():
        if key.endswith(("val_loss", "val_top1", "val_ece")) and isinstance(value, (int, float)):
            parts.append(f"{key} {value:.4f}" if key.endswith("loss") else f"{key} {value:.2f}%")
    parts.append(f"{record['seconds']:.1f} s")
    return "  ".join(parts)


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        loader: torch.utils.data.DataLoader,
        step_fn: Callable[[nn.Module, Any], StepOutput],
        dist: DistInfo,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if cfg.accum_iter < 1 or cfg.epochs < 1 or cfg.ckpt_every < 1:
            raise ValueError("epochs, accum_iter and ckpt_every must be >= 1")
        if len(loader) == 0:
            raise ValueError("the training data loader is empty: fewer images than one batch "
                             "(batches are full: drop_last); lower --batch-size or add data")
        self.cfg, self.dist = cfg, dist
        self.model = model  # the unwrapped model: checkpoints, callbacks and exports use this one
        self.sharded = fsdp.is_sharded(model)  # FSDP (--fsdp): the command sharded it
        self._gathered: Optional[Tuple[int, Optional[nn.Module]]] = None  # (step, unsharded_model()) under FSDP
        self.train_model = _wrap(model, cfg, dist)
        self.optimizer, self.scheduler, self.loader, self.step_fn = optimizer, scheduler, loader, step_fn
        self.callbacks = list(callbacks)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=cfg.precision == "fp16")
        self.out_dir = Path(cfg.out_dir)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.epoch = 0  # the next epoch to run
        self.global_step = 0  # optimizer updates done
        self.stop_requested = False  # a callback may set this (early stopping)
        self.last_checkpoint: Optional[Path] = None
        self.epoch_logs: List[dict] = []
        self.resume_partial: Optional[dict] = None  # inside an epoch: what resume() found (mid-epoch checkpoints)
        self.run_log = RunLog(self.out_dir, ())  # train() opens the real sinks, on the main process

    # --------------------------------------------------------------------------------- helpers
    @property
    def updates_per_epoch(self) -> int:
        return math.ceil(len(self.loader) / self.cfg.accum_iter)

    def lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    def unsharded_model(self) -> Optional[nn.Module]:
        """The whole model as a plain module: `self.model`, or under FSDP a CPU copy gathered from every
        process's shards. Under FSDP a collective (every process calls it; all but the main one get None),
        except where `save` has just gathered it for the callbacks that `needs_whole_model`."""
        if not self.sharded:
            return self.model
        if self._gathered is None or self._gathered[0] != self.global_step:
            self._gathered = (self.global_step, fsdp.gather_full_model(self.model, self.dist))
        return self._gathered[1]

    def log(self, record: dict) -> None:
        """Append one JSON line to metrics.jsonl, and to the other sinks (`--log-to`); main process only."""
        if self.dist.is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.run_log.write(record)

    # ----------------------------------------------------------------------------- checkpoints
    def save(self, partial: Optional[dict] = None, final: bool = False) -> Path:
        """Checkpoint after the epoch just finished (self.epoch - 1), or inside it with `partial` ({batches,
        epoch_rng, sums} of every process: `restore` resumes there). Every process takes part (RNG; FSDP's
        shards). `final`: the run's last checkpoint (under FSDP it also gets the whole weights)."""
        rngs = all_gather_objects(_rng_state())
        name = f"epoch_{self.epoch:04d}" + (f"_step_{self.global_step:08d}" if partial else "")  # sorts in order
        state = {
            "epoch": self.epoch, "global_step": self.global_step, "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rngs, "partial": partial,
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks},
        }
        path = None
        if self.sharded:
            path = fsdp.save_sharded_checkpoint(self, name, state, partial is None, final)
        elif self.dist.is_main:
            state["optimizer"] = self.optimizer.state_dict()
            path = save_checkpoint(self.out_dir, name, self.model.state_dict(), state, keep=self.cfg.keep_checkpoints)
        if self.dist.is_main:
            self.last_checkpoint = path
            plot_training_curves(self.metrics_path, self.out_dir / "training_curves.png")
            self.run_log.checkpoint(self.metrics_path)
            for cb in self.callbacks if partial is None else ():
                cb.on_checkpoint(self, self.epoch - 1)
        return path

    def resume(self, run_or_checkpoint: Path) -> Path:
        """Restore weights, optimizer, scheduler, scaler, RNG, step and callback state (`restore`)."""
        return restore(self, run_or_checkpoint)

    # -------------------------------------------------------------------------------- training
    def train(self, resume: Optional[Path] = None) -> dict:
        """Run (or continue) training to `cfg.epochs`; returns a summary dict."""
        _start(self, resume)
        self.run_log = RunLog(self.out_dir, self.cfg.log_to if self.dist.is_main else (), self.global_step,
                              self.cfg.settings)
        sampler = getattr(self.loader, "sampler", None)
        while self.epoch < self.cfg.epochs and not self.stop_requested:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch)
            record = self._train_epoch(self.epoch)
            for cb in self.callbacks:
                record.update(cb.on_epoch_end(self, self.epoch))
            self.log(record)
            self.epoch_logs.append(record)
            if self.dist.is_main:
                print(format_epoch(record, self.cfg.epochs), flush=True)
            self.epoch += 1
            pause = self.cfg.stop_after_epoch is not None and self.epoch >= self.cfg.stop_after_epoch
            last = self.epoch == self.cfg.epochs or self.stop_requested or pause
            if self.epoch % self.cfg.ckpt_every == 0 or last:
                self.save(final=self.epoch == self.cfg.epochs or self.stop_requested)
            self._gathered = None  # FSDP: a copy gathered at this epoch's end is not kept through the next
            if pause:
                break
        for cb in self.callbacks:
            cb.on_train_end(self)
        self.run_log.close(self.metrics_path)
        checksums = all_gather_objects(fsdp.param_checksum(self.model))
        return {"epochs": self.epoch, "steps": self.global_step,
                "final_loss": self.epoch_logs[-1]["loss"] if self.epoch_logs else None,
                "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                "param_checksums": checksums,  # FSDP: the sharded model's one sum; no copies to compare
                "ranks_in_sync": None if self.sharded else len(set(checksums)) == 1}

    def _train_epoch(self, epoch: int) -> dict:
        cfg, model, opt = self.cfg, self.train_model, self.optimizer
        model.train()
        partial, self.resume_partial = self.resume_partial, None
        if partial is not None:  # resumed inside this epoch: its start again (same data order and augmentation)
            _set_rng_state(partial["epoch_rng"])
        epoch_rng = _rng_state()
        accum = cfg.accum_iter
        n_batches = len(self.loader)
        bar = _progress_bar(n_batches, f"epoch {epoch + 1}/{cfg.epochs}") if cfg.progress and self.dist.is_main \
            else None
        epoch_loss, epoch_images, window_loss, window_n, window_images = 0.0, 0, 0.0, 0, 0
        extra_sums: Dict[str, float] = {}
        if partial is not None:
            epoch_loss, epoch_images, extra_sums = partial["sums"]
        window_start = epoch_start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(self.loader):
            if partial is not None and i < partial["batches"]:  # trained before the checkpoint: only drawn
                if i + 1 == partial["batches"]:
                    _set_rng_state(partial["rng"])  # where the checkpoint left the generators
                continue
            last_micro = (i + 1) % accum == 0 or i + 1 == n_batches
            if (i % accum) == 0:
                self.scheduler.step_update(self.global_step)  # lr for the update about to happen
            # FSDP reduce-scatters every micro-batch: its gradients stay sharded (unsynced, they would be whole)
            sync = nullcontext() if last_micro or not self.dist.distributed or self.sharded else model.no_sync()
            with sync:
                with autocast(self.dist.device, cfg.precision):
                    out = self.step_fn(model, batch)
                _check_finite(self, out.loss, f"epoch {epoch + 1}, batch {i + 1}/{n_batches}")
                self.scaler.scale(out.loss / accum).backward()
            if last_micro:
                if cfg.clip_grad:
                    self.scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
                self.scaler.step(opt)
                self.scaler.update()
                opt.zero_grad(set_to_none=True)
                self.global_step += 1
                for cb in self.callbacks:
                    cb.on_step_end(self)

            loss = out.loss.item()
            images = out.batch_size * self.dist.world_size
            epoch_loss += loss * out.batch_size
            epoch_images += out.batch_size
            window_loss += loss
            window_n += 1
            window_images += images
            for k, v in out.logs.items():
                extra_sums[k] = extra_sums.get(k, 0.0) + v * out.batch_size
            if bar is not None:
                elapsed = time.perf_counter() - window_start
                bar.set_postfix(loss=f"{window_loss / window_n:.4f}", lr=f"{self.lr():.2e}",
                                img_s=f"{window_images / max(elapsed, 1e-9):.1f}", refresh=False)
                bar.update(1)
            if last_micro and self.global_step % cfg.log_every == 0:
                elapsed = time.perf_counter() - window_start
                self.log({"kind": "step", "epoch": epoch, "step": self.global_step, "loss": window_loss / window_n,
                          "lr": self.lr(), "img_per_s": window_images / max(elapsed, 1e-9)})
                window_loss, window_n, window_images, window_start = 0.0, 0, 0, time.perf_counter()
            if last_micro and cfg.ckpt_every_steps and self.global_step % cfg.ckpt_every_steps == 0 \
                    and i + 1 < n_batches:  # a checkpoint inside the epoch (the epoch's end writes its own)
                self.save({"batches": i + 1, "epoch_rng": all_gather_objects(epoch_rng),
                           "sums": all_gather_objects((epoch_loss, epoch_images, dict(extra_sums)))})
        if bar is not None:
            bar.close()
        return _epoch_record(self, epoch, epoch_loss, epoch_images, extra_sums, time.perf_counter() - epoch_start)


def _epoch_record(trainer: Trainer, epoch: int, loss_sum: float, images: int, extra_sums: Dict[str, float],
                  seconds: float) -> dict:
    """The epoch's log record: its sums averaged over every process's images, so every process logs (and
    the callbacks see) the same numbers."""
    totals = torch.tensor([loss_sum, float(images)] + list(extra_sums.values()), dtype=torch.float64)
    totals = all_reduce(totals)
    record = {"kind": "epoch", "epoch": epoch, "step": trainer.global_step, "loss": totals[0].item() / totals[1].item(),
              "lr": trainer.lr(), "img_per_s": totals[1].item() / seconds, "seconds": seconds}
    for k, v in zip(extra_sums, totals[2:].tolist()):
        record[k] = v / totals[1].item()
    return record


def _start(trainer: Trainer, resume: Optional[Path]) -> None:
    """`Trainer.train`'s start: restore from `resume`, or for a fresh run clear an earlier run's checkpoints
    (--overwrite) and log; then the settings to `config.yaml` (what --resume reads), not before."""
    if trainer.dist.is_main:
        trainer.out_dir.mkdir(parents=True, exist_ok=True)
    if resume is not None:
        trainer.resume(resume)
    elif trainer.dist.is_main:
        clear_checkpoints(trainer.out_dir)
        trainer.metrics_path.unlink(missing_ok=True)  # a fresh run owns its log
    if trainer.dist.is_main and trainer.cfg.settings is not None:
        atomic_write_text(trainer.out_dir / "config.yaml", yaml.safe_dump(trainer.cfg.settings, sort_keys=False))


def _check_finite(trainer: Trainer, loss: torch.Tensor, where: str) -> None:
    """NonFiniteLossError, on every process, when the loss of any process is NaN or infinite."""
    finite = torch.tensor(float(torch.isfinite(loss.detach()).all()), device=trainer.dist.device)
    if all_reduce(finite, "min").item() < 1:
        last = f"the last good checkpoint is {trainer.last_checkpoint}" if trainer.last_checkpoint \
            else "no checkpoint was written yet"
        raise NonFiniteLossError(f"loss is {loss.item()} at optimizer step {trainer.global_step} ({where}); {last}. "
                                 f"Lower the learning rate, set --clip-grad, or use --precision fp32")


def _progress_bar(total: int, desc: str):
    """tqdm's bar over an epoch's batches; none when the output is not a terminal (logs, CI)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True, disable=None)
