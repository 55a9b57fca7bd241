"""Classification metrics that add up across batches and processes: loss, top-1, top-5, calibration.

`ClassificationMeter` keeps sums only (counts, correct predictions, per-bin confidence and accuracy,
a confusion matrix), so shards evaluated by different processes combine with one all-reduce.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

ECE_BINS = 15


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE (%): sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the
    bin's share of samples. Confidence = the top class's probability; bin b holds (b/n, (b+1)/n]."""
    meter = ClassificationMeter(probs.shape[1], bins)
    meter.update_probs(probs, labels)
    return meter.ece()


class ClassificationMeter:
    """Running classification metrics over batches: loss, top-1 / top-5 (%), expected calibration error
    (%, `bins` equal-width confidence bins) and the confusion matrix (rows: true class, columns:
    predicted), summed over processes by `all_reduce`."""

    def __init__(self, num_classes: int, bins: int = ECE_BINS) -> None:
        self.num_classes, self.bins = num_classes, bins
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)
        self.top1 = torch.zeros((), dtype=torch.float64)
        self.top5 = torch.zeros((), dtype=torch.float64)
        self.bin_count = torch.zeros(bins, dtype=torch.float64)
        self.bin_conf = torch.zeros(bins, dtype=torch.float64)
        self.bin_correct = torch.zeros(bins, dtype=torch.float64)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits (B, C), integer labels (B,)."""
        logits, labels = logits.float().cpu(), labels.cpu()
        self.loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        self.update_probs(logits.softmax(dim=1), labels)

    @torch.no_grad()
    def update_probs(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """probabilities (B, C), integer labels (B,); the loss is not counted (see `update`)."""
        probs, labels = probs.float().cpu(), labels.cpu()
        k = min(5, probs.shape[1])
        top = probs.topk(k, dim=1).indices  # (B, k)
        correct = top[:, 0] == labels
        self.count += len(labels)
        self.top1 += correct.sum()
        self.top5 += (top == labels[:, None]).any(dim=1).sum()
        conf = probs.max(dim=1).values
        idx = (conf * self.bins).ceil().long().clamp(1, self.bins) - 1  # bin b: (b/n, (b+1)/n]
        self.bin_count += torch.bincount(idx, minlength=self.bins).double()
        self.bin_conf += torch.bincount(idx, weights=conf.double(), minlength=self.bins)
        self.bin_correct += torch.bincount(idx, weights=correct.double(), minlength=self.bins)
        self.confusion += torch.bincount(labels * self.num_classes + top[:, 0],
                                         minlength=self.num_classes ** 2).view(self.num_classes, -1).double()

    def all_reduce(self) -> "ClassificationMeter":
        """Sum every counter over processes (a no-op in one process)."""
        from .distributed import all_reduce

        for name in ("loss_sum", "count", "top1", "top5", "bin_count", "bin_conf", "bin_correct", "confusion"):
            setattr(self, name, all_reduce(getattr(self, name)))
        return self

    def ece(self) -> float:
        """Expected calibration error, % (Guo et al. 2017): the bin-size-weighted |accuracy - confidence|."""
        n = self.bin_count.sum().clamp(min=1)
        gap = (self.bin_correct - self.bin_conf).abs()  # per bin: |correct - sum of confidences|
        return (gap.sum() / n).item() * 100

    def summary(self, prefix: str = "") -> Dict[str, float]:
        """{prefix + "loss" (mean cross-entropy), "top1", "top5", "ece" (%)}."""
        n = max(self.count.item(), 1.0)
        return {f"{prefix}loss": self.loss_sum.item() / n, f"{prefix}top1": self.top1.item() / n * 100,
                f"{prefix}top5": self.top5.item() / n * 100, f"{prefix}ece": self.ece()}


def top_k_predictions(probs: torch.Tensor, label_names: Optional[list], k: int = 5):
    """[(label, probability)] for each row of (B, C) probabilities."""
    k = min(k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    names = label_names or [f"class {i}" for i in range(probs.shape[1])]
    return [[(names[i], float(p)) for p, i in zip(row_v.tolist(), row_i.tolist())]
            for row_v, row_i in zip(values, indices)]


def per_class_report(confusion, classes) -> dict:
    """Per-class precision, recall, F1 (%) and support from a confusion matrix (rows: true class,
    columns: predicted), with their macro averages and the matrix itself as numbers, as JSON takes
    them: {"classes": [...], "per_class": {name: {...}}, "macro": {...}, "confusion": [[...]]}."""
    import torch

    m = torch.as_tensor(confusion, dtype=torch.float64)
    tp, predicted, actual = m.diag(), m.sum(dim=0), m.sum(dim=1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp)) * 100
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp)) * 100
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(tp))
    per_class = {str(name): {"precision": p, "recall": r, "f1": f, "support": int(s)}
                 for name, p, r, f, s in zip(classes, precision.tolist(), recall.tolist(), f1.tolist(), actual.tolist())}
    present = actual > 0
    macro = {k: float(v[present].mean()) if present.any() else 0.0
             for k, v in (("precision", precision), ("recall", recall), ("f1", f1))}
    return {"classes": [str(c) for c in classes], "per_class": per_class, "macro": macro,
            "accuracy": float(tp.sum() / m.sum().clamp(min=1) * 100), "confusion": m.long().tolist()}
