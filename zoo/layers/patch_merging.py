"""Swin's downsampling between stages: merge each 2x2 group of tokens into one, doubling the width."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim), default out_dim = 2C.

    The four tokens of each 2x2 group are concatenated in the order (0,0), (1,0), (0,1), (1,1)
    (row, column offset), normalised over the 4C channels and projected by a bias-free Linear. Keys
    match timm: `norm`, `reduction`. An odd height or width is zero-padded at the bottom / right.
    """

    def __init__(
        self,
        dim: int,
        out_dim: Optional[int] = None,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.norm = norm_layer(4 * dim)
        self.reduction = Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))  # (B, H + H%2, W + W%2, C)
            H, W = H + H % 2, W + W % 2
        # (B, H/2, row offset, W/2, column offset, C) -> (B, H/2, W/2, column offset, row offset, C)
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))
