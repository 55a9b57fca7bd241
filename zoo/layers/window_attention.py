"""Window attention with a learned relative-position bias (Swin), and the window layout it runs on.

A feature map `(B, H, W, C)` is cut into windows of `Mh x Mw` tokens and each token attends only to
the tokens of its window. On alternate blocks the windows are shifted by half a window (a cyclic roll
of the map); a region mask then keeps apart the tokens that the roll brought into one window from
opposite edges. A map that is not a multiple of the window is padded right/bottom to one. What the
padding is, and what happens to maps smaller than the window, differs between implementations, and
weights reproduce theirs only with its rule (`WINDOW_PADDINGS`, the block's `window_padding`):

- "swin": the Swin repository and transformers: the (normalised) map is padded with zero tokens, then
  rolled; real tokens attend to the padding, whose keys and values are the qkv biases. Where the
  map's shorter side is not longer than the window there is no shift, and a square window of that
  side (transformers refuses such maps; zoo reads the centre of the bias table).
- "torchvision": as "swin", but the window never shrinks (a small map is padded up to it), and only
  an axis whose padded length the window covers goes unshifted.
- "timm": timm's Swin built for the input's size: the map is rolled first, then padded with zero
  tokens (attended). A map not larger than the window on an axis gets one window the size of the map
  there, and no shift.
- "masked": as "timm" for small maps, but padded before the roll and with the padded keys masked
  out, so padding never changes a real token's output (zoo's own rule, an option).

`window_geometry` computes everything a map size needs, once: the roll and the padding folded into
one gather index that lays the tokens out window by window, its inverse, the additive shift/padding
mask and the relative-position index into the bias table. It is cached per (size, window, shift,
device), so a forward pass at a size seen before builds nothing.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import _prefer_explicit, explicit_attention
from ..helpers import IntOrPair, to_2tuple
from .linear import Linear
from .pos_embed import BIAS_TABLE_RESAMPLE_METHODS, check_resample_method, resample_pos_embed

SHIFT_MASK_VALUE = -100.0  # between tokens of different shift regions, as in the Swin reference code
PAD_MASK_VALUE = -1e4  # for padded keys: exp() of it is exactly 0 in float32 and bfloat16
WINDOW_PADDINGS = ("swin", "torchvision", "timm", "masked")


def check_window_padding(padding: str) -> str:
    """`padding` if it is one of WINDOW_PADDINGS, else ValueError naming them."""
    if padding not in WINDOW_PADDINGS:
        raise ValueError(f"window_padding must be one of {WINDOW_PADDINGS}, got {padding!r}")
    return padding


@dataclass(frozen=True)
class WindowGeometry:
    """How one map size is laid out in windows. Built by `window_geometry`; read-only, shared."""

    size: Tuple[int, int]  # (H, W) of the map, unpadded
    window: Tuple[int, int]  # (Mh, Mw) actually used: the configured window, or the map where smaller
    shift: Tuple[int, int]  # cyclic shift (0 where the map is not larger than the window)
    padded_size: Tuple[int, int]  # (Hp, Wp), multiples of the window
    gather: torch.Tensor  # (nW * N,) long: for each window slot, the map token (row-major) it holds; H*W: a zero
    scatter: torch.Tensor  # (H * W,) long: for each map token, its window slot
    mask: Optional[torch.Tensor]  # (nW, N, N) float32 additive mask; None without shift and padding
    relative_position_index: torch.Tensor  # (N * N,) long, into the bias table of the configured window
    key: Tuple  # identifies this geometry in caches
    zero_padding: bool = False  # padded slots hold zero tokens (gather index H*W), attended

    @property
    def num_windows(self) -> int:
        return (self.padded_size[0] // self.window[0]) * (self.padded_size[1] // self.window[1])

    @property
    def window_area(self) -> int:
        return self.window[0] * self.window[1]


def relative_position_index(window: Tuple[int, int], table_window: Tuple[int, int]) -> torch.Tensor:
    """(N, N) long, N = Mh*Mw: row-major index into a `((2*Th-1) * (2*Tw-1), heads)` bias table of the
    offset (dy, dx) between query and key, for a window no larger than the table's window (Th, Tw)."""
    (mh, mw), (th, tw) = window, table_window
    rows, cols = torch.meshgrid(torch.arange(mh), torch.arange(mw), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()  # (N,) each
    dy = rows[:, None] - rows[None, :] + th - 1  # (N, N), in [0, 2*Th-2]
    dx = cols[:, None] - cols[None, :] + tw - 1
    return dy * (2 * tw - 1) + dx


def _regions(length: int, window: int, shift: int) -> torch.Tensor:
    """Shift-region label of each row (or column) of the rolled map: 0, then 1 for the last window
    before the wrapped rows, then 2 for the `shift` rows that wrapped around from the top."""
    label = torch.zeros(length, dtype=torch.long)
    if shift:
        label[length - window:] = 1
        label[length - shift:] = 2
    return label


@functools.lru_cache(maxsize=64)
def window_geometry(
    size: Tuple[int, int],
    window: Tuple[int, int],
    shift: Tuple[int, int],
    device: torch.device,
    padding: str = "timm",
) -> WindowGeometry:
    """The window layout of an `(H, W)` map for a block with this `window` and `shift` (0 or M // 2),
    padded by the rule `padding` (WINDOW_PADDINGS; the module docstring says what each origin does).
    The map is padded right/bottom to a multiple of the window, and the region mask built on the
    padded map, in every rule. Cached: call freely. Raises ValueError for an unknown rule.
    """
    check_window_padding(padding)
    H, W = size
    if padding == "swin":  # one rule for both axes, from the shorter side
        side = min(H, W)
        win = [side, side] if side < min(window) else list(window)
        sft = [0, 0] if side <= min(window) else list(shift)
    elif padding == "torchvision":  # the window stays; an axis it covers (once padded) is not shifted
        win = list(window)
        sft = [0 if m >= math.ceil(n / m) * m else s for n, m, s in zip(size, window, shift)]
    else:  # timm, masked: per axis, a map not larger than the window is one window, unshifted
        win = [n if n <= m else m for n, m in zip(size, window)]
        sft = [0 if n <= m else s for n, m, s in zip(size, window, shift)]
    (mh, mw), (sh, sw) = win, sft
    Hp, Wp = math.ceil(H / mh) * mh, math.ceil(W / mw) * mw
    N, num_windows = mh * mw, (Hp // mh) * (Wp // mw)
    # Tensors built here live in the cache: keep them out of inference mode so autograd can use them.
    with torch.inference_mode(False), torch.no_grad():
        if padding == "timm":  # roll the map, then pad: slot r holds map row (r + s) % H, or padding
            rows = torch.where(torch.arange(Hp) < H, (torch.arange(Hp) + sh) % H, H)
            cols = torch.where(torch.arange(Wp) < W, (torch.arange(Wp) + sw) % W, W)
        else:  # pad, then roll: slot r holds padded row (r + s) % Hp
            rows, cols = (torch.arange(Hp) + sh) % Hp, (torch.arange(Wp) + sw) % Wp
        real = (rows < H)[:, None] & (cols < W)[None, :]  # (Hp, Wp), False on padding
        fill = 0 if padding == "masked" else H * W  # masked padding reads token 0; otherwise a zero token
        source = torch.where(real, rows[:, None] * W + cols[None, :], fill)

        def by_window(t: torch.Tensor) -> torch.Tensor:  # (Hp, Wp) -> (nW, N), windows row-major
            return t.view(Hp // mh, mh, Wp // mw, mw).transpose(1, 2).reshape(num_windows, N)

        gather = by_window(source).flatten()  # (nW * N,)
        real_slots = by_window(real).flatten()
        # each map token's slot; padded slots write to a spare entry H*W, dropped (no data-dependent shapes,
        # so torch.compile traces this without a graph break)
        targets = torch.where(real_slots, gather, H * W)
        scatter = torch.zeros(H * W + 1, dtype=torch.long).scatter_(0, targets, torch.arange(num_windows * N))[:H * W]

        mask = None
        has_padding = (Hp, Wp) != (H, W)
        mask_padding = has_padding and padding == "masked"
        if sh or sw or mask_padding:
            label = by_window(_regions(Hp, mh, sh)[:, None] * 3 + _regions(Wp, mw, sw)[None, :])  # (nW, N)
            mask = torch.where(label[:, :, None] != label[:, None, :], SHIFT_MASK_VALUE, 0.0)  # (nW, N, N)
            if mask_padding:
                padded_keys = ~by_window(real)[:, None, :]  # (nW, 1, N)
                mask = mask + torch.where(padded_keys, PAD_MASK_VALUE, 0.0)
            mask = mask.to(device)
        index = relative_position_index((mh, mw), window).flatten()
    return WindowGeometry(
        size=(H, W), window=(mh, mw), shift=(sh, sw), padded_size=(Hp, Wp), gather=gather.to(device),
        scatter=scatter.to(device), mask=mask, relative_position_index=index.to(device),
        key=(H, W, window, shift, str(device), padding), zero_padding=has_padding and padding != "masked")


def window_partition(x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
    """(B, H, W, C) map -> (B * nW, N, C) windows, rolled and padded as `geometry` says (one gather)."""
    B, H, W, C = x.shape
    x = x.reshape(B, H * W, C)
    if geometry.zero_padding:  # padded slots read the zero token appended at index H*W
        x = F.pad(x, (0, 0, 0, 1))
    x = x.index_select(1, geometry.gather)  # (B, nW * N, C)
    return x.view(B * geometry.num_windows, geometry.window_area, C)


def window_reverse(windows: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
    """(B * nW, N, C) windows -> (B, H, W, C) map: padding dropped, roll undone (one gather)."""
    C = windows.shape[-1]
    H, W = geometry.size
    x = windows.reshape(-1, geometry.num_windows * geometry.window_area, C)  # (B, nW * N, C)
    return x.index_select(1, geometry.scatter).view(-1, H, W, C)


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, plus a learned bias per relative position and head.

    Keys match timm: `qkv`, `proj` and `relative_position_bias_table`, shaped
    `((2*Mh-1) * (2*Mw-1), heads)` for `window_size` (Mh, Mw). Windows smaller than that (small maps)
    use the table's centre. Runs through `F.scaled_dot_product_attention` with the bias and the
    shift/padding mask as one additive mask. Inside `capture_attention` it takes the explicit softmax
    path (`zoo.layers.attention.explicit_attention`) and records `(B, nW, heads, N, N)` weights per call.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: IntOrPair = 7,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.window_size = to_2tuple(window_size, "window_size")
        mh, mw = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * mh - 1) * (2 * mw - 1), num_heads))
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_sink = None  # set by capture_attention()
        self._bias_cache: Dict[Tuple, torch.Tensor] = {}

    def attention_bias(self, geometry: WindowGeometry, dtype: torch.dtype) -> torch.Tensor:
        """Relative-position bias plus the geometry's mask, `(nW, heads, N, N)` (`(1, heads, N, N)` when
        there is no mask), in `dtype`. Cached while no gradient flows to the table (inference), and
        rebuilt whenever the table changes (optimizer step, load_state_dict, .to())."""
        table = self.relative_position_bias_table
        # Inference tensors (a model built under inference_mode) keep no version counter: no caching; nor
        # under torch.compile, which builds the bias inside its graph.
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and table.requires_grad) or table.is_inference():
            return self._build_bias(geometry, dtype)
        key = (geometry.key, dtype, table.dtype, table.data_ptr(), table._version)
        bias = self._bias_cache.get(key)
        if bias is None:
            # A cached tensor must be an ordinary one (usable by autograd later) that holds no graph.
            with torch.inference_mode(False), torch.no_grad():
                bias = self._build_bias(geometry, dtype)
            if len(self._bias_cache) >= 8:  # a handful of input sizes at a time; drop old ones
                self._bias_cache.clear()
            self._bias_cache[key] = bias
        return bias

    def _build_bias(self, geometry: WindowGeometry, dtype: torch.dtype) -> torch.Tensor:
        N = geometry.window_area
        table = self.relative_position_bias_table
        bias = table[geometry.relative_position_index].view(N, N, -1).permute(2, 0, 1)  # (heads, N, N)
        bias = bias.unsqueeze(0) if geometry.mask is None else bias + geometry.mask.unsqueeze(1)
        return bias.to(dtype).contiguous()

    def _apply(self, fn, *args, **kwargs):  # .to() / .half() / .cuda(): cached biases are stale
        self._bias_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
        """(B * nW, N, C) windows laid out by `geometry` (see `window_partition`) -> (B * nW, N, C)."""
        BW, N, C = x.shape
        q, k, v = self.qkv(x).view(BW, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        mask = self.attention_bias(geometry, q.dtype)  # (nW or 1, heads, N, N)
        dropout_p = self.attn_drop if self.training else 0.0
        # bf16/fp16 on a CPU with that dtype in hardware (fast_paths.py): the explicit path, the mask added
        # in place per window and broadcast over the batch; elsewhere SDPA.
        if self.attn_sink is None and not _prefer_explicit(q) and not torch.compiler.is_exporting():
            if mask.shape[0] > 1:  # one mask per window: the same for every image of the batch
                mask = mask.repeat(BW // mask.shape[0], 1, 1, 1)  # (B * nW, heads, N, N)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:  # explicit softmax: per window, the mask broadcasts over the batch
            q, k, v = (t.unflatten(0, (-1, geometry.num_windows)) for t in (q, k, v))  # (B, nW, ...)
            x = explicit_attention(q, k, v, mask, dropout_p, self.attn_sink, self.scale).flatten(0, 1)  # (B*nW, ...)
        x = x.transpose(1, 2).flatten(2)  # (B * nW, N, C)
        return self.proj_drop(self.proj(x))


def resize_relative_position_bias_table(
    table: torch.Tensor,
    new_window: IntOrPair,
    old_window: Optional[IntOrPair] = None,
    method: str = "geometric",
) -> torch.Tensor:
    """Resample a `((2*Mh-1) * (2*Mw-1), heads)` relative-position bias table to another window size.

    The table is a `(2*Mh-1) x (2*Mw-1)` grid of offsets with one channel per head. `method`: "geometric"
    (default: BEiT's rule, as timm resizes Swin tables) or "bicubic" (the Swin repository's loader; also
    "bicubic_antialias"), computed in float32 and returned in the input dtype. `old_window` defaults
    to the square window the table's length implies.
    """
    new_window = to_2tuple(new_window, "new_window")
    check_resample_method(method, BIAS_TABLE_RESAMPLE_METHODS)
    if table.ndim != 2:
        raise ValueError(f"expected a (positions, heads) bias table, got shape {tuple(table.shape)}")
    if old_window is None:
        side = math.isqrt(table.shape[0])
        if side * side != table.shape[0] or side % 2 == 0:
            raise ValueError(f"a bias table of {table.shape[0]} rows is not (2M-1)^2 for a square window M; "
                             f"pass old_window=(Mh, Mw)")
        old_window = ((side + 1) // 2, (side + 1) // 2)
    old_window = to_2tuple(old_window, "old_window")
    old_grid = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    new_grid = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if old_grid[0] * old_grid[1] != table.shape[0]:
        raise ValueError(f"a bias table for window {old_window} has {old_grid[0] * old_grid[1]} rows, "
                         f"got {table.shape[0]}")
    if new_grid == old_grid:
        return table
    return resample_pos_embed(table.unsqueeze(0), new_grid, old_grid, method=method).squeeze(0)
