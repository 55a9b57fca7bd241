"""`zoo linear-probe`: DINOv2-style linear evaluation of a frozen backbone.

    from zoo.eval.linear_probe import ProbeConfig, linear_probe
    results = linear_probe(ProbeConfig(model="runs/mae/encoder", data="digits"))

The protocol (Oquab et al. 2023, facebookresearch/dinov2 eval/linear.py), and where zoo differs:
- the backbone is frozen and run once, in inference mode, over both splits; features are cached on
  disk (features.py), so probing the same backbone again extracts nothing;
- 4 feature configurations (last 1 or 4 class tokens, with or without the mean patch token) x 13
  learning rates = 52 linear heads (optionally on standardised features, `standardize=True`),
  trained TOGETHER: per configuration one batched matmul for all
  13 heads, a summed cross-entropy, and SGD with momentum 0.9 applied to all heads at once with a
  per-head learning rate (scaled by batch / 256), cosine to 0, no warmup, no weight decay; heads
  start at N(0, 0.01), biases 0;
- unlike the reference, which picks the best head on the split it reports, the best head is
  chosen on a stratified, seeded held-out part of the TRAIN split; the test (or val) labels stay
  sealed until then and are read once, to score the chosen head only.

`recipe="dinov3"` is DINOv3's (Simeoni et al. 2025, facebookresearch/dinov3 eval/linear.py): one
feature configuration, the last block's class token concatenated with its mean patch token (2D), and
the same 13 learning rates and head training.

`recipe="mae"` is MAE's linear probe (He et al. 2021) instead: the last block's class token,
BatchNorm without affine parameters before the head, LARS (trust coefficient 0.001, momentum 0.9,
no weight decay), 13 base learning rates around MAE's 0.1.

The output directory gets results.json, heads.csv, val_accuracy.png and the chosen head as
head.safetensors + head.json (see docs/probe.md for using backbone + head as a classifier).
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ..config import setting, to_dict
from ..layers.linear import linear
from ..common.plots import plot_lines
from .features import FeatureSet
from .prepare import FeatureSettings, backbone_line, eval_processes, prepare_features

LEARNING_RATES = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)
MAE_LEARNING_RATES = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1, 2e-1, 5e-1, 1.0, 2.0, 5.0, 10.0)
FEATURE_CONFIGS = ((1, False), (1, True), (4, False), (4, True))  # (last n blocks, with mean patch token)
DINOV3_FEATURES = ((1, True),)  # DINOv3: class token + mean patch token of the last block
RECIPES = ("dinov2", "dinov3", "mae")


@dataclass
class ProbeConfig(FeatureSettings):
    out: Path = setting(Path("runs/linear-probe"), "output directory")
    recipe: str = setting("dinov2", "dinov2 (52 heads: 4 feature configs x 13 lrs), dinov3 (class token + mean patch "
                                    "token x 13 lrs) or mae (BN + cls, LARS)",
                          choices=RECIPES)
    standardize: bool = setting(False, "standardise each feature dimension with the train statistics before the "
                                       "heads (not in DINOv2's protocol; see docs/probe.md)")
    iterations: Optional[int] = setting(None, "optimizer steps for the heads (default: 10 epochs of the training "
                                              "features, as DINOv2's 12,500 x 1024 on ImageNet, and at least 300)")
    batch_size: int = setting(256, "features per step")
    holdout_fraction: float = setting(0.1, "part of the train split held out to choose the head")
    seed: int = setting(0, "seed for the held-out split, head init and batch order")


class SealedLabels:
    """Labels that must not be looked at before a decision is made. `open()` hands them out and
    records when; the probe opens the test labels only after the head is chosen."""

    def __init__(self, labels: torch.Tensor) -> None:
        self._labels = labels
        self.opened = 0

    def open(self) -> torch.Tensor:
        self.opened += 1
        return self._labels


class Standardize(nn.Module):
    """(x - mean) / std per feature dimension, with fixed statistics (buffers)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LinearHeads(nn.Module):
    """len(lrs) linear heads for each feature configuration, evaluated with one matmul per configuration.

    weight[c]: (L, C, D_c) and bias[c]: (L, C) for configuration c; head (c, l) is the l-th learning
    rate's head on configuration c. Before the heads each configuration's features go through
    `norms[c]`: nothing, fixed standardisation (`standardize`: one (mean, std) pair per
    configuration), or BatchNorm without affine parameters (`bn`, MAE's recipe).
    """

    def __init__(self, in_dims: Sequence[int], num_classes: int, num_lrs: int, bn: bool = False,
                 generator: Optional[torch.Generator] = None,
                 standardize: Optional[Sequence[Tuple[torch.Tensor, torch.Tensor]]] = None) -> None:
        super().__init__()
        self.weight = nn.ParameterList([
            nn.Parameter(torch.randn(num_lrs, num_classes, d, generator=generator) * 0.01) for d in in_dims])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(num_lrs, num_classes)) for _ in in_dims])
        if bn:
            norms = [nn.BatchNorm1d(d, affine=False, eps=1e-6) for d in in_dims]
        elif standardize is not None:
            norms = [Standardize(m, sd) for m, sd in standardize]
        else:
            norms = [nn.Identity() for _ in in_dims]
        self.norms = nn.ModuleList(norms)

    def forward_config(self, c: int, x: torch.Tensor) -> torch.Tensor:
        """(B, D_c) features of configuration c -> (B, L, C) logits of its L heads, in one matmul."""
        w, b = self.weight[c], self.bias[c]
        return linear(self.norms[c](x), w.flatten(0, 1), b.flatten()).view(x.shape[0], *b.shape)

    def forward(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """[(B, D_c) per configuration] -> [(B, L, C)] logits per configuration."""
        if len(inputs) != len(self.weight):
            raise ValueError(f"expected {len(self.weight)} feature tensors (one per configuration), got {len(inputs)}")
        return [self.forward_config(c, x) for c, x in enumerate(inputs)]

    @torch.no_grad()
    def head(self, c: int, l: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Head (c, l) as one nn.Linear on the RAW features (weight (C, D_c), bias (C,)): the
        standardisation or (eval-mode) BatchNorm in front of it is folded into the weights."""
        w, b = self.weight[c][l], self.bias[c][l]  # (C, D), (C,)
        norm = self.norms[c]
        if isinstance(norm, Standardize):
            shift, scale = norm.mean, 1.0 / norm.std
        elif isinstance(norm, nn.BatchNorm1d):
            shift, scale = norm.running_mean, (norm.running_var + norm.eps).rsqrt()
        else:
            return w.clone(), b.clone()
        # ((x - shift) * scale) @ w.T == x @ (w * scale).T - w @ (shift * scale)
        return (w * scale).contiguous(), b - w @ (shift * scale)


def _batches(n: int, batch_size: int, iterations: int, generator: torch.Generator):
    """Indices of `iterations` batches from successive seeded permutations of range(n)."""
    pool = torch.empty(0, dtype=torch.int64)
    for _ in range(iterations):
        while pool.numel() < batch_size:
            pool = torch.cat([pool, torch.randperm(n, generator=generator)])
        yield pool[:batch_size]
        pool = pool[batch_size:]


@torch.no_grad()
def train_heads(inputs: Sequence[torch.Tensor], labels: torch.Tensor, lrs: Sequence[float], num_classes: int,
                iterations: int, batch_size: int, seed: int = 0, optimizer: str = "sgd", bn: bool = False,
                progress: bool = False, standardize: bool = False) -> LinearHeads:
    """Train every (configuration, lr) head at once on fixed features; returns the heads.

    Heads start from `LinearHeads(..., generator=Generator().manual_seed(seed))`; batches follow
    `_batches(N, batch_size, iterations, Generator().manual_seed(seed + 1))`. `standardize` puts a
    fixed per-dimension standardisation with these features' mean and std in front of the heads.

    `inputs` holds one (N, D_c) tensor per configuration. The loss is the sum over heads of each
    head's mean cross-entropy; its gradient is written out (softmax - one-hot, per head), so one
    step is two matmuls per configuration however many heads there are. The update is SGD with
    momentum 0.9 (PyTorch's semantics) or LARS, with head l's learning rate lrs[l] * batch / 256
    times a cosine factor, applied to all heads in one batched operation.
    """
    init_gen, order_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    stats = [(x.mean(0), x.std(0) + 1e-6) for x in inputs] if standardize else None
    heads = LinearHeads([x.shape[1] for x in inputs], num_classes, len(lrs), bn=bn, generator=init_gen,
                        standardize=stats).train()
    batch_size = min(batch_size, labels.shape[0])
    lr = torch.tensor(lrs, dtype=torch.float32) * batch_size / 256  # (L,)
    momentum = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in zip(heads.weight, heads.bias)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=iterations, desc=f"training {len(inputs) * len(lrs)} heads", dynamic_ncols=True,
                   disable=None)  # None: no bar when the output is not a terminal
    for step, idx in enumerate(_batches(labels.shape[0], batch_size, iterations, order_gen)):
        scale = 0.5 * (1 + math.cos(math.pi * step / iterations))  # cosine to 0, no warmup
        onehot = F.one_hot(labels[idx], num_classes).to(torch.float32).unsqueeze(1)  # (B, 1, C)
        for c, (w, b) in enumerate(zip(heads.weight, heads.bias)):
            x = heads.norms[c](inputs[c][idx])  # (B, D); BN (train mode) uses and tracks batch statistics
            logits = linear(x, w.flatten(0, 1), b.flatten()).view(len(idx), *b.shape)  # (B, L, C)
            # d(sum of the heads' mean CEs) / d logits = (softmax - one-hot) / B. The softmax is written out:
            # PyTorch's CPU kernel is 4-5x slower on these many short (classes-long) rows.
            probs = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
            dlogits = probs.div_(probs.sum(dim=-1, keepdim=True)).sub_(onehot).div_(len(idx))
            grad_w = torch.mm(dlogits.flatten(1).T, x).view_as(w)  # (L*C, B) @ (B, D) -> (L, C, D)
            grad_b = dlogits.sum(0)  # (L, C)
            if optimizer == "lars":  # per-head trust ratio 0.001 * ||w|| / ||grad|| on the weights
                w_norm = w.norm(dim=(1, 2)).view(-1, 1, 1)
                g_norm = grad_w.norm(dim=(1, 2)).view(-1, 1, 1)
                grad_w = grad_w * torch.where((w_norm > 0) & (g_norm > 0), 0.001 * w_norm / g_norm,
                                              torch.ones_like(w_norm))
            for p, grad, buf, step_lr in ((w, grad_w, momentum[c][0], (lr * scale).view(-1, 1, 1)),
                                          (b, grad_b, momentum[c][1], (lr * scale).view(-1, 1))):
                if step == 0:
                    buf.copy_(grad)
                else:
                    buf.mul_(0.9).add_(grad)
                p.sub_(step_lr * buf)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return heads.eval()


@torch.no_grad()
def score_heads(heads: LinearHeads, inputs: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """(configs, lrs, 2) top-1 and top-5 accuracy (%) of every head."""
    out = []
    for logits in heads(inputs):  # (N, L, C)
        k = min(5, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices  # (N, L, k)
        hit = top == labels.view(-1, 1, 1)
        out.append(torch.stack([hit[..., 0].float().mean(0), hit.any(-1).float().mean(0)], dim=-1) * 100)
    return torch.stack(out)


def choose_head(val_scores: torch.Tensor) -> Tuple[int, int]:
    """(configuration, lr) index of the best head on held-out train: highest top-1; ties go to the
    lower learning rate, then to the simpler configuration."""
    n_cfg, n_lr = val_scores.shape[:2]
    return max(((c, l) for c in range(n_cfg) for l in range(n_lr)),
               key=lambda cl: (val_scores[cl[0], cl[1], 0].item(), -cl[1], -cl[0]))


def linear_probe(cfg: ProbeConfig, backbone: Optional[nn.Module] = None) -> dict:
    """Extract (or load cached) features, train the heads, choose on held-out train, test once.

    `backbone` probes an in-memory model (built with zoo.create) instead of loading `cfg.model`.
    Under torchrun every process extracts a share of the features (gathered once); the main process
    trains and tests the heads, writes the outputs and returns the results ({} elsewhere)."""
    with eval_processes(cfg.device) as info:
        t0 = time.perf_counter()
        prep = prepare_features(cfg, info.device, backbone, info)
        return _probe(cfg, prep, t0) if info.is_main else {}


def summary_text(r: dict, out: Path) -> str:
    """What `zoo linear-probe` prints of `linear_probe`'s results."""
    c = r["chosen"]
    return (f"\nchosen on held-out train ({r['holdout_size']} images): n_blocks={c['n_blocks']} "
            f"avgpool={c['avgpool']} lr={c['lr']:g} (val top-1 {c['val_top1']:.2f}%)\n"
            f"{r['eval_split']} top-1 {c['test_top1']:.2f}%  top-5 {c['test_top5']:.2f}%  "
            f"({r['test_size']} images; features {r['feature_cache']}, {r['seconds']['total']:.1f} s)\n"
            f"{backbone_line(r, 'linear')}\nresults: {Path(out) / 'results.json'}")


def _probe(cfg: ProbeConfig, prep, t0: float) -> dict:
    """`linear_probe` once the features are there."""
    t_features = time.perf_counter() - t0
    train, test, classes = prep.train, prep.eval, prep.classes
    sealed = SealedLabels(test.labels)
    test = FeatureSet(test.summaries, test.patch_mean, torch.full_like(test.labels, -1))  # labels sealed

    from ..data import stratified_holdout

    keep, held = stratified_holdout(train.labels, cfg.holdout_fraction, cfg.seed)
    fit, val = train.subset(keep), train.subset(held)
    if cfg.recipe in ("dinov2", "dinov3"):
        configs = FEATURE_CONFIGS if cfg.recipe == "dinov2" else DINOV3_FEATURES
        lrs, optimizer, bn = LEARNING_RATES, "sgd", False
    else:
        configs, lrs, optimizer, bn = ((1, False),), MAE_LEARNING_RATES, "lars", True
    iterations = cfg.iterations or max(300, math.ceil(10 * len(fit) / cfg.batch_size))
    t1 = time.perf_counter()
    heads = train_heads([fit.assemble(n, a) for n, a in configs], fit.labels, lrs, len(classes),
                        iterations, cfg.batch_size, cfg.seed, optimizer, bn, cfg.progress,
                        standardize=cfg.standardize and not bn)
    t_train = time.perf_counter() - t1
    val_scores = score_heads(heads, [val.assemble(n, a) for n, a in configs], val.labels)  # (configs, lrs, 2)

    best = choose_head(val_scores)
    chosen = {"n_blocks": configs[best[0]][0], "avgpool": configs[best[0]][1], "lr": lrs[best[1]],
              "val_top1": val_scores[best][0].item(), "val_top5": val_scores[best][1].item()}
    # now, and only now, the test labels
    test_labels = sealed.open()
    with torch.no_grad():
        test_logits = heads.forward_config(best[0], test.assemble(*configs[best[0]]))[:, best[1]]  # (N, C)
    k = min(5, test_logits.shape[-1])
    top = test_logits.topk(k, dim=-1).indices
    chosen["test_top1"] = (top[:, 0] == test_labels).float().mean().item() * 100
    chosen["test_top5"] = (top == test_labels.view(-1, 1)).any(-1).float().mean().item() * 100

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    all_heads = [{"n_blocks": n, "avgpool": a, "lr": lr, "val_top1": val_scores[c, l, 0].item(),
                  "val_top5": val_scores[c, l, 1].item()}
                 for c, (n, a) in enumerate(configs) for l, lr in enumerate(lrs)]
    results = {
        "model": cfg.model, "data": cfg.data, "recipe": cfg.recipe, "classes": classes,
        "eval_split": prep.eval_name, "train_size": len(fit), "holdout_size": len(val), "test_size": len(test),
        "chosen": chosen, "heads": all_heads, "iterations": iterations, "feature_cache": prep.cache_status,
        "backbone_weights": prep.weights, "published": prep.published,
        "seconds": {"features": t_features, "extraction": prep.extraction_seconds, "train_heads": t_train,
                    "total": time.perf_counter() - t0},
        "config": to_dict(cfg),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    with open(out / "heads.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(all_heads[0]))
        w.writeheader()
        w.writerows(all_heads)
    series = {f"n={n}{' + avgpool' if a else ''}": [(lr, val_scores[c, l, 0].item()) for l, lr in enumerate(lrs)]
              for c, (n, a) in enumerate(configs)}
    plot_lines(series, out / "val_accuracy.png", "learning rate (before batch/256 scaling)",
               "held-out top-1 (%)", title=f"linear probe heads on {cfg.data}", logx=True)
    _save_head(heads, best, configs, lrs, classes, prep, out)
    results["seconds"]["total"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _save_head(heads: LinearHeads, best: Tuple[int, int], configs, lrs, classes, prep, out: Path) -> None:
    c, l = best
    weight, bias = heads.head(c, l)  # an nn.Linear on the raw features, normalisation folded in
    save_file({"weight": weight, "bias": bias}, str(out / "head.safetensors"))
    note = {
        "features": {"n_blocks": configs[c][0], "avgpool": configs[c][1],
                     "what": "concatenated final-normed class tokens of the last n blocks"
                             + (", then the mean of the last block's patch tokens" if configs[c][1] else "")},
        "head": "nn.Linear(features, classes): logits = features @ weight.T + bias (any feature "
                "normalisation used in training is folded into weight and bias)",
        "lr": lrs[l], "classes": classes, "backbone": prep.backbone_ref, "input": prep.input_cfg,
    }
    (out / "head.json").write_text(json.dumps(note, indent=2) + "\n")
