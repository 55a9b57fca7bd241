"""Frozen-backbone features for linear probing and kNN, extracted once and cached on disk.

For every image we keep what DINOv2's linear evaluation needs to assemble all of its feature
configurations: the class token of each of the last 4 blocks (after the final norm) and the mean of
the last block's patch tokens. `FeatureSet.assemble(n, avgpool)` builds one configuration:

    n=1, avgpool=False  ->  cls of the last block                          (D)
    n=4, avgpool=True   ->  cls of the last 4 blocks + mean patch token      (5D)

Models without `get_intermediate_layers` (hierarchical ones) provide `forward_stage_summaries`
instead; docs/probe.md says what each family returns.

The cache key hashes the weights, the architecture arguments, the data (files, sizes, mtimes, or
the digits split), the eval transform and the options; a hit loads a safetensors file and runs no
forward pass.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

N_LAST = 4  # blocks (or stages) whose summaries are kept


@dataclass
class FeatureSet:
    """Features of one split: `summaries` (N, k, D) from the last k <= 4 blocks (oldest first),
    `patch_mean` (N, D) from the last block, `labels` (N,) int64."""

    summaries: torch.Tensor
    patch_mean: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def n_blocks(self) -> int:
        return self.summaries.shape[1]

    def assemble(self, n: int, avgpool: bool) -> torch.Tensor:
        """DINOv2's linear input: the last `n` summaries concatenated (+ the mean patch token)."""
        n = min(n, self.n_blocks)
        parts = [self.summaries[:, -n:].flatten(1)]
        if avgpool:
            parts.append(self.patch_mean)
        return torch.cat(parts, dim=1).float()

    def subset(self, idx: torch.Tensor) -> "FeatureSet":
        return FeatureSet(self.summaries[idx], self.patch_mean[idx], self.labels[idx])


def default_cache_dir() -> Path:
    """$ZOO_CACHE/features, else ~/.cache/zoo/features."""
    root = os.environ.get("ZOO_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "zoo") / "features"


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (a few hundred MB/s)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(model: nn.Module, data_id: str, transform_id: str, options: dict) -> str:
    payload = json.dumps({
        "weights": weights_fingerprint(model),
        "config": {k: v for k, v in getattr(model, "zoo_config", {}).items() if k != "weights"},
        "data": data_id, "transform": transform_id, "options": options, "version": 1,
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@torch.inference_mode()
def summarize(model: nn.Module, images: torch.Tensor, n_last: int = N_LAST):
    """One batch -> (summaries (B, k, D), patch_mean (B, D)), k = min(n_last, depth)."""
    if hasattr(model, "get_intermediate_layers"):  # ViT family
        if not getattr(model, "has_class_token", True):
            raise ValueError("linear probing reads class tokens; this ViT has none (class_token=False)")
        k = min(n_last, len(model.blocks))
        outs = model.get_intermediate_layers(images, n=k, return_class_token=True, norm=True)
        summaries = torch.stack([cls for _, cls in outs], dim=1)  # (B, k, D)
        return summaries, outs[-1][0].mean(dim=1)
    if hasattr(model, "forward_stage_summaries"):  # hierarchical models (Swin)
        return model.forward_stage_summaries(images, n_last)
    raise TypeError(f"{type(model).__name__} has neither get_intermediate_layers nor forward_stage_summaries")


def extract_features(model: nn.Module, dataset: Dataset, labels: torch.Tensor, batch_size: int = 128,
                     device: torch.device = torch.device("cpu"), precision: str = "fp32", workers: int = 0,
                     progress: bool = True, desc: str = "features",
                     on_batch: Optional[Callable[[], None]] = None, compile: Optional[str] = None) -> FeatureSet:
    """Run the frozen `model` (eval mode) over `dataset` (which yields images) and collect features;
    `compile` names a torch.compile backend for the extraction (`summarize`), None runs it eagerly."""
    model.eval()
    run = torch.compile(summarize, backend=compile) if compile else summarize
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    summaries, means = [], []
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else torch.no_grad
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc=desc, unit="img", dynamic_ncols=True,
                   disable=None)  # None: no bar when the output is not a terminal
    for images in loader:
        images = images[0] if isinstance(images, (list, tuple)) else images
        with ctx():
            s, m = run(model, images.to(device))
        summaries.append(s.float().cpu())
        means.append(m.float().cpu())
        if on_batch is not None:
            on_batch()
        if bar is not None:
            bar.update(images.shape[0])
    if bar is not None:
        bar.close()
    return FeatureSet(torch.cat(summaries), torch.cat(means), labels.to(torch.int64))


def save_features(path: Path, feats: FeatureSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({"summaries": feats.summaries.contiguous(), "patch_mean": feats.patch_mean.contiguous(),
               "labels": feats.labels.contiguous()}, str(tmp))
    os.replace(tmp, path)  # atomic: a half-written cache entry is never read


def load_features(path: Path) -> FeatureSet:
    t = load_file(str(path))
    return FeatureSet(t["summaries"], t["patch_mean"], t["labels"])
