"""Datasets and transforms for zoo's commands.

Sources (the other labeled forms, one image folder split automatically, CSV / JSON-lines files and
Hugging Face datasets, are in `zoo.data.sources`):
- `digits`: scikit-learn's 1,797 real handwritten digits (8x8, 10 classes), upsampled to the
  model's input size, 3 channels, split 80/20 (stratified, seeded) into train and test. Ships with
  scikit-learn, so it works offline.
- an image folder: any tree of image files. For label-free pretraining every image under the root
  counts; for classification the root holds `train/` and `val/` (or `test/`) splits, each with one
  sub-folder per class.

Datasets yield float images in [0, 1] (C, H, W) before the transform; transforms resize, augment
and normalise with the model's input config (mean, std, crop_pct, interpolation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from ..helpers import to_2tuple
from .files import IMG_EXTENSIONS, DataError, ImageFiles, class_folder, files_id, find_images

DIGITS = "digits"
INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                 "nearest": InterpolationMode.NEAREST}  # an input config's interpolation -> torchvision's


def resolve_workers(workers: Optional[int], dataset: Dataset) -> int:
    """A command's `workers` setting: as given, or by default `default_workers()` for data read from
    files and 0 for images already in memory (digits), where worker processes only cost."""
    if workers is not None:
        return workers
    return 0 if isinstance(dataset, TensorImages) else default_workers()


def default_workers() -> int:
    """Data-loader worker processes for this machine: one fewer than its CPUs, at most 8 (0 on one CPU:
    load in the main process)."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus - 1))


# ------------------------------------------------------------------------------------- datasets
class TensorImages(Dataset):
    """In-memory images (N, C, H, W) in [0, 1], with optional integer labels. With `as_pil` the
    transform receives a PIL image (timm's training transforms want one)."""

    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 transform: Optional[Callable] = None, classes: Optional[List[str]] = None,
                 as_pil: bool = False) -> None:
        self.images, self.labels, self.transform, self.as_pil = images, labels, transform, as_pil
        self.classes = classes or []

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.as_pil:
            img = v2.functional.to_pil_image((img * 255).round().to(torch.uint8))
        if self.transform is not None:
            img = self.transform(img)
        return img if self.labels is None else (img, int(self.labels[i]))


# --------------------------------------------------------------------------------------- digits
@dataclass
class DigitsSplit:
    images: torch.Tensor  # (N, 3, S, S) float in [0, 1]
    labels: torch.Tensor  # (N,) int64


def load_digits_split(img_size: int = 32, seed: int = 0, test_fraction: float = 0.2) -> dict:
    """scikit-learn's digits as {'train': DigitsSplit, 'test': DigitsSplit}: 8x8 images upsampled
    (bilinear) to img_size, grey repeated to 3 channels, stratified split with `seed`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    images = images.clamp_(0, 1).expand(-1, 3, -1, -1).contiguous()  # (N, 3, S, S)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                           stratify=digits.target, random_state=seed)
    return {"train": DigitsSplit(images[idx_train], labels[idx_train]),
            "test": DigitsSplit(images[idx_test], labels[idx_test])}


DIGIT_CLASSES = [str(i) for i in range(10)]


# ----------------------------------------------------------------------------------- transforms
def pretrain_transform(input_cfg: dict, crop_scale: Tuple[float, float] = (0.2, 1.0), hflip: float = 0.5):
    """MAE's augmentation: RandomResizedCrop(scale) + horizontal flip, then normalise."""
    ops = [v2.RandomResizedCrop(to_2tuple(input_cfg["img_size"], "img_size"), scale=tuple(crop_scale),
                                interpolation=INTERPOLATION[input_cfg["interpolation"]], antialias=True)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    ops.append(v2.Normalize(input_cfg["mean"], input_cfg["std"]))
    return v2.Compose(ops)


def eval_transform(input_cfg: dict, five_crop: bool = False):
    """Resize the short side to size / crop_pct, center-crop to size, normalise (timm's eval recipe):
    (C, H, W) float image -> (C, h, w). With `five_crop`, the four corner crops and the centre one of
    the resized image instead, (5, C, h, w) (test-time augmentation)."""
    h, w = to_2tuple(input_cfg["img_size"], "img_size")
    scale = math.floor(max(h, w) / input_cfg["crop_pct"])
    resize = v2.Resize(scale, interpolation=INTERPOLATION[input_cfg["interpolation"]], antialias=True)
    normalize = v2.Normalize(input_cfg["mean"], input_cfg["std"])
    if five_crop:
        return v2.Compose([resize, v2.FiveCrop((h, w)), _EachNormalized(normalize)])
    return v2.Compose([resize, v2.CenterCrop((h, w)), normalize])


class _EachNormalized:
    """Crops (a tuple of (C, h, w)) -> (n, C, h, w), each normalised. A class, not a lambda: loader
    processes started by spawn or forkserver pickle the transform."""

    def __init__(self, normalize) -> None:
        self.normalize = normalize

    def __call__(self, crops) -> torch.Tensor:
        return torch.stack([self.normalize(c) for c in crops])


def denormalize(images: torch.Tensor, input_cfg: dict) -> torch.Tensor:
    """Undo `Normalize`: (B, C, H, W) model inputs -> [0, 1] images for display."""
    mean = torch.tensor(input_cfg["mean"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(input_cfg["std"], dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1)


# ------------------------------------------------------------------------------ pretraining data
def pretrain_datasets(data: str, transform, held_out_transform, num_held_out: int = 8, seed: int = 0):
    """(train dataset, held-out dataset) of unlabeled images for self-supervised pretraining.

    `data` is "digits" (train split for training, the first images of the test split held out) or a
    folder of images, searched recursively; `num_held_out` of them (seeded choice) are kept out of
    training for the reconstruction figures.
    """
    if data == DIGITS:
        split = load_digits_split(seed=seed)  # 32x32; the transforms resize to the model's input
        return (TensorImages(split["train"].images, transform=transform),
                TensorImages(split["test"].images[:num_held_out], transform=held_out_transform))
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {data!r}: not 'digits' and not a directory; give a folder of images "
                        f"(searched recursively) or 'digits'")
    paths = find_images(root)
    if len(paths) <= num_held_out:
        raise DataError(f"{root}: found {len(paths)} image(s) ({', '.join(IMG_EXTENSIONS)}); need more than "
                        f"{num_held_out} (that many are held out for the reconstruction figures)")
    order = np.random.default_rng(seed).permutation(len(paths))
    held = set(order[:num_held_out].tolist())
    train = [p for i, p in enumerate(paths) if i not in held]
    return (ImageFiles(train, transform=transform),
            ImageFiles([paths[i] for i in sorted(held)], transform=held_out_transform))


# ---------------------------------------------------------------------------- classification data
@dataclass
class LabeledSplits:
    """Train and evaluation splits of a classification dataset (datasets yield (image, label))."""

    train: Dataset
    eval: Dataset
    train_labels: torch.Tensor
    eval_labels: torch.Tensor
    classes: List[str]
    eval_name: str  # "test" or "val"
    data_id: str  # identifies the exact files / split, for caches


def classification_splits(data: str, train_transform, eval_transform_, seed: int = 0,
                          eval_split: Optional[str] = None, val_split: bool = False,
                          val_fraction: float = 0.2) -> LabeledSplits:
    """`data` = "digits" (stratified 80/20 train/test, seeded), a folder holding `train/` and
    `val/` and/or `test/`, each with one sub-folder per class, or one of `zoo.data.sources`' forms
    (one class-folder tree, a CSV / JSON-lines file, a Hugging Face dataset; split with `seed` and
    `val_fraction` where they have no splits). The evaluation split is test when present, else val
    (or the one named by `eval_split`); with `val_split=True` it is val."""
    from .sources import labeled_data

    source = None if data == DIGITS else labeled_data(data, seed, val_fraction)
    if source is not None:
        name = eval_split or ("test" if source["test"] is not None and not val_split else "val")
        train, ev = source["train"], source.get(name)
        if ev is None:
            raise DataError(f"--data {data!r}: it has no {name} split")
        train.transform, ev.transform = train_transform, eval_transform_
        return LabeledSplits(train, ev, torch.tensor(train.labels), torch.tensor(ev.labels), source["classes"],
                             name, source["data_id"])
    if data == DIGITS:
        split = load_digits_split(seed=seed)  # 32x32; the transforms resize to the model's input
        return LabeledSplits(
            TensorImages(split["train"].images, split["train"].labels, train_transform, DIGIT_CLASSES),
            TensorImages(split["test"].images, split["test"].labels, eval_transform_, DIGIT_CLASSES),
            split["train"].labels, split["test"].labels, DIGIT_CLASSES, "test",
            f"digits:seed={seed}")
    root = Path(data).expanduser()
    if not (root / "train").is_dir():
        raise DataError(f"--data {data!r}{'' if root.exists() else ' (no such file or folder)'}: expected 'digits', a "
                        f"folder with train/ and val/ or test/ sub-folders "
                        f"(one folder per class inside each) or with one sub-folder per class (split "
                        f"automatically), a .csv / .jsonl file of path,label rows, or a Hugging Face dataset folder")
    if eval_split is None:
        eval_split = "val" if val_split else ("test" if (root / "test").is_dir() else "val")
    if not (root / eval_split).is_dir():
        raise DataError(f"{root}: no {eval_split}/ split next to train/")
    tr_paths, tr_labels, classes = class_folder(root / "train")
    ev_paths, ev_labels, ev_classes = class_folder(root / eval_split)
    unknown = sorted(set(ev_classes) - set(classes))
    if unknown:
        raise DataError(f"{root / eval_split}: classes {unknown[:5]} do not exist in train/")
    remap = {i: classes.index(c) for i, c in enumerate(ev_classes)}  # eval may miss some classes
    ev_labels = [remap[y] for y in ev_labels]
    data_id = f"folder:{root.resolve()}:{files_id(tr_paths, root)}:{files_id(ev_paths, root)}"
    return LabeledSplits(ImageFiles(tr_paths, tr_labels, train_transform, classes),
                         ImageFiles(ev_paths, ev_labels, eval_transform_, classes),
                         torch.tensor(tr_labels), torch.tensor(ev_labels), classes, eval_split, data_id)


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(kept indices, held-out indices): `fraction` of each class held out, chosen with `seed`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    counts = np.bincount(labels.numpy())
    stratify = labels.numpy() if counts[counts > 0].min() >= 2 else None
    keep, held = train_test_split(idx, test_size=fraction, stratify=stratify, random_state=seed)
    return torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))


def finetune_splits(data: str, seed: int = 0, holdout_fraction: float = 0.1, val_fraction: float = 0.2) -> dict:
    """{'train', 'val', 'test' (or None), 'classes'} for fine-tuning, datasets without transforms yet
    (set `.transform` once the model's input config is known). `zoo.data.sources`' forms (one
    class-folder tree, CSV / JSON-lines, a Hugging Face dataset) are split with `seed` and
    `val_fraction` where they have no val split.

    digits: the train split minus a stratified, seeded `holdout_fraction` (that part is val), and
    the test split. A folder: `train/` and `val/` are required, `test/` is optional; one sub-folder per
    class, the classes being train's.
    """
    if data == DIGITS:
        split = load_digits_split(seed=seed)
        keep, held = stratified_holdout(split["train"].labels, holdout_fraction, seed)
        tr = split["train"]
        return {"train": TensorImages(tr.images[keep], tr.labels[keep], classes=DIGIT_CLASSES),
                "val": TensorImages(tr.images[held], tr.labels[held], classes=DIGIT_CLASSES),
                "test": TensorImages(split["test"].images, split["test"].labels, classes=DIGIT_CLASSES),
                "classes": DIGIT_CLASSES}
    from .sources import labeled_data

    source = labeled_data(data, seed, val_fraction)
    if source is not None:
        return {k: source[k] for k in ("train", "val", "test", "classes")}
    root = Path(data).expanduser()
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        missing = "" if root.exists() else " (no such file or folder)"
        raise DataError(f"--data {data!r}{missing}: expected 'digits', a folder with train/ and val/ (test/ optional) "
                        f"or one sub-folder per class (split automatically), a .csv / .jsonl file of path,label rows, "
                        f"or a Hugging Face dataset folder")
    paths, labels, classes = class_folder(root / "train")
    out = {"train": ImageFiles(paths, labels, classes=classes), "classes": classes, "test": None}
    for name in ("val", "test"):
        if (root / name).is_dir():
            p, y, names = class_folder(root / name)
            unknown = sorted(set(names) - set(classes))
            if unknown:
                raise DataError(f"{root / name}: classes {unknown[:5]} do not exist in train/")
            out[name] = ImageFiles(p, [classes.index(names[i]) for i in y], classes=classes)
    return out
