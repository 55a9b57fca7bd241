"""What the families' feature APIs share: choosing the blocks or stages asked for, DINOv2's
`get_intermediate_layers` and timm's `forward_intermediates` / `prune_intermediate_layers` over a
ViT's blocks, and the `features_only` backbone (`FeatureBackbone`) over any family that has them."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..helpers import encoder_of
from ..layers import LayerNorm2d

Indices = Optional[Union[int, Sequence[int]]]


def take_indices(count: int, indices: Indices, unit: str = "block", arg: str = "indices") -> List[int]:
    """Sorted, de-duplicated indices into `count` blocks (or stages): None -> all of them; an int n ->
    the last n; a sequence -> those indices (negative ones count from the end). Raises ValueError
    naming `arg` and what this model has."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int):
        if not 1 <= indices <= count:
            raise ValueError(f"{arg}={indices}: this model has {count} {unit}s; ask for the last 1 to {count}, "
                             f"or pass a list of {unit} indices")
        return list(range(count - indices, count))
    take = sorted({i + count if i < 0 else i for i in indices})
    if not take or take[0] < 0 or take[-1] >= count:
        raise ValueError(f"{unit} indices {list(indices)} out of range for {count} {unit}s")
    return take


def intermediate_layers(model: nn.Module, x: torch.Tensor, n: Union[int, Sequence[int]] = 1, reshape: bool = False,
                        return_class_token: bool = False, norm: bool = True) -> Tuple:
    """DINOv2's `get_intermediate_layers` for a ViT-style `model` (`blocks`, `norm`, `_embed`, `_block`,
    `patch_embed`, `num_prefix_tokens`, `has_class_token`; `VisionTransformer.get_intermediate_layers`):
    outputs of the last `n` blocks (int) or of the given block indices. Each output is the patch tokens
    `(B, N, D)` (prefix tokens removed), or `(B, D, h, w)` with `reshape=True`; with
    `return_class_token=True` each item is `(patches, class_token (B, D))`. `norm=True` applies the final
    norm first. Blocks after the last one asked for are not run."""
    take = take_indices(len(model.blocks), n, "block", "n")
    if return_class_token and not model.has_class_token:
        raise ValueError("return_class_token=True but this model has no class token")
    B = x.shape[0]
    grid = model.patch_embed.feat_size(tuple(x.shape[-2:])) if x.ndim == 4 else None
    rope = model._rope(x)
    x = model._embed(x)
    outputs = []
    for i, block in enumerate(model.blocks[: take[-1] + 1]):
        x = model._block(block, x, rope=rope)
        if i in take:
            outputs.append(model.norm(x) if norm else x)
    class_tokens = [out[:, 0] for out in outputs]
    outputs = [out[:, model.num_prefix_tokens:] for out in outputs]
    if reshape:
        outputs = [out.reshape(B, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous() for out in outputs]
    if return_class_token:
        return tuple(zip(outputs, class_tokens))
    return tuple(outputs)


def vit_intermediates(model: nn.Module, x: torch.Tensor, indices: Indices = None, return_prefix_tokens: bool = False,
                      norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                      intermediates_only: bool = False):
    """timm's `forward_intermediates` for a ViT-style `model`: the outputs of the blocks `indices` asks
    for (None: all; an int n: the last n; a list), each `(B, D, h, w)` (NCHW) or `(B, N, D)` (NLC) patch
    tokens, final-normed with `norm`, paired with their `(B, prefix, D)` prefix tokens with
    `return_prefix_tokens`. Returns `(final normed tokens (B, prefix + N, D), intermediates)`, or only
    the intermediates with `intermediates_only`; `stop_early` runs no block after the last one asked
    for. Raises ValueError for another output_fmt or indices out of range."""
    if output_fmt not in ("NCHW", "NLC"):
        raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
    take = take_indices(len(model.blocks), indices)
    B = x.shape[0]
    grid = model.patch_embed.feat_size(tuple(x.shape[-2:]))
    rope = model._rope(x)
    x = model._embed(x)
    outputs = []
    for i, block in enumerate(model.blocks[: take[-1] + 1] if stop_early or intermediates_only else model.blocks):
        x = model._block(block, x, rope=rope)
        if i in take:
            outputs.append(model.norm(x) if norm else x)
    prefix = [out[:, :model.num_prefix_tokens] for out in outputs]
    outputs = [out[:, model.num_prefix_tokens:] for out in outputs]
    if output_fmt == "NCHW":
        outputs = [out.reshape(B, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous() for out in outputs]
    if return_prefix_tokens and model.num_prefix_tokens:
        outputs = list(zip(outputs, prefix))
    return outputs if intermediates_only else (model.norm(x), outputs)


def prune_vit_layers(model: nn.Module, indices: Indices = 1, prune_norm: bool = False, prune_head: bool = True) -> List[int]:
    """timm's `prune_intermediate_layers` for a ViT-style `model`: drop the blocks after the last of
    `indices` (and with `prune_norm` the final norm, with `prune_head` the head and its norm); returns
    the block indices kept, for `forward_intermediates`."""
    take = take_indices(len(model.blocks), indices)
    model.blocks = model.blocks[: take[-1] + 1]
    if prune_norm:
        model.norm = nn.Identity()
    if prune_head:
        model.fc_norm = nn.Identity()
        model.reset_classifier(0, "")
    return take


class FeatureInfo:
    """What each output of a feature backbone is, with timm's accessors: `channels()`, `reduction()`
    (input pixels per map pixel) and `module_name()`, each a list in output order (or one item with an
    index). Built from the model's `feature_info` entries (dicts with num_chs, reduction, module)."""

    def __init__(self, entries: Sequence[dict]) -> None:
        self.entries = [dict(e) for e in entries]

    def _get(self, key: str, idx: Optional[int]):
        return self.entries[idx][key] if idx is not None else [e[key] for e in self.entries]

    def channels(self, idx: Optional[int] = None):
        """Channels C_i of each output map (or of output `idx`)."""
        return self._get("num_chs", idx)

    def reduction(self, idx: Optional[int] = None):
        """Stride of each output map in input pixels (or of output `idx`): 16 for a ViT-B/16 block."""
        return self._get("reduction", idx)

    def module_name(self, idx: Optional[int] = None):
        """The module each output comes from (`blocks.11`, `layers.2`, `pyramid.0`), or output `idx`'s."""
        return self._get("module", idx)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.entries})"


class FeatureBackbone(nn.Module):
    """A model as a dense-feature backbone (`zoo.create(name, features_only=True, out_indices=...)`,
    as timm's `features_only`): `forward(x)` returns a list of NCHW maps `(B, C_i, H / r_i, W / r_i)`,
    one per index of `out_indices` (ViT family: blocks, all of width D at the patch stride; Swin:
    stages, strides 4 to 32), through the model's `forward_intermediates`. Blocks or stages after the
    last one asked for, and the head, are removed (`prune_intermediate_layers`); with `feature_norm=True`
    the final norm is applied to every map (ViT) or the last stage's (Swin). `feature_pyramid=C` (ViT
    family) turns one block's map (default the last) into ViTDet's four-scale pyramid of C channels
    (`SimpleFeaturePyramid`, new weights: keys `pyramid.*`). `feature_info` describes the
    outputs (FeatureInfo); an MAE model gives its encoder's. The model's keys sit under `model.` (timm's
    FeatureGetterNet); `zoo_config` is the model's (its input config, for `zoo.transforms_for`); the
    model's `set_grad_checkpointing` works through it. Raises ValueError for indices out of range and
    TypeError for a model without `forward_intermediates`."""

    def __init__(self, model: nn.Module, out_indices: Indices = None, feature_norm: bool = False,
                 feature_pyramid: Optional[int] = None) -> None:
        super().__init__()
        self.zoo_config = getattr(model, "zoo_config", None)
        model = encoder_of(model)  # an MAE: its encoder, on whole images
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "prune_intermediate_layers"):
            raise TypeError(f"{type(model).__name__} has no forward_intermediates: it cannot be a feature backbone")
        if feature_pyramid and not hasattr(model, "blocks"):
            raise ValueError("feature_pyramid= builds ViTDet's pyramid from a plain ViT's last map; "
                             f"{type(model).__name__} has stages of its own (leave it out)")
        if out_indices is None:  # timm's defaults: the last 3 blocks of a ViT, every stage of a hierarchy
            out_indices = (1 if feature_pyramid else 3) if hasattr(model, "blocks") else len(model.layers)
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not feature_norm, prune_head=True)
        if feature_pyramid and len(self.out_indices) != 1:
            raise ValueError(f"feature_pyramid= reads one block's map; out_indices={out_indices} names "
                             f"{len(self.out_indices)}")
        self.feature_norm = feature_norm
        self.model = model
        self.feature_info = FeatureInfo([_unit_info(model, i) for i in self.out_indices])
        self.pyramid = None
        if feature_pyramid:
            self.pyramid = SimpleFeaturePyramid(model.embed_dim, feature_pyramid)
            stride = model.patch_embed.patch_size[0]
            strides = [stride / s for s in SimpleFeaturePyramid.SCALES]  # 4, 8, 16, 32 for patch 16
            self.feature_info = FeatureInfo([dict(num_chs=feature_pyramid, reduction=int(r) if r == int(r) else r,
                                                  module=f"pyramid.{i}") for i, r in enumerate(strides)])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass (the model's own switch)."""
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, C, H, W) images -> [(B, C_i, h_i, w_i)] maps, one per `out_indices`."""
        maps = self.model.forward_intermediates(x, self.out_indices, norm=self.feature_norm, output_fmt="NCHW",
                                                intermediates_only=True)
        return maps if self.pyramid is None else self.pyramid(maps[-1])


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al. 2022, "Exploring Plain Vision Transformer Backbones for
    Object Detection"): from one plain-ViT map (B, D, h, w) at the patch stride s, maps at strides s/4,
    s/2, s and 2s, each `out_channels` wide: two 2x2 transposed convolutions (LayerNorm2d and GELU
    between) for s/4, one for s/2, the map itself for s, 2x2 max pooling for 2s; then per scale a 1x1
    convolution, LayerNorm2d, a 3x3 convolution and LayerNorm2d. Freshly initialised: a detection or
    segmentation head trains it. Returns [(B, C, 4h, 4w), (B, C, 2h, 2w), (B, C, h, w), (B, C, h/2, w/2)]."""

    SCALES = (4.0, 2.0, 1.0, 0.5)

    def __init__(self, dim: int, out_channels: int = 256) -> None:
        super().__init__()
        self.scales = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)),
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2, stride=2),
        ])
        widths = (dim // 4, dim // 2, dim, dim)
        self.outputs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(w, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                          nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels))
            for w in widths])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, D, h, w) -> four (B, C, h_i, w_i) maps, finest first."""
        return [out(scale(x)) for scale, out in zip(self.scales, self.outputs)]


def _unit_info(model: nn.Module, index: int) -> dict:
    """feature_info entry of block / stage `index`: from the model's list (Swin) or its patch size (ViT)."""
    listed = getattr(model, "feature_info", None)
    if isinstance(listed, list) and index < len(listed):
        return listed[index]
    return dict(num_chs=model.embed_dim, reduction=model.patch_embed.patch_size[0], module=f"blocks.{index}")
