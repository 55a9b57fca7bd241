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

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        num_queries: Optional[int] = None,
    ) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with `num_queries`, only the first `num_queries` tokens are computed
        and returned, (B, num_queries, D). They equal the full block's first outputs exactly."""
        attn = self.attn(self.norm1(x), attn_mask=attn_mask, num_queries=num_queries)
        if num_queries is not None:
            x = x[:, :num_queries]
        x = x + self.drop_path1(self.ls1(attn))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x
