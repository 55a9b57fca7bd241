"""Feed-forward layers of a transformer block: the GELU MLP and DINOv2's SwiGLU."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (keys `fc1`, `fc2`).

    Both are `zoo.layers.Linear`: during CPU inference they run on oneDNN, with the (exact) GELU
    inside `fc1`'s call (see `zoo/layers/linear.py`).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: type[nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)
        self.fuse_gelu = type(self.act) is nn.GELU and self.act.approximate == "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D_out)
        x = self.fc1(x, activation="gelu") if self.fuse_gelu else self.act(self.fc1(x))  # (B, N, H)
        x = self.drop(x)
        return self.drop(self.fc2(x))


def swiglu_hidden_features(mlp_hidden_features: int) -> int:
    """DINOv2's SwiGLU width: 2/3 of the plain MLP's hidden size, rounded up to a multiple of 8.

    ViT-g/14: dim 1536, MLP width 4 * 1536 = 6144 -> 4096 per half (fc1 1536 -> 8192, fc2 4096 -> 1536).
    """
    return (int(mlp_hidden_features * 2 / 3) + 7) // 8 * 8


class SwiGLU(nn.Module):
    """SwiGLU feed-forward as in DINOv2 giant: `fc2(silu(a) * b)` where `[a, b] = fc1(x)`.

    `fc1` packs both halves in one Linear (DINOv2's `w12`, timm's `SwiGLUPacked.fc1`), so the keys
    are `fc1` / `fc2` and timm's weights load unchanged. `hidden_features` is the width a plain MLP
    would have (dim * mlp_ratio); each half gets 2/3 of it, as in DINOv2 (`swiglu_hidden_features`).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = swiglu_hidden_features(hidden_features or 4 * in_features)
        out_features = out_features or in_features
        self.hidden_features = hidden_features
        self.fc1 = Linear(in_features, 2 * hidden_features, bias=bias)
        self.fc2 = Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D_out)
        gate, value = self.fc1(x).chunk(2, dim=-1)  # 2 x (B, N, H)
        x = self.drop(F.silu(gate) * value)
        return self.drop(self.fc2(x))
