"""Backbone + data -> cached train / eval features, shared by `linear-probe` and `knn`."""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch

from ..common.distributed import DistInfo, all_gather_objects, cleanup_distributed, init_distributed
from ..factory import create, is_repo_reference
from ..config import compile_setting, setting
from ..data import classification_splits, eval_transform, resolve_workers
from .features import (FeatureSet, cache_key, default_cache_dir, extract_features, load_features,
                       save_features)


@dataclass
class FeatureSettings:
    """The settings `linear-probe` and `knn` share: which backbone, which data, how features are
    extracted and cached. Each command's settings extend these (and give `out` and `seed` their own
    default and help)."""
    model: str = setting("vit_small_patch14_dinov2", "registered name[.tag], a saved model directory, or hf-hub:org/repo")
    pretrained: bool = setting(False, "load the registry's pretrained weights for a registered name")
    data: str = setting("digits", "'digits', a folder with train/ and test/ (or val/) or with one sub-folder per "
                                  "class, a .csv / .jsonl of path,label rows, or a Hugging Face dataset folder")
    out: Path = setting(Path("runs/features"), "output directory")
    img_size: Optional[int] = setting(None, "input size (default: the model's)")
    compile: Optional[str] = compile_setting()
    precision: str = setting("fp32", "fp32 or bf16 (autocast) for feature extraction", choices=("fp32", "bf16"))
    extract_batch_size: int = setting(128, "images per forward pass during extraction")
    cache_dir: Optional[Path] = setting(None, "feature cache (default: $ZOO_CACHE/features or ~/.cache/zoo/features)")
    no_cache: bool = setting(False, "extract again even if cached features exist")
    seed: int = setting(0, "seed for the held-out split")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    workers: Optional[int] = setting(None, "data-loading workers for extraction (default: CPUs - 1, at most 8, "
                                           "for image files; 0 for digits)")
    val_fraction: float = setting(0.2, "share of each class held out for evaluation when --data has no "
                                       "splits (one class-folder tree, a .csv / .jsonl file, a dataset)")
    progress: bool = setting(True, "show progress bars")


@dataclass
class PreparedFeatures:
    train: FeatureSet
    eval: FeatureSet
    classes: List[str]
    eval_name: str
    cache_status: str  # "hit" or "miss" (or "off")
    backbone_ref: str
    input_cfg: dict
    extraction_seconds: float = 0.0  # forward passes over both splits (0 on a cache hit)
    weights: str = "loaded"  # "pretrained <tag>" (the registry's), "random init" or "loaded" (a saved model)
    published: Dict[str, float] = field(default_factory=dict)  # the weights' published numbers, e.g. {"linear": 84.5}


class RandomBackboneWarning(UserWarning):
    """A probe or kNN asked to evaluate a randomly initialised backbone: a registered name without
    --pretrained. Its numbers say nothing about any pretraining."""


def backbone_line(results: dict, metric: str) -> str:
    """For the commands' summary: the backbone's weights, and the number published for them (ImageNet-1k
    `metric`: "linear" or "knn") beside the user's own result."""
    line = f"backbone: {results['backbone_weights']}"
    if metric in results.get("published", {}):
        line += f"; published ImageNet-1k {metric}: {results['published'][metric]:.1f}% (the registry's tag)"
    if results["backbone_weights"] == "random init":
        line += "  <- RANDOM WEIGHTS: pass --pretrained to evaluate the published ones"
    return line


def backbone_weights(model) -> tuple:
    """("pretrained <tag>" | "random init" | "loaded", published metrics) of a backbone from `load_backbone`."""
    cfg = getattr(model, "zoo_config", {}) or {}
    weights = cfg.get("weights")
    if weights is None:
        return "random init", {}
    tag = weights.get("registry_tag")  # set only when the registry's weights were loaded (zoo.create)
    return (f"pretrained {tag}" if tag else "loaded"), dict(weights.get("metrics") or {})


def load_backbone(ref: str, pretrained: bool = False, img_size: Optional[int] = None, seed: int = 0):
    """A frozen backbone from a registered name[.tag], a saved directory, or hf-hub:org/repo.

    An MAE model yields its encoder; heads are dropped (num_classes=0) since only features are used.
    """
    kwargs = {} if img_size is None else {"img_size": img_size}
    with torch.random.fork_rng():  # a random init is drawn from `seed`: the same backbone every run (and cache hit)
        torch.manual_seed(seed)
        model = create(ref, pretrained=pretrained, **kwargs)  # a saved folder or hf-hub: repo brings its own weights
    if not pretrained and not is_repo_reference(ref) and "weights" not in model.zoo_config:
        message = (f"--model {ref} without --pretrained: evaluating a RANDOMLY INITIALISED backbone. Its numbers "
                   f"say nothing about pretraining; pass --pretrained for the registry's weights, or a saved "
                   f"model folder.")
        warnings.warn(message, RandomBackboneWarning, stacklevel=2)  # on stderr; the summary repeats it
    if getattr(model, "num_classes", 0) and hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
    if hasattr(model, "encoder") and hasattr(model, "decoder_blocks"):  # an MAE: probe its encoder
        cfg = model.zoo_config
        model = model.encoder
        model.zoo_config = {**cfg, "family": "vit"}
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def prepare_features(cfg: FeatureSettings, device: torch.device, backbone=None,
                     dist: Optional[DistInfo] = None) -> PreparedFeatures:
    """Features of the train and eval splits for `cfg` (a ProbeConfig or KnnConfig), from the cache
    when the same weights, data, transform and options were extracted before. Under torchrun (`dist`
    with several processes) every process extracts every world_size-th image, the features are
    gathered once per split (every process then holds all of them) and the main process writes
    the cache."""
    dist = dist if dist is not None else DistInfo(0, 1, 0, device)
    model = backbone if backbone is not None else load_backbone(cfg.model, cfg.pretrained, cfg.img_size, cfg.seed)
    model = model.to(device)
    input_cfg = model.zoo_config["input"]
    splits = classification_splits(cfg.data, eval_transform(input_cfg), eval_transform(input_cfg), seed=cfg.seed,
                                   val_fraction=cfg.val_fraction)
    workers = resolve_workers(cfg.workers, splits.train)
    options = {"precision": cfg.precision, "n_last": 4}
    key = cache_key(model, splits.data_id, repr(sorted(input_cfg.items())), options)
    cache = Path(cfg.cache_dir) if cfg.cache_dir is not None else default_cache_dir()
    paths = {split: cache / f"{key}-{split}.safetensors" for split in ("train", "eval")}
    status = "off" if cfg.no_cache else "miss"
    if not cfg.no_cache and all(p.is_file() for p in paths.values()):
        feats = {split: load_features(p) for split, p in paths.items()}
        status = "hit"
    else:
        start = time.perf_counter()
        feats = {
            "train": _extract(model, splits.train, splits.train_labels, cfg, device, workers, dist, "train"),
            "eval": _extract(model, splits.eval, splits.eval_labels, cfg, device, workers, dist, splits.eval_name),
        }
        extraction = time.perf_counter() - start
        if not cfg.no_cache and dist.is_main:
            for split, p in paths.items():
                save_features(p, feats[split])
    weights, published = backbone_weights(model)
    return PreparedFeatures(feats["train"], feats["eval"], splits.classes, splits.eval_name, status,
                            cfg.model, input_cfg, extraction if status != "hit" else 0.0, weights, published)


@contextmanager
def eval_processes(device: str) -> Iterator[DistInfo]:
    """This process's place for an evaluation command: under torchrun it joins the process group (left
    again at the end) so that feature extraction is shared; alone, a one-process DistInfo."""
    joined_before = torch.distributed.is_available() and torch.distributed.is_initialized()
    info = init_distributed(device)
    try:
        yield info
    finally:
        if info.distributed and not joined_before:
            cleanup_distributed()


def _extract(model, dataset, labels: torch.Tensor, cfg: FeatureSettings, device: torch.device, workers: int,
             dist: DistInfo, name: str) -> FeatureSet:
    """`extract_features` over this process's share (every world_size-th image from its rank), then
    every process's shares gathered and put back in dataset order."""
    if not dist.distributed:
        return extract_features(model, dataset, labels, cfg.extract_batch_size, device, cfg.precision, workers,
                                cfg.progress, f"features ({name})", compile=cfg.compile)
    from torch.utils.data import Subset

    mine = list(range(dist.rank, len(dataset), dist.world_size))
    part = extract_features(model, Subset(dataset, mine), labels[mine], cfg.extract_batch_size, device,
                            cfg.precision, workers, cfg.progress and dist.is_main, f"features ({name}, rank 0)",
                            compile=cfg.compile)
    shares = all_gather_objects((part.summaries, part.patch_mean))
    summaries = torch.empty((len(dataset), *part.summaries.shape[1:]), dtype=part.summaries.dtype)
    means = torch.empty((len(dataset), *part.patch_mean.shape[1:]), dtype=part.patch_mean.dtype)
    for rank, (s, m) in enumerate(shares):
        summaries[rank::dist.world_size], means[rank::dist.world_size] = s, m
    return FeatureSet(summaries, means, labels.to(torch.int64))
