"""Training checkpoints: written atomically, found again for `--resume`.

A run directory holds `checkpoints/epoch_0003/` folders, each with
- `model.safetensors`: the model's weights (safetensors: loading them cannot run code), and
- `state.pt`: optimizer, scheduler, grad-scaler, RNG and step state (tensors and plain Python
  values only, read back with `torch.load(weights_only=True)`),
and `checkpoints/latest.json` naming the newest complete one. A checkpoint is written into a
temporary folder and renamed into place; `latest.json` is replaced atomically afterwards. A run
killed at any moment therefore leaves the previous checkpoint intact and pointed to.

A run with `--fsdp` writes `sharded/` instead of `model.safetensors` (every process's shards of the
weights and the optimizer state, torch.distributed.checkpoint's format: fsdp.py), and the whole
weights as `model.safetensors` in its final checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest.json"
SHARDED = "sharded"  # a --fsdp checkpoint's weights and optimizer state, in torch.distributed.checkpoint's format


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, name: str, model_state: Dict[str, torch.Tensor], train_state: dict,
                    keep: int = 2) -> Path:
    """Write `run_dir/checkpoints/<name>/` atomically, point latest.json at it, keep the newest `keep`."""
    tmp = begin_checkpoint(run_dir, name)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    torch.save(train_state, tmp / "state.pt")
    return commit_checkpoint(run_dir, name, keep)


def temporary_folder(run_dir: Path, name: str) -> Path:
    """Where checkpoint `name` is written before it is renamed into place (the same path in every process)."""
    return Path(run_dir) / "checkpoints" / f".{name}.tmp"


def begin_checkpoint(run_dir: Path, name: str) -> Path:
    """An empty temporary folder for checkpoint `name` (what `commit_checkpoint` renames into place)."""
    tmp = temporary_folder(run_dir, name)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit_checkpoint(run_dir: Path, name: str, keep: int = 2) -> Path:
    """Rename the written temporary folder of checkpoint `name` into place, point latest.json at it,
    and delete all but the newest `keep` checkpoints."""
    root, tmp = Path(run_dir) / "checkpoints", temporary_folder(run_dir, name)
    final = root / name
    if final.exists():  # re-saving the same epoch (e.g. after a resume): replace the old copy
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / LATEST, json.dumps({"checkpoint": name}) + "\n")
    if keep > 0:
        done = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for old in done[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def is_sharded_checkpoint(folder: Path) -> bool:
    """Whether checkpoint `folder` holds its weights sharded (written with --fsdp: `sharded/`)."""
    return (Path(folder) / SHARDED / ".metadata").is_file()


def _complete(folder: Path) -> bool:
    """A checkpoint folder with its training state and its weights (whole, or sharded)."""
    return (folder / "state.pt").is_file() and ((folder / "model.safetensors").is_file()
                                                 or is_sharded_checkpoint(folder))


def find_checkpoint(path: Path) -> Path:
    """A checkpoint folder from a run directory (its latest checkpoint) or a checkpoint folder itself."""
    path = Path(path)
    if _complete(path):
        return path
    latest = path / "checkpoints" / LATEST
    if latest.is_file():
        ckpt = path / "checkpoints" / json.loads(latest.read_text())["checkpoint"]
        if _complete(ckpt):
            return ckpt
        raise FileNotFoundError(f"{latest} names {ckpt.name}, which is missing or incomplete")
    raise FileNotFoundError(
        f"--resume {path}: no checkpoint there; expected a run directory with checkpoints/{LATEST} "
        f"or a checkpoint folder holding state.pt and model.safetensors (or sharded/, from --fsdp)")


def load_checkpoint(path: Path) -> Tuple[Path, Optional[Dict[str, torch.Tensor]], dict]:
    """(checkpoint folder, model weights, training state) for `find_checkpoint(path)`; the weights are
    None for a sharded checkpoint (`--fsdp`: fsdp.load_sharded reads them)."""
    ckpt = find_checkpoint(path)
    state = torch.load(ckpt / "state.pt", weights_only=True)
    weights = None if is_sharded_checkpoint(ckpt) else load_file(str(ckpt / "model.safetensors"))
    return ckpt, weights, state


def check_sharding(ckpt: Path, sharded: bool, resume: Path) -> None:
    """ValueError when checkpoint folder `ckpt` was written with --fsdp (it has `sharded/`) and this run is
    without it, or the other way round."""
    if is_sharded_checkpoint(ckpt) != sharded:
        if sharded:
            raise ValueError(f"--resume {resume}: {Path(ckpt).name} holds whole weights (a run without --fsdp); "
                             f"resume it without --fsdp (--no-fsdp)")
        raise ValueError(f"--resume {resume}: {Path(ckpt).name} holds sharded weights (a run with --fsdp); resume it "
                         f"with --fsdp under `torchrun --nproc_per_node N` (N >= 2), as its config.yaml records")


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    try:
        return find_checkpoint(run_dir)
    except FileNotFoundError:
        return None


class RunExistsError(ValueError):
    """A fresh run was pointed at a directory holding another run's checkpoints."""


def auto_resume(run_dir: Path) -> Optional[Path]:
    """`--resume auto`: `run_dir` when it holds a checkpoint (resume it), else None (start afresh there),
    said on stderr; a job scheduler can requeue the same command after a preemption."""
    found = latest_checkpoint(run_dir) is not None
    print(f"--resume auto: {'resuming' if found else 'no checkpoint yet in'} {run_dir}", file=sys.stderr, flush=True)
    return Path(run_dir) if found else None


def claim_run_dir(run_dir: Path, resume: Optional[Path], overwrite: bool) -> None:
    """Check that `run_dir` can take a run. A fresh run (no `resume`) refuses a directory that holds
    another run's checkpoints, so nothing is lost by accident; with `overwrite` it is accepted, and the
    Trainer deletes those checkpoints once training starts (`clear_checkpoints`), after every other
    check: a command refused before then leaves the old run as it was."""
    run_dir = Path(run_dir)
    if resume is not None:
        return
    existing = latest_checkpoint(run_dir) is not None or any((run_dir / "checkpoints").glob("epoch_*"))
    if not existing:
        return
    if not overwrite:
        raise RunExistsError(
            f"{run_dir} already holds a run (checkpoints in {run_dir / 'checkpoints'}): continue it with "
            f"--resume {run_dir}, choose another --out, or pass --overwrite to delete them and start over")


def clear_checkpoints(run_dir: Path) -> None:
    """A fresh run's start: delete the checkpoints an earlier run left in `run_dir` (only there when
    `claim_run_dir` accepted them with --overwrite; stale ones would outlive the new run's in the
    keep-newest pruning)."""
    if (Path(run_dir) / "checkpoints").exists():
        shutil.rmtree(Path(run_dir) / "checkpoints")
