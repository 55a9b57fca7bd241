"""Linear probing and kNN on frozen features (digits), against independent computations."""
import json

import pytest
import torch
import torch.nn.functional as F

import zoo
from conftest import max_diff, randomize_
from zoo.eval.features import extract_features
from zoo.eval.knn import KNN_FEATURES, KnnConfig, knn, knn_predict
from zoo.eval.linear_probe import (FEATURE_CONFIGS, LEARNING_RATES, LinearHeads, ProbeConfig, _batches, linear_probe,
                                   train_heads)


def tiny_backbone(seed=0):
    model = zoo.create("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=2,
                       num_classes=0)
    model.zoo_config["input"].update(mean=[0.5] * 3, std=[0.5] * 3, crop_pct=1.0)
    return randomize_(model, seed).eval()


def test_feature_configs_equal_get_intermediate_layers_by_hand():
    model = tiny_backbone()
    images = torch.randn(6, 3, 32, 32)
    feats = extract_features(model, torch.utils.data.TensorDataset(images), torch.zeros(6), batch_size=4,
                             progress=False)
    with torch.no_grad():
        layers = model.get_intermediate_layers(images, n=4, return_class_token=True, norm=True)
    cls = [c for _, c in layers]
    by_hand = {
        (1, False): cls[-1],
        (1, True): torch.cat([cls[-1], layers[-1][0].mean(1)], dim=1),
        (4, False): torch.cat(cls, dim=1),
        (4, True): torch.cat(cls + [layers[-1][0].mean(1)], dim=1),
    }
    for n, avg in FEATURE_CONFIGS:
        assert max_diff(feats.assemble(n, avg), by_hand[(n, avg)]) < 1e-5


def test_batched_heads_match_heads_trained_one_by_one():
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(100, d, generator=g) for d in (8, 16, 32, 40)]
    labels = torch.randint(0, 5, (100,), generator=g)
    iterations, batch = 30, 16
    heads = train_heads(inputs, labels, LEARNING_RATES, 5, iterations, batch, seed=3)
    # the same heads, one nn.Linear + torch.optim.SGD each, same init, same batches
    init = LinearHeads([8, 16, 32, 40], 5, len(LEARNING_RATES), generator=torch.Generator().manual_seed(3))
    order = list(_batches(100, batch, iterations, torch.Generator().manual_seed(4)))
    worst = 0.0
    for c, x in enumerate(inputs):
        for l, lr in enumerate(LEARNING_RATES):
            lin = torch.nn.Linear(x.shape[1], 5)
            w0, b0 = init.head(c, l)
            with torch.no_grad():
                lin.weight.copy_(w0)
                lin.bias.copy_(b0)
            opt = torch.optim.SGD(lin.parameters(), lr=lr * batch / 256, momentum=0.9)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda t: 0.5 * (1 + torch.cos(torch.tensor(torch.pi * t / iterations))).item())
            for idx in order:
                opt.zero_grad()
                F.cross_entropy(lin(x[idx]), labels[idx]).backward()
                opt.step()
                sched.step()
            w, b = heads.head(c, l)
            worst = max(worst, max_diff(w, lin.weight), max_diff(b, lin.bias))
    assert worst < 1e-5, worst


def probe_cfg(tmp_path, **kw):
    base = dict(model="tiny", data="digits", out=tmp_path / "probe", cache_dir=tmp_path / "cache", iterations=100,
                progress=False)
    base.update(kw)
    return ProbeConfig(**base)


class CountingBackbone:
    """Counts forward passes through get_intermediate_layers."""

    def __init__(self, model):
        self.calls = 0
        original = model.get_intermediate_layers

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        model.get_intermediate_layers = counted


def test_probe_outputs_and_cache_reuse(tmp_path):
    model = tiny_backbone()
    counter = CountingBackbone(model)
    first = linear_probe(probe_cfg(tmp_path), backbone=model)
    assert first["feature_cache"] == "miss" and counter.calls > 0
    calls = counter.calls
    second = linear_probe(probe_cfg(tmp_path, out=tmp_path / "again"), backbone=model)
    assert second["feature_cache"] == "hit" and counter.calls == calls  # nothing re-extracted
    assert second["chosen"] == first["chosen"]
    # different weights -> a different cache entry
    other = tiny_backbone(seed=1)
    assert linear_probe(probe_cfg(tmp_path, out=tmp_path / "other"), backbone=other)["feature_cache"] == "miss"

    out = tmp_path / "probe"
    results = json.loads((out / "results.json").read_text())
    assert len(results["heads"]) == 52 and results["test_size"] == 360 and results["eval_split"] == "test"
    assert results["train_size"] + results["holdout_size"] == 1437
    assert (out / "heads.csv").read_text().count("\n") == 53
    assert (out / "val_accuracy.png").stat().st_size > 5000
    # backbone + saved head = a classifier with the reported test accuracy
    from safetensors.torch import load_file
    from zoo.data import classification_splits, eval_transform
    head = load_file(str(out / "head.safetensors"))
    note = json.loads((out / "head.json").read_text())
    splits = classification_splits("digits", None, eval_transform(note["input"]))
    feats = extract_features(model, splits.eval, splits.eval_labels, progress=False)
    x = feats.assemble(note["features"]["n_blocks"], note["features"]["avgpool"])
    top1 = ((x @ head["weight"].T + head["bias"]).argmax(1) == splits.eval_labels).float().mean().item() * 100
    assert top1 == pytest.approx(results["chosen"]["test_top1"], abs=1e-3)


def test_test_labels_are_read_only_after_the_head_is_chosen(tmp_path, monkeypatch):
    import zoo.eval.linear_probe as lp
    events = []
    real_choose, real_open = lp.choose_head, lp.SealedLabels.open
    monkeypatch.setattr(lp, "choose_head", lambda scores: events.append("chosen") or real_choose(scores))
    monkeypatch.setattr(lp.SealedLabels, "open", lambda self: events.append("test labels") or real_open(self))
    model = tiny_backbone()
    result = linear_probe(probe_cfg(tmp_path), backbone=model)
    assert events == ["chosen", "test labels"]
    # and the choice does not depend on the test labels at all: scramble them, same choice and scores
    import zoo.eval.prepare as prep_mod
    real_prepare = prep_mod.prepare_features

    def scrambled(*args, **kwargs):
        prep = real_prepare(*args, **kwargs)
        prep.eval.labels = prep.eval.labels[torch.randperm(len(prep.eval.labels))]
        return prep

    monkeypatch.setattr(lp, "prepare_features", scrambled)
    again = linear_probe(probe_cfg(tmp_path, out=tmp_path / "scrambled"), backbone=model)
    for key in ("n_blocks", "avgpool", "lr", "val_top1", "val_top5"):
        assert again["chosen"][key] == result["chosen"][key]
    assert [h["val_top1"] for h in again["heads"]] == [h["val_top1"] for h in result["heads"]]


def test_mae_recipe(tmp_path):
    result = linear_probe(probe_cfg(tmp_path, recipe="mae"), backbone=tiny_backbone())
    assert len(result["heads"]) == 13 and result["chosen"]["n_blocks"] == 1 and not result["chosen"]["avgpool"]


@pytest.mark.parametrize("norm", ["standardize", "bn"])
def test_saved_head_folds_the_normalisation(norm):
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(64, 6, generator=g) * 3 + 5, torch.randn(64, 9, generator=g) - 2]
    labels = torch.randint(0, 4, (64,), generator=g)
    heads = train_heads(inputs, labels, LEARNING_RATES, 4, 20, 16, standardize=norm == "standardize",
                        bn=norm == "bn", optimizer="lars" if norm == "bn" else "sgd")
    for c, x in enumerate(inputs):
        for l in (0, 7, 12):
            w, b = heads.head(c, l)
            with torch.no_grad():
                assert max_diff(x @ w.T + b, heads.forward_config(c, x)[:, l]) < 1e-4


def test_knn_matches_brute_force_and_runs_on_digits(tmp_path):
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(50, 8, generator=g), dim=1)
    bank_labels = torch.randint(0, 3, (50,), generator=g)
    queries = F.normalize(torch.randn(7, 8, generator=g), dim=1)
    scores = knn_predict(bank, bank_labels, queries, k=10, temperature=0.07, num_classes=3, chunk=3)
    for q in range(7):
        sims = [(float(queries[q] @ bank[i]), int(bank_labels[i])) for i in range(50)]
        sims.sort(reverse=True)
        expected = [sum(torch.exp(torch.tensor(s / 0.07)).item() for s, y in sims[:10] if y == c) for c in range(3)]
        assert torch.allclose(scores[q], torch.tensor(expected), rtol=1e-4)
    result = knn(KnnConfig(model="tiny", out=tmp_path / "knn", cache_dir=tmp_path / "cache", progress=False),
                 backbone=tiny_backbone())
    assert result["k"] in (10, 20, 100, 200) and set(result["per_k"]) == {"10", "20", "100", "200"}
    assert 0 < result["test_top1"] <= result["test_top5"] <= 100


def test_dinov3_feature_recipe_in_probe_and_knn(tmp_path):
    """DINOv3's linear-probe features: class token + mean patch token of the last block, as the probe's
    `dinov3` recipe (one configuration x 13 lrs) and kNN's `cls_patch_mean` (concatenated, then L2-normalised)."""
    model = zoo.create("vit_small_patch16_dinov3", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2)
    model.zoo_config["input"].update(mean=[0.5] * 3, std=[0.5] * 3, crop_pct=1.0)
    model = randomize_(model).eval()
    result = linear_probe(probe_cfg(tmp_path, recipe="dinov3", iterations=50), backbone=model)
    assert len(result["heads"]) == 13 and result["chosen"]["n_blocks"] == 1 and result["chosen"]["avgpool"]
    images = torch.randn(5, 3, 32, 32)
    feats = extract_features(model, torch.utils.data.TensorDataset(images), torch.zeros(5), batch_size=5,
                             progress=False)
    with torch.no_grad():
        tokens = model.forward_features(images)
    by_hand = torch.cat([tokens[:, 0], tokens[:, model.num_prefix_tokens:].mean(1)], dim=1)  # registers left out
    assert max_diff(feats.assemble(*KNN_FEATURES["cls_patch_mean"]), by_hand) < 1e-5
    r = knn(KnnConfig(model="tiny", out=tmp_path / "knn", cache_dir=tmp_path / "cache", progress=False,
                      features="cls_patch_mean"), backbone=model)
    assert r["features"] == "cls_patch_mean" and 0 < r["test_top1"] <= 100


def test_swin_probe_features_are_the_pooled_final_stage(tmp_path):
    model = randomize_(zoo.create("swin_tiny_patch4_window7_224", img_size=64, window_size=4, depths=(2, 2, 2, 3),
                                  embed_dim=24, num_heads=(1, 2, 2, 4), num_classes=0)).eval()
    model.zoo_config["input"].update(crop_pct=1.0)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        summaries, pooled = model.forward_stage_summaries(x)
        assert summaries.shape == (3, 3, 192)  # the final stage's 3 blocks
        assert max_diff(pooled, model.forward_head(model.forward_features(x), pre_logits=True)) < 1e-5
    result = linear_probe(probe_cfg(tmp_path, iterations=50), backbone=model)
    assert len(result["heads"]) == 52 and 0 < result["chosen"]["test_top1"] <= 100


def test_a_random_backbone_is_flagged_loudly_and_published_numbers_shown(tmp_path, offline):
    """A registry name without --pretrained warns (and says so in the results); pretrained weights with
    published numbers carry them (here from a local Hub cache holding the tag's file)."""
    from zoo.eval.prepare import RandomBackboneWarning, backbone_line, load_backbone

    with pytest.warns(RandomBackboneWarning, match="RANDOMLY INITIALISED backbone"):
        model = load_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=28)
    from zoo.eval.prepare import backbone_weights
    assert backbone_weights(model) == ("random init", {})
    with pytest.warns(RandomBackboneWarning):  # drawn from the seed: the same random backbone every run
        again = load_backbone("vit_small_patch14_dinov2", pretrained=False, img_size=28)
    assert torch.equal(again.pos_embed, model.pos_embed)
    line = backbone_line({"backbone_weights": "random init", "published": {}}, "linear")
    assert "RANDOM WEIGHTS: pass --pretrained" in line

    from hub_cache import add_folder_to_cache
    import timm
    ref = timm.create_model("vit_small_patch14_dinov2", depth=1, img_size=28)
    timm.models.save_for_hf(ref, str(tmp_path / "src"), safe_serialization=True)
    add_folder_to_cache(tmp_path / "cache", "timm/vit_small_patch14_dinov2.lvd142m", tmp_path / "src")
    loaded = zoo.create("vit_small_patch14_dinov2", pretrained=True, depth=1, img_size=28, cache_dir=tmp_path / "cache")
    weights, published = backbone_weights(loaded)
    assert weights == "pretrained lvd142m" and published == {"linear": 81.1, "knn": 79.0}
    assert backbone_line({"backbone_weights": weights, "published": published}, "linear").endswith(
        "published ImageNet-1k linear: 81.1% (the registry's tag)")


def test_probe_and_knn_under_torchrun_equal_one_process(tmp_path):
    """2 gloo processes share the feature extraction (gathered once): the features and the results
    equal one process's. kNN extracts through the same code and scores on the main process only: here
    it reads the features the two processes gathered (one torchrun launch: process start-up dominates)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file
    from zoo.cli import main

    backbone = zoo.create("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=0)
    zoo.save_pretrained(randomize_(backbone), tmp_path / "backbone")
    common = ["--model", str(tmp_path / "backbone"), "--data", "digits", "--iterations", "40", "--no-progress",
              "--workers", "0", "--extract-batch-size", "4096"]
    assert main(["linear-probe", *common, "--out", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "c1")]) == 0
    knn_common = [a for a in common if a not in ("--iterations", "40")]
    assert main(["knn", *knn_common, "--out", str(tmp_path / "knn-one"), "--cache-dir", str(tmp_path / "c1")]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "zoo", "linear-probe", *common,
                           "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c-two")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results:") == 1  # the main process reports
    assert main(["knn", *knn_common, "--out", str(tmp_path / "knn-two"), "--cache-dir", str(tmp_path / "c-two")]) == 0
    assert json.loads((tmp_path / "knn-two" / "results.json").read_text())["feature_cache"] == "hit"
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    for split in ("train", "eval"):
        a = load_file(str(next((tmp_path / "c1").glob(f"*-{split}.safetensors"))))
        b = load_file(str(next((tmp_path / "c-two").glob(f"*-{split}.safetensors"))))
        assert torch.equal(a["labels"], b["labels"]) and max_diff(a["summaries"], b["summaries"]) < 1e-5
    assert abs(one["chosen"]["test_top1"] - two["chosen"]["test_top1"]) <= 100 / 360 + 1e-9  # at most one image
    knn_one, knn_two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("knn-one", "knn-two"))
    assert knn_one["k"] == knn_two["k"] and abs(knn_one["test_top1"] - knn_two["test_top1"]) <= 100 / 360 + 1e-9
