"""Checkpoints of the whole masked autoencoder (encoder, decoder, mask token: `MaskedAutoencoder`),
for continuing MAE pretraining from published weights or looking at their reconstructions:
transformers' ViTMAEForPreTraining (`from_transformers`) and the MAE repository's releases that keep
their decoder (`from_mae_release`, e.g. the visualisation checkpoints). Loading only the encoder, for
fine-tuning, stays the ViT family's job (`vit_checkpoints.py`). Pure functions of state dicts.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..specs import ConversionError, Converted, Variant
from . import vit_checkpoints
from .keymaps import fuse_qkv, rename

StateDict = Dict[str, torch.Tensor]
ENCODER = "encoder."  # MaskedAutoencoder keeps its ViT encoder under this prefix, in timm's keys
DECODER_KEYS = ("decoder_embed.", "decoder_pos_embed", "decoder_blocks.", "decoder_norm.", "decoder_pred.",
                "mask_token")

# transformers' ViTMAE decoder keys (after `decoder.`) -> zoo's (the MAE repository's, timm's Block keys).
# Every spelling transformers has used: blocks as `decoder_layers.N` (4.x; 5.x in memory) or
# `decoder_encoder.layer.N` (5.x files), attention as query/key/value + output.dense or q/k/v/o_proj.
_BLOCK = r"^(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\."
_DECODER_RENAMES: List[Tuple[str, str]] = [
    (_BLOCK + r"attention\.(?:o_proj|output\.dense)\.", r"decoder_blocks.\1.attn.proj."),
    (_BLOCK + r"layernorm_before\.", r"decoder_blocks.\1.norm1."),
    (_BLOCK + r"layernorm_after\.", r"decoder_blocks.\1.norm2."),
    (_BLOCK + r"(?:mlp\.fc1|intermediate\.dense)\.", r"decoder_blocks.\1.mlp.fc1."),
    (_BLOCK + r"(?:mlp\.fc2|output\.dense)\.", r"decoder_blocks.\1.mlp.fc2."),
]
_DECODER_QKV = re.compile(_BLOCK + r"attention\.(?:attention\.)?(q_proj|k_proj|v_proj|query|key|value)\.(weight|bias)$")
_QKV_NAMES = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}


def from_transformers(config: Mapping[str, Any], state_dict: StateDict) -> Converted:
    """transformers' ViTMAEForPreTraining (config.json as a dict, state dict) -> the whole
    `MaskedAutoencoder`: the encoder through the ViT family's converter, the decoder renamed here, and
    the builder arguments (decoder width, depth, heads, mask ratio, norm_pix_loss, LayerNorm eps).
    Raises ConversionError for a checkpoint without decoder or what zoo's MAE cannot hold."""
    if not any(k.startswith("decoder.") for k in state_dict):
        raise ConversionError("the checkpoint has no decoder (a ViTMAEModel): load it as a ViT encoder instead "
                              "(without family='mae')")
    encoder = vit_checkpoints.from_transformers(config, {k: v for k, v in state_dict.items()
                                                         if not k.startswith("decoder.")})
    dim, dec_dim = int(config["hidden_size"]), int(config["decoder_hidden_size"])
    mlp_ratio = int(config["intermediate_size"]) / dim
    if int(config.get("decoder_intermediate_size", dec_dim * mlp_ratio)) != round(dec_dim * mlp_ratio):
        raise ConversionError(f"decoder_intermediate_size {config['decoder_intermediate_size']} is not "
                              f"{mlp_ratio:g} x decoder_hidden_size {dec_dim}: zoo's MAE has one mlp_ratio for "
                              f"encoder and decoder; load the encoder alone (without family='mae')")
    if not encoder.args.get("qkv_bias", True):
        raise ConversionError("qkv_bias=False: zoo's MAE has biases in its qkv projections")
    out: StateDict = {ENCODER + k: v for k, v in encoder.state_dict.items()}
    qkv: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if not key.startswith("decoder."):
            continue
        key = key[len("decoder."):]
        m = _DECODER_QKV.match(key)
        if m:
            qkv.setdefault((f"decoder_blocks.{m.group(1)}", m.group(3)), {})[_QKV_NAMES.get(m.group(2), m.group(2))] = value
        else:
            out[rename(key, _DECODER_RENAMES)] = value
    out.update(fuse_qkv(qkv))
    args = {k: encoder.args[k] for k in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads")}
    args.update(decoder_embed_dim=dec_dim, decoder_depth=int(config["decoder_num_hidden_layers"]),
                decoder_num_heads=int(config["decoder_num_attention_heads"]), mlp_ratio=mlp_ratio,
                norm_pix_loss=bool(config.get("norm_pix_loss", False)),
                mask_ratio=float(config.get("mask_ratio", 0.75)),
                norm_eps=float(config.get("layer_norm_eps", 1e-12)))
    return Converted("mae", args, out, list(encoder.notes))


def from_mae_release(state_dict: StateDict, variant: Optional[Variant] = None) -> Converted:
    """The MAE repository's checkpoints that keep the decoder (`mae_visualize_vit_*.pth`, or a
    `main_pretrain.py` checkpoint): encoder keys move under `encoder.`, the decoder's stay. Widths,
    depths and patch come from the shapes; heads, `norm_pix_loss` and the mask ratio from `variant`
    (an MAE-family variant named with `zoo convert --model`, required: the file does not record
    them). The visualisation releases were trained on raw pixels: build them with norm_pix_loss=False.
    Raises ConversionError without an MAE-family `variant`, without a decoder or a patch embedding."""
    if variant is None or variant.family != "mae":
        raise ConversionError("name the whole-MAE architecture with --model (an MAE variant, e.g. "
                              "mae_vit_large_patch16_dec512d8b): the checkpoint does not record its heads")
    if "decoder_embed.weight" not in state_dict:
        raise ConversionError("the checkpoint has no decoder (decoder_embed.weight): convert it as an encoder, "
                              "with --model naming a ViT")
    sd = {(k if k.startswith(DECODER_KEYS) else ENCODER + k): v for k, v in state_dict.items()}
    if f"{ENCODER}patch_embed.proj.weight" not in sd:
        raise ConversionError("no 'patch_embed.proj.weight': not an MAE checkpoint")
    dim, in_chans, patch, _ = sd[f"{ENCODER}patch_embed.proj.weight"].shape
    depth = len({m.group(1) for k in sd if (m := re.match(rf"^{ENCODER}blocks\.(\d+)\.", k))})
    dec_depth = len({m.group(1) for k in sd if (m := re.match(r"^decoder_blocks\.(\d+)\.", k))})
    args = dict(variant.args, patch_size=patch, in_chans=in_chans, embed_dim=dim, depth=depth,
                decoder_embed_dim=sd["decoder_embed.weight"].shape[0], decoder_depth=dec_depth,
                mlp_ratio=sd[f"{ENCODER}blocks.0.mlp.fc1.weight"].shape[0] / dim)
    return Converted("mae", args, sd, [])


TRANSFORMERS = {"vit_mae": from_transformers}
RESEARCH = {"mae": from_mae_release}

# Where the MAE repository's weights sit inside its training checkpoints (`zoo.weights.unwrap`): its keys
# have no `encoder.` prefix.
from_mae_release.anchors = ("patch_embed.proj.weight",)  # type: ignore[attr-defined]
