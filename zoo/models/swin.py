"""Swin Transformer (Liu et al. 2021): a hierarchy of stages of shifted-window attention.

A 4x4 patch embedding gives a `(B, H/4, W/4, C)` map. Four stages follow; stages 2-4 start by merging
2x2 tokens (half the resolution, twice the width). Inside a stage, blocks alternate between attention
in fixed windows of M x M tokens and in windows shifted by M // 2, so information crosses window
borders. A final LayerNorm and global average pooling feed the classifier `head.fc`.

Any input size works: pixels right/bottom of the last whole patch are ignored, as timm and torchvision
do (or, with `dynamic_img_crop=False`, the image is padded to whole patches, as transformers does),
maps that are not
a multiple of the window are padded by the rule of the implementation the weights came from
(`window_padding`: "timm" by default, "swin" for the Swin repository and transformers, "torchvision",
or zoo's "masked"), and odd maps are padded before merging.
Stage maps for an `H x W` image are `h x w` with h = floor(H / 4) (ceil(H / 4) when padding the image)
at stride 4, then ceil(h / 2^i) at strides 8, 16, 32. Window
layouts and masks are built once per size and cached (`zoo.layers.window_attention`).

State-dict keys are timm's (`patch_embed.{proj,norm}`, `layers.i.downsample.{norm,reduction}` for
i >= 1, `layers.i.blocks.j.{norm1,attn.{qkv,proj,relative_position_bias_table},norm2,mlp.fc1,mlp.fc2}`,
`norm`, `head.fc`), so timm's Swin weights load with strict=True. `swin_checkpoints.py` fits a
checkpoint to a model of another window size and reads the other origins' layouts.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import (
    DropPath, LayerNorm, Linear, Mlp, PatchEmbed, PatchMerging, WindowAttention, to_2tuple, window_geometry,
    window_partition, window_reverse)
from ..layers.pos_embed import BIAS_TABLE_RESAMPLE_METHODS, check_resample_method
from ..layers.window_attention import check_window_padding
from ..specs import check_blocks
from .features import take_indices

GLOBAL_POOLS = ("avg", "max", "")
SwinNorm = partial(LayerNorm, eps=1e-5)  # Swin's LayerNorms use PyTorch's default eps, not ViT's 1e-6


class SwinTransformerBlock(nn.Module):
    """Pre-norm block: `x + attn(norm1(x))` in (shifted) windows, then `x + mlp(norm2(x))`, on a map.

    `window_size` is the window the block's bias table covers; `shift` makes it a shifted-window
    block (by half the window). `window_padding` is the rule for maps that are not a multiple of the
    window (`zoo.layers.window_attention.WINDOW_PADDINGS`: "swin", "torchvision", "timm" or "masked").
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Tuple[int, int] = (7, 7),
        shift: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        window_padding: str = "timm",
    ) -> None:
        super().__init__()
        self.window_size = to_2tuple(window_size, "window_size")
        self.window_padding = check_window_padding(window_padding)
        self.shift_size = (self.window_size[0] // 2, self.window_size[1] // 2) if shift else (0, 0)
        self.norm1 = SwinNorm(dim)
        self.attn = WindowAttention(dim, num_heads, self.window_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                    proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = SwinNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        _, H, W, _ = x.shape
        # eager runs read the geometry cache; the compiler traces the (pure) function into its graph instead
        layout = window_geometry.__wrapped__ if torch.compiler.is_compiling() else window_geometry
        geometry = layout((H, W), self.window_size, self.shift_size, x.device, self.window_padding)
        windows = window_partition(self.norm1(x), geometry)  # (B * nW, N, C)
        x = x + self.drop_path1(window_reverse(self.attn(windows, geometry), geometry))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SwinTransformerStage(nn.Module):
    """Optional patch merging (`downsample`), then `depth` blocks alternating plain / shifted windows."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        depth: int,
        num_heads: int,
        window_size: Tuple[int, int],
        downsample: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
        window_padding: str = "timm",
    ) -> None:
        super().__init__()
        if not downsample and dim != out_dim:
            raise ValueError(f"a stage without patch merging keeps its width: dim {dim} != out_dim {out_dim}")
        self.grad_checkpointing = False
        self.downsample = PatchMerging(dim, out_dim, norm_layer=SwinNorm) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(out_dim, num_heads, window_size, shift=i % 2 == 1, mlp_ratio=mlp_ratio,
                                 qkv_bias=qkv_bias, proj_drop=proj_drop, attn_drop=attn_drop,
                                 drop_path=drop_path[i] if drop_path else 0.0, window_padding=window_padding)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H', W', out_dim)
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class ClassifierHead(nn.Module):
    """Global pooling over the map, dropout, then `fc` (key `head.fc` as in timm)."""

    def __init__(self, in_features: int, num_classes: int, global_pool: str = "avg", drop_rate: float = 0.0):
        super().__init__()
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
        self.global_pool = global_pool
        self.drop = nn.Dropout(drop_rate)
        self.fc = Linear(in_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, H, W, C) -> (B, num_classes); with global_pool='' -> (B, H, W, num_classes)."""
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))  # (B, C)
        elif self.global_pool == "max":
            x = x.amax(dim=(1, 2))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class SwinTransformer(nn.Module):
    """Swin Transformer (v1).

    Args:
        img_size: the size the model is built for, int or (height, width). Any input size runs; this
            one only fixes each stage's window where a stage map is smaller than `window_size` at this
            size (the window shrinks to the map there, as in timm, and so does its bias table).
        patch_size: patch side of the embedding (4).
        in_chans: input channels.
        num_classes: classifier outputs; 0 for a backbone without head (`forward` returns features).
        global_pool: 'avg' (default), 'max', or '' (no pooling: per-position logits).
        embed_dim: width of stage 1; stage i has `embed_dim * 2**i`.
        depths, num_heads: blocks and attention heads per stage.
        window_size: window side M (int or (Mh, Mw)); shifted blocks shift by M // 2.
        mlp_ratio, qkv_bias: MLP expansion; bias in the qkv projection.
        drop_rate: head dropout.  proj_drop_rate, attn_drop_rate: other dropouts.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value (timm's default 0.1).
        bias_table_resample: how a checkpoint's bias tables are resized for another window: "geometric"
            (timm's, the default) or "bicubic" (the Swin repository's loader). Loading sets the origin's.
        window_padding: the rule for maps that are not a multiple of the window (or are smaller): "timm"
            (the default: rolled, then padded with zero tokens that are attended), "swin" (the Swin
            repository, transformers: padded with attended zero tokens, then rolled), "torchvision"
            (as "swin", but windows never shrink) or "masked" (padded keys masked out); see
            `zoo.layers.window_attention`. Loading sets the origin's.
        dynamic_img_crop: ignore the pixels right/bottom of the last whole patch, as timm and
            torchvision do (their strided convolution), instead of padding the image to whole patches
            (transformers, the Swin detection code). Loading sets the origin's.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: Union[int, Tuple[int, int]] = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        bias_table_resample: str = "geometric",
        window_padding: str = "timm",
        dynamic_img_crop: bool = True,
    ) -> None:
        super().__init__()
        self.bias_table_resample = check_resample_method(bias_table_resample, BIAS_TABLE_RESAMPLE_METHODS,
                                                         "bias_table_resample")
        self.window_padding = check_window_padding(window_padding)
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(depths) != len(num_heads) or not depths or min(depths) < 1:
            raise ValueError(f"depths and num_heads need one positive entry per stage, got {depths} and {num_heads}")
        check_blocks("sum(depths)", sum(depths))
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        window = to_2tuple(window_size, "window_size")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.window_size = window
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        dims = [embed_dim * 2**i for i in range(self.num_layers)]
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, norm_layer=SwinNorm,
                                      output_fmt="NHWC", strict_img_size=False, dynamic_img_pad=not dynamic_img_crop,
                                      dynamic_img_crop=dynamic_img_crop)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        grid = self.patch_embed.grid_size
        stages, self.feature_info = [], []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            # Map size at img_size; where it is smaller than the window, the window (and table) shrinks.
            res = (-(-grid[0] // 2**i), -(-grid[1] // 2**i))
            stage_window = (min(window[0], res[0]), min(window[1], res[1]))
            stages.append(SwinTransformerStage(
                dims[max(i - 1, 0)], dims[i], depth, heads, stage_window, downsample=i > 0, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], window_padding=window_padding))
            self.feature_info.append(dict(num_chs=dims[i], reduction=patch_size * 2**i, module=f"layers.{i}"))
        self.layers = nn.Sequential(*stages)
        self.norm = SwinNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, drop_rate)
        self.init_weights()

    # ----------------------------------------------------------------------------------- set-up
    @torch.no_grad()
    def init_weights(self) -> None:
        """timm's init: trunc-normal(0.02) Linears and bias tables, zero biases."""
        for name, p in self.named_parameters():
            if name.endswith("relative_position_bias_table"):
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> Set[str]:
        """Full names of the relative-position bias tables (timm's convention): no weight decay."""
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters into layers for layer-wise lr decay (timm's convention): the
        patch embedding is the stem, then one group per block (`coarse`: per stage); a stage's patch
        merging joins its first block, the final norm the last block, and the head is the top layer."""
        return {
            "stem": r"^patch_embed",
            "blocks": r"^layers\.(\d+)" if coarse else [
                (r"^layers\.(\d+)\.downsample", (0,)),
                (r"^layers\.(\d+)\.\w+\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass: less memory, ~30% more compute."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """The classifier module (nn.Identity without a head), as in timm."""
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head with a fresh one of `num_classes` outputs (0: no head), on the device and in the
        dtype of the model's parameters."""
        global_pool = self.global_pool if global_pool is None else global_pool
        like = self.norm.weight
        self.num_classes, self.global_pool = num_classes, global_pool
        with torch.device(like.device):
            head = ClassifierHead(self.num_features, num_classes, global_pool, self.head.drop.p)
        self.head = head.to(dtype=like.dtype)
        if num_classes:
            nn.init.trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)


    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, h, w, D) normalised last-stage map, h = ceil(H/32), w = ceil(W/32)."""
        x = self.patch_embed(x)  # validates the input; (B, H/4, W/4, C)
        x = self.layers(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map from `forward_features` -> logits, or pooled features with `pre_logits=True`."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> logits (or pooled features when num_classes=0)."""
        return self.forward_head(self.forward_features(x))

    def forward_stage_summaries(self, x: torch.Tensor, n_last: int = 4) -> Tuple[torch.Tensor, torch.Tensor]:
        """What linear probing reads (zoo.eval.features), Swin's stand-in for ViT class tokens:
        the final-normed, average-pooled output of each of the last `n_last` blocks of the final stage
        (fewer when that stage has fewer blocks: Swin-T/S/B/L have 2), `(B, k, D)`, oldest first, and
        the pooled final map `(B, D)`, which is the last of them (the model's pre-logits feature)."""
        x = self.patch_embed(x)
        for stage in self.layers[:-1]:
            x = stage(x)
        final = self.layers[-1]
        x = final.downsample(x)
        pooled = []
        for i, block in enumerate(final.blocks):
            x = block(x)
            if i >= len(final.blocks) - n_last:
                pooled.append(self.norm(x).mean(dim=(1, 2)))  # (B, D)
        summaries = torch.stack(pooled, dim=1)  # (B, k, D)
        return summaries, summaries[:, -1]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage output maps for dense prediction (timm's interface).

        For an `H x W` image, stage i's map is `(B, C_i, ceil(H / s_i), ceil(W / s_i))` with strides
        s_i = 4, 8, 16, 32 and widths C_i = embed_dim * 2**i (NCHW; `output_fmt="NHWC"` keeps
        channels last). `indices`: None for all stages, an int n for the last n, or stage indices
        (negative count from the end). `norm=True` applies the final norm to the last stage's map.
        Returns `(final map, [maps])`, the final map being `forward_features`' normalised
        `(B, h, w, D)`, or only the maps with `intermediates_only=True`. `stop_early` skips the stages
        after the last one asked for; the "final map" is then that stage's output, as in timm.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take = take_indices(self.num_layers, indices, "stage")
        last = self.num_layers - 1
        run = max(take) + 1 if (stop_early or intermediates_only) else self.num_layers
        x = self.patch_embed(x)
        maps = []
        for i, stage in enumerate(self.layers[:run]):
            x = stage(x)  # (B, h_i, w_i, C_i)
            if i in take:
                out = self.norm(x) if norm and i == last else x
                maps.append(out.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else out)
        if intermediates_only:
            return maps
        return (self.norm(x) if run == self.num_layers else x), maps

    def prune_intermediate_layers(self, indices: Optional[Union[int, Sequence[int]]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """timm's: drop the stages after the last of `indices` (the final norm too when that stage goes, or
        with `prune_norm`) and with `prune_head` the head; returns the stage indices kept."""
        take = take_indices(self.num_layers, indices, "stage")
        if prune_head:
            self.reset_classifier(0, "")
        if prune_norm or take[-1] < self.num_layers - 1:
            self.norm = nn.Identity()
        self.layers = self.layers[: take[-1] + 1]
        self.num_layers = len(self.layers)
        return take
