"""DINOv3 checkpoints from the origins other than timm (whose keys zoo's DINOv3 variants use as they
are): transformers' `DINOv3ViTModel` (`from_transformers`, `to_transformers`) and the
facebookresearch/dinov3 release (`from_dinov3_release`). Pure functions of state dicts, as in
`vit_checkpoints.py`.

Two facts the converters rely on:
- The original masks the key bias to zero, and transformers' released configs have none
  (`key_bias=False`): zoo's `qkv_bias="qv"` keeps the query and value biases (timm's `_qkvb` keys). A
  transformers model that does hold a key bias is loaded with the full fused bias (`qkv_bias=True`):
  with RoPE the key bias is rotated with each patch's position, so it does not cancel in the softmax.
- The original and transformers crop the pixels of a partial patch (a strided convolution), timm pads
  them; `conventions` record the origin's choice.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..specs import ConversionError, Converted, Variant
from ..layers.mlp import swiglu_hidden_features
from .keymaps import image_size, rename

StateDict = Dict[str, torch.Tensor]

_COMMON = {"pos_embed": "rope", "no_embed_class": True, "ls_layout": "gamma", "fc_norm": False,
           "dynamic_img_size": True}
_CROP = {"dynamic_img_crop": True, "dynamic_img_pad": False}  # the original's and transformers' strided conv

_HF_RENAMES: List[Tuple[str, str]] = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^embeddings\.patch_embeddings\.", "patch_embed.proj."),
    (r"^layer\.(\d+)\.norm([12])\.", r"blocks.\1.norm\2."),
    (r"^layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layer\.(\d+)\.attention\.q_proj\.bias$", r"blocks.\1.attn.q_bias"),
    (r"^layer\.(\d+)\.attention\.v_proj\.bias$", r"blocks.\1.attn.v_bias"),
    (r"^layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.gamma_\2"),
    (r"^layer\.(\d+)\.mlp\.gate_proj\.", r"blocks.\1.mlp.fc1_g."),
    (r"^layer\.(\d+)\.mlp\.up_proj\.", r"blocks.\1.mlp.fc1_UP."),  # fc1 (GELU MLP) or fc1_x (SwiGLU)
    (r"^layer\.(\d+)\.mlp\.down_proj\.", r"blocks.\1.mlp.fc2."),
    (r"^norm\.", "norm."),
]
_QKV_WEIGHT = re.compile(r"^layer\.(\d+)\.attention\.([qkv])_proj\.weight$")
_QKV_BIAS = re.compile(r"^layer\.(\d+)\.attention\.([qkv])_proj\.bias$")


def _mlp_args(dim: int, hidden: int, gated: bool) -> Dict[str, Any]:
    """Builder arguments giving an MLP of `hidden` units: mlp_ratio (and SwiGLU's layer and rounding)."""
    if not gated:
        return {"mlp_ratio": hidden / dim}
    align = 8 if hidden % 8 == 0 else 1  # any rounding that reproduces the width (the 7B's 64 gives the same)
    ratio = hidden * 3 / (2 * dim)
    if swiglu_hidden_features(int(dim * ratio), align) != hidden:
        raise ConversionError(f"gated MLP of width {hidden} at dim {dim}: no SwiGLU rounding gives it")
    return {"mlp_ratio": ratio, "mlp_layer": "swiglu_split", "swiglu_align_to": align}


def from_transformers(config: Mapping[str, Any], state_dict: StateDict) -> Converted:
    """transformers' `DINOv3ViTModel` (config.json as a dict, state dict; model_type "dinov3_vit") in
    zoo's (timm's) keys and builder arguments. Raises ConversionError for what zoo cannot hold."""
    gated = bool(config.get("use_gated_mlp", False))
    act = config.get("hidden_act", "silu" if gated else "gelu")
    if act != ("silu" if gated else "gelu"):
        raise ConversionError(f"transformers dinov3_vit with hidden_act={act!r}: zoo's DINOv3 uses GELU, or SiLU "
                              "in its gated (SwiGLU) MLP")
    if not config.get("proj_bias", True) or not config.get("mlp_bias", True):
        raise ConversionError("transformers dinov3_vit without projection or MLP biases: zoo's blocks have them")
    dim = int(config["hidden_size"])
    key_bias = any(re.match(r"^(?:model\.)?layer\.\d+\.attention\.k_proj\.bias$", k) for k in state_dict)
    qv_bias = bool(config.get("query_bias", True) or config.get("value_bias", True))
    args: Dict[str, Any] = {
        "img_size": image_size(config), "patch_size": int(config.get("patch_size", 16)),
        "in_chans": int(config.get("num_channels", 3)), "embed_dim": dim,
        "depth": int(config["num_hidden_layers"]), "num_heads": int(config["num_attention_heads"]),
        "qkv_bias": True if key_bias else ("qv" if qv_bias else False),
        "reg_tokens": int(config.get("num_register_tokens", 0)),
        "init_values": 1e-5, "norm_eps": float(config.get("layer_norm_eps", 1e-5)),
        "rope_base": float(config.get("rope_theta", 100.0)),
        "num_classes": 0, **_mlp_args(dim, int(config["intermediate_size"]), gated), **_COMMON,
    }
    # how the origin treats partial patches, its RoPE coordinate augmentations when training, and the SwiGLU
    # rounding that gives its width (not compared when naming the registry variant: 8 and 64 give 7B's alike)
    conventions = {**_CROP, "rope_shift": config.get("pos_embed_shift"), "rope_jitter": config.get("pos_embed_jitter"),
                   "rope_rescale": config.get("pos_embed_rescale")}
    if gated:
        conventions["swiglu_align_to"] = args["swiglu_align_to"]
    args.update(conventions)
    sd = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state_dict.items()}
    out: StateDict = {}
    qkv: Dict[int, Dict[str, torch.Tensor]] = {}
    biases: Dict[int, Dict[str, torch.Tensor]] = {}
    notes: List[str] = []
    for key, value in sd.items():
        m = _QKV_WEIGHT.match(key) or (_QKV_BIAS.match(key) if key_bias else None)
        if m:
            (qkv if key.endswith("weight") else biases).setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif key == "embeddings.mask_token":
            notes.append("dropped the mask token (used only in masked pretraining)")
        else:
            new = rename(key, _HF_RENAMES)
            out[new.replace(".fc1_UP.", ".fc1_x." if gated else ".fc1.")] = value
    for block, parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ConversionError(f"layer {block}: attention weight has only {sorted(parts)} of q/k/v")
        out[f"blocks.{block}.attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]])
        if key_bias:  # the fused bias; a part the config leaves out is zero
            b = biases.get(block, {})
            zero = torch.zeros_like(parts["q"][:, 0])
            out[f"blocks.{block}.attn.qkv.bias"] = torch.cat([b.get(part, zero) for part in "qkv"])
        elif qv_bias:  # a config may have only one of the two: the other is zero
            for part in ("q", "v"):
                out.setdefault(f"blocks.{block}.attn.{part}_bias", torch.zeros_like(parts["q"][:, 0]))
    return Converted("vit", args, out, notes, prefer="dinov3", conventions=conventions)


def to_transformers(args: Mapping[str, Any],
                    state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, Any], StateDict]:
    """A zoo DINOv3 model (its complete builder arguments and state dict) as transformers'
    `DINOv3ViTModel`: config.json as a dict and the tensors under transformers' keys. Raises
    ConversionError for a head (DINOv3ViTModel is a backbone) or a layout transformers cannot hold."""
    if args.get("num_classes", 0):
        raise ConversionError("transformers' DINOv3ViTModel is a backbone: export the model with num_classes=0")
    gated = args.get("mlp_layer", "mlp") != "mlp"
    dim = int(args["embed_dim"])
    hidden = state_dict["blocks.0.mlp.fc2.weight"].shape[1]
    qv, full = args.get("qkv_bias") == "qv", args.get("qkv_bias") is True
    h, w = (args["img_size"],) * 2 if isinstance(args.get("img_size", 224), int) else args["img_size"]
    config = {
        "model_type": "dinov3_vit", "architectures": ["DINOv3ViTModel"], "hidden_size": dim,
        "num_hidden_layers": int(args["depth"]), "num_attention_heads": int(args["num_heads"]),
        "intermediate_size": int(hidden), "use_gated_mlp": gated, "hidden_act": "silu" if gated else "gelu",
        "patch_size": int(args["patch_size"]), "image_size": h if h == w else [h, w],
        "num_channels": int(args.get("in_chans", 3)), "num_register_tokens": int(args.get("reg_tokens", 0)),
        "layer_norm_eps": float(args.get("norm_eps", 1e-6)), "rope_theta": float(args.get("rope_base", 100.0)),
        "query_bias": qv or full, "key_bias": full, "value_bias": qv or full, "proj_bias": True, "mlp_bias": True,
        "layerscale_value": float(args.get("init_values") or 1.0),
        "pos_embed_shift": args.get("rope_shift"), "pos_embed_jitter": args.get("rope_jitter"),
        "pos_embed_rescale": args.get("rope_rescale"),
    }
    out: StateDict = {"embeddings.mask_token": torch.zeros(1, 1, dim)}
    for key, value in state_dict.items():
        m = re.match(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        if m:
            for part, t in zip("qkv", value.chunk(3)):
                out[f"layer.{m.group(1)}.attention.{part}_proj.{m.group(2)}"] = t.contiguous()
            continue
        out[_to_hf_key(key)] = value
    return config, out


_TO_HF: List[Tuple[str, str]] = [  # zoo's (timm's) keys -> DINOv3ViTModel's; the qkv weight is split apart
    (r"^cls_token$", "embeddings.cls_token"), (r"^reg_token$", "embeddings.register_tokens"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings."),
    (r"^blocks\.(\d+)\.norm([12])\.", r"layer.\1.norm\2."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"layer.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.attn\.([qv])_bias$", r"layer.\1.attention.\2_proj.bias"),
    (r"^blocks\.(\d+)\.gamma_([12])$", r"layer.\1.layer_scale\2.lambda1"),
    (r"^blocks\.(\d+)\.mlp\.fc1_g\.", r"layer.\1.mlp.gate_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1(?:_x)?\.", r"layer.\1.mlp.up_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"layer.\1.mlp.down_proj."),
    (r"^norm\.", "norm."),
]


def _to_hf_key(key: str) -> str:
    """One of zoo's keys as transformers' DINOv3ViTModel names it; ConversionError for a key it has no place for."""
    new = rename(key, _TO_HF)
    if new == key and not key.startswith("norm."):
        raise ConversionError(f"{key!r} has no place in transformers' DINOv3ViTModel")
    return new


# ------------------------------------------------------------------------------- research release
_RELEASE_DROPPED = (r"\.bias_mask$", r"^rope_embed\.periods$", r"^mask_token$", r"^local_cls_norm\.")
_RELEASE_RENAMES: List[Tuple[str, str]] = [  # facebookresearch/dinov3 -> zoo's (timm's) keys
    (r"^storage_tokens$", "reg_token"),
    (r"\.ls([12])\.gamma$", r".gamma_\1"),
    (r"\.mlp\.w1\.", ".mlp.fc1_g."), (r"\.mlp\.w2\.", ".mlp.fc1_x."), (r"\.mlp\.w3\.", ".mlp.fc2."),
]


def from_dinov3_release(state_dict: StateDict, variant: Optional[Variant] = None) -> Converted:
    """facebookresearch/dinov3's backbone files (`dinov3_vit*16_pretrain_*.pth`, plain state dicts):
    `storage_tokens` -> `reg_token`, `ls1.gamma` -> `gamma_1`, SwiGLU `w1`/`w2`/`w3` -> `fc1_g`/`fc1_x`/`fc2`,
    the fused qkv bias -> `q_bias`/`v_bias` (its key part is masked to zero by the release's
    `bias_mask`); biases that are zero in every block (the distilled B, L and H+ files) are dropped, for
    the variants without them; the mask token, the RoPE periods and the 7B's local-crop norm are dropped.
    The arguments are completed from `variant`, or the registry variant with an `lvd1689m` tag and the
    checkpoint's width, MLP and biases (`match`). Raises ConversionError for a file that is not a
    DINOv3 backbone."""
    sd: StateDict = {}
    biases: StateDict = {}
    dropped = 0
    for key, value in state_dict.items():
        if any(re.search(p, key) for p in _RELEASE_DROPPED):
            dropped += 1
        elif key.endswith("attn.qkv.bias"):
            q, _, v = value.chunk(3)
            biases[key.replace("qkv.bias", "q_bias")], biases[key.replace("qkv.bias", "v_bias")] = q, v
        else:
            sd[rename(key, _RELEASE_RENAMES)] = value
    qv = any(bool(b.any()) for b in biases.values())
    if qv:
        sd.update(biases)
    if "patch_embed.proj.weight" not in sd or "reg_token" not in sd:
        raise ConversionError("no 'patch_embed.proj.weight' / 'storage_tokens': not a DINOv3 backbone file")
    dim = sd["patch_embed.proj.weight"].shape[0]
    notes = [f"dropped {dropped} tensors of pretraining only (mask token, RoPE periods, bias masks)"] if dropped else []
    if biases and not qv:
        notes.append(f"dropped the all-zero qkv biases ({len(biases) // 2} blocks)")
    want: Dict[str, Any] = {"embed_dim": dim, "qkv_bias": "qv" if qv else False,
                            "mlp_layer": "swiglu_split" if "blocks.0.mlp.fc1_g.weight" in sd else "mlp"}
    args = {"embed_dim": dim, "patch_size": sd["patch_embed.proj.weight"].shape[-1], "num_classes": 0, **_CROP}
    return Converted("vit", args, sd, notes, tag="lvd1689m", match=want, conventions=dict(_CROP))


TRANSFORMERS = {"dinov3_vit": from_transformers}
RESEARCH = {"dinov3": from_dinov3_release}
