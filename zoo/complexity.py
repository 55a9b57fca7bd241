"""Model cost without running the model: parameter counts and multiply-accumulates (MACs).

Both work on a model built on PyTorch's meta device (shapes only, no memory, no arithmetic), so even
ViT-g/14 at 518x518 is measured in a fraction of a second (`zoo.factory.variant_cost` builds one).
"""
from __future__ import annotations

from typing import Sequence

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
