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


# How a grid of positions (or a bias table) is resampled to another size. Each origin has its own, and
# weights reproduce their origin only with it (docs/hub.md lists them):
#   "bicubic_antialias"  F.interpolate(size=..., bicubic, antialias): timm (positions), transformers'
#                        Dinov2WithRegisters, the DINOv2 repository's register models
#   "bicubic"            F.interpolate(size=..., bicubic): transformers' ViT / DeiT / ViTMAE / Dinov2, the MAE
#                        and DeiT repositories' loaders, the Swin repository's bias-table loader
#   "bicubic_offset"     bicubic by scale factor (n + 0.1) / m per axis: the DINOv2 repository (models without
#                        registers: interpolate_offset=0.1, no antialias)
#   "geometric"          bias tables only: BEiT's rule as timm resizes Swin tables (source offsets spread on a
#                        geometric progression over the new range, then linear interpolation, edges held)
RESAMPLE_METHODS = ("bicubic_antialias", "bicubic", "bicubic_offset", "geometric")
POS_EMBED_RESAMPLE_METHODS = ("bicubic_antialias", "bicubic", "bicubic_offset")  # for position grids
BIAS_TABLE_RESAMPLE_METHODS = ("geometric", "bicubic", "bicubic_antialias")  # for Swin's bias tables


def check_resample_method(method: str, allowed: Sequence[str] = RESAMPLE_METHODS, what: str = "method") -> str:
    """`method` if it is one of `allowed`, else ValueError naming the argument (`what`) and the choices."""
    if method not in allowed:
        raise ValueError(f"{what} must be one of {tuple(allowed)}, got {method!r}")
    return method


def resample_grid(grid: torch.Tensor, new_size: Sequence[int], method: str = "bicubic_antialias") -> torch.Tensor:
    """Resample a `(B, C, h, w)` grid to `new_size` (h', w') by `method` (see RESAMPLE_METHODS),
    computed in float32 (float64 stays float64) and returned in the input dtype. Raises ValueError
    for an unknown method."""
    check_resample_method(method)
    symbolic = torch.compiler.is_exporting() and not all(isinstance(s, int) for s in new_size)
    new_size = tuple(new_size) if symbolic else (int(new_size[0]), int(new_size[1]))
    compute = torch.float64 if grid.dtype == torch.float64 else torch.float32
    x = grid.to(compute)
    if method == "bicubic_offset":
        h, w = x.shape[-2:]
        scale = ((new_size[0] + 0.1) / h, (new_size[1] + 0.1) / w)
        x = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
        if tuple(x.shape[-2:]) != new_size:  # cannot happen for positive sizes; guards the arithmetic
            raise ValueError(f"scale factors {scale} gave {tuple(x.shape[-2:])}, not {new_size}")
    elif method == "geometric":
        rows = _geometric_weights(x.shape[-2], new_size[0], x)
        cols = _geometric_weights(x.shape[-1], new_size[1], x)
        x = rows @ x @ cols.T  # (h', h) @ (..., h, w) @ (w, w')
    else:
        x = F.interpolate(x, size=new_size, mode="bicubic", align_corners=False, antialias=method == "bicubic_antialias")
    return x.to(grid.dtype)


def _geometric_weights(src: int, dst: int, like: torch.Tensor) -> torch.Tensor:
    """(dst, src) matrix of BEiT's table resampling along one axis of odd length `src` (offsets -s..s).

    The source offsets 0, +-1, +-(1 + q), +-(1 + q + q^2), ... are spread so that the outermost lands at
    about dst // 2: q in [1.01, 1.5] by bisection to 1e-6 (the last midpoint is used, as in BEiT and
    timm). Each target offset -(dst // 2)..dst // 2 is then interpolated linearly between its two
    neighbours, taking the edge value beyond the outermost ones."""
    half_src, half_dst = src // 2, dst // 2
    low, high = 1.01, 1.5
    while high - low > 1e-6:
        q = (low + high) / 2.0
        reach = (1.0 - q ** half_src) / (1.0 - q)  # 1 + q + ... + q^(half_src - 1)
        low, high = (low, q) if reach > half_dst else (q, high)
    steps, total = [], 0.0
    for i in range(half_src):
        total += q ** i
        steps.append(total)
    points = torch.tensor([-p for p in reversed(steps)] + [0.0] + steps, dtype=torch.float32).double()
    targets = torch.arange(-half_dst, half_dst + 1, dtype=torch.float64)
    right = torch.bucketize(targets, points).clamp(max=src - 1)
    left = (right - 1).clamp(min=0)
    span = points[right] - points[left]
    t = torch.where(span > 0, (targets - points[left]) / torch.where(span > 0, span, 1.0), 0.0).clamp(0, 1)
    t = torch.where(targets >= points[-1], 1.0, t)  # beyond the last point: its value
    weights = torch.zeros(dst, src, dtype=torch.float64)
    rows = torch.arange(dst)
    weights.index_put_((rows, left), 1 - t, accumulate=True)
    weights.index_put_((rows, right), t, accumulate=True)
    return weights.to(dtype=like.dtype, device=like.device)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_size: Sequence[int],
    old_size: Sequence[int],
    num_prefix_tokens: int = 0,
    method: str = "bicubic_antialias",
) -> torch.Tensor:
    """Resample a learned `(1, prefix + h*w, D)` grid of positions to `new_size`; prefix rows are kept.

    `method` is the origin's convention (RESAMPLE_METHODS; default timm's antialiased bicubic),
    computed in float32 (float64 stays float64) and returned in the input dtype and device. The same
    function serves dynamic input sizes at run time and checkpoints loaded at another resolution.
    While `torch.export` traces a graph for any input size (symbolic sizes) the grid is always resampled
    (to the same size this is the identity for "bicubic" and "bicubic_antialias"; "bicubic_offset" models
    export at a fixed size, `zoo.weights.onnx.dynamic_sizes`) and `new_size` stays symbolic.
    """
    exporting = torch.compiler.is_exporting() and not all(isinstance(s, int) for s in new_size)  # symbolic sizes
    new_size = tuple(new_size) if exporting else (int(new_size[0]), int(new_size[1]))
    old_size = (int(old_size[0]), int(old_size[1]))
    expected = num_prefix_tokens + old_size[0] * old_size[1]
    if pos_embed.ndim != 3 or pos_embed.shape[1] != expected:
        raise ValueError(
            f"pos_embed of shape {tuple(pos_embed.shape)} does not hold {num_prefix_tokens} prefix rows plus a "
            f"{old_size[0]}x{old_size[1]} grid ({expected} rows)")
    if new_size == old_size and not exporting:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = resample_grid(grid, new_size, method)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], dim)
    return torch.cat([prefix, grid], dim=1)
