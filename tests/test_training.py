"""The shared training loop and `zoo pretrain-mae`, on real data (scikit-learn's digits)."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import zoo
from zoo.cli import main
from zoo.training.checkpoint import find_checkpoint, save_checkpoint
from zoo.common.distributed import init_distributed
from zoo.training.loop import NonFiniteLossError, StepOutput, Trainer, TrainConfig
from zoo.training.mae import MAEPretrainConfig, pretrain_mae

MICRO = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2, "decoder_embed_dim": 64, "decoder_depth": 1}


def micro_cfg(out: Path, **kw) -> MAEPretrainConfig:
    base = dict(out=out, model_args=MICRO, batch_size=64, lr=1e-3, warmup_epochs=0.5, epochs=2, ckpt_every=1,
                log_every=2, progress=False, num_held_out=4)
    base.update(kw)
    return MAEPretrainConfig(**base)


def read_metrics(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_continues_exactly(tmp_path):
    straight = pretrain_mae(micro_cfg(tmp_path / "straight"))
    paused = pretrain_mae(micro_cfg(tmp_path / "resumed", stop_after_epoch=1))
    assert paused["finished"] is False and paused["epochs"] == 1
    assert not (tmp_path / "resumed" / "encoder").exists()
    resumed = pretrain_mae(micro_cfg(tmp_path / "resumed"), resume=tmp_path / "resumed")
    assert resumed["finished"] and resumed["epochs"] == 2 and resumed["steps"] == straight["steps"]
    a = load_file(str(find_checkpoint(tmp_path / "straight") / "model.safetensors"))
    b = load_file(str(find_checkpoint(tmp_path / "resumed") / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # the log of the resumed run reads like the straight one's: same steps, no duplicates
    steps_a = [(r["kind"], r["step"]) for r in read_metrics(tmp_path / "straight")]
    steps_b = [(r["kind"], r["step"]) for r in read_metrics(tmp_path / "resumed")]
    assert steps_a == steps_b


def test_short_run_on_digits_learns_and_writes_everything(tmp_path):
    run = tmp_path / "run"
    summary = pretrain_mae(micro_cfg(run, epochs=4, ckpt_every=2, keep_checkpoints=1))
    records = read_metrics(run)
    first = next(r for r in records if r["kind"] == "step")["loss"]
    last = [r for r in records if r["kind"] == "epoch"][-1]["loss"]
    assert last <= 0.7 * first, (first, last)  # at least 30% lower than at the first steps
    for r in records:
        assert {"kind", "epoch", "step", "loss", "lr", "img_per_s"} <= set(r)
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1, 2, 3]
    assert (run / "reconstruction.png").stat().st_size > 10_000
    assert sorted(p.name for p in (run / "reconstructions").iterdir()) == ["epoch_0002.png", "epoch_0004.png"]
    assert (run / "training_curves.png").is_file()
    assert [p.name for p in (run / "checkpoints").iterdir() if p.is_dir()] == ["epoch_0004"]  # keep 1
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model_args"] == MICRO and saved["epochs"] == 4
    assert json.loads((run / "summary.json").read_text())["final_loss"] == pytest.approx(last)
    # the other logs: metrics.csv holds the same records, TensorBoard's event files the same numbers
    import csv

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == len(records) and float(rows[-1]["loss"]) == pytest.approx(records[-1]["loss"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    epoch_loss = [e.value for e in events.Scalars("epoch/loss")]
    assert epoch_loss == pytest.approx([r["loss"] for r in records if r["kind"] == "epoch"], rel=1e-6)
    # the encoder is an ordinary ViT directory that zoo.create loads
    encoder = zoo.create(str(run / "encoder"))
    assert type(encoder).__name__ == "VisionTransformer" and encoder.num_classes == 0
    assert summary["encoder"] == str(run / "encoder")


def test_pretrained_encoder_loads_into_the_plain_vit_apart_from_the_head(tmp_path):
    run = tmp_path / "run"
    pretrain_mae(micro_cfg(run, epochs=1))
    weights = find_checkpoint(run) / "model.safetensors"
    encoder_file = run / "encoder" / "model.safetensors"
    vit = zoo.create("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                     num_classes=10, checkpoint_path=str(encoder_file))
    mae = zoo.create("mae_tiny_32", **MICRO)
    mae.load_state_dict(load_file(str(weights)))
    imgs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (vit.forward_features(imgs) - mae.encoder.forward_features(imgs)).abs().max() < 1e-5


def test_folder_data_config_file_and_cli(tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i, photo in enumerate(load_sample_images().images):  # two real photos, cut into 48 tiles
        for j in range(24):
            y, x = divmod(j, 6)
            Image.fromarray(photo[y * 100:(y + 1) * 100, x * 100:(x + 1) * 100]).save(folder / f"{i}_{j}.jpg")
    config = tmp_path / "mae.yaml"
    config.write_text(yaml.safe_dump({"model-args": MICRO, "batch_size": 8, "lr": 1e-3, "warmup_epochs": 0.5,
                                      "epochs": 1, "num_held_out": 4, "progress": False}))
    run = tmp_path / "run"
    rc = main(["pretrain-mae", "--config", str(config), "--data", str(tmp_path / "photos"), "--out", str(run),
               "--img-size", "32"])
    out = capsys.readouterr().out
    assert rc == 0 and "finished: 1 epochs, 5 optimizer steps" in out and str(run / "reconstruction.png") in out
    assert yaml.safe_load((run / "config.yaml").read_text())["batch_size"] == 8

    rc = main(["pretrain-mae", "--data", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "not 'digits' and not a directory" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    rc = main(["pretrain-mae", "--config", str(bad)])
    assert rc == 2 and "unknown setting 'epochz' (did you mean 'epochs'?)" in capsys.readouterr().err


class _Boom(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    model = _Boom()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    from timm.scheduler import CosineLRScheduler

    sched = CosineLRScheduler(opt, t_initial=100, t_in_epochs=False)
    loader = torch.utils.data.DataLoader(torch.arange(40.0), batch_size=4)  # 10 steps per epoch
    calls = {"n": 0}

    def step(m, batch):
        calls["n"] += 1
        loss = (m.w.sum() - batch.mean()) ** 2
        if calls["n"] == 14:  # epoch 2, batch 4
            loss = loss * float("nan")
        return StepOutput(loss, batch.shape[0])

    cfg = TrainConfig(out_dir=tmp_path, epochs=3, ckpt_every=1, progress=False)
    trainer = Trainer(cfg, model, opt, sched, loader, step, init_distributed("cpu"))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at optimizer step 13 \(epoch 2, batch 4/10\); "
                                                 r"the last good checkpoint is .*epoch_0001"):
        trainer.train()
    assert find_checkpoint(tmp_path).name == "epoch_0001"
    assert load_file(str(find_checkpoint(tmp_path) / "model.safetensors"))["w"].isfinite().all()


def test_checkpoints_are_atomic(tmp_path):
    state = {"w": torch.ones(2)}
    save_checkpoint(tmp_path, "epoch_0001", state, {"epoch": 1}, keep=2)
    # a crash while writing epoch 2 leaves a temporary folder that nothing points at
    (tmp_path / "checkpoints" / ".epoch_0002.tmp-999").mkdir()
    assert find_checkpoint(tmp_path).name == "epoch_0001"
    save_checkpoint(tmp_path, "epoch_0002", {"w": torch.zeros(2)}, {"epoch": 2}, keep=2)
    save_checkpoint(tmp_path, "epoch_0003", {"w": torch.zeros(2)}, {"epoch": 3}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith("."))
    assert names == ["epoch_0002", "epoch_0003", "latest.json"]
    assert find_checkpoint(tmp_path).name == "epoch_0003"
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        find_checkpoint(tmp_path / "elsewhere")


def test_a_fresh_run_refuses_a_directory_holding_another_run(tmp_path, capsys):
    run = tmp_path / "run"
    pretrain_mae(micro_cfg(run, epochs=2, ckpt_every=1, keep_checkpoints=3))
    before = find_checkpoint(run)
    assert before.name == "epoch_0002"
    rc = main(["pretrain-mae", "--out", str(run), "--model-args", json.dumps(MICRO), "--epochs", "1",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{run} already holds a run" in err and f"--resume {run}" in err and "--overwrite" in err
    assert find_checkpoint(run) == before and (before / "model.safetensors").is_file()  # untouched
    config = (run / "config.yaml").read_text()
    rc = main(["pretrain-mae", "--out", str(run), "--model-args", json.dumps(MICRO), "--epochs", "1", "--no-progress",
               "--overwrite", "--warmup-epochs", "2"])  # accepted --overwrite, then refused: nothing is lost
    assert rc == 2 and "covers the whole run" in capsys.readouterr().err
    assert find_checkpoint(run) == before and (run / "config.yaml").read_text() == config
    # --overwrite starts over: the old run's checkpoints are gone, not mixed with the new ones
    pretrain_mae(micro_cfg(run, epochs=1, overwrite=True))
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["epoch_0001"]
    assert len([r for r in read_metrics(run) if r["kind"] == "epoch"]) == 1


def test_log_targets_and_resume_auto(tmp_path, capsys):
    """--log-to none writes metrics.jsonl only; wandb without the package is refused before training;
    --resume auto starts a fresh run in an empty --out and resumes one that holds a checkpoint."""
    from zoo.cli import main
    from zoo.common.logs import parse_log_to

    run = tmp_path / "quiet"
    pretrain_mae(micro_cfg(run, epochs=1, log_to="none"))
    assert (run / "metrics.jsonl").is_file() and not (run / "metrics.csv").exists()
    assert not (run / "tensorboard").exists()
    assert parse_log_to("tensorboard, csv") == ("tensorboard", "csv")
    with pytest.raises(ValueError, match="--log-to: unknown mlflow; choose from tensorboard, csv, wandb"):
        parse_log_to("mlflow")
    try:
        import wandb  # noqa: F401
    except ImportError:  # the fallback this machine has: a clear refusal, nothing trained
        with pytest.raises(ValueError, match=r"--log-to wandb needs the wandb package \(pip install wandb\)"):
            pretrain_mae(micro_cfg(tmp_path / "w", epochs=1, log_to="wandb"))
        assert not (tmp_path / "w" / "checkpoints").exists()
    args = ["pretrain-mae", "--model", "mae_tiny_32", "--model-args", json.dumps(MICRO), "--epochs", "2",
            "--batch-size", "64", "--out", str(tmp_path / "auto"), "--resume", "auto", "--no-progress",
            "--warmup-epochs", "0.5", "--stop-after-epoch", "1", "--log-to", "none"]
    assert main(args) == 0
    assert "no checkpoint yet in" in capsys.readouterr().err
    assert main(args[:-4] + ["--log-to", "none"]) == 0  # the same command, requeued: continues to epoch 2
    assert "--resume auto: resuming" in capsys.readouterr().err
    epochs = [r["epoch"] for r in read_metrics(tmp_path / "auto") if r["kind"] == "epoch"]
    assert epochs == [0, 1]


def test_a_checkpoint_inside_an_epoch_resumes_exactly(tmp_path):
    """--ckpt-every-steps: checkpoints inside epochs; resuming from one (the data order, augmentation and
    generators of that point restored) ends with the weights of the run that never stopped."""
    import shutil

    straight = tmp_path / "straight"
    pretrain_mae(micro_cfg(straight, ckpt_every_steps=4, keep_checkpoints=0))
    names = sorted(p.name for p in (straight / "checkpoints").iterdir() if p.is_dir())
    assert "epoch_0000_step_00000008" in names and names.index("epoch_0001") < names.index("epoch_0001_step_00000032")
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for name in names:  # an interruption after step 8 (inside the first epoch)
        if name > "epoch_0000_step_00000008":
            shutil.rmtree(resumed / "checkpoints" / name)
    (resumed / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "epoch_0000_step_00000008"}))
    pretrain_mae(micro_cfg(resumed, ckpt_every_steps=4, keep_checkpoints=0), resume=resumed)
    a = load_file(str(find_checkpoint(straight) / "model.safetensors"))
    b = load_file(str(find_checkpoint(resumed) / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    epochs = lambda run: [(r["epoch"], round(r["loss"], 6)) for r in read_metrics(run) if r["kind"] == "epoch"]
    assert epochs(resumed) == epochs(straight)  # the resumed epoch's loss counts the batches before the stop
