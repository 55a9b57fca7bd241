"""Checkpoints from elsewhere -> zoo's state-dict keys (which are timm's).

Two sources:
- Hugging Face transformers repos, recognised by config.json `model_type` (`from_transformers`):
  vit, deit (with its distillation token), dinov2, dinov2_with_registers, vit_mae, swin.
- Research releases read by `zoo convert --from NAME` (`from_research`): mae (the MAE repo's
  `mae_pretrain_vit_*.pth`, with or without decoder, and its fine-tuned models), dinov2 (the
  DINOv2 repo's `dinov2_vit*14[_reg4]_pretrain.pth`) and swin (microsoft/Swin-Transformer's
  `swin_*_patch4_window*.pth`).

Everything here is a pure function of a config and a state dict: reading and writing files is
`zoo.hub`'s job. Each returns a `Converted`: the family, the builder arguments the checkpoint was
made with, the state dict in zoo keys, and one note per thing dropped or changed. New formats plug in
through the two tables at the bottom, `TRANSFORMERS` (by model_type) and `RESEARCH` (by name).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from .registry import REGISTRY, Variant

StateDict = Dict[str, torch.Tensor]


class ConversionError(ValueError):
    """A checkpoint or config that zoo cannot map: unsupported model type, head or activation."""


@dataclass
class Converted:
    """A foreign checkpoint in zoo's terms."""

    family: str
    args: Dict[str, Any]  # builder arguments of the architecture the weights were made for
    state_dict: StateDict  # zoo (timm) keys
    notes: List[str] = field(default_factory=list)  # what was dropped or changed, for the load report
    variant: Optional[str] = None  # the registry variant of that architecture, when there is one
    tag: Optional[str] = None  # the registry weight tag these weights are, for research releases


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
    """A transformers checkpoint (its config.json as a dict, its state dict) in zoo's terms."""
    model_type = config.get("model_type")
    convert = TRANSFORMERS.get(model_type)
    if convert is None:
        raise ConversionError(f"transformers model_type {model_type!r} is not supported; zoo reads "
                              f"{', '.join(sorted(TRANSFORMERS))}")
    return convert(config, state_dict)


def _vit_from_transformers(config: Mapping[str, Any], state_dict: StateDict) -> Converted:
    model_type = config["model_type"]
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(f"transformers {model_type} with hidden_act={act!r}: zoo's ViT uses exact GELU")
    dim = int(config["hidden_size"])
    args: Dict[str, Any] = {
        "img_size": _pair(config.get("image_size", 224)), "patch_size": int(config.get("patch_size", 16)),
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
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = value
            continue
        what = next((w for pattern, w in _DROPPED if re.match(pattern, key)), None)
        if what is not None:
            dropped[what] = dropped.get(what, 0) + 1
            continue
        out[_rename(key, _VIT_RENAMES)] = value  # an unknown key passes through; the strict load names it
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise ConversionError(f"layer {layer}: attention {kind} has only {sorted(parts)} of query/key/value")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    notes += [f"dropped {what} ({n} tensor{'s' * (n > 1)})" for what, n in dropped.items()]

    if model_type == "dinov2_with_registers":
        # Registers carry no position; the class token's position row is folded into the token itself.
        args.update(reg_tokens=int(config["num_register_tokens"]), no_embed_class=True)
        pos = out.pop("pos_embed")
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    args["num_classes"] = out["head.weight"].shape[0] if "head.weight" in out else 0

    eps = float(config.get("layer_norm_eps", 1e-6))
    if eps != 1e-6:
        args["norm_eps"] = eps  # transformers' ViT, DeiT and ViTMAE: 1e-12
    hint = {"deit": "deit", "dinov2": "dinov2", "dinov2_with_registers": "dinov2", "vit_mae": "mae"}.get(model_type,
                                                                                                          "vit_")
    variant = REGISTRY.match_variant("vit", args, prefer=lambda v: hint in v.name or hint in v.weights,
                                     ignore=("num_classes", "img_size", "norm_eps"))
    return Converted("vit", args, out, notes, variant=variant.name if variant else None)


# transformers' Swin keys (after `swin.`) -> timm's. transformers merges patches at the END of stage i
# (`layers.i.downsample`), timm at the START of stage i + 1: the index is shifted separately.
_SWIN_RENAMES: List[Tuple[str, str]] = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.", r"layers.\1.blocks.\2.norm1."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_after\.", r"layers.\1.blocks.\2.norm2."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.relative_position_bias_table$",
     r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.output\.dense\.", r"layers.\1.blocks.\2.attn.proj."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.intermediate\.dense\.", r"layers.\1.blocks.\2.mlp.fc1."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.output\.dense\.", r"layers.\1.blocks.\2.mlp.fc2."),
    (r"^encoder\.layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head.fc."),
]
_SWIN_QKV = re.compile(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")


def _swin_from_transformers(config: Mapping[str, Any], state_dict: StateDict) -> Converted:
    """transformers' Swin (SwinModel, SwinForImageClassification) -> timm's SwinTransformer keys."""
    if config.get("use_absolute_embeddings"):
        raise ConversionError("transformers Swin with use_absolute_embeddings=True: zoo's Swin has no absolute "
                              "position embedding")
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(f"transformers swin with hidden_act={act!r}: zoo's Swin uses exact GELU")
    sd = {k[len("swin."):] if k.startswith("swin.") else k: v for k, v in state_dict.items()}
    out: StateDict = {}
    qkv: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    notes: List[str] = []
    for key, value in sd.items():
        m = _SWIN_QKV.match(key)
        if m:
            qkv.setdefault((f"layers.{m.group(1)}.blocks.{m.group(2)}", m.group(4)), {})[m.group(3)] = value
        elif key == "embeddings.mask_token":
            notes.append("dropped the mask token (used only in masked pretraining) (1 tensor)")
        else:
            out[_rename(key, _SWIN_RENAMES)] = value
    for (block, kind), parts in sorted(qkv.items()):
        out[f"{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    args = {
        "img_size": _pair(config.get("image_size", 224)), "patch_size": int(config.get("patch_size", 4)),
        "in_chans": int(config.get("num_channels", 3)), "embed_dim": int(config["embed_dim"]),
        "depths": [int(d) for d in config["depths"]], "num_heads": [int(h) for h in config["num_heads"]],
        "window_size": int(config["window_size"]), "mlp_ratio": float(config.get("mlp_ratio", 4.0)),
        "qkv_bias": bool(config.get("qkv_bias", True)),
        "num_classes": out["head.fc.weight"].shape[0] if "head.fc.weight" in out else 0,
    }
    variant = REGISTRY.match_variant("swin", args)
    return Converted("swin", args, out, notes, variant=variant.name if variant else None)


# ------------------------------------------------------------------------------- research releases
def from_research(source: str, state_dict: StateDict, variant: Optional[Variant] = None) -> Converted:
    """A research release's state dict in zoo's terms. `variant` is the registry variant it is; by
    default the one with that release's weight tag and the checkpoint's width and patch size."""
    convert = RESEARCH.get(source)
    if convert is None:
        raise ConversionError(f"unknown checkpoint source {source!r}; zoo converts {', '.join(sorted(RESEARCH))}")
    return convert(state_dict, variant)


def unwrap_checkpoint(obj: Any) -> StateDict:
    """The state dict inside a training checkpoint: under 'model', 'state_dict' or (DINOv2 training
    runs) 'teacher' with a 'backbone.' prefix; a 'module.' prefix (DistributedDataParallel) is removed."""
    if not isinstance(obj, dict):
        raise ConversionError(f"expected a state dict or a dict holding one, got {type(obj).__name__}")
    for key in ("model", "state_dict", "teacher"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if any(k.startswith("backbone.") for k in obj):
        obj = {k[len("backbone."):]: v for k, v in obj.items() if k.startswith("backbone.")}
    obj = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"the checkpoint holds non-tensor entries {bad[:5]}: not a state dict")
    return obj


def _mae_from_research(state_dict: StateDict, variant: Optional[Variant]) -> Converted:
    """MAE (He et al. 2021): timm's keys already; the decoder and mask token are dropped, and a
    fine-tuned model (global average pooling: `fc_norm`, no `norm`) keeps its head."""
    sd = dict(state_dict)
    decoder = [k for k in sd if k.startswith("decoder_") or k == "mask_token"]
    for k in decoder:
        del sd[k]
    notes = [f"dropped the MAE decoder and mask token ({len(decoder)} tensors)"] if decoder else []
    arch = _vit_shapes(sd, prefix_tokens=1)
    variant = variant or _research_variant("mae", embed_dim=arch["embed_dim"], patch_size=arch["patch_size"])
    args = dict(variant.args, **arch)
    if "fc_norm.weight" in sd:
        args.update(global_pool="avg", fc_norm=True)
    args["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    return Converted("vit", args, sd, notes, variant=variant.name, tag="mae" if "mae" in variant.weights else None)


def _dinov2_from_research(state_dict: StateDict, variant: Optional[Variant]) -> Converted:
    """DINOv2 (Oquab et al. 2023): SwiGLU's `w12`/`w3` become `fc1`/`fc2`; with registers the class
    token's position row is folded into the token (registers and class token then carry no position)."""
    sd = dict(state_dict)
    notes = []
    if sd.pop("mask_token", None) is not None:
        notes.append("dropped the mask token (used only in masked pretraining)")
    reg = 0
    if "register_tokens" in sd:
        reg = sd["register_tokens"].shape[1]
        pos = sd.pop("pos_embed")
        sd["reg_token"] = sd.pop("register_tokens")
        sd["cls_token"] = sd["cls_token"] + pos[:, :1]
        sd["pos_embed"] = pos[:, 1:]
    swiglu = any(".mlp.w12." in k for k in sd)
    sd = {re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)): v for k, v in sd.items()}
    arch = _vit_shapes(sd, prefix_tokens=0 if reg else 1)
    want = dict(embed_dim=arch["embed_dim"], patch_size=arch["patch_size"])
    if reg:
        want["reg_tokens"] = reg
    if swiglu:
        want["mlp_layer"] = "swiglu"
    variant = variant or _research_variant("lvd142m", **want)
    args = dict(variant.args, **arch, num_classes=0)
    return Converted("vit", args, sd, notes, variant=variant.name,
                     tag="lvd142m" if "lvd142m" in variant.weights else None)


def _swin_from_research(state_dict: StateDict, variant: Optional[Variant]) -> Converted:
    """Swin (Liu et al. 2021), the microsoft/Swin-Transformer release: patch merging moves from the end
    of stage i to the start of stage i + 1 (timm's layout), `head` becomes `head.fc`, and the buffers
    the file carries (`relative_position_index`, `attn_mask`) are dropped. The architecture is read
    from the shapes: widths, depths, heads (bias-table columns), window (bias-table rows) and, from a
    shifted block's `attn_mask`, the input size (else `variant`'s, else 224 for window 7, 384 for 12)."""
    buffers = [k for k in state_dict if k.endswith(("relative_position_index", "attn_mask"))]
    if "absolute_pos_embed" in state_dict:
        raise ConversionError("a Swin checkpoint with an absolute position embedding (ape=True): zoo's Swin has none")
    sd: StateDict = {}
    for key, value in state_dict.items():
        if key in buffers:
            continue
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
        sd[re.sub(r"^head\.", "head.fc.", key)] = value
    notes = [f"dropped {len(buffers)} buffers that the model computes itself (relative_position_index, attn_mask)"]
    if "patch_embed.proj.weight" not in sd:
        raise ConversionError("no 'patch_embed.proj.weight': not a Swin checkpoint")
    dim, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in sd
                     if (m := re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.", k))})
    stages = max(i for i, _ in blocks) + 1
    depths = [sum(1 for i, _ in blocks if i == s) for s in range(stages)]
    tables = [sd[f"layers.{s}.blocks.0.attn.relative_position_bias_table"] for s in range(stages)]
    window = (math.isqrt(tables[0].shape[0]) + 1) // 2
    mask = next((state_dict[k] for k in buffers if k.startswith("layers.0.") and k.endswith("attn_mask")), None)
    if mask is not None:
        img_size = math.isqrt(mask.shape[0]) * window * patch
    elif variant is not None:
        img_size = variant.args.get("img_size", 224)
    elif window in (7, 12):
        img_size = {7: 224, 12: 384}[window]
    else:
        raise ConversionError(f"cannot tell the input size of a window-{window} Swin; name it with --model NAME")
    args = {"img_size": img_size, "patch_size": patch, "in_chans": in_chans, "embed_dim": dim, "depths": depths,
            "num_heads": [t.shape[1] for t in tables], "window_size": window,
            "mlp_ratio": sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / dim,
            "qkv_bias": "layers.0.blocks.0.attn.qkv.bias" in sd,
            "num_classes": sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else 0}
    variant = variant or REGISTRY.match_variant("swin", args)
    return Converted("swin", args, sd, notes, variant=variant.name if variant else None)


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


def _research_variant(tag: str, **arch: Any) -> Variant:
    """The registry variant that has weight tag `tag` and these architecture arguments."""
    REGISTRY.ensure_loaded()
    for v in REGISTRY.variants.values():
        full = REGISTRY.complete_args(v.family, v.args)
        if tag in v.weights and all(full.get(k) == x for k, x in arch.items()):
            return v
    described = ", ".join(f"{k}={x}" for k, x in arch.items())
    raise ConversionError(f"no registered variant with a {tag!r} weight tag has {described}; name the "
                          f"architecture with --model NAME (zoo.list_models() lists them)")


# ------------------------------------------------------------------------------------------ helpers
def _rename(key: str, table: List[Tuple[str, Any]]) -> str:
    for pattern, replacement in table:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    return key


def _pair(value: Any) -> Any:
    return [int(value[0]), int(value[1])] if isinstance(value, (list, tuple)) else int(value)


# config.json model_type -> converter.
TRANSFORMERS: Dict[str, Callable[[Mapping[str, Any], StateDict], Converted]] = {
    **{t: _vit_from_transformers for t in ("vit", "deit", "dinov2", "dinov2_with_registers", "vit_mae")},
    "swin": _swin_from_transformers,
}
# `zoo convert --from NAME` -> converter.
RESEARCH: Dict[str, Callable[[StateDict, Optional[Variant]], Converted]] = {
    "mae": _mae_from_research,
    "dinov2": _dinov2_from_research,
    "swin": _swin_from_research,
}
