"""Small steps that several origins' key maps share (used by `vit_checkpoints.py` and
`swin_checkpoints.py`): renaming by a table, fusing query/key/value, folding the class token's
position into the token, moving Swin's patch merging to the next stage, reading an image size."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Tuple

import torch

from ..helpers import to_2tuple
from ..specs import ConversionError


def rename(key: str, table: List[Tuple[str, Any]]) -> str:
    """`key` rewritten by the first pattern of `table` (regex, replacement) that matches, else as is."""
    for pattern, replacement in table:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    return key


def fuse_qkv(parts: Mapping[Tuple[str, str], Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Separate query / key / value projections -> timm's fused `attn.qkv`: {(block prefix, "weight" or
    "bias"): {"query": t, "key": t, "value": t}} -> {"<prefix>.attn.qkv.<kind>": cat(q, k, v)} (rows in
    that order). Raises ConversionError when one of the three is missing."""
    out = {}
    for (block, kind), qkv in sorted(parts.items()):
        if set(qkv) != {"query", "key", "value"}:
            raise ConversionError(f"{block}: attention {kind} has only {sorted(qkv)} of query/key/value")
        out[f"{block}.attn.qkv.{kind}"] = torch.cat([qkv["query"], qkv["key"], qkv["value"]], dim=0)
    return out


def fold_class_position(state_dict: Dict[str, torch.Tensor]) -> None:
    """In place: a `pos_embed` with a row for the class token (1 + N rows) -> the row added to
    `cls_token` and `pos_embed` for the patches only (N rows), as timm's `no_embed_class` models keep
    them (DINOv2 with registers: registers and the class token carry no position)."""
    pos = state_dict.pop("pos_embed")
    state_dict["cls_token"] = state_dict["cls_token"] + pos[:, :1]
    state_dict["pos_embed"] = pos[:, 1:]


def merging_to_next_stage(match: "re.Match[str]") -> str:
    """`re.sub` replacement for `(prefix)layers.I.downsample.`: Swin's patch merging at the END of stage
    I (the original release, transformers) is timm's at the START of stage I + 1."""
    return f"layers.{int(match.group(1)) + 1}.downsample."


def image_size(config: Mapping[str, Any]) -> Any:
    """A transformers config's `image_size` as a builder argument: an int for a square, else [H, W]."""
    h, w = to_2tuple(config.get("image_size", 224), "image_size")
    return h if h == w else [h, w]
