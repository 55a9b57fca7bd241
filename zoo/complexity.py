"""Model cost without running the model: parameter counts, multiply-accumulates (MACs) and memory.

Both work on a model built on PyTorch's meta device (shapes only, no memory, no arithmetic), so even
ViT-g/14 at 518x518 is measured in a fraction of a second (`zoo.factory.variant_cost` builds one).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Parameters of `model` (frozen ones included)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: Sequence[int], batch_size: int = 1) -> int:
    """MACs of one full forward pass (all tokens through every block, then the head) at
    `input_size` = (C, H, W), counted by `torch.utils.flop_counter` (convolutions, matmuls, attention).

    The model may live on the meta device; the input is created on the model's device.
    """
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = torch.empty(batch_size, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
                model.forward_head(model.forward_features(x))  # not forward(): it may skip work
            else:
                model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def physical_memory() -> Optional[int]:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(meta_model: nn.Module, what: str, args: Mapping[str, Any], limit: Optional[int] = None) -> None:
    """Refuse a model whose parameters and buffers alone would not fit in memory, before it is built:
    `meta_model` is the same model built on the meta device. `limit` defaults to the physical memory;
    nothing is checked when the default device is not the CPU (the model is built on the meta device
    or a GPU there). Raises ValueError naming the size, the largest tensor and the arguments."""
    default = torch.empty(()).device
    limit = limit if limit is not None else physical_memory()
    if default.type != "cpu" or limit is None:
        return
    tensors = dict(meta_model.named_parameters())
    tensors.update(meta_model.named_buffers())
    need = sum(t.numel() * t.element_size() for t in tensors.values())
    if need <= limit:
        return
    name, big = max(tensors.items(), key=lambda kv: kv[1].numel())
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items() if isinstance(v, (int, float, list, tuple))
                      and not isinstance(v, bool))
    raise ValueError(
        f"{what}: its parameters and buffers alone need {need / 2**30:,.1f} GiB, more than this machine's "
        f"{limit / 2**30:,.1f} GiB of memory (largest: {name} {tuple(big.shape)}); nothing was allocated. Check the "
        f"arguments it was built from ({shown}).")
