"""`zoo finetune` and `zoo predict`, on real data (digits and scikit-learn's two sample photos)."""
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import zoo
from zoo.cli import main
from zoo.eval.linear_probe import ProbeConfig, linear_probe
from zoo.common.metrics import ClassificationMeter, expected_calibration_error
from zoo.training.checkpoint import find_checkpoint
from zoo.training.finetune import FinetuneConfig, finetune, optimizer_groups
from zoo.training.loop import seed_everything
from zoo.training.mae import MAEPretrainConfig, build_mae, export_encoder, pretrain_mae



def lr_scales(model, decay):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr_scale"] for g in optimizer_groups(model, 0.05, decay) for p in g["params"]}


def test_layer_decay_vit():
    model = zoo.create("vit_tiny_patch16_224", depth=4, num_classes=3)
    scales = lr_scales(model, 0.6)
    assert len(scales) == len(list(model.parameters()))
    layer_id = {"patch_embed": 0, "cls_token": 0, "pos_embed": 0, "norm": 4, "head": 5}
    for name, scale in scales.items():
        top = name.split(".")[0]
        lid = int(name.split(".")[1]) + 1 if top == "blocks" else layer_id[top]
        assert scale == pytest.approx(0.6 ** (4 + 1 - lid)), name


def test_layer_decay_swin_groups_by_stage_and_block_like_timm():
    model = zoo.create("swin_tiny_patch4_window7_224", depths=(2, 2, 2, 2), num_classes=3)
    scales = lr_scales(model, 0.5)
    # stem 0; blocks 1..8 in order, a stage's patch merging with its first block; final norm with the
    # last block; the head on top (9)
    assert scales["patch_embed.proj.weight"] == 0.5 ** 9
    assert scales["layers.0.blocks.0.attn.qkv.weight"] == 0.5 ** 8
    assert scales["layers.1.downsample.reduction.weight"] == scales["layers.1.blocks.0.mlp.fc1.weight"] == 0.5 ** 6
    assert scales["layers.3.blocks.1.norm2.weight"] == scales["norm.weight"] == 0.5
    assert scales["head.fc.weight"] == 1.0
    # and exactly what timm's grouping gives its own Swin (the parameter names are the same)
    from timm.optim import param_groups_layer_decay
    ref = timm.create_model("swin_tiny_patch4_window7_224", depths=(2, 2, 2, 2), num_classes=3)
    names = {id(p): n for n, p in ref.named_parameters()}
    theirs = {names[id(p)]: g["lr_scale"] for g in param_groups_layer_decay(ref, 0.05, layer_decay=0.5)
              for p in g["params"]}
    assert theirs == scales


def test_ece_matches_an_independent_computation():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8], [0.3, 0.7], [0.95, 0.05]])
    labels = torch.tensor([0, 1, 0, 1, 0, 0])
    # 15 bins of width 1/15: confidences 0.9 (bin 13), 0.6 (bin 8), 0.55 (bin 8), 0.8 (bin 11),
    # 0.7 (bin 10), 0.95 (bin 14); correct: yes, no, yes, yes, no, yes
    expected = (abs(1 - 0.9) + abs(1 - (0.6 + 0.55)) + abs(1 - 0.8) + abs(0 - 0.7) + abs(1 - 0.95)) / 6 * 100
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-6)
    meter = ClassificationMeter(2)
    meter.update(probs.log(), labels)  # logits whose softmax is `probs`
    summary = meter.summary("val_")
    assert summary["val_top1"] == pytest.approx(4 / 6 * 100) and summary["val_ece"] == pytest.approx(expected, 1e-5)
    assert summary["val_loss"] == pytest.approx(-probs[torch.arange(6), labels].log().mean().item(), 1e-5)


def small_finetune(out: Path, model: str, **kw) -> FinetuneConfig:
    base = dict(model=model, data="digits", out=out, epochs=6, batch_size=64, lr=2e-3, warmup_epochs=1,
                crop_scale=(0.7, 1.0), hflip=0.0, mixup=0.2, cutmix=0.0, reprob=0.0, rand_aug="rand-m5-mstd0.5",
                ema_decay=0.99, layer_decay=0.75, log_every=5, progress=False)
    base.update(kw)
    return FinetuneConfig(**base)


# A tiny MAE (2 blocks of width 64, patch 8: 16 tokens at 32x32) keeps every test here at a few seconds.
TINY_MAE = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "decoder_embed_dim": 64,
            "decoder_depth": 1}
PRETRAIN_EPOCHS, FINETUNE_EPOCHS = 5, 8  # the learning claim's budget


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """The tiny MAE's encoder at initialisation, saved as a ViT (encoder/): for the tests of what a run does
    and writes, where what it learns does not matter."""
    seed_everything(0)
    return export_encoder(build_mae(MAEPretrainConfig(model_args=TINY_MAE)), tmp_path_factory.mktemp("init") / "encoder")


@pytest.fixture(scope="module")
def pretrained_encoder(tmp_path_factory):
    """The tiny MAE pretrained briefly on digits: its encoder/."""
    run = tmp_path_factory.mktemp("mae")
    pretrain_mae(MAEPretrainConfig(out=run, model_args=TINY_MAE, batch_size=64, lr=2e-3, warmup_epochs=1,
                                   epochs=PRETRAIN_EPOCHS, crop_scale=(1.0, 1.0), hflip=0.0,
                                   ckpt_every=PRETRAIN_EPOCHS, progress=False, num_held_out=4))
    return run / "encoder"


@pytest.fixture(scope="module")
def finetuned(pretrained_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "run"
    # a plain recipe for a short run: no Mixup, RandAugment or layer decay, a larger learning rate
    return out, finetune(small_finetune(out, str(pretrained_encoder), epochs=FINETUNE_EPOCHS, lr=3e-3, mixup=0.0,
                                        rand_aug="", layer_decay=1.0))


def test_finetuning_the_mae_encoder_beats_its_linear_probe(pretrained_encoder, finetuned, tmp_path):
    """The one learning claim of this module (full-size numbers: docs/finetune.md)."""
    out, summary = finetuned
    probe = linear_probe(ProbeConfig(model=str(pretrained_encoder), out=tmp_path / "probe", cache_dir=tmp_path / "cache",
                                     iterations=300, progress=False))
    assert summary["finished"] and summary["test"]["test_top1"] > probe["chosen"]["test_top1"], \
        (summary["test"], probe["chosen"])
    # what the run leaves behind
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == FINETUNE_EPOCHS
    for key in ("val_loss", "val_top1", "val_top5", "val_ece", "ema_val_top1", "best_val_top1"):
        assert key in epochs[-1], key
    assert summary["best"]["top1"] == max(max(r["val_top1"], r["ema_val_top1"]) for r in epochs)
    for png in ("training_curves.png", "confusion_matrix.png", "confusion_matrix_test.png"):
        assert (out / png).stat().st_size > 5000, png
    # per-class numbers as JSON, consistent with their own confusion matrix and the summary
    report = json.loads((out / "classification_report_test.json").read_text())
    m = torch.tensor(report["confusion"], dtype=torch.float64)  # rows: true class
    assert m.sum() == 360 and report["accuracy"] == pytest.approx(summary["test"]["test_top1"], abs=1e-6)
    for i, name in enumerate(report["classes"]):
        c = report["per_class"][name]
        assert c["support"] == m[i].sum() and c["recall"] == pytest.approx(100 * m[i, i] / m[i].sum())
        if c["precision"] + c["recall"] > 0:
            assert c["f1"] == pytest.approx(2 * c["precision"] * c["recall"] / (c["precision"] + c["recall"]))
    assert json.loads((out / "classification_report.json").read_text())["split"] == "val"
    # the best model's card: the Hub's metadata with the run's measured results, hyper-parameters, command
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "best" / "README.md")
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results["test top1"] == pytest.approx(summary["test"]["test_top1"], abs=1e-3)
    assert results["val top1"] == pytest.approx(summary["best"]["top1"], abs=1e-3)
    assert card.data.pipeline_tag == "image-classification" and card.data.eval_results[0].dataset_name == "digits"
    assert "## Training" in card.text and "zoo finetune --model" in card.text and "- epochs: `" in card.text
    best = zoo.create(str(out / "best"))
    assert best.zoo_config["label_names"] == [str(i) for i in range(10)] and best.num_classes == 10
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["training"]["results"]["val_top1"] == pytest.approx(summary["best"]["top1"], abs=1e-3)
    assert config["metrics"] == {}  # published numbers only: a fine-tuned model has none
    assert "Labels | 0, 1, 2" in (out / "best" / "README.md").read_text()


def test_finetuning_at_48px_resamples_and_says_so(encoder, tmp_path, capsys):
    rc = main(["finetune", "--model", str(encoder), "--img-size", "48", "--epochs", "1", "--warmup-epochs", "0.5",
               "--batch-size", "64", "--out", str(tmp_path / "run"), "--no-progress", "--mixup", "0", "--cutmix", "0",
               "--ema-decay", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "adapted the weights: recomputed the fixed sin-cos pos_embed for the 6x6 grid (checkpoint: 4x4)" in out
    best = zoo.create(str(tmp_path / "run" / "best"))
    assert best.patch_embed.img_size == (48, 48) and best.pos_embed.shape[1] == 1 + 36


def test_resume_continues_exactly(encoder, tmp_path):
    cfg = dict(epochs=2, ckpt_every=1, mixup=0.8, cutmix=1.0, reprob=0.25, rand_aug="rand-m9-mstd0.5-inc1")
    finetune(small_finetune(tmp_path / "straight", str(encoder), **cfg))
    paused = finetune(small_finetune(tmp_path / "resumed", str(encoder), stop_after_epoch=1, **cfg))
    assert paused["finished"] is False
    finetune(small_finetune(tmp_path / "resumed", str(encoder), **cfg), resume=tmp_path / "resumed")
    for name in ("model.safetensors",):
        a = load_file(str(find_checkpoint(tmp_path / "straight") / name))
        b = load_file(str(find_checkpoint(tmp_path / "resumed") / name))
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    ema_a = torch.load(find_checkpoint(tmp_path / "straight") / "state.pt", weights_only=True)["callbacks"]
    ema_b = torch.load(find_checkpoint(tmp_path / "resumed") / "state.pt", weights_only=True)["callbacks"]
    assert max((ema_a["validation"]["ema"][k] - v).abs().max().item()
               for k, v in ema_b["validation"]["ema"].items()) <= 1e-6
    assert ema_a["validation"]["best"] == ema_b["validation"]["best"]


def test_predict_on_the_sample_photos(finetuned, tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_sample_images

    paths = []
    for name, photo in zip(("china.jpg", "flower.jpg"), load_sample_images().images):
        paths.append(str(tmp_path / name))
        Image.fromarray(photo).save(paths[-1])
    out, _ = finetuned
    assert main(["predict", *paths, "--model", str(out / "best")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == paths[0] and lines[6] == paths[1]
    for block in (lines[1:6], lines[7:12]):
        probs = [float(line.split("%")[0]) / 100 for line in block]
        labels = [line.split("%")[1].strip() for line in block]
        assert set(labels) <= {str(i) for i in range(10)} and len(set(labels)) == 5
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert main(["predict", paths[0], "--model", str(tmp_path / "nope")]) == 2


def test_predict_folders_patterns_batches_and_files(finetuned, tmp_path, capsys):
    """Folders (recursive), glob patterns, batches, TTA and CSV / JSON-lines output; the results do not
    depend on the batch size, and `zoo.transforms_for` is the preprocessing they use."""
    import csv
    import json

    from PIL import Image
    from sklearn.datasets import load_sample_images

    from zoo.predict import image_files, predict

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i, photo in enumerate(load_sample_images().images):
        Image.fromarray(photo).save(photos / ("sub" if i else ".") / f"p{i}.jpg")
        Image.fromarray(photo[::2, ::2]).save(photos / f"small{i}.png")
    out, _ = finetuned
    assert main(["predict", str(photos), "--model", str(out / "best"), "--out", str(tmp_path / "p.csv"),
                 "--batch-size", "3", "--top-k", "3"]) == 0
    rows = list(csv.reader(open(tmp_path / "p.csv")))
    assert rows[0] == ["path", "label_1", "probability_1", "label_2", "probability_2", "label_3", "probability_3"]
    assert [Path(r[0]).name for r in rows[1:]] == ["p0.jpg", "small0.png", "small1.png", "p1.jpg"]
    assert main(["predict", str(photos / "**" / "*.jpg"), "--model", str(out / "best"), "--out",
                 str(tmp_path / "p.jsonl"), "--tta", "flip"]) == 0
    lines = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    assert len(lines) == 2 and len(lines[0]["top_k"]) == 5
    model = zoo.create(str(out / "best")).eval()
    paths = image_files([photos])
    one, many = predict(paths, model, batch_size=1, num_workers=0), predict(paths, model, batch_size=4, num_workers=1)
    assert [[label for label, _ in p] for p in one] == [[label for label, _ in p] for p in many]
    assert max(abs(a[1] - b[1]) for p, q in zip(one, many) for a, b in zip(p, q)) < 1e-5
    # TTA is what it says: the mean of the probabilities of the views, computed here by hand
    from torchvision.transforms import v2
    from zoo.data import eval_transform

    with Image.open(paths[0]) as im:
        img = v2.functional.to_dtype(v2.functional.to_image(im.convert("RGB")), torch.float32, scale=True)
    x = zoo.transforms_for(model)(img)[None]
    crops5 = eval_transform(model.zoo_config["input"], five_crop=True)(img)  # (5, C, H, W)
    with torch.no_grad():
        flip = ((model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2)[0]
        five = model(crops5).softmax(1).mean(0)
    for tta, expected in (("flip", flip), ("five-crop", five)):
        got = dict(predict(paths[:1], model, tta=tta, num_workers=0, top_k=10)[0])
        assert max(abs(got[str(c)] - expected[c].item()) for c in range(10)) < 1e-5, tta
    with pytest.raises(ValueError, match="no such file or folder, and no file matches it as a pattern"):
        image_files([tmp_path / "nothing*.jpg"])
    assert main(["predict", str(photos), "--model", str(out / "best"), "--out", str(tmp_path / "p.txt")]) == 2
    assert "write .csv, or .jsonl / .json (JSON lines)" in capsys.readouterr().err


def test_transforms_for_is_timms_eval_recipe():
    """Resize the short side to size / crop_pct, centre crop, normalise: timm's own eval transform on the
    same photo gives the same input (up to PIL's vs torchvision's resampling, a few 1e-2)."""
    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from torchvision.transforms import v2

    model = zoo.create("deit_tiny_patch16_224", depth=1)
    photo = Image.fromarray(load_sample_images().images[0])
    ours = zoo.transforms_for(model)(v2.functional.to_dtype(v2.functional.to_image(photo), torch.float32, scale=True))
    config = timm.data.resolve_data_config(model=timm.create_model("deit_tiny_patch16_224", depth=1))
    theirs = timm.data.create_transform(**config)(photo)
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert (ours - theirs).abs().mean() < 0.02
    with pytest.raises(ValueError, match="has no zoo_config"):
        zoo.transforms_for(torch.nn.Linear(2, 2))


def test_timm_flag_names_optimizers_and_schedules():
    """timm's train.py names work as aliases, and --opt / --sched choose among timm's optimizers and
    schedules (timm's own factories build them)."""
    from zoo.cli import build_parser
    from zoo.config import resolve
    from zoo.training.finetune import FinetuneConfig, optimizer_and_schedule

    args = build_parser().parse_args(["finetune", "--grad-accum-steps", "4", "--model-ema-decay", "0.999", "--aa",
                                      "rand-m7-mstd0.5", "--amp", "--amp-dtype", "bfloat16", "--opt", "lamb",
                                      "--sched", "step"])
    cfg = resolve(FinetuneConfig, args, [])
    assert (cfg.accum_iter, cfg.ema_decay, cfg.rand_aug, cfg.precision, cfg.opt, cfg.sched) == \
        (4, 0.999, "rand-m7-mstd0.5", "bf16", "lamb", "step")
    for flags, precision in ((["--amp-dtype", "bfloat16", "--amp"], "bf16"), (["--amp"], "fp16"),
                             (["--amp-dtype", "bfloat16"], "fp32")):  # either order; the dtype alone: nothing
        assert resolve(FinetuneConfig, build_parser().parse_args(["finetune", *flags]), []).precision == precision
    model = zoo.create("vit_tiny_patch16_224", depth=1, img_size=32, patch_size=8, num_classes=3)
    for opt, sched, kinds in [("sgd", "cosine", ("SGD", "CosineLRScheduler")),
                              ("lamb", "step", ("Lamb", "StepLRScheduler")),
                              ("adamw", "poly", ("AdamW", "PolyLRScheduler"))]:
        cfg = FinetuneConfig(opt=opt, sched=sched, epochs=4, warmup_epochs=1, accum_iter=1)
        optimizer, scheduler = optimizer_and_schedule(model, cfg, 1e-3, batches_per_epoch=10)
        assert (type(optimizer).__name__, type(scheduler).__name__) == kinds
        scheduler.step_update(5)
        assert 0 < optimizer.param_groups[0]["lr"] <= 1e-3  # warming up, per update
        scheduler.step_update(39)  # the last update of 4 epochs x 10: decayed within the run
        assert optimizer.param_groups[0]["lr"] < 0.5e-3, (opt, sched)
    with pytest.raises(ValueError, match="--opt 'adamx'"):
        optimizer_and_schedule(model, FinetuneConfig(opt="adamx"), 1e-3, 10)
