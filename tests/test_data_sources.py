"""Labeled data in the forms people have it: one class-folder tree split automatically (stratified,
seeded), a CSV / JSON-lines file of path,label rows, and a Hugging Face `datasets` dataset (a
`save_to_disk` folder and parquet files), built here offline from scikit-learn's real digits."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from zoo.data import DataError, classification_splits, finetune_splits, resolve_workers
from zoo.data.sources import labeled_data, stratified_split
from zoo.eval.linear_probe import ProbeConfig, linear_probe


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """120 real digits (12 per class) as PNG files in one folder per class: (root, [(path, label)])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    rows = []
    for c in range(10):
        (root / f"d{c}").mkdir()
        for j, i in enumerate(np.flatnonzero(digits.target == c)[:12]):
            path = root / f"d{c}" / f"{j}.png"
            Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((32, 32)).save(path)
            rows.append((path, f"d{c}"))
    return root, rows


def test_the_split_is_stratified_seeded_and_complete():
    labels = [c for c in range(5) for _ in range(10)] + [5]  # a class with one item stays in train
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(train + val) == list(range(51)) and not set(train) & set(val)
    assert [sum(labels[i] == c for i in val) for c in range(6)] == [2, 2, 2, 2, 2, 0]
    assert stratified_split(labels, 0.2, seed=3) == (train, val) and stratified_split(labels, 0.2, seed=4) != (train, val)
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        stratified_split(labels, 1.5, 0)


def test_one_class_folder_tree_is_split_automatically(digit_files):
    root, _ = digit_files
    splits = finetune_splits(str(root), seed=0, val_fraction=0.25)
    assert splits["classes"] == [f"d{c}" for c in range(10)] and splits["test"] is None
    assert len(splits["train"]) == 90 and len(splits["val"]) == 30
    assert np.bincount(splits["val"].labels).tolist() == [3] * 10
    img, label = splits["train"][0]
    assert img.shape == (3, 32, 32) and 0 <= img.min() and img.max() <= 1 and label == 0
    assert resolve_workers(None, splits["train"]) >= 0 and resolve_workers(3, splits["train"]) == 3


@pytest.mark.parametrize("kind", ["csv", "jsonl", "csv-with-splits"])
def test_csv_and_json_lines_files(digit_files, tmp_path, kind):
    root, rows = digit_files
    path = tmp_path / ("list.jsonl" if kind == "jsonl" else "list.csv")
    rel = [(p.relative_to(root.parent), label) for p, label in rows]
    if kind == "jsonl":
        path = root.parent / "list.jsonl"
        path.write_text("".join(json.dumps({"path": str(p), "label": y}) + "\n" for p, y in rel))
    else:
        path = root.parent / f"{kind}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label"] + (["split"] if kind == "csv-with-splits" else []))
            for i, (p, y) in enumerate(rel):
                w.writerow([p, y] + ([("train", "val", "test")[i % 3]] if kind == "csv-with-splits" else []))
    splits = classification_splits(str(path), None, None, seed=0)
    assert splits.classes == [f"d{c}" for c in range(10)]
    assert splits.eval_name == ("test" if kind == "csv-with-splits" else "val")
    assert len(splits.train) + len(splits.eval) == (80 if kind == "csv-with-splits" else 120)
    bad = root.parent / "bad.csv"
    bad.write_text("file,class\na.png,1\n")
    with pytest.raises(DataError, match="expected rows with 'path' and 'label'"):
        classification_splits(str(bad), None, None)


@pytest.mark.parametrize("form", ["save_to_disk", "parquet"])
def test_a_hugging_face_dataset(digit_files, tmp_path, form):
    import datasets  # a dev dependency (pyproject.toml): present wherever the suite runs
    _, rows = digit_files
    names = [f"d{c}" for c in range(10)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"image": [str(p) for p, _ in rows], "label": [names.index(y) for _, y in rows]},
                                    features=features)
    if form == "save_to_disk":
        split = ds.train_test_split(test_size=0.25, seed=0, stratify_by_column="label")
        datasets.DatasetDict({"train": split["train"], "validation": split["test"]}).save_to_disk(tmp_path / "ds")
        data = tmp_path / "ds"
    else:
        ds.to_parquet(str(tmp_path / "digits.parquet"))
        data = tmp_path / "digits.parquet"
    splits = finetune_splits(str(data), seed=0, val_fraction=0.25)
    assert splits["classes"] == names and len(splits["train"]) == 90 and len(splits["val"]) == 30
    img, label = splits["val"][0]
    assert img.shape == (3, 32, 32) and isinstance(label, int)


def test_the_probe_runs_on_a_class_folder_tree(digit_files, tmp_path):
    import zoo

    root, _ = digit_files
    backbone = zoo.create("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=0).eval()
    r = linear_probe(ProbeConfig(model="tiny", data=str(root), out=tmp_path / "p", iterations=20, progress=False,
                                 cache_dir=tmp_path / "cache", val_fraction=0.25, workers=0, holdout_fraction=0.2),
                     backbone=backbone)
    assert r["eval_split"] == "val" and r["test_size"] == 30 and 0 <= r["chosen"]["test_top1"] <= 100
    assert labeled_data(str(tmp_path / "nothing-here"), 0) is None
