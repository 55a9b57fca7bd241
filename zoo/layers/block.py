"""The pre-norm transformer block shared by ViT, DeiT, DINOv2 and the MAE encoder / decoder."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from .attention import Attention
from .drop_path import DropPath
from .layer_scale import LayerScale
from .mlp import Mlp
from .norm import LayerNorm


class Block(nn.Module):
    """`x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`; drop path on both branches.

    Keys match timm: `norm1`, `attn.*`, `ls1.gamma` (only with `init_values`), `norm2`, `mlp.*`, `ls2.gamma`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: Optional[float] = None,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = LayerNorm,
        mlp_layer: Callable[..., nn.Module] = Mlp,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, attn_drop=attn_drop,
                              proj_drop=proj_drop, norm_layer=norm_layer)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(in_features=dim, hidden_features=int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def _forward_first_rows(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """(B, N, D) -> (B, rows, D): exactly `forward(x)[:, :rows]`, computing attention queries and the
        MLP for those rows only (every token still serves as key and value). Used by ViT's `forward`
        for the last block when the head reads only the class (and distillation) token."""
        x_rows = x[:, :rows] + self.drop_path1(self.ls1(self.attn._forward_first_rows(self.norm1(x), rows)))
        return x_rows + self.drop_path2(self.ls2(self.mlp(self.norm2(x_rows))))
