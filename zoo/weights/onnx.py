"""ONNX export for deployment (`zoo export NAME --format onnx`, `zoo.save_pretrained(model, DIR,
format="onnx")`): the model traced by `torch.export` and written by PyTorch's ONNX exporter
(`torch.onnx.export(dynamo=True)`, opset 18), with a dynamic batch and, where the model takes any
size, a dynamic height and width (multiples of the patch): positions resampled in-graph (a ViT built
with `dynamic_img_size=True`) or RoPE computed in-graph (DINOv3). Swin exports with a dynamic batch
at its input size: its window layout is decided in Python from the map size. An MAE model exports its
encoder. `check_onnx` runs the file in ONNX Runtime against PyTorch.

Input `pixel_values` (B, C, H, W), normalised as the folder's config.json says; output `output`:
logits, or pooled features for a backbone (num_classes=0).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..helpers import encoder_of

ONNX_NAME = "model.onnx"
OPSET = 18


def exported_module(model: nn.Module) -> nn.Module:
    """What the ONNX file holds: the model, or an MAE's encoder."""
    return encoder_of(model)


def dynamic_sizes(model: nn.Module) -> bool:
    """Whether the exported graph takes any height and width (multiples of the patch): a ViT-family model
    that takes any size (`dynamic_img_size`), positions or RoPE computed in the graph. Not with the DINOv2
    repository's "bicubic_offset" resampling, whose scale factors the trace would fix."""
    net = exported_module(model)
    learned_offset = getattr(net, "pos_embed", None) is not None and getattr(net, "pos_embed_resample", "") == "bicubic_offset"
    return bool(getattr(net, "dynamic_img_size", False)) and hasattr(net, "num_prefix_tokens") and not learned_offset


def write_onnx(model: nn.Module, path: Path, img_size: Tuple[int, int], in_chans: int = 3) -> Path:
    """Export `model` (eval mode, float32, on the CPU) to `path`. Raises ValueError when PyTorch's
    exporter cannot (its message kept), or when `onnxscript` (which the exporter needs) is missing."""
    from torch.export import Dim

    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter writes through it)
    except ImportError:
        raise ValueError("format='onnx' needs the onnx and onnxscript packages: pip install onnx onnxscript "
                         "(and onnxruntime to check the file)") from None
    net = exported_module(model)
    training = net.training
    net.eval()
    h, w = img_size
    first = next(net.parameters())
    example = torch.randn(2, in_chans, h, w, device=first.device, dtype=first.dtype)
    shapes: Dict[int, object] = {0: Dim("batch", min=1, max=4096)}
    if dynamic_sizes(model):
        ph, pw = net.patch_embed.patch_size
        shapes[2] = ph * Dim("grid_height", min=1, max=512)
        shapes[3] = pw * Dim("grid_width", min=1, max=512)
    try:  # (not under no_grad: the exporter then fails on Swin's graph)
        torch.onnx.export(net, (example,), str(path), dynamo=True, dynamic_shapes=(shapes,),
                          input_names=["pixel_values"], output_names=["output"], opset_version=OPSET, verbose=False)
    except Exception as e:  # the exporter's own errors are many kinds: name the model, keep the root cause's words
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip().splitlines()
        raise ValueError(f"format='onnx': PyTorch's exporter could not export {type(net).__name__}: "
                         f"{message[-1] if message else type(cause).__name__}") from e
    finally:
        net.train(training)
    return Path(path)


def check_onnx(path: Path, model: nn.Module, sizes: Sequence[Tuple[int, int, int]],
               in_chans: int = 3) -> List[float]:
    """Run the ONNX file in ONNX Runtime (CPU) on random inputs of each (batch, height, width) in `sizes`
    and return the largest |difference| from PyTorch's output per size. Raises ImportError without
    onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = exported_module(model)
    training = net.training
    net.eval()
    diffs = []
    for batch, h, w in sizes:
        x = torch.randn(batch, in_chans, h, w)
        with torch.no_grad():
            expected = net(x.to(next(net.parameters()))).float().cpu()
        got = torch.from_numpy(session.run(None, {"pixel_values": x.numpy()})[0])
        diffs.append((got - expected).abs().max().item())
    net.train(training)
    return diffs
