"""Image files on disk, the base the data sources share: extensions, `ImageFiles`, class-folder
trees, and the error every data source raises."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


class DataError(ValueError):
    """The data argument points at nothing usable; the message says what was found and expected."""


class ImageFiles(Dataset):
    """Image files loaded with PIL as RGB, with optional integer labels. The transform receives a
    float tensor in [0, 1], or with `as_pil` the PIL image."""

    def __init__(self, paths: Sequence[Path], labels: Optional[Sequence[int]] = None,
                 transform: Optional[Callable] = None, classes: Optional[List[str]] = None,
                 as_pil: bool = False) -> None:
        self.paths, self.labels, self.transform, self.as_pil = list(paths), labels, transform, as_pil
        self.classes = classes or []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = read_image(self.paths[i], as_pil=self.as_pil)
        if self.transform is not None:
            img = self.transform(img)
        return img if self.labels is None else (img, int(self.labels[i]))


def read_image(path: Path, as_pil: bool = False):
    """An image file -> (3, H, W) float32 RGB in [0, 1] (with `as_pil`, the PIL RGB image). Raises
    ValueError naming a file PIL cannot read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: cannot read it as an image ({e})") from None
    return img if as_pil else v2.functional.to_dtype(v2.functional.to_image(img), torch.float32, scale=True)


def find_images(root: Path) -> List[Path]:
    """Every image file under `root`, recursively, sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def class_folder(root: Path) -> Tuple[List[Path], List[int], List[str]]:
    """(paths, labels, class names) from one sub-folder per class, classes sorted by name."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: expected one sub-folder per class (e.g. {root}/cat/*.jpg), found none")
    paths, labels = [], []
    for idx, name in enumerate(classes):
        files = find_images(root / name)
        paths += files
        labels += [idx] * len(files)
    if not paths:
        raise DataError(f"{root}: the class folders {classes[:5]} hold no images ({', '.join(IMG_EXTENSIONS)})")
    return paths, labels, classes


def files_id(paths: Sequence[Path], root: Optional[Path] = None) -> str:
    """A short hash of these files' names (relative to `root` when given), sizes and modification
    times: identifies a dataset's exact files, for caches."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root) if root is not None else p}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:24]
