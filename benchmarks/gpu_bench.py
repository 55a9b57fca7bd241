"""zoo vs timm on a CUDA GPU, in one process: what benchmarks/gpu_check.sh measures after the CUDA tests.

1. Inference images/s in bf16 autocast at batch 256, zoo and timm with the same weights, eager and both
   compiled (torch.compile, inductor): vit_base_patch16_224, deit_small_patch16_224,
   swin_tiny_patch4_window7_224, vit_small_patch14_dinov2 at 518.
2. The MAE-B pretraining step (forward with a fixed masking, backward, fused AdamW; bf16 autocast):
   zoo's model vs the research code's structure from timm's blocks (benchmarks/mae_step.py), images/s
   and peak memory.
3. The ViT-B/16 fine-tuning step (bf16 autocast, fused AdamW, batch 256): zoo vs timm images/s, and the
   fraction of the GPU's dense bf16 peak it reaches: 3 x forward FLOPs (2 x MACs, zoo.complexity) per
   image x images/s / peak (`--peak-tflops`, else from the device name: H100/H200 SXM 989, A100 312).

Calls alternate between zoo and timm (the order flips every round); each cell is the median of
`--repeats` timed calls after `--warmup`, with the GPU synchronised around each. Writes `--json` (the
machine from `zoo env --json` and every cell) and `--markdown` (the tables under the machine header).

    python benchmarks/gpu_bench.py --json gpu.json --markdown gpu.md
    python benchmarks/gpu_bench.py --dry-run        # every code path on the CPU, tiny sizes, no timing claims
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402
from mae_step import reference_for  # noqa: E402
from zoo.complexity import count_macs  # noqa: E402
from zoo.env import machine_header, system_info  # noqa: E402

INFERENCE = [("vit_base_patch16_224", 224), ("deit_small_patch16_224", 224), ("swin_tiny_patch4_window7_224", 224),
             ("vit_small_patch14_dinov2", 518)]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternate(fns: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    """Median seconds per call of each function, called in turns (order flipped every round)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    names = list(fns)
    for i in range(repeats):
        for k in (names if i % 2 == 0 else names[::-1]):
            times[k].append(timed(fns[k], device))
    return {k: statistics.median(v) for k, v in times.items()}


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def inference_cells(args, device) -> list:
    cells = []
    for name, size in INFERENCE:
        shrink = {**args.shrink, **({"depths": (1, 1, 1, 1)} if "swin" in name and args.shrink else {})}
        shrink.pop("depth", None) if "swin" in name else None
        ours = zoo.create(name, **shrink).eval().to(device)
        ref = timm.create_model(name, pretrained=False, **shrink).eval().to(device)
        ref.load_state_dict(ours.state_dict(), strict=True)
        size = args.size or size
        x = torch.randn(args.batch_size, 3, size, size, device=device)
        models = {"zoo": ours, "timm": ref}
        if args.compile:
            models.update({f"{k} compiled": torch.compile(m, backend=args.compile) for k, m in list(models.items())})

        def call(m):
            def run():
                with torch.inference_mode(), autocast(device):
                    m(x)
            return run
        seconds = alternate({k: call(m) for k, m in models.items()}, device, args.repeats, args.warmup)
        cells.append({"model": name, "img_size": size, "batch": args.batch_size,
                      **{f"{k} img/s": args.batch_size / s for k, s in seconds.items()}})
    return cells


def train_fns(model, x, device, loss_fn):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss = loss_fn(model, x)
        loss.backward()
        opt.step()
    return step


def peak_memory(fn, device) -> float:
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def mae_cell(args, device) -> dict:
    model = zoo.create("mae_vit_base_patch16_dec512d8b", **args.shrink_mae).to(device)
    ref = reference_for(model).to(device)
    size = model.encoder.patch_embed.img_size[0]
    x = torch.randn(args.mae_batch_size, 3, size, size, device=device)
    noise = torch.rand(x.shape[0], model.encoder.patch_embed.num_patches, device=device)
    fns = {"zoo": train_fns(model, x, device, lambda m, x: m(x, 0.75, noise)[0]),
           "reference": train_fns(ref, x, device, lambda m, x: m(x, 0.75, noise)[0])}
    seconds = alternate(fns, device, args.repeats, args.warmup)
    return {"batch": x.shape[0], **{f"{k} img/s": x.shape[0] / s for k, s in seconds.items()},
            **{f"{k} peak MiB": peak_memory(f, device) for k, f in fns.items()}}


def finetune_cell(args, device) -> dict:
    ours = zoo.create("vit_base_patch16_224", **args.shrink).to(device)
    ref = timm.create_model("vit_base_patch16_224", pretrained=False, **args.shrink).to(device)
    ref.load_state_dict(ours.state_dict(), strict=True)
    size = args.size or 224
    x = torch.randn(args.batch_size, 3, size, size, device=device)
    target = torch.randint(0, ours.num_classes, (args.batch_size,), device=device)

    def loss(m, x):
        return torch.nn.functional.cross_entropy(m(x), target)
    seconds = alternate({"zoo": train_fns(ours, x, device, loss), "timm": train_fns(ref, x, device, loss)},
                        device, args.repeats, args.warmup)
    flops_per_image = 3 * 2 * count_macs(ours, (3, size, size))  # forward + backward ~ 3 x forward
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items()
                                     if device.type == "cuda" and k in torch.cuda.get_device_name()), None)
    cell = {"batch": args.batch_size, **{f"{k} img/s": args.batch_size / s for k, s in seconds.items()},
            "GFLOPs per image (train step)": flops_per_image / 1e9, "peak bf16 TFLOPS": peak}
    if peak:
        cell["zoo fraction of peak"] = flops_per_image * cell["zoo img/s"] / (peak * 1e12)
    return cell


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}", ""]
    inf = result["inference"]
    keys = [k for k in inf[0] if k.endswith("img/s")]
    lines += ["| model | size | " + " | ".join(keys) + " | zoo / timm | compiled zoo / timm |",
              "|---|---|" + "---|" * (len(keys) + 2)]
    for c in inf:
        ratio = c["zoo img/s"] / c["timm img/s"]
        comp = (f"{c['zoo compiled img/s'] / c['timm compiled img/s']:.2f}" if "zoo compiled img/s" in c else "-")
        lines.append(f"| {c['model']} | {c['img_size']} | " + " | ".join(f"{c[k]:.0f}" for k in keys)
                     + f" | {ratio:.2f} | {comp} |")
    m, f = result["mae_step"], result["finetune_step"]
    lines += ["", f"MAE-B pretraining step, batch {m['batch']}: zoo {m['zoo img/s']:.0f} img/s, reference "
                  f"{m['reference img/s']:.0f} img/s ({m['zoo img/s'] / m['reference img/s']:.2f}x); peak "
                  f"{m['zoo peak MiB']:.0f} vs {m['reference peak MiB']:.0f} MiB",
              f"ViT-B/16 fine-tuning step, batch {f['batch']}: zoo {f['zoo img/s']:.0f} img/s, timm "
              f"{f['timm img/s']:.0f} img/s ({f['zoo img/s'] / f['timm img/s']:.2f}x)"
              + (f"; {100 * f['zoo fraction of peak']:.1f}% of the dense bf16 peak ({f['peak bf16 TFLOPS']:.0f} TFLOPS)"
                 if f.get("zoo fraction of peak") else "")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--mae-batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", default="inductor", help="torch.compile backend for the compiled columns ('' for none)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: from its name)")
    p.add_argument("--json", type=Path, help="write the machine and every cell here")
    p.add_argument("--markdown", type=Path, help="write the tables (with the machine header) here")
    p.add_argument("--dry-run", action="store_true", help="on the CPU with tiny models and sizes: every code path, "
                                                          "no meaningful numbers (for testing the script)")
    args = p.parse_args(argv)
    args.size, args.shrink, args.shrink_mae = None, {}, {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.dry_run:
        device, args.size = torch.device("cpu"), 32
        args.batch_size = args.mae_batch_size = 2
        args.repeats, args.warmup, args.compile = 1, 0, "eager"
        args.shrink, args.shrink_mae = {"depth": 1, "img_size": 32}, {"depth": 1, "img_size": 32, "decoder_depth": 1}
        INFERENCE[:] = [(n, 32) for n, _ in INFERENCE[:1]] + [("swin_tiny_patch4_window7_224", 32)]
    elif device.type != "cuda":
        print("no CUDA GPU here: run this on a GPU machine (or --dry-run to exercise it on the CPU)", file=sys.stderr)
        return 2
    header = machine_header()
    print(header)
    result = {"machine": header, "system": system_info(), "inference": inference_cells(args, device),
              "mae_step": mae_cell(args, device), "finetune_step": finetune_cell(args, device)}
    table = markdown(result)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
