"""`zoo quickstart`: the whole pipeline on the built-in digits, in a few minutes on a laptop CPU.

1. MAE-pretrain a small ViT (mae_vit_micro_patch4_dec64d2b: 6 blocks of width 96, patch 4, 32x32)
   on the 1,437 training digits: 60 epochs of 22 steps at batch 64;
2. linear-probe its encoder (DINOv2 protocol, head chosen on held-out train, test scored once);
3. linear-probe the same architecture at random initialisation;
4. fit a logistic regression on the raw pixels;
and print the three test accuracies side by side, with the time it took and the machine. Everything
lands in one folder: the MAE run (reconstruction and loss figures, checkpoints, the encoder as a ViT),
both probes, summary.json.

Sized so that the whole job takes about 5 minutes on 2 cores of an AVX2 CPU without native bf16
(the slowest kind of machine this project is tested on; 1.8 minutes with AVX-512), and so that the probe of the pretrained
encoder clears 97%: the width-96 encoder with more, smaller steps learns better digit features per
second than the width-192 one (docs/mae.md has the measurements).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .config import setting, to_dict
from .data import load_digits_split
from .env import machine_header, system_info
from .eval.linear_probe import ProbeConfig, linear_probe
from .eval.prepare import load_backbone
from .training.checkpoint import RunExistsError
from .training.loop import seed_everything
from .training.mae import MAEPretrainConfig, build_mae, pretrain_mae


@dataclass
class QuickstartConfig:
    out: Path = setting(Path("zoo-quickstart"), "output folder for everything")
    model: str = setting("mae_vit_micro_patch4_dec64d2b", "the MAE variant to pretrain (zoo list 'mae*')")
    epochs: int = setting(60, "MAE pretraining epochs")
    batch_size: int = setting(64, "MAE batch size")
    lr: float = setting(1.5e-3, "MAE learning rate (AdamW)")
    mask_ratio: float = setting(0.75, "MAE masking ratio")
    probe_iterations: Optional[int] = setting(None, "linear-probe optimizer steps (none given: the probe's own default)")
    precision: str = setting("fp32", "fp32 or bf16 for pretraining and feature extraction", choices=("fp32", "bf16"))
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    overwrite: bool = setting(False, "replace an earlier quickstart's results in --out")
    progress: bool = setting(True, "show progress bars")


def raw_pixel_baseline(seed: int = 0) -> float:
    """Test top-1 (%) of a logistic regression on the raw 32x32 digit pixels (same split as the probes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    split = load_digits_split(seed=seed)
    x_train = split["train"].images[:, 0].flatten(1).numpy()  # the 3 channels are identical
    x_test = split["test"].images[:, 0].flatten(1).numpy()
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), split["train"].labels.numpy())
    return float((clf.predict(scaler.transform(x_test)) == split["test"].labels.numpy()).mean() * 100)


def quickstart(cfg: QuickstartConfig) -> dict:
    out = Path(cfg.out)
    if (out / "summary.json").exists() or (out / "mae" / "checkpoints").exists():
        if not cfg.overwrite:
            raise RunExistsError(f"{out} holds an earlier quickstart's results: pass --overwrite to replace them, "
                                 f"or --out for a new folder")
    out.mkdir(parents=True, exist_ok=True)
    machine = system_info()
    t0 = time.perf_counter()
    mae_cfg = MAEPretrainConfig(
        model=cfg.model, data="digits", out=out / "mae", epochs=cfg.epochs,
        batch_size=cfg.batch_size, lr=cfg.lr, warmup_epochs=max(1.0, cfg.epochs / 10), mask_ratio=cfg.mask_ratio,
        crop_scale=(1.0, 1.0), hflip=0.0, precision=cfg.precision, ckpt_every=max(1, cfg.epochs // 4),
        seed=cfg.seed, device=cfg.device, progress=cfg.progress, overwrite=True)
    print(f"[1/4] MAE pretraining on digits: {cfg.epochs} epochs -> {mae_cfg.out}", flush=True)
    mae = pretrain_mae(mae_cfg)
    t_mae = time.perf_counter() - t0

    def probe(backbone, name):
        pcfg = ProbeConfig(model=name, data="digits", out=out / f"probe_{name}", iterations=cfg.probe_iterations,
                           precision=cfg.precision, seed=cfg.seed, device=cfg.device, progress=cfg.progress,
                           cache_dir=out / "feature_cache")
        return linear_probe(pcfg, backbone=backbone)

    print("[2/4] linear probe of the MAE encoder", flush=True)
    pretrained = probe(load_backbone(str(out / "mae" / "encoder")), "mae")
    print("[3/4] linear probe of the same architecture at random initialisation", flush=True)
    seed_everything(cfg.seed)  # as pretrain_mae does: this is the network the pretraining started from
    untrained = build_mae(mae_cfg)
    random_init = untrained.encoder.eval()
    random_init.zoo_config = {"name": None, "family": "vit", "tag": None, "args": untrained.encoder_args,
                              "input": untrained.zoo_config["input"]}
    random = probe(random_init, "random_init")
    print("[4/4] logistic regression on raw pixels", flush=True)
    pixels = raw_pixel_baseline(cfg.seed)

    summary = {
        "test_top1": {"mae_pretrained_probe": pretrained["chosen"]["test_top1"],
                      "random_init_probe": random["chosen"]["test_top1"],
                      "raw_pixels_logistic_regression": pixels},
        "mae_final_loss": mae["final_loss"], "mae_epochs": mae["epochs"],
        "seconds": {"mae": t_mae, "total": time.perf_counter() - t0},
        "machine": machine_header(machine), "system": machine,
        "files": {"reconstruction": str(out / "mae" / "reconstruction.png"),
                  "loss_curve": str(out / "mae" / "training_curves.png"), "encoder": str(out / "mae" / "encoder"),
                  "probe_mae": str(out / "probe_mae" / "results.json"),
                  "probe_random_init": str(out / "probe_random_init" / "results.json")},
        "config": to_dict(cfg),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict, out: Optional[Path] = None) -> str:
    acc = summary["test_top1"]
    lines = [
        "",
        "digits test accuracy (360 images, top-1)",
        f"  MAE-pretrained ViT, linear probe   {acc['mae_pretrained_probe']:6.2f}%",
        f"  same ViT at random init, probe     {acc['random_init_probe']:6.2f}%",
        f"  logistic regression on raw pixels  {acc['raw_pixels_logistic_regression']:6.2f}%",
        "",
        f"MAE: {summary['mae_epochs']} epochs, final loss {summary['mae_final_loss']:.3f}; "
        f"total {summary['seconds']['total'] / 60:.1f} min (MAE {summary['seconds']['mae'] / 60:.1f} min)",
        f"machine: {summary['machine']}",
        f"reconstructions: {summary['files']['reconstruction']}",
        f"loss curve:      {summary['files']['loss_curve']}",
        f"encoder (a ViT): {summary['files']['encoder']}",
    ]
    if out is not None:
        lines.append(f"everything is in {out}/")
    return "\n".join(lines)
