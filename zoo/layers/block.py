"""The pre-norm transformer block shared by ViT, DeiT, DINOv2 and the MAE encoder / decoder."""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import nn

from .attention import Attention, Rope
from .drop_path import DropPath
from .layer_scale import LayerScale
from .mlp import Mlp
from .norm import LayerNorm


class Block(nn.Module):
    """`x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`; drop path on both branches.

    Keys match timm: `norm1`, `attn.*`, `ls1.gamma` (only with `init_values`), `norm2`, `mlp.*`, `ls2.gamma`.
    `ls_layout="gamma"` stores LayerScale as the block's own `gamma_1` / `gamma_2` parameters instead,
    as timm's EVA-style blocks (its DINOv3 models) do; the arithmetic is the same.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: Union[bool, str] = True,
        qk_norm: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: Optional[float] = None,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = LayerNorm,
        mlp_layer: Callable[..., nn.Module] = Mlp,
        ls_layout: str = "ls",
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, attn_drop=attn_drop,
                              proj_drop=proj_drop, norm_layer=norm_layer)
        if ls_layout not in ("ls", "gamma"):
            raise ValueError(f"ls_layout must be 'ls' (ls1.gamma) or 'gamma' (gamma_1), got {ls_layout!r}")
        gamma = ls_layout == "gamma" and init_values
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values))) if gamma else None
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values))) if gamma else None
        self.ls1 = LayerScale(dim, init_values) if init_values and not gamma else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values and not gamma else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _scale1(self, y: torch.Tensor) -> torch.Tensor:
        return self.ls1(y) if self.gamma_1 is None else y * self.gamma_1

    def _scale2(self, y: torch.Tensor) -> torch.Tensor:
        return self.ls2(y) if self.gamma_2 is None else y * self.gamma_2

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                rope: Optional[Rope] = None, rows: Optional[int] = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); `rope` as in `Attention.forward`. With `rows`, (B, rows, D): only the first
        `rows` tokens' outputs (`_forward_first_rows`). Both go through the module's call, so hooks on the
        block (FSDP's all-gather of its weights, forward hooks) run for either."""
        if rows is not None:
            if attn_mask is not None:
                raise ValueError("Block: `rows` (the first rows' outputs only) does not take an attn_mask")
            return self._forward_first_rows(x, rows, rope)
        x = x + self.drop_path1(self._scale1(self.attn(self.norm1(x), attn_mask=attn_mask, rope=rope)))
        return x + self.drop_path2(self._scale2(self.mlp(self.norm2(x))))

    def _forward_first_rows(self, x: torch.Tensor, rows: int, rope: Optional[Rope] = None) -> torch.Tensor:
        """(B, N, D) -> (B, rows, D): exactly `forward(x)[:, :rows]`, computing attention queries and the
        MLP for those rows only (every token still serves as key and value). Used by ViT's `forward`
        for the last block when the head reads only the class (and distillation) token."""
        attn = self.attn._forward_first_rows(self.norm1(x), rows, rope=rope)
        x_rows = x[:, :rows] + self.drop_path1(self._scale1(attn))
        return x_rows + self.drop_path2(self._scale2(self.mlp(self.norm2(x_rows))))
