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


def swiglu_hidden_features(mlp_hidden_features: int, align_to: int = 8) -> int:
    """The DINOv2 / DINOv3 SwiGLU width: 2/3 of the plain MLP's hidden size, rounded up to a multiple of
    `align_to` (8; DINOv3's 7B: 64).

    ViT-g/14: dim 1536, MLP width 4 * 1536 = 6144 -> 4096 per half (fc1 1536 -> 8192, fc2 4096 -> 1536).
    DINOv3 ViT-H+/16: dim 1280, MLP ratio 6 -> 7680 -> 5120 per half.
    """
    return -(-int(mlp_hidden_features * 2 / 3) // align_to) * align_to


class SwiGLU(nn.Module):
    """SwiGLU feed-forward as in DINOv2 giant and DINOv3 S+/H+/7B: `fc2(silu(a) * b)`, a the gate and
    b the value projection of x.

    `packed=True`: one Linear `fc1` computes [a, b] (DINOv2's `w12`, timm's `SwiGLUPacked.fc1`), keys
    `fc1` / `fc2`. `packed=False`: two Linears `fc1_g` (gate) and `fc1_x` (value), timm's `SwiGLU` keys
    as its DINOv3 models use them (the original's `w1` / `w2` / `w3`). `hidden_features` is the width a
    plain MLP would have (dim * mlp_ratio); each half gets 2/3 of it rounded up to `align_to`, as in
    DINOv2 and DINOv3 (`swiglu_hidden_features`).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        bias: bool = True,
        drop: float = 0.0,
        packed: bool = True,
        align_to: int = 8,
    ) -> None:
        super().__init__()
        hidden_features = swiglu_hidden_features(hidden_features or 4 * in_features, align_to)
        out_features = out_features or in_features
        self.hidden_features = hidden_features
        if packed:
            self.fc1 = Linear(in_features, 2 * hidden_features, bias=bias)
        else:
            self.fc1_g = Linear(in_features, hidden_features, bias=bias)
            self.fc1_x = Linear(in_features, hidden_features, bias=bias)
        self.packed = packed
        self.fc2 = Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, N, D_out)
        if self.packed:
            gate, value = self.fc1(x).chunk(2, dim=-1)  # 2 x (B, N, H)
        else:
            gate, value = self.fc1_g(x), self.fc1_x(x)
        x = self.drop(F.silu(gate) * value)
        return self.drop(self.fc2(x))
