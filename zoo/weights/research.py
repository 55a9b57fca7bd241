"""Reading research releases (.pth pickles): zoo's only pickle reader, for `zoo convert`.

`torch.load(weights_only=True)` unpickles tensors and plain containers only, never arbitrary
objects; `zoo.weights.unwrap` then finds the model's state dict inside the training checkpoint.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .errors import UnsafeWeightsError, WeightsNotFoundError
from .source import PathLike


def read_checkpoint(path: PathLike) -> Any:
    """What a .pth file holds (a state dict, or a training checkpoint: nested dicts of tensors and plain
    values), read with `torch.load(weights_only=True)`. Raises WeightsNotFoundError, UnsafeWeightsError
    (the pickle holds objects)."""
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
    return obj
