"""Vision Transformer family: ViT, DeiT (incl. the distilled token and head) and DINOv2 backbones.

One class covers all three; the registry's arguments pick the variant:
- ViT (Dosovitskiy et al. 2020): class token, learned positions, GELU MLP.
- DeiT (Touvron et al. 2020): `distilled=True` adds a distillation token after the class token and a
  second head; at inference the two heads' logits are averaged.
- DINOv2 (Oquab et al. 2023): patch 14 at 518, LayerScale (`init_values`), register tokens
  (`reg_tokens`, which carry no position: `no_embed_class=True`), SwiGLU for ViT-g (`mlp_layer="swiglu"`).
- DINOv3 (Simeoni et al. 2025): patch 16, 4 registers, no position table but 2D RoPE on the patch
  tokens (`pos_embed="rope"`, zoo/layers/rope.py), query/value biases only (`qkv_bias="qv"`, the
  `_qkvb` variants), split SwiGLU for S+/H+/7B (`mlp_layer="swiglu_split"`), LayerScale stored as
  `gamma_1`/`gamma_2` (`ls_layout="gamma"`): timm's EVA keys for these models.

State-dict keys are timm's (`patch_embed.proj`, `cls_token`, `dist_token`, `reg_token`, `pos_embed`,
`blocks.N.*`, `norm`, `fc_norm`, `head`, `head_dist`), so weights move between zoo and timm unchanged.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, Optional, Set, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import (
    Block, LayerNorm, Linear, Mlp, PatchEmbed, RotaryEmbedding2d, SwiGLU, resample_pos_embed, sincos_2d_pos_embed,
    to_2tuple)
from ..layers.attention import Rope
from ..layers.pos_embed import POS_EMBED_RESAMPLE_METHODS, check_resample_method
from ..specs import check_blocks
from .features import intermediate_layers, prune_vit_layers, vit_intermediates

MLP_LAYERS = {"mlp": Mlp, "swiglu": SwiGLU, "swiglu_split": partial(SwiGLU, packed=False)}
GLOBAL_POOLS = ("token", "avg", "")
POS_EMBEDS = ("learn", "sincos", "rope", "none")


class VisionTransformer(nn.Module):
    """ViT / DeiT / DINOv2 / DINOv3.

    Args:
        img_size: input size, int or (height, width).
        patch_size: patch side (square), e.g. 16 for ViT-B/16, 14 for DINOv2.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for a backbone without head (`forward` returns features).
        global_pool: 'token' (class token), 'avg' (mean of patch tokens, then `fc_norm`) or '' (no pooling).
        embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP expansion.
        qkv_bias: bias in the qkv projection: True, False or "qv" (query and value only, DINOv3's
            `_qkvb`).  qk_norm: LayerNorm on queries and keys per head.
        class_token: prepend a learned class token.  reg_tokens: number of register tokens (DINOv2).
        no_embed_class: positions cover the patch tokens only; prefix tokens get none.
        pos_embed: 'learn' (learned), 'sincos' (fixed 2D sin-cos, MAE), 'rope' (DINOv3's 2D rotary
            embedding of the patch tokens in every attention layer, no table) or 'none'.
        rope_base: RoPE period base (DINOv3: 100).  rope_shift, rope_jitter, rope_rescale: its
            training-time coordinate augmentations (`zoo.layers.RotaryEmbedding2d`), off in eval.
        init_values: LayerScale initial value; None disables LayerScale.
        fc_norm: norm after pooling instead of before it; default: on for 'avg' pooling.
        drop_rate: head dropout.  pos_drop_rate, proj_drop_rate, attn_drop_rate: other dropouts.
        drop_path_rate: stochastic depth, rising linearly to this value at the last block.
        distilled: DeiT distillation token and second head (needs class token and 'token' pooling).
        mlp_layer: 'mlp' (GELU), 'swiglu' (DINOv2 giant: packed `fc1`) or 'swiglu_split' (DINOv3:
            `fc1_g` / `fc1_x`).  swiglu_align_to: SwiGLU width rounding (8; DINOv3 7B: 64).
        ls_layout: LayerScale keys: 'ls' (`ls1.gamma`, timm's ViT) or 'gamma' (`gamma_1`, timm's EVA / DINOv3).
        dynamic_img_size: accept any input size divisible by the patch; positions are resampled.
        dynamic_img_pad: with dynamic_img_size, accept any size; the image is padded right/bottom.
        dynamic_img_crop: with dynamic_img_size, accept any size; pixels right/bottom of the last whole
            patch are ignored (transformers' Dinov2 does this).
        pos_embed_resample: how learned positions are resampled to another grid, at run time
            (dynamic_img_size) and when loading or `set_input_size`: "bicubic_antialias" (timm),
            "bicubic" (transformers, the MAE and DeiT repositories) or "bicubic_offset" (the DINOv2
            repository); see `zoo.layers.pos_embed.RESAMPLE_METHODS`. Loading sets the origin's.
        norm_eps: LayerNorm epsilon; 1e-6 as in timm and DINOv2 (transformers' ViT, DeiT and ViTMAE use 1e-12).
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: Union[bool, str] = True,
        qk_norm: bool = False,
        class_token: bool = True,
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        pos_embed: str = "learn",
        rope_base: float = 100.0,
        rope_shift: Optional[float] = None,
        rope_jitter: Optional[float] = None,
        rope_rescale: Optional[float] = None,
        init_values: Optional[float] = None,
        fc_norm: Optional[bool] = None,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        distilled: bool = False,
        mlp_layer: str = "mlp",
        swiglu_align_to: int = 8,
        ls_layout: str = "ls",
        dynamic_img_size: bool = False,
        dynamic_img_pad: bool = False,
        dynamic_img_crop: bool = False,
        pos_embed_resample: str = "bicubic_antialias",
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        _check_args(global_pool, class_token, pos_embed, mlp_layer, distilled, reg_tokens, depth, num_classes)
        self.pos_embed_resample = check_resample_method(pos_embed_resample, POS_EMBED_RESAMPLE_METHODS,
                                                        "pos_embed_resample")
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim
        self.has_class_token = class_token
        self.distilled = distilled
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = int(class_token) + int(distilled) + reg_tokens  # order: cls, dist, regs
        self.no_embed_class = no_embed_class
        self.dynamic_img_size = dynamic_img_size
        self.grad_checkpointing = False
        self.distilled_training = False  # DeiT: return (cls_logits, dist_logits) while training

        self.patch_embed = PatchEmbed(
            img_size, patch_size, in_chans, embed_dim,
            strict_img_size=not dynamic_img_size, dynamic_img_pad=dynamic_img_pad, dynamic_img_crop=dynamic_img_crop)
        self.cls_token = _zeros(1, embed_dim) if class_token else None
        self.dist_token = _zeros(1, embed_dim) if distilled else None
        self.reg_token = _zeros(reg_tokens, embed_dim) if reg_tokens else None
        # A fixed 'sincos' table is still a (frozen) parameter so checkpoints carry `pos_embed` as in MAE.
        rows = (0 if no_embed_class else self.num_prefix_tokens) + self.patch_embed.num_patches
        self.pos_embed = _zeros(rows, embed_dim, pos_embed == "learn") if pos_embed in ("learn", "sincos") else None
        self.pos_embed_type = pos_embed
        self.rope = RotaryEmbedding2d(embed_dim // num_heads, rope_base, shift=rope_shift, jitter=rope_jitter,
                                      rescale=rope_rescale) if pos_embed == "rope" else None
        self.pos_drop = nn.Dropout(pos_drop_rate)

        norm_layer = partial(LayerNorm, eps=norm_eps)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()  # stochastic depth rises with depth
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm,
                  proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, init_values=init_values,
                  drop_path=dpr[i], norm_layer=norm_layer, mlp_layer=_mlp_layer(mlp_layer, swiglu_align_to),
                  ls_layout=ls_layout)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim) if not use_fc_norm else nn.Identity()
        self.fc_norm = norm_layer(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.head_dist = (Linear(embed_dim, num_classes) if num_classes else nn.Identity()) if distilled else None
        self.init_weights()

    # ----------------------------------------------------------------------------------- set-up
    def init_weights(self) -> None:
        """timm's default init: trunc-normal(0.02) Linears and learned positions, tiny class/register tokens."""
        _init_weights(self)

    def no_weight_decay(self) -> Set[str]:
        """Parameter names that should get no weight decay (positions and tokens)."""
        return {"pos_embed", "cls_token", "reg_token", "dist_token"}

    def group_matcher(self, coarse: bool = False) -> Dict[str, object]:
        """Regexes grouping parameters into layers for layer-wise lr decay (timm's convention):
        the embedding is layer 0, block i is layer i + 1, the final norm goes with the last block,
        and everything unmatched (the head) is the top layer."""
        return {
            "stem": r"^(?:cls_token|dist_token|reg_token|pos_embed|patch_embed)",
            "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass: less memory, ~30% more compute."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """The classifier module (nn.Identity without a head), as in timm."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head (and DeiT's distillation head) with a fresh one of `num_classes` outputs (0: no
        head), on the device and in the dtype of the model's parameters."""
        if global_pool is not None:
            _check_pool(global_pool, self.has_class_token, self.distilled)
            self.global_pool = global_pool
        self.num_classes = num_classes
        like = self.patch_embed.proj.weight
        self.head = _new_head(self.embed_dim, num_classes, like)
        if self.distilled:
            self.head_dist = _new_head(self.embed_dim, num_classes, like)

    def set_input_size(self, img_size: Union[int, Tuple[int, int]]) -> None:
        """Change the expected input size; learned positions are resampled to the new grid
        (`pos_embed_resample`), a fixed sin-cos table recomputed."""
        _set_grid(self, to_2tuple(img_size, "img_size"))

    # ---------------------------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, prefix + N, D) tokens with positions added."""
        return self.pos_drop(_embed_tokens(self, x))

    def _rope(self, x: torch.Tensor) -> Optional[Rope]:
        """(B, C, H, W) images -> the rotary (sin, cos) tables for their patch grid, or None without RoPE."""
        if self.rope is None:
            return None
        return self.rope(self.patch_embed.feat_size(tuple(x.shape[-2:])))

    def _block(self, block: nn.Module, x: torch.Tensor, rows: Optional[int] = None,
               rope: Optional[Rope] = None) -> torch.Tensor:
        """One block, checkpointed when asked; with `rows`, only the first `rows` tokens' outputs."""
        fn = partial(block, rope=rope, rows=rows)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint(fn, x, use_reentrant=False)
        return fn(x)

    def forward_tokens(self, x: torch.Tensor, rope: Optional[Rope] = None) -> torch.Tensor:
        """(B, T, D) embedded tokens -> (B, T, D) after every block, before the final norm.

        For callers that build their own token sequence (MAE feeds only the visible patches)."""
        for block in self.blocks:
            x = self._block(block, x, rope=rope)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, prefix + N, D): every token after the last block and the final norm."""
        return self.norm(self.forward_tokens(self._embed(x), self._rope(x)))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D) by the model's global_pool; '' returns the tokens unchanged."""
        if self.global_pool == "token":
            return x[:, 0]
        if self.global_pool == "avg":
            return x[:, self.num_prefix_tokens:].mean(dim=1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens from `forward_features` -> logits, or pooled features with `pre_logits=True`."""
        if self.distilled:
            return _distilled_head(self, x, pre_logits)
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> logits (or pooled features when num_classes=0).

        With token pooling the head reads only the class (and distillation) token, so the last block
        computes just those rows; the others cannot reach the output. The result equals
        `forward_head(forward_features(x))`, for less work.
        """
        rope = self._rope(x)
        x = self._embed(x)
        head_tokens = 1 + int(self.distilled) if self.global_pool == "token" else None
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = self._block(block, x, head_tokens if i == last else None, rope)
        return self.forward_head(self.norm(x))

    # the feature APIs people use (zoo/models/features.py): DINOv2's and timm's
    get_intermediate_layers = intermediate_layers
    forward_intermediates = vit_intermediates
    prune_intermediate_layers = prune_vit_layers


def _check_args(global_pool: str, class_token: bool, pos_embed: str, mlp_layer: str, distilled: bool,
                reg_tokens: int, depth: int, num_classes: int) -> None:
    """The constructor's ValueErrors, naming the argument and what it may be."""
    _check_pool(global_pool, class_token, distilled)
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, got {pos_embed!r}")
    if mlp_layer not in MLP_LAYERS:
        raise ValueError(f"mlp_layer must be one of {tuple(MLP_LAYERS)}, got {mlp_layer!r}")
    if reg_tokens < 0 or depth < 1 or num_classes < 0:
        raise ValueError(f"need reg_tokens >= 0, depth >= 1, num_classes >= 0; got {reg_tokens}, {depth}, "
                         f"{num_classes}")
    check_blocks("depth", depth)


def _distilled_head(model: VisionTransformer, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
    """DeiT's two heads on the class and distillation tokens of `x` (B, T, D): their mean (logits or
    pre-logit features), or both logits while training with `distilled_training`."""
    cls, dist = model.head_drop(x[:, 0]), model.head_drop(x[:, 1])
    if pre_logits:
        return (cls + dist) / 2
    cls, dist = model.head(cls), model.head_dist(dist)
    if model.distilled_training and model.training:
        return cls, dist  # type: ignore[return-value]
    return (cls + dist) / 2


def _mlp_layer(name: str, swiglu_align_to: int) -> Callable[..., nn.Module]:
    """The block's feed-forward class for `mlp_layer`, SwiGLU widths rounded to `swiglu_align_to`."""
    return MLP_LAYERS[name] if name == "mlp" else partial(MLP_LAYERS[name], align_to=swiglu_align_to)


def _zeros(rows: int, dim: int, learned: bool = True) -> nn.Parameter:
    """A (1, rows, dim) parameter of zeros (tokens, positions); `init_weights` fills it."""
    return nn.Parameter(torch.zeros(1, rows, dim), requires_grad=learned)


def _check_pool(global_pool: str, class_token: bool, distilled: bool) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
    if global_pool == "token" and not class_token:
        raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without one")
    if distilled and (not class_token or global_pool != "token"):
        raise ValueError("distilled=True needs class_token=True and global_pool='token' (DeiT's two heads read "
                         "the class and distillation tokens)")


@torch.no_grad()
def _init_weights(model: VisionTransformer) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if model.pos_embed is not None:
        if model.pos_embed_type == "sincos":
            model.pos_embed.copy_(sincos_2d_pos_embed(
                model.embed_dim, model.patch_embed.grid_size,
                0 if model.no_embed_class else model.num_prefix_tokens).unsqueeze(0))
        else:
            nn.init.trunc_normal_(model.pos_embed, std=0.02)
    for token, std in ((model.cls_token, 1e-6), (model.reg_token, 1e-6), (model.dist_token, 0.02)):
        if token is not None:
            nn.init.trunc_normal_(token, std=std)


def _embed_tokens(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Patch tokens with the prefix tokens in front (cls, dist, registers) and positions added (resampled
    for another grid with `dynamic_img_size`): (B, C, H, W) -> (B, prefix + N, D)."""
    B = x.shape[0]
    grid = model.patch_embed.feat_size(tuple(x.shape[-2:])) if x.ndim == 4 else None
    x = model.patch_embed(x)  # validates the input; (B, N, D)
    prefix = [t.expand(B, -1, -1) for t in (model.cls_token, model.dist_token, model.reg_token) if t is not None]
    pos = model.pos_embed
    if pos is None:
        return torch.cat(prefix + [x], dim=1)
    if model.dynamic_img_size:
        pos = resample_pos_embed(pos, grid, model.patch_embed.grid_size,
                                 0 if model.no_embed_class else model.num_prefix_tokens, model.pos_embed_resample)
    if model.no_embed_class:  # positions for the patches only, then prepend the prefix tokens
        x = torch.cat(prefix + [x + pos], dim=1)
    else:  # positions cover the prefix tokens too
        x = torch.cat(prefix + [x], dim=1) + pos
    return x


@torch.no_grad()
def _set_grid(model: VisionTransformer, img_size: Tuple[int, int]) -> None:
    """`set_input_size`: the patch grid for `img_size`, positions recomputed (sin-cos) or resampled."""
    old_grid = model.patch_embed.grid_size
    model.patch_embed.img_size = img_size
    ph, pw = model.patch_embed.patch_size
    model.patch_embed.grid_size = (img_size[0] // ph, img_size[1] // pw)
    model.patch_embed.num_patches = model.patch_embed.grid_size[0] * model.patch_embed.grid_size[1]
    if model.pos_embed is not None and model.patch_embed.grid_size != old_grid:
        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        if model.pos_embed_type == "sincos":
            new = sincos_2d_pos_embed(model.embed_dim, model.patch_embed.grid_size, prefix).unsqueeze(0)
        else:
            new = resample_pos_embed(model.pos_embed.data, model.patch_embed.grid_size, old_grid, prefix,
                                     model.pos_embed_resample)
        model.pos_embed = nn.Parameter(new.to(model.pos_embed), requires_grad=model.pos_embed.requires_grad)


def _new_head(dim: int, num_classes: int, like: torch.Tensor) -> nn.Module:
    """A fresh classifier on `like`'s device and in its dtype: trunc-normal(0.02) weights, zero bias;
    nn.Identity for num_classes=0."""
    if not num_classes:
        return nn.Identity()
    head = Linear(dim, num_classes, device=like.device, dtype=like.dtype)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head
