"""`--fsdp` (zoo/training/fsdp.py): PyTorch's FSDP2 with one unit per block.

- In this process (a one-process gloo group): every family, sharded, gives the plain model's outputs
  and gradients (each block's weights are gathered by a hook on the block's call, so a forward that
  reached a block's weights another way would fail here); bf16 computes in bf16 over float32 masters;
  the whole `pretrain-mae` job runs sharded as it runs plain.
- Two gloo processes under torchrun: fine-tuning (EMA included) with --fsdp follows the DDP run's loss
  curve; a run killed by SIGTERM (a scheduler's preemption) after a sharded mid-epoch checkpoint
  resumes to exactly the uninterrupted run's weights.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
from safetensors.torch import load_file

import zoo
from conftest import max_diff
from test_compile import FAMILIES, build
from test_training import read_metrics
from zoo.cli import main
from zoo.common.distributed import DistInfo
from zoo.training import fsdp

MICRO = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2, "decoder_embed_dim": 64, "decoder_depth": 1}
TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", "-m", "zoo"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def group(tmp_path):
    """A one-process gloo group (what torchrun would set up), torn down afterwards."""
    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield DistInfo(0, 1, 0, torch.device("cpu"))
    finally:
        tdist.destroy_process_group()


def _forward(model, family, x):
    if family == "mae":
        return model(x, noise=torch.linspace(0, 1, model.grid_size[0] * model.grid_size[1]).expand(len(x), -1))[0]
    return model(x)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sharded_model_gives_the_plain_outputs_and_gradients(family, group):
    plain, sizes = build(family)
    sharded = zoo.create(FAMILIES[family][0], **FAMILIES[family][1])
    sharded.load_state_dict(plain.state_dict())
    fsdp.shard(sharded, "fp32", group)
    assert fsdp.is_sharded(sharded) and len(fsdp.block_units(plain)) == sum(
        fsdp.is_sharded(m) for m in sharded.modules()) - 1  # one unit per block, and the root
    plain.eval(), sharded.eval()  # no drop path (Swin's default): the same function, gradients still flow
    x = torch.randn(2, 3, *sizes[0])
    out_plain, out_sharded = _forward(plain, family, x), _forward(sharded, family, x)
    assert max_diff(out_plain, out_sharded) < 1e-5
    out_plain.float().pow(2).mean().backward()
    out_sharded.float().pow(2).mean().backward()
    grads = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    assert grads and max(max_diff(grads[n], p.grad.full_tensor()) for n, p in sharded.named_parameters()
                         if n in grads) < 1e-5
    whole = fsdp.gather_full_model(sharded, group)  # the plain copy the checkpoints and figures use
    assert type(whole) is type(plain) and max_diff(_forward(whole, family, x), out_plain) < 1e-5


def test_bf16_policy_computes_in_bf16_over_float32_weights(group):
    model, sizes = build("vit")
    fsdp.shard(model, "bf16", group)
    seen = []
    model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append((m.weight.dtype, o.dtype)))
    model(torch.randn(2, 3, *sizes[0])).float().sum().backward()
    assert seen == [(torch.bfloat16, torch.bfloat16)]
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the sharded master weights
    assert {p.grad.dtype for p in model.parameters()} == {torch.float32}


def test_models_without_blocks_and_bad_launches_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="Linear has no transformer blocks"):
        fsdp.block_units(torch.nn.Linear(2, 2))
    rc = main(["pretrain-mae", "--fsdp", "--out", str(tmp_path / "run"), "--model-args", json.dumps(MICRO)])
    assert rc == 2 and "--fsdp shards the model over several processes and this job has one: launch it with `torchrun" \
        in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was built or written
    with pytest.raises(ValueError, match="use --precision bf16"):
        fsdp.check_fsdp("fp16", DistInfo(0, 2, 0, torch.device("cpu")))


def _steps(run: Path):
    return [r["loss"] for r in read_metrics(run) if r["kind"] == "step"]


def test_mae_command_with_fsdp_in_one_process_group(group, tmp_path):
    """The whole `pretrain-mae` job sharded (over a group of one: every FSDP code path, in this process),
    with gradient accumulation and checkpointing, trains as the plain job does and writes what it writes:
    figures from the gathered weights, the encoder, and a sharded final checkpoint that also holds the
    whole weights. A run resumed with the other --fsdp setting is refused before anything is written."""
    from test_training import micro_cfg
    from zoo.training.mae import pretrain_mae

    plain, sharded = tmp_path / "plain", tmp_path / "fsdp"
    settings = dict(epochs=1, log_every=1, accum_iter=2, grad_checkpointing=True)
    pretrain_mae(micro_cfg(plain, **settings), dist=group)
    summary = pretrain_mae(micro_cfg(sharded, fsdp=True, **settings), dist=group)
    assert summary["finished"] and max(abs(a - b) for a, b in zip(_steps(plain), _steps(sharded))) < 1e-5
    final = sharded / "checkpoints" / "epoch_0001"
    assert sorted(p.name for p in (final / "sharded").iterdir()) == [".metadata", "__0_0.distcp"]
    whole, reference = (load_file(str(run / "checkpoints/epoch_0001/model.safetensors")) for run in (sharded, plain))
    assert whole.keys() == reference.keys() and max(max_diff(whole[k], reference[k]) for k in whole) < 1e-5
    encoder = zoo.create(str(sharded / "encoder"))  # exported from the gathered weights
    assert max_diff(encoder.state_dict()["blocks.1.mlp.fc2.weight"], whole["encoder.blocks.1.mlp.fc2.weight"]) == 0
    assert (sharded / "reconstruction.png").is_file()
    config = (sharded / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"epoch_0001 holds sharded weights \(a run with --fsdp\); resume it with"):
        pretrain_mae(micro_cfg(sharded, epochs=2), resume=sharded, dist=group)
    with pytest.raises(ValueError, match=r"epoch_0001 holds whole weights \(a run without --fsdp\); resume it"):
        pretrain_mae(micro_cfg(plain, epochs=2, fsdp=True), resume=plain, dist=group)
    assert (sharded / "config.yaml").read_text() == config  # untouched


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _finetune(encoder: Path, out: Path, *flags: str):
    return [*TORCHRUN, "finetune", "--model", str(encoder), "--out", str(out), "--epochs", "1", "--batch-size", "32",
            "--lr", "1e-3", "--warmup-epochs", "0.5", "--no-progress", "--ema-decay", "0.99", "--log-every", "1",
            *flags]


# The DDP and the FSDP run in one torchrun launch (process start-up is most of a launch's time here), with
# the settings `_finetune` gives the command line. The FSDP run, second in its processes, must still equal
# the killed and resumed one, first in theirs: a job's random streams do not depend on what ran before.
BOTH = """
import sys
from pathlib import Path
from zoo.common.distributed import cleanup_distributed, init_distributed
from zoo.training.finetune import FinetuneConfig, finetune
dist = init_distributed("cpu")
for out, fsdp in ((sys.argv[2], False), (sys.argv[3], True)):
    finetune(FinetuneConfig(model=sys.argv[1], out=Path(out), epochs=1, batch_size=32, lr=1e-3, warmup_epochs=0.5,
                            progress=False, ema_decay=0.99, log_every=1, fsdp=fsdp), dist=dist)
cleanup_distributed()
"""


def test_finetune_with_fsdp_follows_ddp_and_resumes_exactly_after_a_kill(tmp_path):
    """2 gloo processes: DDP, then FSDP (its loss curve within float tolerance of DDP's: clipping sums the
    gradient norm over shards in another order), then FSDP killed after a mid-epoch checkpoint and
    resumed, which ends with the uninterrupted FSDP run's weights, optimizer state and EMA exactly."""
    from test_finetune import TINY_MAE
    from zoo.training.loop import seed_everything
    from zoo.training.mae import MAEPretrainConfig, build_mae, export_encoder

    seed_everything(0)
    encoder = export_encoder(build_mae(MAEPretrainConfig(model_args=TINY_MAE)), tmp_path / "encoder")
    ddp, sharded, killed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "killed"
    (tmp_path / "both.py").write_text(BOTH)
    _run([*TORCHRUN[:-2], str(tmp_path / "both.py"), str(encoder), str(ddp), str(sharded)])
    a = json.loads((ddp / "summary.json").read_text())  # DDP as before: 2 ranks in step
    assert a["world_size"] == 2 and a["effective_batch"] == 64 and a["ranks_in_sync"]
    assert [p.name for p in (ddp / "checkpoints").iterdir() if p.is_dir()] == ["epoch_0001"]

    b = json.loads((sharded / "summary.json").read_text())
    assert b["ranks_in_sync"] is None and abs(b["param_checksums"][0] - a["param_checksums"][0]) < 1e-2
    assert len(_steps(sharded)) == a["steps"] == 1293 // 2 // 32  # the train split: 1293 digits
    assert max(abs(x - y) for x, y in zip(_steps(ddp), _steps(sharded))) < 1e-4
    # the val split (144 digits) split over the ranks without duplicates: 144 images scored
    assert a["val_images"] == b["val_images"] == 144 and a["best"]["weights"] == b["best"]["weights"]
    assert abs(a["last_epoch"]["val_loss"] - b["last_epoch"]["val_loss"]) < 1e-3
    assert abs(a["test"]["test_top1"] - b["test"]["test_top1"]) < 1.0  # 1 of 180 test images at most (0.56%)
    best = zoo.create(str(sharded / "best"))  # the gathered best weights, with their label names
    assert best.zoo_config["label_names"] == [str(i) for i in range(10)]
    final = sharded / "checkpoints" / "epoch_0001"
    assert sorted(p.name for p in (final / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    state = torch.load(final / "state.pt", weights_only=True)
    assert state["sharded"] and "ema" not in state["callbacks"]["validation"]  # the EMA is in sharded/

    # killed (SIGTERM to torchrun, as a scheduler preempts a job) once a mid-epoch checkpoint exists
    job = subprocess.Popen(_finetune(encoder, killed, "--fsdp", "--ckpt-every-steps", "2"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    latest, start = killed / "checkpoints" / "latest.json", time.monotonic()
    while not latest.exists() and job.poll() is None and time.monotonic() - start < 300:
        time.sleep(0.01)
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=120) != 0 and not (killed / "summary.json").exists()
    assert json.loads(latest.read_text())["checkpoint"].startswith("epoch_0000_step_")
    proc = _run([*TORCHRUN, "finetune", "--resume", str(killed)])
    assert proc.stdout.count("finished: 1 epochs") == 1 and _steps(killed) == _steps(sharded)  # rank 0 reports
    for weights in ("checkpoints/epoch_0001/model.safetensors", "best/model.safetensors"):
        x, y = load_file(str(killed / weights)), load_file(str(sharded / weights))
        assert max(max_diff(x[k], y[k]) for k in y) == 0, weights  # exactly where the uninterrupted run got
    # and so is everything in the sharded checkpoint: weights, AdamW's moments and step, the EMA
    x, y = (_sharded_contents(run / "checkpoints/epoch_0001", tmp_path / f"{run.name}.pt") for run in (killed, sharded))
    assert x.keys() == y.keys() == {"model", "optimizer", "validation.ema"}
    assert x["optimizer"]["param_groups"] == y["optimizer"]["param_groups"]
    for part in ("model", "validation.ema"):
        assert max(max_diff(x[part][k], y[part][k]) for k in y[part]) == 0, part
    moments = [(x["optimizer"]["state"][k][m], v[m]) for k, v in y["optimizer"]["state"].items() for m in v]
    assert len(moments) > 30 and all(torch.equal(p, q) for p, q in moments)


def _sharded_contents(checkpoint: Path, out: Path) -> dict:
    """Every process's shards of a sharded checkpoint, joined (torch.distributed.checkpoint's converter)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(str(checkpoint / "sharded"), str(out))
    return torch.load(out, weights_only=True)
