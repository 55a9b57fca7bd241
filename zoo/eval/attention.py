"""Attention maps you can look at (`zoo attention`, `zoo.attention_maps`).

- ViT family (ViT, DeiT, DINOv2, DINOv3, an MAE's encoder): the class token's attention over the patch
  tokens at one block, one head or the mean of the heads; prefix tokens (class, distillation,
  registers) are left out of the map. With `rollout=True` also attention rollout (Abnar & Zuidema
  2020, "Quantifying Attention Flow in Transformers"): per block the head-averaged attention plus the
  identity for the residual path, 0.5 A + 0.5 I with rows renormalised, multiplied from the first
  block to the chosen one; the class token's row over the patches is the map.
- Swin (no class token): at one block of the last stage, the attention each token receives from the
  queries of its window (one head or the mean), the windows reassembled into the stage's map (shift
  and padding undone, `zoo.layers.window_attention.window_reverse`). Rollout is not defined there:
  windows and patch merging change the token set between blocks.

The weights come from `zoo.layers.capture_attention`: only inside it do attention layers take the
explicit softmax path; every other forward pass keeps the fused kernel.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..data import INTERPOLATION
from ..data.files import read_image
from ..layers import capture_attention
from ..layers.window_attention import window_geometry, window_reverse

Head = Union[int, str]


@dataclass
class AttentionMaps:
    """What `attention_maps` returns: `attention` (B, h, w) float32 at block `layer` (for Swin: of the
    last stage), `rollout` (B, h, w) or None, the patch `grid` (h, w) and the `head` drawn (an index
    or "mean"). ViT maps are attention probabilities (a row of the softmax, prefix columns removed),
    so each map sums to at most 1."""

    attention: torch.Tensor
    rollout: Optional[torch.Tensor]
    grid: Tuple[int, int]
    layer: int
    head: Head


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): [(B, heads, T, T)] per block, first block first ->
    (B, T, T) = A'_L ... A'_1 with A' = rows-normalised (0.5 * mean over heads of A + 0.5 * I).
    Row t says how much each input token flows into token t at the last block given."""
    if not attentions:
        raise ValueError("attention rollout needs at least one block's attention")
    T = attentions[0].shape[-1]
    eye = torch.eye(T, device=attentions[0].device)
    result = eye.expand(attentions[0].shape[0], T, T)
    for attn in attentions:
        a = 0.5 * attn.float().mean(dim=1) + 0.5 * eye
        result = (a / a.sum(dim=-1, keepdim=True)) @ result
    return result


def _pick_head(attn: torch.Tensor, head: Head) -> torch.Tensor:
    """(B, heads, Q, K) -> (B, Q, K): one head, or their mean. Raises ValueError for a bad head."""
    if head == "mean":
        return attn.float().mean(dim=1)
    if isinstance(head, int) and -attn.shape[1] <= head < attn.shape[1]:
        return attn[:, head].float()
    raise ValueError(f"head must be 'mean' or an index below {attn.shape[1]} (this block's heads), got {head!r}")


def _layer_index(layer: int, count: int, what: str) -> int:
    if not -count <= layer < count:
        raise ValueError(f"layer {layer} out of range: {what} has {count} blocks (use 0..{count - 1}, or -1 for "
                         f"the last)")
    return layer % count


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor, layer: int = -1, head: Head = "mean",
                   rollout: bool = False) -> AttentionMaps:
    """Attention maps of `model` for preprocessed `images` (B, C, H, W); see the module docstring for
    what each family's map is. `layer` indexes the blocks (ViT) or the last stage's blocks (Swin);
    `head` is a head index or "mean". Raises ValueError for a layer or head out of range, rollout on
    Swin, or a model of neither kind."""
    model = model.encoder if hasattr(model, "forward_encoder") else model  # an MAE: its encoder
    if hasattr(model, "blocks") and hasattr(model, "num_prefix_tokens"):
        return _vit_maps(model, images, layer, head, rollout)
    if hasattr(model, "layers") and hasattr(model, "forward_stage_summaries"):
        if rollout:
            raise ValueError("attention rollout needs one token set through all blocks; Swin's windows and patch "
                             "merging change it: draw Swin's maps without rollout")
        return _swin_maps(model, images, layer, head)
    raise ValueError(f"{type(model).__name__}: attention maps are drawn for the ViT family and Swin")


def _vit_maps(model: nn.Module, images: torch.Tensor, layer: int, head: Head, rollout: bool) -> AttentionMaps:
    if not getattr(model, "has_class_token", True):
        raise ValueError("this ViT has no class token (class_token=False): its attention has no class-token row")
    grid = model.patch_embed.feat_size(tuple(images.shape[-2:]))
    index = _layer_index(layer, len(model.blocks), "this model")
    recorded = model.blocks[: index + 1] if rollout else model.blocks[index]  # only the blocks the maps need
    with capture_attention(recorded) as attns:
        model.forward_intermediates(images, [index], intermediates_only=True)  # no block after `index` runs
    p, B = model.num_prefix_tokens, images.shape[0]
    attention = _pick_head(attns[-1], head)[:, 0, p:].reshape(B, *grid)
    flow = attention_rollout(attns)[:, 0, p:].reshape(B, *grid) if rollout else None
    return AttentionMaps(attention, flow, grid, index, head)


def _swin_maps(model: nn.Module, images: torch.Tensor, layer: int, head: Head) -> AttentionMaps:
    last = model.layers[-1]
    index = _layer_index(layer, len(last.blocks), "the last stage")
    block = last.blocks[index]
    with capture_attention(block) as attns:
        features = model.forward_intermediates(images, [-1], output_fmt="NHWC", intermediates_only=True)[0]
    h, w = features.shape[1:3]  # the last stage's map
    attn = attns[0].flatten(0, 1)  # (B, nW, heads, N, N) -> (B * nW, heads, N, N)
    received = _pick_head(attn, head).mean(dim=1)  # (B * nW, N): mean over the window's queries
    geometry = window_geometry((h, w), block.window_size, block.shift_size, images.device, block.window_padding)
    attention = window_reverse(received.unsqueeze(-1), geometry)[..., 0]  # (B, h, w)
    return AttentionMaps(attention, None, (h, w), index, head)


# ------------------------------------------------------------------------------------ pictures
def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.55, cmap: str = "inferno") -> torch.Tensor:
    """An image (3, H, W) in [0, 1] with `heat` (h, w) drawn over it: upsampled bilinearly to H x W,
    scaled to [0, 1] (min to max) and coloured by the matplotlib colormap `cmap`. Returns (3, H, W)."""
    from matplotlib import colormaps

    H, W = image.shape[-2:]
    heat = F.interpolate(heat[None, None].float(), size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    colour = torch.from_numpy(colormaps[cmap](heat.numpy())[..., :3]).permute(2, 0, 1).float()
    return (1 - alpha) * image + alpha * colour


def model_input(image: torch.Tensor, input_cfg: dict, short_side: int, multiple: int,
                fixed: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """A photo (3, H, W) in [0, 1] -> the model's input (1, 3, h, w): resized (the input config's
    interpolation, antialiased) so the shorter side is `short_side` pixels, keeping the aspect ratio, each
    side rounded to a multiple of `multiple` pixels (the patch), or to exactly `fixed` (h, w) for a model
    that takes one size only; then normalised with the input config's mean and std."""
    from torchvision.transforms import v2

    H, W = image.shape[-2:]
    scale = short_side / min(H, W)
    size = list(fixed) if fixed else [max(multiple, round(s * scale / multiple) * multiple) for s in (H, W)]
    x = v2.functional.resize(image, size, interpolation=INTERPOLATION[input_cfg["interpolation"]], antialias=True)
    return v2.functional.normalize(x, list(input_cfg["mean"]), list(input_cfg["std"]))[None]


def save_png(image: torch.Tensor, path: Path) -> Path:
    """(3, H, W) in [0, 1] -> an 8-bit RGB PNG at `path`."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
    return path


def _unique_stems(paths: Sequence[Path]) -> List[str]:
    """File stems for the outputs, made unique: a stem seen before gets `_2`, `_3`, ... (a/x.jpg, b/x.jpg)."""
    seen: dict = {}
    stems = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def draw(model: nn.Module, paths: Sequence[Path], out: Path, layer: int = -1, head: Head = "mean",
         rollout: bool = False, short_side: Optional[int] = None) -> List[Path]:
    """`zoo attention`: for each image file, `<out>/<stem>_attention.png` (and `<stem>_rollout.png`), the
    photo at its own size with the map over it. The model sees the photo with its shorter side at
    `short_side` pixels (default: the model's input size), aspect ratio kept, where the model takes
    any size (DINOv3, Swin, `dynamic_img_size=True`); a fixed-size ViT sees it resized to its input
    size. Outputs of photos with the same stem get `_2`, `_3`, ... Warns for a model with random weights.
    Returns the files written; raises ValueError for an unreadable image (before any is drawn) or a
    `short_side` below 1."""
    if "weights" not in model.zoo_config:
        warnings.warn("drawing the attention of a model with RANDOMLY INITIALISED weights: the maps show no learned "
                      "structure. Pass --pretrained (a registry name), or a trained model's folder.", stacklevel=2)
    if short_side is not None and short_side < 1:
        raise ValueError(f"the shorter side must be at least 1 pixel, got {short_side}")
    cfg = model.zoo_config["input"]
    short_side = short_side or min(cfg["img_size"])
    inner = model.encoder if hasattr(model, "forward_encoder") else model
    vit = hasattr(inner, "num_prefix_tokens")
    multiple = inner.patch_embed.patch_size[0] if vit else 32
    fixed = tuple(inner.patch_embed.img_size) if vit and not inner.dynamic_img_size else None
    images = [read_image(path) for path in paths]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image, stem in zip(paths, images, _unique_stems(paths)):
        x = model_input(image, cfg, short_side, multiple, fixed)
        maps = attention_maps(model, x, layer, head, rollout)
        written.append(save_png(overlay(image, maps.attention[0]), out / f"{stem}_attention.png"))
        if maps.rollout is not None:
            written.append(save_png(overlay(image, maps.rollout[0]), out / f"{stem}_rollout.png"))
    return written
