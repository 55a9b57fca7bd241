"""Normalisation layers."""
from __future__ import annotations

from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm with eps=1e-6, the ViT / DeiT / DINOv2 default (PyTorch's default is 1e-5)."""

    def __init__(self, normalized_shape, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)
