"""Writing zoo's models as Hugging Face transformers checkpoints: the inverse of the `from_transformers`
key maps in `vit_checkpoints.py` and `swin_checkpoints.py`. Each function takes a model's complete
builder arguments and its state dict (timm's keys) and returns transformers' config.json (as a dict)
and the state dict under transformers' keys, in the layout transformers writes to disk (read by 4.x and
5.x alike), for `transformers.AutoModel` / `AutoModelForImageClassification` to load with equal
outputs. What transformers' classes cannot compute the same way is refused (ConversionError).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import torch

from ..helpers import to_2tuple
from ..specs import ConversionError
from .dinov3_checkpoints import to_transformers as dinov3_to_transformers

StateDict = Dict[str, torch.Tensor]


def _image_size(args: Mapping[str, Any]) -> Any:
    h, w = to_2tuple(args.get("img_size", 224), "img_size")
    return h if h == w else [h, w]


def _split_qkv(prefix: str, weight: torch.Tensor, bias: torch.Tensor, names=("query", "key", "value")) -> StateDict:
    """`attn.qkv` rows (q, k, v stacked) -> three projections named `prefix + name`."""
    out = {}
    for name, w in zip(names, weight.chunk(3, dim=0)):
        out[f"{prefix}{name}.weight"] = w.contiguous()
    if bias is not None:
        for name, b in zip(names, bias.chunk(3, dim=0)):
            out[f"{prefix}{name}.bias"] = b.contiguous()
    return out


def vit_to_transformers(args: Mapping[str, Any], state_dict: StateDict) -> Tuple[Dict[str, Any], StateDict]:
    """A zoo ViT as transformers' ViT (ViTModel / ViTForImageClassification; MAE encoders, whose fixed
    positions load as values, too), DeiT (distilled: DeiTModel / DeiTForImageClassificationWithTeacher),
    Dinov2 or Dinov2WithRegisters (backbones: Dinov2Model; a model with LayerScale or registers is written
    as one). Raises ConversionError for average pooling, qk-norm, no class token, SwiGLU without
    LayerScale, or a classifier on a DINOv2 backbone. A DINOv3 model (RoPE) is written as DINOv3ViTModel
    (`dinov3_checkpoints.to_transformers`)."""
    if args.get("pos_embed") == "rope":
        return dinov3_to_transformers(args, state_dict)
    num_classes, dim = int(args.get("num_classes", 0)), int(args["embed_dim"])
    layer_scale, reg = args.get("init_values") is not None, int(args.get("reg_tokens", 0))
    if args.get("global_pool", "token") != "token" or args.get("fc_norm"):
        raise ConversionError("transformers' ViT classes read the normalised class token; a model with average "
                              "pooling (global_pool='avg' / fc_norm) has no transformers equivalent")
    if args.get("qk_norm") or not args.get("class_token", True):
        raise ConversionError("qk_norm=True or class_token=False: transformers' ViT classes have neither")
    if layer_scale or reg:
        model_type = "dinov2_with_registers" if reg else "dinov2"
        if num_classes:
            raise ConversionError("transformers' Dinov2ForImageClassification reads [class token, mean of patch "
                                  "tokens], which zoo's head does not: export the backbone (num_classes=0)")
    elif args.get("mlp_layer", "mlp") != "mlp":
        raise ConversionError("a SwiGLU MLP without LayerScale: transformers has no such ViT")
    else:
        model_type = "deit" if args.get("distilled") else "vit"
    dinov2 = model_type.startswith("dinov2")
    base = {"vit": "vit.", "deit": "deit.", "dinov2": "dinov2.", "dinov2_with_registers": "dinov2_with_registers."}
    prefix = base[model_type] if num_classes else ""
    mlp = ("weights_in", "weights_out") if args.get("mlp_layer") == "swiglu" else ("fc1", "fc2")
    out: StateDict = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            layer, rest = f"{prefix}encoder.layer.{parts[1]}.", ".".join(parts[2:])
            if rest.startswith("attn.qkv."):
                if rest == "attn.qkv.weight":
                    out.update(_split_qkv(f"{layer}attention.attention.", value,
                                          state_dict.get(f"blocks.{parts[1]}.attn.qkv.bias")))
                continue
            renames = {"attn.proj.": "attention.output.dense.",
                       "norm1.": "norm1." if dinov2 else "layernorm_before.",
                       "norm2.": "norm2." if dinov2 else "layernorm_after.",
                       "mlp.fc1.": f"mlp.{mlp[0]}." if dinov2 else "intermediate.dense.",
                       "mlp.fc2.": f"mlp.{mlp[1]}." if dinov2 else "output.dense.",
                       "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}
            head = next((k for k in renames if rest.startswith(k)), None)
            if head is None:
                raise ConversionError(f"{key}: transformers' {model_type} has no such weight (this model has parts "
                                      f"transformers' classes lack); save it in zoo's or timm's format instead")
            out[layer + renames[head] + rest[len(head):]] = value
        elif key in ("head.weight", "head.bias"):
            name = "cls_classifier" if model_type == "deit" else "classifier"
            out[f"{name}.{parts[1]}"] = value
        elif key in ("head_dist.weight", "head_dist.bias"):
            out[f"distillation_classifier.{parts[1]}"] = value
        else:
            names = {"patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                     "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                     "cls_token": "embeddings.cls_token", "dist_token": "embeddings.distillation_token",
                     "reg_token": "embeddings.register_tokens", "pos_embed": "embeddings.position_embeddings",
                     "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
            if key not in names:
                raise ConversionError(f"{key}: transformers' {model_type} has no such weight (this model has parts "
                                      f"transformers' classes lack); save it in zoo's or timm's format instead")
            out[prefix + names[key]] = value
    if args.get("no_embed_class"):  # registers carry no position: transformers keeps a class row; zero it
        pos = out[prefix + "embeddings.position_embeddings"]
        out[prefix + "embeddings.position_embeddings"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    if dinov2:
        out[prefix + "embeddings.mask_token"] = torch.zeros(1, dim, dtype=out[prefix + "embeddings.cls_token"].dtype)
    config: Dict[str, Any] = {
        "model_type": model_type, "hidden_size": dim, "num_hidden_layers": int(args["depth"]),
        "num_attention_heads": int(args["num_heads"]), "image_size": _image_size(args),
        "patch_size": int(args.get("patch_size", 16)), "num_channels": int(args.get("in_chans", 3)),
        "qkv_bias": bool(args.get("qkv_bias", True)), "hidden_act": "gelu",
        "layer_norm_eps": float(args.get("norm_eps", 1e-6)),
    }
    if dinov2:
        ratio = float(args.get("mlp_ratio", 4.0))
        config.update(mlp_ratio=int(ratio) if ratio.is_integer() else ratio, use_swiglu_ffn=args.get("mlp_layer") == "swiglu",
                      layerscale_value=float(args["init_values"]))
        if reg:
            config["num_register_tokens"] = reg
    else:
        config["intermediate_size"] = int(round(dim * float(args.get("mlp_ratio", 4.0))))
    classes = {"vit": "ViTForImageClassification", "deit": "DeiTForImageClassificationWithTeacher"}
    backbones = {"vit": "ViTModel", "deit": "DeiTModel", "dinov2": "Dinov2Model",
                 "dinov2_with_registers": "Dinov2WithRegistersModel"}
    config["architectures"] = [classes[model_type] if num_classes else backbones[model_type]]
    return config, out


def swin_to_transformers(args: Mapping[str, Any], state_dict: StateDict) -> Tuple[Dict[str, Any], StateDict]:
    """A zoo Swin as transformers' SwinModel / SwinForImageClassification: patch merging moves from the
    start of stage i + 1 (timm) to the end of stage i (transformers). transformers pads maps by the
    Swin repository's rule and pads images: the same outputs at every size need `window_padding="swin"`
    and `dynamic_img_crop=False` (at sizes on the window grid all rules agree). Raises ConversionError
    for max pooling."""
    if args.get("global_pool", "avg") != "avg":
        raise ConversionError("transformers' Swin pools by average; global_pool='max' or '' has no equivalent")
    num_classes = int(args.get("num_classes", 0))
    prefix = "swin." if num_classes else ""
    out: StateDict = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "layers" and parts[2] == "blocks":
            block, rest = f"{prefix}encoder.layers.{parts[1]}.blocks.{parts[3]}.", ".".join(parts[4:])
            if rest.startswith("attn.qkv."):
                if rest == "attn.qkv.weight":
                    bias = state_dict.get(f"layers.{parts[1]}.blocks.{parts[3]}.attn.qkv.bias")
                    out.update(_split_qkv(f"{block}attention.self.", value, bias))
                continue
            renames = {"norm1.": "layernorm_before.", "norm2.": "layernorm_after.", "mlp.fc1.": "intermediate.dense.",
                       "mlp.fc2.": "output.dense.", "attn.proj.": "attention.output.dense.",
                       "attn.relative_position_bias_table": "attention.self.relative_position_bias_table"}
            head = next((k for k in renames if rest.startswith(k)), None)
            if head is None:
                raise ConversionError(f"{key}: transformers' swin has no such weight; save it in zoo's or timm's format")
            out[block + renames[head] + rest[len(head):]] = value
        elif parts[0] == "layers" and parts[2] == "downsample":
            out[f"{prefix}encoder.layers.{int(parts[1]) - 1}.downsample.{'.'.join(parts[3:])}"] = value
        elif key.startswith("head.fc."):
            out[f"classifier.{parts[-1]}"] = value
        elif key.startswith("patch_embed.proj."):
            out[f"{prefix}embeddings.patch_embeddings.projection.{parts[-1]}"] = value
        elif key.startswith("patch_embed.norm."):
            out[f"{prefix}embeddings.norm.{parts[-1]}"] = value
        elif key.startswith("norm."):
            out[f"{prefix}layernorm.{parts[-1]}"] = value
        else:
            raise ConversionError(f"{key}: transformers' swin has no such weight; save it in zoo's or timm's format")
    window = to_2tuple(args.get("window_size", 7), "window_size")
    if window[0] != window[1]:
        raise ConversionError(f"window_size {window}: transformers' Swin has square windows")
    config = {
        "model_type": "swin", "image_size": _image_size(args), "patch_size": int(args.get("patch_size", 4)),
        "num_channels": int(args.get("in_chans", 3)), "embed_dim": int(args.get("embed_dim", 96)),
        "depths": [int(d) for d in args.get("depths", (2, 2, 6, 2))],
        "num_heads": [int(h) for h in args.get("num_heads", (3, 6, 12, 24))], "window_size": window[0],
        "mlp_ratio": float(args.get("mlp_ratio", 4.0)), "qkv_bias": bool(args.get("qkv_bias", True)),
        "hidden_act": "gelu", "layer_norm_eps": 1e-5, "use_absolute_embeddings": False,
        "architectures": ["SwinForImageClassification" if num_classes else "SwinModel"],
    }
    return config, out
