"""2D axial rotary position embedding (RoPE) as DINOv3 uses it (Simeoni et al. 2025, arXiv 2508.10104).

Each patch at row i, column j of an h x w grid gets coordinates at its centre, normalised per axis to
[-1, 1] ("separate" normalisation): y = 2 (i + 0.5) / h - 1, x = 2 (j + 0.5) / w - 1. A head of width
d splits into two halves of d/2 channels (the rotate-half layout): channel c of the first half pairs
with channel c of the second. The first d/4 pairs turn by angles 2 pi y / p_k, the next d/4 by
2 pi x / p_k, with periods p_k = base ** (4k / d), k = 0 .. d/4 - 1 (base 100 in DINOv3). Queries and
keys of the patch tokens are rotated; prefix tokens (class, registers) are not. Because coordinates
are normalised, any grid size gives positions in the same range: no table to resample.

At training time DINOv3 may perturb the coordinates (off in eval): a shift added per axis drawn from
U(-shift, shift), a jitter multiplied per axis drawn log-uniformly from [1/jitter, jitter], and a
rescale multiplied on both axes drawn log-uniformly from [1/rescale, rescale].
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

NORMALIZE_COORDS = ("separate", "max", "min")


class RotaryEmbedding2d(nn.Module):
    """DINOv3's RoPE: `forward((h, w))` -> `(sin, cos)`, each `(h * w, head_dim)` float32, patch order
    row-major. Holds no learned state (its `periods` buffer is not saved: DINOv3 checkpoints' own
    `rope_embed.periods` are dropped on loading and recomputed).

    Args:
        head_dim: channels per attention head; a multiple of 4.
        base: period base (DINOv3: 100; transformers calls it `rope_theta`).
        normalize_coords: divide row / column indices by h / w ("separate", DINOv3), by max(h, w) or by
            min(h, w).
        shift, jitter, rescale: the training-time coordinate augmentations above; None turns one off.
    Raises ValueError for a head_dim not divisible by 4, an unknown normalisation or a jitter /
    rescale factor below 1.
    """

    def __init__(self, head_dim: int, base: float = 100.0, normalize_coords: str = "separate",
                 shift: Optional[float] = None, jitter: Optional[float] = None,
                 rescale: Optional[float] = None) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs a head width divisible by 4, got {head_dim}")
        if normalize_coords not in NORMALIZE_COORDS:
            raise ValueError(f"normalize_coords must be one of {NORMALIZE_COORDS}, got {normalize_coords!r}")
        for name, factor in (("jitter", jitter), ("rescale", rescale)):
            if factor is not None and factor < 1:
                raise ValueError(f"rope {name} is a factor >= 1 (drawn from [1/{name}, {name}]), got {factor}")
        self.head_dim, self.base, self.normalize_coords = head_dim, float(base), normalize_coords
        self.shift, self.jitter, self.rescale = shift, jitter, rescale
        self.register_buffer("periods", _periods(head_dim, self.base), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        """After `.to()` / `.half()` / `.to_empty()` ... the periods are computed again, in float32 on the new
        device: bf16 periods would be off by up to 0.4% (far patches turned by wrong angles), and
        `to_empty()` (materialising a model built on the meta device) leaves the buffer uninitialised."""
        module = super()._apply(fn, *args, **kwargs)
        if self.periods.device.type != "meta":
            self.periods = _periods(self.head_dim, self.base, self.periods.device)
        return module

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}, normalize_coords={self.normalize_coords!r}"

    def coords(self, grid: Tuple[int, int]) -> torch.Tensor:
        """(h * w, 2) patch-centre coordinates (row, column) in [-1, 1], augmented in training mode."""
        h, w = grid
        dev = self.periods.device
        rows = torch.arange(0.5, h, device=dev, dtype=torch.float32)
        cols = torch.arange(0.5, w, device=dev, dtype=torch.float32)
        if self.normalize_coords == "separate":
            rows, cols = rows / h, cols / w
        else:
            side = max(h, w) if self.normalize_coords == "max" else min(h, w)
            rows, cols = rows / side, cols / side
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).flatten(0, 1) * 2 - 1
        if self.training:
            coords = self._augment(coords)
        return coords

    def _augment(self, coords: torch.Tensor) -> torch.Tensor:
        dev = coords.device
        if self.shift is not None:
            coords = coords + torch.empty(2, device=dev).uniform_(-self.shift, self.shift)
        if self.jitter is not None:
            log_j = math.log(self.jitter)
            coords = coords * torch.empty(2, device=dev).uniform_(-log_j, log_j).exp()
        if self.rescale is not None:
            log_r = math.log(self.rescale)
            coords = coords * torch.empty(1, device=dev).uniform_(-log_r, log_r).exp()
        return coords

    def forward(self, grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(h, w) patch grid -> (sin, cos), each (h * w, head_dim) float32."""
        coords = self.coords(grid)
        angles = 2 * math.pi * coords[:, :, None] / self.periods  # (N, 2, head_dim / 4)
        angles = angles.flatten(1).tile(2)  # (N, head_dim): the same angle for both halves of a pair
        return angles.sin(), angles.cos()


def _periods(head_dim: int, base: float, device: Optional[torch.device] = None) -> torch.Tensor:
    """(head_dim / 4,) float32 periods base ** (4k / head_dim)."""
    return base ** (torch.arange(head_dim // 4, dtype=torch.float32, device=device) * 4 / head_dim)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., d): [x1, x2] -> [-x2, x1], the halves being the pairs' two channels."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, rope: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate the LAST n tokens of `x` (B, heads, L, head_dim) by `rope` = (sin, cos), each
    (n, head_dim); the L - n tokens before them (class, registers) are left as they are. Computed in
    float32, returned in x's dtype. Raises ValueError when x has fewer than n tokens."""
    sin, cos = rope
    n = sin.shape[0]
    if x.shape[-2] < n:
        raise ValueError(f"{x.shape[-2]} tokens but a rotary table for {n} patches")
    prefix, patches = x[..., : x.shape[-2] - n, :], x[..., x.shape[-2] - n:, :]
    rotated = (patches.float() * cos + rotate_half(patches.float()) * sin).to(x.dtype)
    return torch.cat((prefix, rotated), dim=-2)
