"""`zoo knn`: weighted k-nearest-neighbour classification on frozen features (DINO / DINOv2).

Features are the final-normed class token (cached like the linear probe's; DINO's, DINOv2's and
DINOv3's kNN evaluations use it), or with `features="cls_patch_mean"` the class token concatenated
with the mean patch token (DINOv3's linear-probe features); L2-normalised;
similarity is the cosine; the k nearest training features vote for their class with weight
exp(similarity / T), T = 0.07. k is chosen among {10, 20, 100, 200} on a held-out part of the
train split (stratified, seeded); the test labels are read once, to score that k.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import torch
import torch.nn.functional as F

from ..config import setting, to_dict
from ..data import stratified_holdout
from .linear_probe import SealedLabels
from .prepare import FeatureSettings, eval_processes, prepare_features


KNN_FEATURES = {"cls": (1, False), "cls_patch_mean": (1, True)}  # FeatureSet.assemble(n blocks, with mean patch token)


@dataclass
class KnnConfig(FeatureSettings):
    out: Path = setting(Path("runs/knn"), "output directory")
    ks: Tuple[int, ...] = setting((10, 20, 100, 200), "numbers of neighbours to try")
    temperature: float = setting(0.07, "softmax temperature of the votes")
    holdout_fraction: float = setting(0.1, "part of the train split held out to choose k")
    features: str = setting("cls", "cls (the class token: DINO's, DINOv2's and DINOv3's kNN) or cls_patch_mean "
                                   "(class token + mean patch token: DINOv3's linear-probe features)",
                            choices=tuple(KNN_FEATURES))


@torch.no_grad()
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int,
                temperature: float, num_classes: int, chunk: int = 1024) -> torch.Tensor:
    """Class scores (Q, num_classes) for L2-normalised `queries` against the L2-normalised `bank`."""
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start:start + chunk] @ bank.T  # (q, N) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # (q, k)
        votes = torch.zeros(sim.shape[0], num_classes, dtype=sim.dtype)
        votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> Tuple[float, float]:
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    return ((top[:, 0] == labels).float().mean().item() * 100,
            (top == labels.view(-1, 1)).any(1).float().mean().item() * 100)


def knn(cfg: KnnConfig, backbone=None) -> dict:
    """kNN evaluation; `backbone` evaluates an in-memory model instead of loading `cfg.model`."""
    t0 = time.perf_counter()
    with eval_processes(cfg.device) as info:  # under torchrun: extraction shared, the rest on the main process
        prep = prepare_features(cfg, info.device, backbone, info)
        if not info.is_main:
            return {}
    num_classes = len(prep.classes)
    train = F.normalize(prep.train.assemble(*KNN_FEATURES[cfg.features]), dim=1)
    test = F.normalize(prep.eval.assemble(*KNN_FEATURES[cfg.features]), dim=1)
    sealed = SealedLabels(prep.eval.labels)
    keep, held = stratified_holdout(prep.train.labels, cfg.holdout_fraction, cfg.seed)
    per_k = {}
    for k in cfg.ks:
        scores = knn_predict(train[keep], prep.train.labels[keep], train[held], k, cfg.temperature, num_classes)
        per_k[k] = dict(zip(("val_top1", "val_top5"), _accuracy(scores, prep.train.labels[held])))
    best_k = max(cfg.ks, key=lambda k: (per_k[k]["val_top1"], -k))
    scores = knn_predict(train, prep.train.labels, test, best_k, cfg.temperature, num_classes)
    test_top1, test_top5 = _accuracy(scores, sealed.open())
    results = {"model": cfg.model, "data": cfg.data, "eval_split": prep.eval_name, "k": best_k,
               "temperature": cfg.temperature, "features": cfg.features, "test_top1": test_top1, "test_top5": test_top5,
               "per_k": {str(k): v for k, v in per_k.items()}, "feature_cache": prep.cache_status,
               "backbone_weights": prep.weights, "published": prep.published,
               "seconds": time.perf_counter() - t0, "config": to_dict(cfg)}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
