"""Normalisation layers."""
from __future__ import annotations

from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm with eps=1e-6, the ViT / DeiT / DINOv2 default (PyTorch's default is 1e-5)."""

    def __init__(self, normalized_shape, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, each pixel on its own (detectron2's and timm's
    LayerNorm2d, ConvNeXt's channels-first norm); eps 1e-6."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x):  # (B, C, H, W) -> (B, C, H, W)
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
