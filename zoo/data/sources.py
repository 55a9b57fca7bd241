"""Labeled data in the forms people have it, for the classification commands (`finetune`,
`linear-probe`, `knn`), besides "digits" and a folder with `train/` + `val/` (`zoo.data`):

- one image folder with a sub-folder per class and no splits: split automatically, stratified and
  seeded (`val_fraction` of each class to val);
- a CSV or JSON-lines file of `path,label` rows (paths relative to the file), optionally with a
  `split` column (train / val / test; without it, split as above);
- a Hugging Face `datasets` dataset: a folder written by `save_to_disk` (a DatasetDict with
  train / validation / test splits, or one Dataset, split as above), or parquet / arrow files, with
  `image` and `label` columns (`datasets` is imported only for this).

`labeled_data(data, seed, val_fraction)` returns {"train", "val", "test" (or None), "classes",
"data_id"} with datasets yielding (float image (C, H, W) in [0, 1], label) and a `transform`
attribute the commands set, or None when `data` is none of these forms.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .files import DataError, ImageFiles, class_folder, files_id

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
TABLE_SUFFIXES = (".csv", ".jsonl", ".json")
ARROW_SUFFIXES = (".parquet", ".arrow")


class DatasetImages(Dataset):
    """Rows of a Hugging Face dataset as (float image (C, H, W) in [0, 1], label), RGB; the
    transform (set by the command) receives the tensor, or with `as_pil` the PIL image."""

    def __init__(self, dataset: Any, labels: Sequence[int], classes: List[str],
                 transform: Optional[Callable] = None, as_pil: bool = False) -> None:
        self.dataset, self.labels, self.classes = dataset, list(labels), classes
        self.transform, self.as_pil = transform, as_pil

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from torchvision.transforms import v2

        img = self.dataset[int(i)]["image"].convert("RGB")
        if not self.as_pil:
            img = v2.functional.to_dtype(v2.functional.to_image(img), torch.float32, scale=True)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])


def stratified_split(labels: Sequence[int], fraction: float, seed: int):
    """(train indices, val indices): `fraction` of each class to val (at least one where a class has
    two or more items), chosen with `seed`. Raises ValueError for a fraction outside (0, 1)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        n = max(n, 1) if len(idx) > 1 else 0
        val += idx[:n].tolist()
        train += idx[n:].tolist()
    return sorted(train), sorted(val)


def labeled_data(data: str, seed: int = 0, val_fraction: float = 0.2) -> Optional[Dict[str, Any]]:
    """The splits of `data` in one of this module's forms, or None (digits, train/ + val/ folders and
    anything else are for `zoo.data`). Raises `zoo.data.DataError` for a file or folder of these
    forms that cannot be used, naming what was found and what was expected."""
    path = Path(data).expanduser()
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return _table(path, seed, val_fraction)
    if _is_hf_dataset(path):
        return _hf_dataset(path, seed, val_fraction)
    if path.is_dir() and not (path / "train").is_dir():
        try:
            paths, labels, classes = class_folder(path)
        except DataError:
            return None
        train, val = stratified_split(labels, val_fraction, seed)
        return {"train": ImageFiles([paths[i] for i in train], [labels[i] for i in train], classes=classes),
                "val": ImageFiles([paths[i] for i in val], [labels[i] for i in val], classes=classes),
                "test": None, "classes": classes,
                "data_id": f"folder-split:{path.resolve()}:{files_id(paths)}:{val_fraction}:{seed}"}
    return None


def class_order(names) -> List[str]:
    """Class names in index order: numerically when every name is an integer (0, 1, ..., 10), else
    alphabetically."""
    names = list(names)
    return sorted(names, key=int) if all(n.lstrip("-").isdigit() for n in names) else sorted(names)


def _table(path: Path, seed: int, val_fraction: float) -> Dict[str, Any]:
    """A CSV (header `path,label[,split]`) or JSON-lines ({"path", "label"[, "split"]}) file."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        try:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not JSON lines ({e}); write one {{\"path\": ..., \"label\": ...}} per line") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DataError(f"{path}: expected rows with 'path' and 'label' (and optionally 'split'), "
                        f"found {sorted(rows[0]) if rows else 'no rows'}")
    files = [(path.parent / str(r["path"])).resolve() for r in rows]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} listed image(s) do not exist, e.g. {missing[0]} (paths are relative "
                        f"to the file's folder)")
    classes = class_order({str(r["label"]) for r in rows})
    labels = [classes.index(str(r["label"])) for r in rows]
    if "split" in rows[0]:
        splits = {}
        for name in ("train", "val", "test"):
            idx = [i for i, r in enumerate(rows) if SPLIT_NAMES.get(str(r["split"]).lower()) == name]
            splits[name] = idx
        unknown = sorted({str(r["split"]) for r in rows if str(r["split"]).lower() not in SPLIT_NAMES})
        if unknown or not splits["train"] or not splits["val"]:
            raise DataError(f"{path}: the split column needs train and val rows (test optional), found "
                            f"{sorted({str(r['split']) for r in rows})}")
    else:
        train, val = stratified_split(labels, val_fraction, seed)
        splits = {"train": train, "val": val, "test": []}
    out: Dict[str, Any] = {"classes": classes, "data_id": f"table:{path.resolve()}:{files_id([path] + files)}:"
                                                          f"{val_fraction}:{seed}"}
    for name, idx in splits.items():
        out[name] = ImageFiles([files[i] for i in idx], [labels[i] for i in idx], classes=classes) if idx else None
    return out


def _is_hf_dataset(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in ARROW_SUFFIXES
    return path.is_dir() and (any((path / n).is_file() for n in ("dataset_dict.json", "dataset_info.json"))
                              or any(p.suffix in (".parquet",) for p in path.glob("*.parquet")))


def _hf_dataset(path: Path, seed: int, val_fraction: float) -> Dict[str, Any]:
    """A `save_to_disk` folder or parquet / arrow files, with `image` and `label` columns."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a Hugging Face dataset: install the `datasets` package (pip install datasets) "
                        f"to read it") from None
    if path.is_dir() and any((path / n).is_file() for n in ("dataset_dict.json", "dataset_info.json")):
        loaded = datasets.load_from_disk(str(path))
    else:
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        kind = "arrow" if files[0].suffix == ".arrow" else "parquet"
        loaded = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")
    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    parts = {SPLIT_NAMES.get(k, k): v for k, v in parts.items()}
    first = parts["train"] if "train" in parts else next(iter(parts.values()))
    if not {"image", "label"} <= set(first.column_names):
        raise DataError(f"{path}: expected 'image' and 'label' columns, found {first.column_names}")
    feature = first.features["label"]
    classes = list(feature.names) if hasattr(feature, "names") else \
        class_order({str(x) for part in parts.values() for x in part["label"]})

    def labels_of(ds) -> List[int]:
        return list(ds["label"]) if hasattr(feature, "names") else [classes.index(str(x)) for x in ds["label"]]

    out: Dict[str, Any] = {"classes": classes, "test": None,
                           "data_id": f"hf:{path.resolve()}:{getattr(first, '_fingerprint', '')}:{val_fraction}:{seed}"}
    if "train" in parts and "val" in parts:
        for name in ("train", "val", "test"):
            if name in parts:
                out[name] = DatasetImages(parts[name], labels_of(parts[name]), classes)
        return out
    labels = labels_of(first)
    train, val = stratified_split(labels, val_fraction, seed)
    out["train"] = DatasetImages(first.select(train), [labels[i] for i in train], classes)
    out["val"] = DatasetImages(first.select(val), [labels[i] for i in val], classes)
    if "test" in parts:
        out["test"] = DatasetImages(parts["test"], labels_of(parts["test"]), classes)
    return out
