"""Absolute positional embeddings: the fixed 2D sin-cos table and resampling of a learned grid."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, embed_dim): [sin(p * w_i), cos(p * w_i)] with w_i = 1 / 10000^(i / (D/2))."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,)
    out = positions.reshape(-1, 1).to(torch.float64) * omega  # (M, D/2)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d_pos_embed(embed_dim: int, grid_size: Sequence[int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """MAE's fixed 2D sin-cos table, `(num_prefix_tokens + h*w, embed_dim)` float32.

    Row-major over the (h, w) grid. The first half of the channels encodes the column (x) index, the
    second half the row (y) index, as in the MAE reference; prefix rows (cls, ...) are zeros.
    """
    if embed_dim % 4:
        raise ValueError(f"2D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}")
    h, w = int(grid_size[0]), int(grid_size[1])
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (h, w) each
    emb = torch.cat([sincos_1d(embed_dim // 2, cols), sincos_1d(embed_dim // 2, rows)], dim=1)  # (h*w, D)
    prefix = torch.zeros(num_prefix_tokens, embed_dim, dtype=emb.dtype)
    return torch.cat([prefix, emb], dim=0).float()


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_size: Sequence[int],
    old_size: Sequence[int],
    num_prefix_tokens: int = 0,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resample a learned `(1, prefix + h*w, D)` grid of positions to `new_size`; prefix rows are kept.

    Bicubic with antialias, computed in float32 (float64 stays float64) and returned in the input
    dtype and device. The same function
    serves dynamic input sizes at run time and checkpoints loaded at another resolution.
    """
    new_size, old_size = (int(new_size[0]), int(new_size[1])), (int(old_size[0]), int(old_size[1]))
    expected = num_prefix_tokens + old_size[0] * old_size[1]
    if pos_embed.ndim != 3 or pos_embed.shape[1] != expected:
        raise ValueError(
            f"pos_embed of shape {tuple(pos_embed.shape)} does not hold {num_prefix_tokens} prefix rows plus a "
            f"{old_size[0]}x{old_size[1]} grid ({expected} rows)")
    if new_size == old_size:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    compute = torch.float64 if grid.dtype == torch.float64 else torch.float32
    grid = grid.to(compute).reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid, size=new_size, mode=interpolation, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
