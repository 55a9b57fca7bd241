"""Reading research releases (.pth pickles): zoo's only pickle reader, for `zoo convert`.

`torch.load(weights_only=True)` unpickles tensors and plain containers only, never arbitrary
objects; `unwrap_checkpoint` finds the state dict inside a training checkpoint.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict

import torch

from ..specs import ConversionError
from .errors import UnsafeWeightsError, WeightsNotFoundError
from .source import PathLike

StateDict = Dict[str, torch.Tensor]


def read_checkpoint(path: PathLike) -> StateDict:
    """The state dict of a .pth file: `torch.load(weights_only=True)`, then `unwrap_checkpoint`.
    Raises WeightsNotFoundError, UnsafeWeightsError (the pickle holds objects), ConversionError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        held = f"an object of type {found.group(1)}" if found else "something other than tensors"
        raise UnsafeWeightsError(
            f"{path}: torch.load(weights_only=True) refused it: it holds {held} ({type(e).__name__}). zoo unpickles "
            f"tensors and plain containers only; if you trust the file, save just its state dict with torch.save "
            f"and convert that.") from None
    return unwrap_checkpoint(obj)


def unwrap_checkpoint(obj: Any) -> StateDict:
    """The state dict inside a training checkpoint: under 'model', 'state_dict' or (DINOv2 training
    runs) 'teacher' with a 'backbone.' prefix; a 'module.' prefix (DistributedDataParallel) is removed.
    Raises ConversionError when no dict of tensors is found."""
    if not isinstance(obj, dict):
        raise ConversionError(f"expected a state dict or a dict holding one, got {type(obj).__name__}")
    for key in ("model", "state_dict", "teacher"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if any(k.startswith("backbone.") for k in obj):
        obj = {k[len("backbone."):]: v for k, v in obj.items() if k.startswith("backbone.")}
    obj = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"the checkpoint holds non-tensor entries {bad[:5]}: not a state dict")
    return obj
