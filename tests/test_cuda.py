"""CUDA as a first-class path: run with `python -m pytest -m cuda tests/test_cuda.py` on a machine with
a GPU (benchmarks/gpu_check.sh does, then measures). The marker keeps these out of the CPU-only
suite (pyproject's addopts deselect it); selected on a machine without a GPU they fail, saying so.

float32 parity with timm with TF32 off; bf16 autocast close to float32; one training step of each
command on the device; MAE masking on the device; a run paused and resumed on the device; DDP
through torchrun with NCCL; FSDP with bf16 on the device over NCCL."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import zoo
from conftest import max_diff, randomize_

pytestmark = pytest.mark.cuda
TINY_MAE = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "decoder_embed_dim": 64, "decoder_depth": 1}


@pytest.fixture(autouse=True)
def gpu():
    assert torch.cuda.is_available(), "the cuda tests need a CUDA GPU: run them where there is one (pytest -m cuda)"
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 means float32
    yield torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


CASES = {
    "vit_base_patch16_224": dict(depth=2),
    "swin_tiny_patch4_window7_224": dict(depths=(2, 2, 2, 2)),
    "vit_small_patch16_dinov3": dict(depth=2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_float32_parity_with_timm_tf32_off(name, gpu):
    extra = dict(global_pool="token", dynamic_img_pad=True) if "dinov3" in name else {}
    ref = randomize_(timm.create_model(name, **CASES[name], **extra)).eval().to(gpu)
    ours = zoo.create(name, **CASES[name]).eval().to(gpu)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 3, 224, 224, device=gpu)
    with torch.no_grad():
        out = ours(x)
        assert out.is_cuda and max_diff(out, ref(x)) < 1e-4
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < 1e-4


@pytest.mark.parametrize("name", list(CASES))
def test_bf16_autocast_close_to_float32(name, gpu):
    model = randomize_(zoo.create(name, **CASES[name])).eval().to(gpu)
    x = torch.randn(4, 3, 224, 224, device=gpu)
    with torch.no_grad():
        full = model(x).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(x).float()
    cosine = torch.nn.functional.cosine_similarity(full.flatten(), low.flatten(), dim=0)
    assert cosine > 0.999 and max_diff(full, low) < 0.05 * full.abs().max()


def test_mae_masking_on_the_device(gpu):
    from zoo.layers import random_masking

    x = torch.randn(3, 64, 16, device=gpu)
    kept, mask, restore = random_masking(x, 0.75)
    assert kept.is_cuda and mask.is_cuda and restore.is_cuda
    assert kept.shape == (3, 16, 16) and mask.sum(1).tolist() == [48.0] * 3
    assert torch.equal(torch.gather(x, 1, restore.argsort(1)[:, :16, None].expand(-1, -1, 16)), kept)


def test_one_step_of_each_command_and_resume_on_the_device(tmp_path, gpu):
    from zoo.eval.knn import KnnConfig, knn
    from zoo.eval.linear_probe import ProbeConfig, linear_probe
    from zoo.predict import predict
    from zoo.training.finetune import FinetuneConfig, finetune
    from zoo.training.mae import MAEPretrainConfig, pretrain_mae

    mae = dict(model_args=TINY_MAE, batch_size=64, lr=1e-3, warmup_epochs=0.5, epochs=2, progress=False,
               num_held_out=4, device="cuda", log_to="none")
    straight = pretrain_mae(MAEPretrainConfig(out=tmp_path / "mae", **mae))
    pretrain_mae(MAEPretrainConfig(out=tmp_path / "paused", stop_after_epoch=1, **mae))
    resumed = pretrain_mae(MAEPretrainConfig(out=tmp_path / "paused", **mae), resume=tmp_path / "paused")

    def losses(run):
        return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]

    assert straight and resumed
    assert max(abs(a - b) for a, b in zip(losses(tmp_path / "mae"), losses(tmp_path / "paused"))) < 1e-3
    encoder = tmp_path / "mae" / "encoder"
    ft = finetune(FinetuneConfig(model=str(encoder), data="digits", out=tmp_path / "ft", epochs=1, batch_size=64,
                                 warmup_epochs=0, progress=False, device="cuda", precision="bf16", log_to="none"))
    assert ft["finished"]
    probe = linear_probe(ProbeConfig(model=str(encoder), out=tmp_path / "probe", cache_dir=tmp_path / "cache",
                                     iterations=50, progress=False, device="cuda"))
    assert 0 < probe["chosen"]["test_top1"] <= 100
    assert 0 < knn(KnnConfig(model=str(encoder), out=tmp_path / "knn", cache_dir=tmp_path / "cache",
                             progress=False, device="cuda"))["test_top1"] <= 100
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    (top,) = predict([tmp_path / "red.png"], zoo.create(str(tmp_path / "ft" / "best")), top_k=3, device="cuda",
                     precision="bf16", num_workers=0)
    assert len(top) == 3


def test_ddp_with_nccl(tmp_path, gpu):
    """Two processes over NCCL where there are two GPUs (NCCL needs one per process); on a one-GPU machine
    the fallback: torchrun's single process trains without a process group."""
    procs = min(2, torch.cuda.device_count())
    torchrun = Path(sys.executable).with_name("torchrun")
    run = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(procs), "-m", "zoo", "pretrain-mae",
                          "--model-args", json.dumps(TINY_MAE), "--epochs", "1", "--warmup-epochs", "0",
                          "--batch-size", "32",
                          "--device", "cuda", "--out", str(tmp_path / "ddp"), "--no-progress", "--log-to", "none"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]  # on CUDA, zoo.common.distributed joins with NCCL
    assert (tmp_path / "ddp" / "encoder" / "model.safetensors").is_file()


def test_fsdp_bf16_over_nccl(tmp_path, gpu):
    """`pretrain-mae --fsdp --precision bf16` on the device, in an NCCL group of one process (NCCL needs a
    GPU per process; a group of one runs every FSDP path: sharding, bf16 policy, sharded checkpoints,
    the gathered encoder), paused and resumed from its sharded checkpoint."""
    import torch.distributed as tdist

    from zoo.common.distributed import DistInfo
    from zoo.training.mae import MAEPretrainConfig, pretrain_mae

    tdist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        dist = DistInfo(0, 1, 0, gpu)
        cfg = dict(model_args=TINY_MAE, epochs=2, batch_size=64, warmup_epochs=0, fsdp=True, precision="bf16",
                   device="cuda", out=tmp_path / "fsdp", progress=False, log_to="none")
        assert pretrain_mae(MAEPretrainConfig(**cfg, stop_after_epoch=1), dist=dist)["finished"] is False
        summary = pretrain_mae(MAEPretrainConfig(**cfg), resume=tmp_path / "fsdp", dist=dist)
    finally:
        tdist.destroy_process_group()
    assert summary["finished"] and summary["epochs"] == 2
    assert (tmp_path / "fsdp" / "encoder" / "model.safetensors").is_file()
    assert (tmp_path / "fsdp" / "checkpoints" / "epoch_0002" / "sharded" / ".metadata").is_file()
