"""`zoo predict`: classify images (files, folders searched recursively, glob patterns) with a registered
model or a saved one: top-k labels, in batches, on any device and precision, with optional test-time
augmentation, printed or written as CSV / JSON lines. `transforms_for(model)` is the exact eval
preprocessing of the model's weights, for use in your own code.
"""
from __future__ import annotations

import csv
import glob
import json
import re
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset

from .common.metrics import top_k_predictions
from .data import IMG_EXTENSIONS, default_workers, eval_transform
from .data.files import read_image
from .factory import create

TTA_MODES = ("none", "flip", "five-crop")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
Prediction = List[Tuple[str, float]]  # [(label, probability)] x top_k


def transforms_for(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The eval preprocessing of `model`'s weights (a model from `zoo.create`): resize the short side to
    size / crop_pct (the weights' interpolation, antialiased), center-crop to the input size, normalise
    with the weights' mean and std, as timm evaluates. Takes a float image (C, H, W) in [0, 1] (or a
    batch) and returns the model's input. Raises ValueError for a model without `zoo_config`."""
    cfg = getattr(model, "zoo_config", None)
    if not isinstance(cfg, dict) or "input" not in cfg:
        raise ValueError(f"{type(model).__name__} has no zoo_config: build it with zoo.create(...) so that its "
                         f"input config (size, crop, mean, std) is known")
    return eval_transform(cfg["input"])


def label_names(model) -> Optional[List[str]]:
    """The model's class names: saved ones (a fine-tuned model's config), else ImageNet's for 1000- and
    21843-class heads (timm's ImageNetInfo), else None."""
    saved = model.zoo_config.get("label_names")
    if saved:
        return list(saved)
    n = getattr(model, "num_classes", 0)
    if n in (1000, 21843):
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k" if n == 1000 else "imagenet-21k")
        return [info.index_to_description(i) for i in range(n)]
    return None


def load_classifier(ref: str, pretrained: Union[bool, str] = False):
    """`zoo.create(ref, pretrained=...)` in eval mode. Raises ValueError for a model without a head."""
    model = create(ref, pretrained=pretrained)  # a saved folder or hf-hub: repo brings its own weights
    if "weights" not in model.zoo_config:
        warnings.warn(f"--model {ref} without --pretrained: predicting with RANDOMLY INITIALISED weights; its labels "
                      f"mean nothing. Pass --pretrained, or a fine-tuned model's folder.", stacklevel=2)
    if not getattr(model, "num_classes", 0):
        raise ValueError(f"--model {ref}: this model has no classifier head (num_classes=0); fine-tune it first "
                         f"(zoo finetune) or use one with a head")
    return model.eval()


def image_files(inputs: Sequence[Union[str, Path]]) -> List[Path]:
    """Image files from `inputs`: files as given, folders searched recursively for image extensions
    (sorted), glob patterns (`**` recurses). Raises ValueError naming an input that matches no image."""
    found: List[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
            if not matches:
                raise ValueError(f"{item}: a folder with no image files ({', '.join(IMG_EXTENSIONS)}) in it")
            found += matches
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise ValueError(f"{item}: no such file or folder, and no file matches it as a pattern")
            found += matches
    return found


class _Images(Dataset):
    """Image files -> (model input, or (views, C, H, W) with test-time crops; index)."""

    def __init__(self, paths: Sequence[Path], transform) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(read_image(self.paths[i])), i


@torch.no_grad()
def predict(images: Sequence[Union[str, Path]], model, top_k: int = 5, batch_size: int = 32,
            device: Optional[Union[str, torch.device]] = None, precision: str = "fp32", tta: str = "none",
            num_workers: Optional[int] = None, progress: bool = False, compile: Optional[str] = None) -> List[Prediction]:
    """[(label, probability)] x top_k for each image file (in order), with the model's own eval
    preprocessing (`transforms_for`), `batch_size` images at a time on `device` (default: the model's),
    in `precision` ("fp32", "bf16" or "fp16" autocast). `tta`: "none", "flip" (the mean of the
    probabilities of the image and its mirror) or "five-crop" (of the four corner and the centre crops
    of the resized image). `num_workers` loader processes (default: `zoo.data.default_workers()`);
    `progress` shows a bar; `compile` names a torch.compile backend ("inductor", ...) for the forward
    passes. The model is moved to `device` (and put in eval mode). Raises ValueError for an unreadable
    image (naming it) or a bad argument."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    dataset = _Images(images, eval_transform(model.zoo_config["input"], five_crop=tta == "five-crop"))
    workers = default_workers() if num_workers is None else num_workers
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=min(workers, len(dataset)))
    from tqdm import tqdm

    try:
        run = torch.compile(model, backend=compile) if compile else model
        probs = torch.cat(list(_run(loader, run, device, precision, tta, progress, tqdm)))
    except ValueError as e:  # from a loader process: keep our message, not the worker's traceback
        found = re.search(r"(\S+: cannot read it as an image \(.*?\))", str(e))
        raise ValueError(found.group(1) if found else str(e)) from None
    return top_k_predictions(probs, label_names(model), top_k)  # the labels: from the model, not its compiled twin


def _run(loader, model, device: torch.device, precision: str, tta: str, progress: bool, tqdm):
    """(B, classes) probabilities per batch of `loader`, with test-time augmentation `tta`."""
    with torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32"):
        for x, _ in tqdm(loader, desc="predict", unit="batch", disable=not progress):
            x = x.to(device)
            if tta == "five-crop":  # (B, 5, C, H, W): every crop through the model, probabilities averaged
                p = model(x.flatten(0, 1)).float().softmax(dim=1).unflatten(0, x.shape[:2]).mean(dim=1)
            else:
                p = model(x).float().softmax(dim=1)
                if tta == "flip":
                    p = (p + model(x.flip(-1)).float().softmax(dim=1)) / 2
            yield p.cpu()


def write_predictions(paths: Sequence[Union[str, Path]], predictions: Sequence[Prediction],
                      out: Union[str, Path]) -> Path:
    """Write predictions to `out`: `.csv` (path, then label_1, probability_1, ... label_k, probability_k)
    or `.jsonl` / `.json` (one {"path", "top_k": [{"label", "probability"}]} per line). Raises
    ValueError for another suffix."""
    out = Path(out).expanduser()
    if out.suffix not in (".csv", ".jsonl", ".json"):
        raise ValueError(f"--out {out}: write .csv, or .jsonl / .json (JSON lines)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        if out.suffix == ".csv":
            k = max((len(p) for p in predictions), default=0)
            writer = csv.writer(f)
            writer.writerow(["path"] + [c for i in range(1, k + 1) for c in (f"label_{i}", f"probability_{i}")])
            for path, top in zip(paths, predictions):
                writer.writerow([str(path)] + [c for label, p in top for c in (label, f"{p:.6f}")])
        else:
            for path, top in zip(paths, predictions):
                f.write(json.dumps({"path": str(path), "top_k": [{"label": label, "probability": p}
                                                                  for label, p in top]}) + "\n")
    return out
