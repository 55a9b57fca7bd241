"""Multi-head self-attention with a fused qkv projection, run through `F.scaled_dot_product_attention`.

Attention weights are never materialised on the normal path. To look at them (visualisation,
debugging), wrap a forward pass in `capture_attention(model)`: only while it is active do attention
layers take the explicit softmax path and record their weights.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .fast_paths import use_fast_path
from .linear import Linear, linear
from .norm import LayerNorm
from .rope import apply_rope

Rope = Tuple[torch.Tensor, torch.Tensor]  # (sin, cos), each (patches, head_dim): see rope.py


class Attention(nn.Module):
    """Keys: `qkv` (one Linear for q, k and v), optional `q_norm` / `k_norm` (qk-norm), `proj`.

    `qkv_bias`: True -> `qkv.bias`; "qv" -> `q_bias` and `v_bias` parameters with the key bias held at
    zero (BEiT / EVA / DINOv3's layout, timm's `EvaAttention` keys; without RoPE a key bias adds the same
    amount to every score of a query, which the softmax removes; DINOv3 masks it). The projections are
    `zoo.layers.Linear` (oneDNN during CPU inference, see linear.py)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: Union[bool, str] = False,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = LayerNorm,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        if qkv_bias not in (True, False, "qv"):
            raise ValueError(f"qkv_bias must be True, False or 'qv' (query and value biases only), got {qkv_bias!r}")
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias is True)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias == "qv" else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias == "qv" else None
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_sink: Optional[List[torch.Tensor]] = None  # set by capture_attention()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, heads, L, head_dim)
        return t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _qkv_bias(self) -> Optional[torch.Tensor]:
        """The (3D,) bias of the fused projection: `qkv.bias`, or [q_bias, 0, v_bias], or None."""
        if self.q_bias is None:
            return self.qkv.bias
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                rope: Optional[Rope] = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D). `attn_mask` is added to the attention logits (bool: True = attend),
        as in SDPA. `rope` = (sin, cos) rotates the queries and keys of the last tokens (the patches;
        see `zoo.layers.rope.apply_rope`)."""
        B, N, D = x.shape
        bias = self._qkv_bias()
        qkv = self.qkv(x) if bias is self.qkv.bias else linear(x, self.qkv.weight, bias)
        q, k, v = qkv.view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self._attend(q, k, v, attn_mask, rope, rotate_queries=True)

    def _forward_first_rows(self, x: torch.Tensor, rows: int, attn_mask: Optional[torch.Tensor] = None,
                            rope: Optional[Rope] = None) -> torch.Tensor:
        """(B, N, D) -> (B, rows, D): `forward(x)[:, :rows]` with queries for those tokens only (keys and
        values for all): same weights, fewer FLOPs. For a model whose head reads only the first tokens;
        with `rope` those must be prefix tokens (not rotated)."""
        B, N, D = x.shape
        w, b = self.qkv.weight, self._qkv_bias()
        if rope is not None and rows > N - rope[0].shape[0]:
            raise ValueError(f"first {rows} rows include rotated patch tokens; only prefix tokens can be asked for")
        q = self._heads(linear(x[:, :rows], w[:D], None if b is None else b[:D]))
        k, v = linear(x, w[D:], None if b is None else b[D:]).view(
            B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self._attend(q, k, v, attn_mask, rope, rotate_queries=False)  # the rows are prefix tokens

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor],
                rope: Optional[Rope] = None, rotate_queries: bool = True) -> torch.Tensor:
        """(B, heads, L, head_dim) queries, (B, heads, N, head_dim) keys and values -> (B, L, D) projected.
        With `rope` the keys' patch tokens are rotated, and the queries' with `rotate_queries`."""
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = apply_rope(q, rope) if rotate_queries else q
            k = apply_rope(k, rope)

        dropout_p = self.attn_drop if self.training else 0.0
        if self.attn_sink is None and not _prefer_explicit(q):
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        else:
            x = explicit_attention(q, k, v, attn_mask, dropout_p, self.attn_sink, self.scale)
        x = x.transpose(1, 2).flatten(2)  # (B, Lq, D)
        return self.proj_drop(self.proj(x))


def _prefer_explicit(q: torch.Tensor) -> bool:
    """bf16/fp16 on a CPU whose hardware has that dtype: float32 scores and softmax and a low-precision
    GEMM for the values, instead of PyTorch's CPU SDPA kernel, which computes all of it in float32 (the `attention_bf16` /
    `attention_fp16` fast paths of `fast_paths.py`; measured in docs/benchmarks.md)."""
    if q.device.type != "cpu":
        return False
    if q.dtype == torch.bfloat16:
        return use_fast_path("attention_bf16")
    return q.dtype == torch.float16 and use_fast_path("attention_fp16")


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    sink: Optional[List[torch.Tensor]] = None,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """softmax(scale * q k^T + mask) v with the weights materialised, as `F.scaled_dot_product_attention`
    computes it (`scale` defaults to head_dim**-0.5). For bf16 / fp16 inputs the scores, the scaling,
    the mask and the softmax are in float32, as in PyTorch's CPU kernel (`_scores`).

    (B, ..., Lq, hd), (B, ..., N, hd) x2 -> (B, ..., Lq, hd); the mask broadcasts against the scores
    (B, ..., Lq, N). The weights are appended to `sink` when one is given (see capture_attention).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if sink is None and _prefer_explicit(q) and not (torch.is_grad_enabled() and
                                                     (q.requires_grad or k.requires_grad or v.requires_grad)):
        return _chunked_attention_fp32_softmax(q, k, v, attn_mask, dropout_p, scale)
    attn = _scores(q, k.transpose(-2, -1), scale)  # (B, heads, Lq, N), float32 for bf16 / fp16 inputs
    if attn_mask is not None:  # in place: the scores are a fresh tensor
        if attn_mask.dtype == torch.bool:
            attn.masked_fill_(~attn_mask, float("-inf"))
        else:
            attn.add_(attn_mask)
    attn = attn.softmax(dim=-1)
    if sink is not None:
        sink.append(attn.detach().to(q.dtype))
    if dropout_p:
        attn = F.dropout(attn, dropout_p)
    return attn.to(v.dtype) @ v


def _scores(q: torch.Tensor, k_t: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * (q @ k^T) with the numerics of PyTorch's CPU attention kernel: for bf16 / fp16 inputs the
    product is formed and scaled in float32, never rounded back to the low precision (bf16 scores would
    carry errors of |score| / 512, enough to reorder large logits; fp16 ones overflow past 65504 with
    large-norm tokens). Measured: still faster than SDPA's kernel (docs/benchmarks.md)."""
    if q.dtype in (torch.float16, torch.bfloat16):
        return torch.matmul(q.float(), k_t.float()).mul_(scale)
    return torch.matmul(q, k_t).mul_(scale)


# float32 scores per chunk: small enough to stay in cache and off the allocator's mmap path
_CHUNK_BYTES = 4 << 20


def _chunked_attention_fp32_softmax(q, k, v, attn_mask, dropout_p, scale):
    """Inference path for bf16/fp16 on a CPU with that dtype in hardware: the scores, mask add and
    softmax in float32 (`_scores`; PyTorch's CPU softmax is also faster in float32 than in bf16), the
    weighted sum of the values in low precision, in chunks of the leading dimension and, for long
    sequences, of the queries, so the float32 scores stay small (at most `_CHUNK_BYTES`)."""
    lq, n = q.shape[-2], k.shape[-2]
    per_query = q[0].numel() // q.shape[-1] // lq * n * 4  # bytes of float32 scores per query, one dim-0 index
    per_row = per_query * lq
    rows = max(1, _CHUNK_BYTES // max(per_row, 1))
    queries = lq if per_row <= _CHUNK_BYTES else max(1, _CHUNK_BYTES // max(per_query, 1))
    out = q.new_empty(q.shape[:-1] + v.shape[-1:])
    per_sample_mask = attn_mask is not None and attn_mask.dim() == q.dim() and attn_mask.shape[0] > 1
    for i in range(0, q.shape[0], rows):
        j = min(i + rows, q.shape[0])
        k_t, v_i = k[i:j].transpose(-2, -1), v[i:j]
        mask_i = attn_mask[i:j] if per_sample_mask else attn_mask
        for s in range(0, lq, queries):
            e = min(s + queries, lq)
            attn = _scores(q[i:j, ..., s:e, :], k_t, scale)  # (rows, ..., queries, N), float32
            if mask_i is not None:
                mask = mask_i[..., s:e, :] if mask_i.dim() >= 2 and mask_i.shape[-2] > 1 else mask_i
                if mask.dtype == torch.bool:
                    attn.masked_fill_(~mask, float("-inf"))
                else:
                    attn.add_(mask)
            attn = attn.softmax(dim=-1)
            if dropout_p:
                attn = F.dropout(attn, dropout_p)
            if queries == lq:
                torch.matmul(attn.to(v.dtype), v_i, out=out[i:j])
            else:
                out[i:j, ..., s:e, :] = torch.matmul(attn.to(v.dtype), v_i)
    return out


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[List[torch.Tensor]]:
    """Record the attention weights of every attention layer in `model` during the block.

    Yields a list that fills, in execution order, with one `(B, heads, queries, keys)` tensor per
    attention call. Outside the block the layers are back on the fused path.

        with capture_attention(model) as maps:
            model.forward_features(images)
        cls_attention = maps[-1][:, :, 0, model.num_prefix_tokens:]  # (B, heads, N)
    """
    layers = [m for m in model.modules() if hasattr(m, "attn_sink")]
    sink: List[torch.Tensor] = []
    for layer in layers:
        layer.attn_sink = sink
    try:
        yield sink
    finally:
        for layer in layers:
            layer.attn_sink = None
