"""Figures written by the training and evaluation commands (PNG, matplotlib's Agg backend)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out_png: Path, dpi: int = 110) -> Path:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return Path(out_png)


def read_jsonl(path: Path) -> List[dict]:
    """One dict per non-empty line of a JSON-lines file ([] when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_curves(metrics_path: Path, out_png: Path, title: str = "") -> Optional[Path]:
    """One panel per logged quantity: training loss per step (and per epoch), learning rate, and
    whatever per-epoch validation metrics the log holds (val_loss, val_top1, ...)."""
    records = read_jsonl(metrics_path)
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not steps and not epochs:
        return None
    val_keys = sorted({k for r in epochs for k in r if k.startswith("val_")})
    panels = ["loss", "lr"] + [k for k in val_keys if not k.endswith("_loss")]
    if any(k.endswith("_loss") for k in val_keys):
        panels.insert(1, "val_loss")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "loss":
            if steps:
                ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6, label="step")
            if epochs:
                ax.plot([r["step"] for r in epochs], [r["loss"] for r in epochs], "o-", ms=3, label="epoch mean")
            ax.set_yscale("log")
            ax.legend()
        elif panel == "lr":
            src = steps or epochs
            ax.plot([r["step"] for r in src], [r["lr"] for r in src])
        else:
            for key in (val_keys if panel == "val_loss" else [panel]):
                if panel == "val_loss" and not key.endswith("_loss"):
                    continue
                pts = [(r["epoch"] + 1, r[key]) for r in epochs if key in r]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=key)
            ax.legend()
        ax.set_title(panel)
        ax.set_xlabel("optimizer step" if panel in ("loss", "lr") else "epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, out_png)


def plot_reconstructions(images: torch.Tensor, removed: torch.Tensor, recon: torch.Tensor, pasted: torch.Tensor,
                         out_png: Path, title: str = "") -> Path:
    """MAE figure, one row per image: original | masked | reconstruction | reconstruction with the
    visible patches pasted. All tensors (B, C, H, W) in [0, 1]; `removed` is 1 on removed pixels."""
    plt = _pyplot()
    columns = ["original", "masked", "reconstruction", "recon. + visible"]
    masked = images * (1 - removed) + 0.5 * removed  # removed patches shown grey
    rows = [images, masked, recon.clamp(0, 1), pasted.clamp(0, 1)]
    n = images.shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(4 * 1.6, n * 1.6), squeeze=False)
    for i in range(n):
        for j, col in enumerate(rows):
            ax = axes[i][j]
            ax.imshow(col[i].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, out_png, dpi=100)


def plot_confusion_matrix(matrix: torch.Tensor, class_names: Sequence[str], out_png: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts annotated."""
    plt = _pyplot()
    m = matrix.float()
    norm = m / m.sum(dim=1, keepdim=True).clamp(min=1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * k + 2), max(3.5, 0.5 * k + 1.5)))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    return _save(plt, fig, out_png)


def plot_lines(series: Dict[str, Sequence[tuple]], out_png: Path, xlabel: str, ylabel: str, title: str = "",
               logx: bool = False) -> Path:
    """Simple multi-line plot: series name -> [(x, y), ...]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(plt, fig, out_png)
