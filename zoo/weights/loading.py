"""Building a model and loading weights into it without allocating anything for a file or config
that does not fit: the model is first built on the meta device (shapes only), its size checked
against this machine's memory, and the weights, as meta tensors read from the safetensors header,
adapted and checked against it (keys, shapes, kinds). Only then is it built for real and loaded.

`zoo.factory` supplies how to build the model (`make`) and what to load (`WeightsFile`); this module
knows nothing of the registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..complexity import check_memory
from ..specs import Family
from . import adapt


@dataclass
class WeightsFile:
    """A weights file to load. `read(meta)` gives (state dict in zoo's keys, notes): meta tensors from
    the safetensors header alone when `meta` is True, the real tensors otherwise. `source_args`: the
    builder arguments the weights were made for (None: unknown); `label` names the file in messages;
    `branch` picks a copy inside a training checkpoint (`zoo.weights.unwrap`); `conventions`: the
    origin's builder arguments (resampling, input sizes, padding) from its converter."""

    read: Callable[[bool], Tuple[Dict[str, torch.Tensor], List[str]]]
    source_args: Optional[Mapping[str, Any]]
    label: str
    branch: Optional[str] = None
    conventions: Mapping[str, Any] = field(default_factory=dict)


def build_and_load(make: Callable[[], nn.Module], family: Family, weights: Optional[WeightsFile] = None,
                   what: str = "model") -> nn.Module:
    """`make()` on the meta device first: the model's parameters and buffers must fit this machine's
    memory (`zoo.complexity.check_memory`, ValueError) and `weights`, read as meta tensors, must fit
    the model once adapted (`adapt.load_state_dict(check_only=True)`: CheckpointMismatchError and the
    other `zoo.weights` errors). Then `make()` for real, and the weights read and loaded. Under a meta
    default device (`zoo info`, cost estimates) the real model is a meta one too and only the header
    is read. Weights already in memory (`zoo convert` has unpickled them) are checked as they are."""
    with torch.device("meta"):
        meta = make()
    check_memory(meta, what, (getattr(meta, "zoo_config", None) or {}).get("args", {}))
    if weights is not None:
        state_dict, notes = weights.read(True)
        adapt.load_state_dict(meta, state_dict, family, weights.source_args, weights.label, notes, weights.branch,
                              check_only=True)
    model = make()
    if weights is not None:
        on_meta = next(iter(model.parameters()), torch.empty(())).is_meta
        state_dict, notes = weights.read(on_meta)
        adapt.load_state_dict(model, state_dict, family, weights.source_args, weights.label, notes, weights.branch)
    return model
