"""Checkpoints of the ViT family from every origin, in one place: timm's (and zoo's) keys fitted to
another input size or pooling (`checkpoint_filter_fn`), transformers' ViT / DeiT / Dinov2 /
Dinov2WithRegisters / ViTMAE (`from_transformers`), and the MAE and DINOv2 research releases
(`from_mae_release`, `from_dinov2_release`). Pure functions of state dicts: reading files is
`zoo.weights`' job, choosing the registry variant `zoo.factory`'s.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..helpers import to_2tuple
from ..layers import resample_pos_embed
from ..specs import ConversionError, Converted, Variant
from .keymaps import fold_class_position, fuse_qkv, image_size, rename
from .vit import VisionTransformer

StateDict = Dict[str, torch.Tensor]

# For the weights code: the head(s), dropped and re-initialised for another num_classes, and the patch
# projection, adapted for another in_chans (state-dict prefixes, as timm's pretrained_cfg names them).
CLASSIFIER = ("head", "head_dist")
FIRST_CONV = "patch_embed.proj"


@torch.no_grad()
def checkpoint_filter_fn(state_dict: StateDict, model: VisionTransformer,
                         source_args: Optional[Mapping[str, Any]] = None) -> Tuple[StateDict, List[str]]:
    """Fit a checkpoint of this family made at another input size or pooling to `model`: learned
    positions are resampled from the checkpoint's grid to the model's (`resample_pos_embed`, by the
    model's `pos_embed_resample`: the convention of the weights' origin), a fixed
    sin-cos table is recomputed; a final norm made for the other pooling moves between `norm` (before
    token pooling) and `fc_norm` (after average pooling), as when MAE's encoder is fine-tuned with
    average pooling. `source_args` are the arguments the checkpoint was made with; without them a
    square grid is assumed. Returns (state dict, one line per change)."""
    state_dict = dict(state_dict)
    notes = _move_final_norm(state_dict, model)
    pos = state_dict.get("pos_embed")
    if pos is None or model.pos_embed is None:
        return state_dict, notes
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    new_grid = model.patch_embed.grid_size
    if source_args and "img_size" in source_args and "patch_size" in source_args:
        (h, w), (ph, pw) = to_2tuple(source_args["img_size"]), to_2tuple(source_args["patch_size"])
        old_grid = (h // ph, w // pw)
    else:
        side = math.isqrt(max(pos.shape[1] - prefix, 0))
        old_grid = (side, side)
    if old_grid == new_grid and pos.shape == model.pos_embed.shape:
        return state_dict, notes
    if pos.ndim != 3 or pos.shape[1] != prefix + old_grid[0] * old_grid[1]:
        return state_dict, notes  # not a grid this model can read; the strict load reports the shape
    if model.pos_embed_type == "sincos":
        state_dict["pos_embed"] = model.pos_embed.detach().clone()
        return state_dict, notes + [f"recomputed the fixed sin-cos pos_embed for the {new_grid[0]}x{new_grid[1]} "
                                    f"grid (checkpoint: {old_grid[0]}x{old_grid[1]})"]
    state_dict["pos_embed"] = resample_pos_embed(pos, new_grid, old_grid, prefix, model.pos_embed_resample)
    return state_dict, notes + [f"resampled pos_embed {old_grid[0]}x{old_grid[1]} -> {new_grid[0]}x{new_grid[1]} "
                                f"({model.pos_embed_resample})"]


def _move_final_norm(state_dict: StateDict, model: VisionTransformer) -> List[str]:
    has_fc_norm = not isinstance(model.fc_norm, nn.Identity)
    src, dst = ("norm", "fc_norm") if has_fc_norm else ("fc_norm", "norm")
    if f"{src}.weight" not in state_dict or f"{dst}.weight" in state_dict:
        return []
    for part in ("weight", "bias"):
        state_dict[f"{dst}.{part}"] = state_dict.pop(f"{src}.{part}")
    where = "after average pooling" if has_fc_norm else "before token pooling"
    return [f"moved the checkpoint's final norm ({src}) to {dst}, {where}"]


# ------------------------------------------------------------------------------------ transformers
# transformers' ViT-family keys (after the base-model prefix) -> timm's. query/key/value are fused
# separately into `attn.qkv`. Anchored patterns, so `encoder.layer.N.output.dense` (the MLP) never
# matches `encoder.layer.N.attention.output.dense` (the attention projection).
_VIT_RENAMES: List[Tuple[str, str]] = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.distillation_token$", "dist_token"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.(?:layernorm_before|norm1)\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.(?:layernorm_after|norm2)\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.(?:intermediate\.dense|mlp\.fc1|mlp\.weights_in)\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.(?:output\.dense|mlp\.fc2|mlp\.weights_out)\.", r"blocks.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^layernorm\.", "norm."),
    (r"^(?:classifier|cls_classifier)\.", "head."),
    (r"^distillation_classifier\.", "head_dist."),
]
_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")
_BASE_PREFIX = {"vit": "vit.", "deit": "deit.", "vit_mae": "vit.", "dinov2": "dinov2.",
                "dinov2_with_registers": "dinov2_with_registers."}
_DROPPED = [  # keys with no place in a zoo ViT: (pattern, what they are)
    (r"^embeddings\.mask_token$", "the mask token (used only in masked pretraining)"),
    (r"^pooler\.", "the pooler (Linear + tanh on the class token; zoo returns the normalised class token)"),
    (r"^decoder\.", "the MAE decoder"),
]


def from_transformers(config: Mapping[str, Any], state_dict: StateDict) -> Converted:
    """A transformers ViT, DeiT, Dinov2, Dinov2WithRegisters or ViTMAE checkpoint (config.json as a dict,
    state dict) in zoo's keys and builder arguments. Raises ConversionError for what zoo cannot hold."""
    model_type = config["model_type"]
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(f"transformers {model_type} with hidden_act={act!r}: zoo's ViT uses exact GELU")
    dim = int(config["hidden_size"])
    args: Dict[str, Any] = {
        "img_size": image_size(config), "patch_size": int(config.get("patch_size", 16)),
        "in_chans": int(config.get("num_channels", 3)), "embed_dim": dim,
        "depth": int(config["num_hidden_layers"]), "num_heads": int(config["num_attention_heads"]),
        "qkv_bias": bool(config.get("qkv_bias", True)),
    }
    if model_type.startswith("dinov2"):
        args["mlp_ratio"] = float(config.get("mlp_ratio", 4))
        args["init_values"] = 1e-5  # LayerScale is present; its values come from the checkpoint
        if config.get("use_swiglu_ffn"):
            args["mlp_layer"] = "swiglu"
    else:
        args["mlp_ratio"] = int(config["intermediate_size"]) / dim
    if model_type == "deit":
        args["distilled"] = True

    prefix = _BASE_PREFIX[model_type]
    sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
    notes: List[str] = []
    if model_type == "deit" and "classifier.weight" in sd:
        raise ConversionError(
            "transformers DeiTForImageClassification reads only the class token although the model carries a "
            "distillation token; zoo's distilled DeiT averages both heads. Use a DeiTForImageClassificationWithTeacher "
            "or DeiTModel checkpoint")
    if model_type.startswith("dinov2") and "classifier.weight" in sd:
        width = sd["classifier.weight"].shape[1]
        for key in ("classifier.weight", "classifier.bias"):
            sd.pop(key, None)
        notes.append(f"dropped transformers' Dinov2 classifier: it reads [class token, mean of patch tokens] "
                     f"({width} inputs), which zoo's head does not; loaded the backbone (num_classes=0)")

    out: StateDict = {}
    qkv: Dict[Tuple[int, str], Dict[str, torch.Tensor]] = {}
    dropped: Dict[str, int] = {}
    for key, value in sd.items():
        m = _QKV.match(key)
        if m:
            qkv.setdefault((f"blocks.{m.group(1)}", m.group(3)), {})[m.group(2)] = value
            continue
        what = next((w for pattern, w in _DROPPED if re.match(pattern, key)), None)
        if what is not None:
            dropped[what] = dropped.get(what, 0) + 1
            continue
        out[rename(key, _VIT_RENAMES)] = value  # an unknown key passes through; the strict load names it
    out.update(fuse_qkv(qkv))
    notes += [f"dropped {what} ({n} tensor{'s' * (n > 1)})" for what, n in dropped.items()]

    if model_type == "dinov2_with_registers":
        # Registers carry no position; the class token's position row is folded into the token itself.
        args.update(reg_tokens=int(config["num_register_tokens"]), no_embed_class=True)
        fold_class_position(out)
    args["num_classes"] = out["head.weight"].shape[0] if "head.weight" in out else 0

    eps = float(config.get("layer_norm_eps", 1e-6))
    if eps != 1e-6:
        args["norm_eps"] = eps  # transformers' ViT, DeiT and ViTMAE: 1e-12
    prefer = {"deit": "deit", "dinov2": "dinov2", "dinov2_with_registers": "dinov2", "vit_mae": "mae"}.get(
        model_type, "vit_")
    conventions = TRANSFORMERS_CONVENTIONS.get(model_type, TRANSFORMERS_CONVENTIONS["vit"])
    args.update(conventions)
    return Converted("vit", args, out, notes, prefer=prefer, conventions=dict(conventions))


# How each origin's models treat other input sizes (see `zoo.layers.pos_embed.RESAMPLE_METHODS`):
# transformers' ViT, DeiT and ViTMAE take other sizes only with interpolate_pos_encoding=True (zoo:
# dynamic_img_size=True) and resample by plain bicubic; its Dinov2 models take any size on every call,
# Dinov2 by plain bicubic, Dinov2WithRegisters antialiased. All ignore the pixels of a partial patch.
_ANY_SIZE = {"dynamic_img_size": True, "dynamic_img_crop": True}
TRANSFORMERS_CONVENTIONS: Dict[str, Dict[str, Any]] = {
    "vit": {"pos_embed_resample": "bicubic", "dynamic_img_crop": True},  # crop: once dynamic_img_size is on
    "dinov2": {"pos_embed_resample": "bicubic", **_ANY_SIZE},
    "dinov2_with_registers": {"pos_embed_resample": "bicubic_antialias", **_ANY_SIZE},
}


# ------------------------------------------------------------------------------- research releases
def from_mae_release(state_dict: StateDict, variant: Optional[Variant] = None) -> Converted:
    """MAE (He et al. 2021), facebookresearch/mae's `mae_pretrain_vit_*.pth` (with or without decoder)
    and fine-tuned models: timm's keys already; the decoder and mask token are dropped, and a fine-tuned
    model (global average pooling: `fc_norm`, no `norm`) keeps its head. The arguments read from the
    shapes are partial: the factory completes them from `variant` (named by the user), else from the
    registry variant with an `mae` weight tag and the checkpoint's width and patch (`match`)."""
    sd = dict(state_dict)
    decoder = [k for k in sd if k.startswith("decoder_") or k == "mask_token"]
    for k in decoder:
        del sd[k]
    notes = [f"dropped the MAE decoder and mask token ({len(decoder)} tensors)"] if decoder else []
    args = _vit_shapes(sd, prefix_tokens=1)
    if "fc_norm.weight" in sd:
        args.update(global_pool="avg", fc_norm=True)
    args["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    conventions = {"pos_embed_resample": "bicubic"}  # the MAE repository's interpolate_pos_embed
    return Converted("vit", {**args, **conventions}, sd, notes, tag="mae",
                     match={"embed_dim": args["embed_dim"], "patch_size": args["patch_size"]}, conventions=conventions)


def from_dinov2_release(state_dict: StateDict, variant: Optional[Variant] = None) -> Converted:
    """DINOv2 (Oquab et al. 2023), facebookresearch/dinov2's `dinov2_vit*14[_reg4]_pretrain.pth`: SwiGLU's
    `w12`/`w3` become `fc1`/`fc2`; with registers the class token's position row is folded into the
    token (registers and class token then carry no position). The arguments read from the shapes are
    partial: the factory completes them from `variant`, else from the registry variant with an
    `lvd142m` weight tag and the checkpoint's width, patch, registers and MLP (`match`)."""
    sd = dict(state_dict)
    notes = []
    if sd.pop("mask_token", None) is not None:
        notes.append("dropped the mask token (used only in masked pretraining)")
    reg = 0
    if "register_tokens" in sd:
        reg = sd["register_tokens"].shape[1]
        sd["reg_token"] = sd.pop("register_tokens")
        fold_class_position(sd)
    swiglu = any(".mlp.w12." in k for k in sd)
    sd = {re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)): v for k, v in sd.items()}
    # The repository's models take any multiple of the patch, resampling per call: with registers
    # antialiased bicubic to the size, without by bicubic with its interpolate_offset of 0.1.
    conventions = {"dynamic_img_size": True, "pos_embed_resample": "bicubic_antialias" if reg else "bicubic_offset"}
    args = dict(_vit_shapes(sd, prefix_tokens=0 if reg else 1), num_classes=0, **conventions)
    want = dict(embed_dim=args["embed_dim"], patch_size=args["patch_size"])
    if reg:
        want["reg_tokens"] = reg
    if swiglu:
        want["mlp_layer"] = "swiglu"
    return Converted("vit", args, sd, notes, tag="lvd142m", match=want, conventions=conventions)


def _vit_shapes(sd: StateDict, prefix_tokens: int) -> Dict[str, Any]:
    """Width, patch, input channels, depth and input size of a ViT state dict in timm keys."""
    if "patch_embed.proj.weight" not in sd:
        raise ConversionError("no 'patch_embed.proj.weight': not a ViT checkpoint")
    dim, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))}
    shapes: Dict[str, Any] = {"embed_dim": dim, "patch_size": patch, "in_chans": in_chans,
                              "depth": max(blocks) + 1 if blocks else 0}
    if "pos_embed" in sd:
        side = math.isqrt(sd["pos_embed"].shape[1] - prefix_tokens)
        shapes["img_size"] = side * patch
    return shapes



# transformers model_type -> converter; research release name (`zoo convert --from`) -> converter
TRANSFORMERS = {t: from_transformers for t in ("vit", "deit", "dinov2", "dinov2_with_registers", "vit_mae")}
RESEARCH = {"mae": from_mae_release, "dinov2": from_dinov2_release}
