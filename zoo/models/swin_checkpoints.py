"""Checkpoints of the Swin family from every origin, in one place: timm's (and zoo's) keys and the
original microsoft/Swin-Transformer layout fitted to a model (`checkpoint_filter_fn`: renames, bias
tables for another window), transformers' Swin (`from_transformers`), and for `zoo convert` the original
release (`--from swin`, `from_swin_release`) and torchvision's (`--from torchvision-swin`,
`from_torchvision_swin`). Pure functions of state dicts.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..layers import resize_relative_position_bias_table
from ..specs import ConversionError, Converted, Variant
from .swin import SwinTransformer
from .keymaps import fuse_qkv, image_size, merging_to_next_stage, rename

StateDict = Dict[str, torch.Tensor]

# For the weights code: the head, dropped and re-initialised for another num_classes, and the patch
# projection, adapted for another in_chans.
CLASSIFIER = ("head.fc",)
FIRST_CONV = "patch_embed.proj"


@torch.no_grad()
def checkpoint_filter_fn(state_dict: StateDict, model: SwinTransformer,
                         source_args: Optional[Mapping[str, Any]] = None) -> Tuple[StateDict, List[str]]:
    """Fit a Swin checkpoint to `model` so that `model.load_state_dict(..., strict=True)` takes it.

    - The original Microsoft release (patch merging at the END of stages 1-3, head `head.*`; the weights
      code has already taken it out of its 'model' wrapper) is renamed to timm's layout (`_original_to_timm`); timm-format
      checkpoints (the Hub's `timm/swin_*`) pass through unchanged.
    - Buffers that older checkpoints saved (`relative_position_index`, `attn_mask`) are dropped;
      zoo rebuilds them per input size.
    - Relative-position bias tables whose window differs from the model's (e.g. window 7 weights in a
      window 12 model at 384) are resized by the model's `bias_table_resample` (timm's geometric rule,
      or the Swin repository's bicubic for its weights; `resize_relative_position_bias_table`).
    Everything else (e.g. a head of another size) is left for the strict load to report. Returns
    (state dict, one line per kind of change).
    """
    original = "layers.0.downsample.reduction.weight" in state_dict
    targets = dict(model.named_parameters())
    out: StateDict = {}
    dropped, resized = 0, []
    for key, value in state_dict.items():
        if key.endswith(("relative_position_index", "attn_mask")):
            dropped += 1
            continue
        if original:
            key = _original_to_timm(key)
        if key.endswith("relative_position_bias_table") and key in targets and value.shape != targets[key].shape:
            attn = model.get_submodule(key.rsplit(".", 1)[0])
            resized.append((value.shape[0], (2 * attn.window_size[0] - 1) * (2 * attn.window_size[1] - 1)))
            value = resize_relative_position_bias_table(value, attn.window_size, method=model.bias_table_resample)
        out[key] = value
    notes = []
    if resized:
        notes.append(f"resized {len(resized)} relative-position bias tables ({model.bias_table_resample}) for window "
                     f"{model.window_size[0]}x{model.window_size[1]}: "
                     + ", ".join(f"{a} -> {b} rows" for a, b in sorted(set(resized))))
    if dropped:
        notes.append(f"dropped {dropped} buffers that the model computes itself (relative_position_index, attn_mask)")
    if original:
        notes.append("renamed the original Swin release's layout to timm's (patch merging, head)")
    return out, notes


def _original_to_timm(key: str) -> str:
    """A key of microsoft/Swin-Transformer's layout in timm's: patch merging moves from the end of stage i
    to the start of stage i + 1, the head `head.*` becomes `head.fc.*`."""
    key = re.sub(r"^layers\.(\d+)\.downsample\.", merging_to_next_stage, key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


# ------------------------------------------------------------------------------------ transformers
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
    (r"^encoder\.layers\.(\d+)\.downsample\.", merging_to_next_stage),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head.fc."),
]
_SWIN_QKV = re.compile(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")


def from_transformers(config: Mapping[str, Any], state_dict: StateDict) -> Converted:
    """transformers' Swin (SwinModel, SwinForImageClassification) -> timm's SwinTransformer keys and
    builder arguments. Raises ConversionError for what zoo's Swin cannot hold."""
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
            out[rename(key, _SWIN_RENAMES)] = value
    out.update(fuse_qkv(qkv))
    args = {
        "img_size": image_size(config), "patch_size": int(config.get("patch_size", 4)),
        "in_chans": int(config.get("num_channels", 3)), "embed_dim": int(config["embed_dim"]),
        "depths": [int(d) for d in config["depths"]], "num_heads": [int(h) for h in config["num_heads"]],
        "window_size": int(config["window_size"]), "mlp_ratio": float(config.get("mlp_ratio", 4.0)),
        "qkv_bias": bool(config.get("qkv_bias", True)),
        "num_classes": out["head.fc.weight"].shape[0] if "head.fc.weight" in out else 0,
    }
    args.update(ORIGINAL_CONVENTIONS)
    return Converted("swin", args, out, notes, conventions=dict(ORIGINAL_CONVENTIONS))


# ------------------------------------------------------------------------------- research releases
def from_swin_release(state_dict: StateDict, variant: Optional[Variant] = None) -> Converted:
    """Swin (Liu et al. 2021), the microsoft/Swin-Transformer release (`_original_to_timm`: patch merging
    moves to the start of the next stage, `head` becomes `head.fc`; the buffers the file carries are
    dropped). The architecture is read from the shapes: widths, depths, heads (bias-table columns),
    window (bias-table rows) and, from a shifted block's `attn_mask`, the input size (else `variant`'s,
    the one named with `zoo convert --model`, else 224 for window 7, 384 for 12)."""
    buffers = [k for k in state_dict if k.endswith(("relative_position_index", "attn_mask"))]
    if "absolute_pos_embed" in state_dict:
        raise ConversionError("a Swin checkpoint with an absolute position embedding (ape=True): zoo's Swin has none")
    sd = {_original_to_timm(k): v for k, v in state_dict.items() if k not in buffers}
    notes = [f"dropped {len(buffers)} buffers that the model computes itself (relative_position_index, attn_mask)"]
    mask = next((state_dict[k] for k in buffers if k.startswith("layers.0.") and k.endswith("attn_mask")), None)
    return Converted("swin", _swin_args(sd, variant, mask), sd, notes, conventions=dict(ORIGINAL_CONVENTIONS))


def from_torchvision_swin(state_dict: StateDict, variant: Optional[Variant] = None) -> Converted:
    """torchvision's Swin (v1: `swin_t`, `swin_s`, `swin_b` weights from torchvision.models), whose
    blocks and patch merging alternate in `features.N`: renamed to timm's keys, `relative_position_index`
    buffers dropped, the architecture read from the shapes (input size from `variant`, else 224).
    torchvision pads maps with zero tokens as the Swin repository does, with its own rule for small
    maps (`window_padding="torchvision"`). Raises ConversionError for a Swin V2 checkpoint or one
    without a patch embedding."""
    if any("cpb_mlp" in k or "logit_scale" in k for k in state_dict):
        raise ConversionError("a torchvision Swin V2 checkpoint (cpb_mlp, logit_scale): zoo's Swin is V1")
    sd: StateDict = {}
    buffers = 0
    for key, value in state_dict.items():
        if key.endswith("relative_position_index"):
            buffers += 1
            continue
        key = re.sub(r"^features\.0\.0\.", "patch_embed.proj.", re.sub(r"^features\.0\.2\.", "patch_embed.norm.", key))
        m = re.match(r"^features\.(\d+)\.(.*)$", key)
        if m:
            index, rest = int(m.group(1)), m.group(2)
            if index % 2:  # features.1, 3, 5, 7: the stages' blocks
                key = f"layers.{index // 2}.blocks.{rest}"
                key = re.sub(r"\.mlp\.0\.", ".mlp.fc1.", re.sub(r"\.mlp\.3\.", ".mlp.fc2.", key))
            else:  # features.2, 4, 6: patch merging, at the start of the next stage in timm's layout
                key = f"layers.{index // 2}.downsample.{rest}"
        sd[re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)] = value
    notes = [f"renamed torchvision's layout to timm's; dropped {buffers} relative_position_index buffers"]
    # torchvision: its own rule for small maps, and its patch convolution ignores a partial patch
    conventions = dict(ORIGINAL_CONVENTIONS, window_padding="torchvision", dynamic_img_crop=True)
    return Converted("swin", {**_swin_args(sd, variant, None), **conventions}, sd, notes, conventions=conventions)


def _swin_args(sd: StateDict, variant: Optional[Variant], mask: Optional[torch.Tensor]) -> Dict[str, Any]:
    """Builder arguments of a Swin state dict in timm's keys, read from the shapes: widths, depths, heads
    (bias-table columns), window (bias-table rows); the input size from a shifted block's saved
    `attn_mask`, else `variant`'s, else 224 for window 7 and 384 for 12. Raises ConversionError."""
    if "patch_embed.proj.weight" not in sd:
        raise ConversionError("no 'patch_embed.proj.weight': not a Swin checkpoint")
    dim, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in sd
                     if (m := re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.", k))})
    if not blocks:
        raise ConversionError("no 'layers.N.blocks.M.*' keys: not a Swin checkpoint (check --from)")
    stages = max(i for i, _ in blocks) + 1
    depths = [sum(1 for i, _ in blocks if i == s) for s in range(stages)]
    tables = [sd[f"layers.{s}.blocks.0.attn.relative_position_bias_table"] for s in range(stages)]
    window = (math.isqrt(tables[0].shape[0]) + 1) // 2
    if mask is not None:
        img_size = math.isqrt(mask.shape[0]) * window * patch
    elif variant is not None:
        img_size = variant.args.get("img_size", 224)
    elif window in (7, 12):
        img_size = {7: 224, 12: 384}[window]
    else:
        raise ConversionError(f"cannot tell the input size of a window-{window} Swin; name it with --model NAME")
    return {"img_size": img_size, "patch_size": patch, "in_chans": in_chans, "embed_dim": dim, "depths": depths,
            "num_heads": [t.shape[1] for t in tables], "window_size": window,
            "mlp_ratio": sd["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / dim,
            "qkv_bias": "layers.0.blocks.0.attn.qkv.bias" in sd,
            "num_classes": sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else 0, **ORIGINAL_CONVENTIONS}


# The Swin repository's behaviour, which transformers shares: maps padded with attended zero tokens
# before the roll, the image padded to whole patches (the detection code; transformers); bias tables
# resized by plain bicubic in its loader (transformers never resizes them).
ORIGINAL_CONVENTIONS: Dict[str, Any] = {"bias_table_resample": "bicubic", "window_padding": "swin",
                                        "dynamic_img_crop": False}

# transformers model_type -> converter; research release name (`zoo convert --from`) -> converter
TRANSFORMERS = {"swin": from_transformers}
RESEARCH = {"swin": from_swin_release, "torchvision-swin": from_torchvision_swin}

# Where a converter's weights are found inside a training checkpoint (`zoo.weights.unwrap`): a research
# converter may name its anchor keys in an `anchors` attribute when its layout does not have the family's
# first convolution key (docs/hub.md, "How a family takes part").
from_torchvision_swin.anchors = ("features.0.0.weight",)  # type: ignore[attr-defined]
