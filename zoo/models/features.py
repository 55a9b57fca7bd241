"""What the families' feature APIs share: choosing the blocks or stages asked for, and DINOv2's
`get_intermediate_layers` over a ViT's blocks."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

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


def intermediate_layers(model: nn.Module, x: torch.Tensor, n: Union[int, Sequence[int]], reshape: bool,
                        return_class_token: bool, norm: bool) -> Tuple:
    """DINOv2's `get_intermediate_layers` for a ViT-style `model` (`blocks`, `norm`, `_embed`, `_block`,
    `patch_embed`, `num_prefix_tokens`, `has_class_token`); see `VisionTransformer.get_intermediate_layers`."""
    take = take_indices(len(model.blocks), n, "block", "n")
    if return_class_token and not model.has_class_token:
        raise ValueError("return_class_token=True but this model has no class token")
    B = x.shape[0]
    grid = model.patch_embed.feat_size(tuple(x.shape[-2:])) if x.ndim == 4 else None
    x = model._embed(x)
    outputs = []
    for i, block in enumerate(model.blocks[: take[-1] + 1]):
        x = model._block(block, x)
        if i in take:
            outputs.append(model.norm(x) if norm else x)
    class_tokens = [out[:, 0] for out in outputs]
    outputs = [out[:, model.num_prefix_tokens:] for out in outputs]
    if reshape:
        outputs = [out.reshape(B, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous() for out in outputs]
    if return_class_token:
        return tuple(zip(outputs, class_tokens))
    return tuple(outputs)
