"""A Linear layer whose CPU forward can run on oneDNN, optionally with GELU applied in the same pass.

PyTorch sends float32 `F.linear` on the CPU to MKL's sgemm. oneDNN's kernel, which PyTorch ships
for its compiler as `torch.ops.mkldnn._linear_pointwise`, computes the same product (equal to
`F.linear` up to float rounding), adds the bias and the exact GELU inside the GEMM, and is faster
on some CPUs only. `zoo/layers/fast_paths.py` decides per machine (AVX-512 for float32, native bf16
for bf16 autocast; `ZOO_FAST_PATHS` / `set_fast_paths` override it); where it says no, this is
plain `F.linear` (then `F.gelu`). Measurements: docs/benchmarks.md.

The op has no autograd formula. Without gradients (`torch.no_grad`, `torch.inference_mode`, or
frozen weights and inputs) it runs as is, for float32 and bfloat16. With gradients in float32 (no
autocast), `_OneDNNLinear` supplies the backward from the same kernel: grad_input = grad @ W and
grad_weight = grad^T @ x as two more oneDNN calls. Under bf16 autocast with gradients, and on other
devices and dtypes, `F.linear` is used.

Under CPU bf16 autocast, `F.linear` casts the float32 weight to bfloat16 on every call. On the bf16
fast path `Linear` instead keeps one bfloat16 copy, prepacked in oneDNN's blocked layout, made on
first use and remade whenever the weight changes (optimizer step, load_state_dict, .to()). It costs
memory: half the size of the float32 weight, for as long as the module lives (`drop_cached_weights()`).
bf16 / fp16 on a CPU without hardware support for it warns once (`SlowPrecisionWarning`).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .fast_paths import onednn_linear_ops, use_fast_path, warn_if_emulated

_ACTIVATIONS = (None, "gelu")
_LOW_PRECISION = (torch.bfloat16, torch.float16)

_op, _reorder = onednn_linear_ops()  # None where this build lacks them
_ATTRS = {None: ("none", [], ""), "gelu": ("gelu", [], "none")}  # oneDNN post-op: exact (erf) GELU


def _needs_grad(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """The oneDNN op, forward only (no autograd), applies."""
    if _op is None or x.device.type != "cpu" or x.layout != torch.strided:
        return False
    if _needs_grad(x, weight, bias):
        return False  # no backward for the oneDNN op (see _use_onednn_autograd)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else weight.dtype
    return ((dtype == torch.float32 and use_fast_path("linear_fp32"))
            or (dtype == torch.bfloat16 and use_fast_path("linear_bf16")))


def _use_onednn_autograd(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """`_OneDNNLinear` (oneDNN forward and backward) applies: float32 training on the CPU."""
    return (_op is not None and x.device.type == "cpu" and x.layout == torch.strided
            and not torch.is_autocast_enabled("cpu") and _needs_grad(x, weight, bias)
            and x.dtype == weight.dtype == torch.float32 and (bias is None or bias.dtype == torch.float32)
            and use_fast_path("linear_fp32"))


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with oneDNN in the forward and in both backward products (float32, CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        x = x.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _op(x, weight, bias, "none", [], "")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).contiguous()  # (M, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # (M, out) @ (out, in): the op computes a @ b^T, b = W^T
            grad_x = _op(g, weight.t().contiguous(), None, "none", [], "").view(x.shape)
        if ctx.needs_input_grad[1]:  # (out, M) @ (M, in)
            grad_w = _op(g.t().contiguous(), x.reshape(-1, x.shape[-1]).t().contiguous(), None, "none", [], "")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, then exact (erf) GELU if `activation="gelu"`; (..., in) -> (..., out).

    Where the fast path runs (see the module docstring), one oneDNN call; under CPU autocast the
    operands are cast to the autocast dtype first, as autocast does for `F.linear`.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if _use_onednn_autograd(x, weight, bias):
        out = _OneDNNLinear.apply(x, weight, bias)
        return F.gelu(out) if activation == "gelu" else out
    if _use_onednn(x, weight, bias):
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        if x.dtype == weight.dtype and (bias is None or bias.dtype == weight.dtype):
            return _op(x, weight, bias, *_ATTRS[activation])
    out = F.linear(x, weight, bias)
    return F.gelu(out) if activation == "gelu" else out


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, keys and init) running through `linear` above.

    `forward(x, activation="gelu")` applies exact GELU in the same call (Mlp uses this for `fc1`).
    On the bf16 fast path it uses a cached, prepacked low-precision copy of the weight (module docstring).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cached_weights: Dict[Tuple, Tuple[torch.Tensor, Optional[torch.Tensor]]] = {}

    def forward(self, x: torch.Tensor, activation: Optional[str] = None) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.compiler.is_compiling():  # the compiler picks its own kernels
            autocast = torch.is_autocast_enabled("cpu")
            dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
            if dtype in _LOW_PRECISION:
                warn_if_emulated(dtype)  # once per process, where this CPU emulates the dtype
            if (autocast and self.weight.dtype == torch.float32 and not self.weight.is_inference()
                    and activation in _ACTIVATIONS and _use_onednn(x, self.weight, self.bias)):
                weight, bias = self._low_precision_weights(dtype)
                return _op(x.to(dtype), weight, bias, *_ATTRS[activation])
        return linear(x, self.weight, self.bias, activation)

    def _low_precision_weights(self, dtype: torch.dtype) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        w, b = self.weight, self.bias
        key = (dtype, w.data_ptr(), w._version) + (() if b is None else (b.data_ptr(), b._version))
        cached = self._cached_weights.get(key)
        if cached is None:
            with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, no graph
                weight = _reorder(w.to(dtype), None)  # oneDNN's blocked layout
                cached = (weight, None if b is None else b.to(dtype))
            self._cached_weights.clear()  # one copy per module: the current weights
            self._cached_weights[key] = cached
        return cached

    def drop_cached_weights(self) -> None:
        """Free the low-precision copy of the weight (it is rebuilt on the next autocast call)."""
        self._cached_weights.clear()

    def _apply(self, fn, *args, **kwargs):  # .to() / .half() / .cuda(): the copy is stale
        self._cached_weights.clear()
        return super()._apply(fn, *args, **kwargs)
