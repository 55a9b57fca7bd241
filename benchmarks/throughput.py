"""Inference throughput of zoo vs timm on the same architecture, in one process.

For each model, zoo's and timm's versions are built with the same weights and called alternately
(the order flips every round, so drift and thermal effects hit both alike). Each cell is the median
of `--repeats` timed calls after `--warmup` untimed ones, under `torch.inference_mode()`, in fp32 or
in bf16 autocast. The ratio column is zoo images/s divided by timm images/s (> 1: zoo is faster).

    python benchmarks/throughput.py                                  # the default table
    python benchmarks/throughput.py --models deit_small_patch16_224 --batch-sizes 8 --dtypes bf16
    python benchmarks/throughput.py --markdown table.md --json cells.json   # also write the table / the cells
    python benchmarks/throughput.py --same-process                   # all cells in this one process

Every table starts with the machine it was measured on (`zoo.env.machine_header`: CPU model and
features, threads, versions, fast-path mode); `zoo env` prints the full description. Set
`ZOO_FAST_PATHS=off` to measure zoo on PyTorch's kernels, `ZOO_MAX_CPU_ISA=avx2` to take the decisions
zoo makes on an AVX2 CPU (the kernels PyTorch itself runs do not change).

By default each (model, dtype, batch) cell runs in a fresh Python process (zoo and timm still
alternate inside it): measured in one long process, a cell's numbers depend on the cells before it
(timm's Swin in bf16 ran 49 to 65 img/s depending on what preceded it; see docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
import zoo  # noqa: E402
from zoo.env import machine_header, system_info  # noqa: E402

DEFAULT_MODELS = ["vit_base_patch16_224", "deit_small_patch16_224", "vit_small_patch14_dinov2",
                  "swin_tiny_patch4_window7_224"]


def build_pair(name: str, timm_name: str | None = None):
    """zoo's model and timm's, eval mode, timm's carrying zoo's weights (strict)."""
    ours = zoo.create(name).eval()
    ref = timm.create_model(timm_name or ours.zoo_config["name"], pretrained=False).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


def time_pair(ours, ref, x, dtype: str, repeats: int, warmup: int):
    """Median seconds per call for (zoo, timm), calls alternated and the order flipped each round."""
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else nullcontext
    times = {"zoo": [], "timm": []}
    with torch.inference_mode(), ctx():
        for _ in range(warmup):
            ours(x), ref(x)
        for i in range(repeats):
            order = [("zoo", ours), ("timm", ref)]
            for label, model in (order if i % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                model(x)
                times[label].append(time.perf_counter() - start)
    return statistics.median(times["zoo"]), statistics.median(times["timm"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="zoo variant names (timm has the same)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=7, help="timed calls per model and cell (median taken)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--markdown", type=Path, help="also write the table (with the machine header) to this Markdown file")
    p.add_argument("--json", type=Path, help="also write the machine (zoo env --json) and every cell to this JSON file")
    p.add_argument("--same-process", dest="isolate", action="store_false",
                   help="measure every cell in this process, one after another, instead of each (model, dtype, "
                        "batch) cell in a fresh process (then a cell's numbers depend on the cells before it)")
    p.add_argument("--json-row", action="store_true", help=argparse.SUPPRESS)  # one cell's row, for isolation
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    machine = system_info()
    header = (f"Machine: {machine_header(machine)}. Median of {args.repeats} alternated calls"
              + ("; each cell in a fresh process." if args.isolate else "; all cells in one process."))
    if not args.json_row:
        print(header, flush=True)
    rows = []
    if args.isolate:  # each cell in a child process that runs it with --same-process --json-row
        for name in args.models:
            for dtype in args.dtypes:
                for bs in args.batch_sizes:
                    cmd = [sys.executable, __file__, "--json-row", "--same-process", "--models", name, "--dtypes",
                           dtype, "--batch-sizes", str(bs), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
                    if args.threads:
                        cmd += ["--threads", str(args.threads)]
                    row = tuple(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True)
                                           .stdout.splitlines()[-1]))
                    rows.append(row)
                    print(f"{name:32s} {row[1]:>8s} {dtype:5s} batch {bs:<3d} zoo {row[4]:8.2f} img/s   "
                          f"timm {row[5]:8.2f} img/s   ratio {row[6]:.3f}", flush=True)
    for name in [] if args.isolate else args.models:
        ours, ref = build_pair(name)
        h, w = ours.patch_embed.img_size
        for dtype in args.dtypes:
            for bs in args.batch_sizes:
                x = torch.randn(bs, 3, h, w)
                t_zoo, t_timm = time_pair(ours, ref, x, dtype, args.repeats, args.warmup)
                row = (name, f"{h}x{w}", dtype, bs, bs / t_zoo, bs / t_timm, t_timm / t_zoo)
                rows.append(row)
                if args.json_row:
                    print(json.dumps(row), flush=True)
                    continue
                print(f"{name:32s} {row[1]:>8s} {dtype:5s} batch {bs:<3d} zoo {row[4]:8.2f} img/s   "
                      f"timm {row[5]:8.2f} img/s   ratio {row[6]:.3f}", flush=True)
    if args.json_row:
        return 0

    table = ["| model | input | dtype | batch | zoo img/s | timm img/s | zoo / timm |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} | {r[5]:.2f} | **{r[6]:.2f}x** |" for r in rows]
    print("\n" + "\n".join(table))
    if args.markdown:
        args.markdown.write_text(f"{header}\n\n" + "\n".join(table) + "\n")
        print(f"\nwrote {args.markdown}")
    if args.json:
        keys = ("model", "input", "dtype", "batch", "zoo_img_per_s", "timm_img_per_s", "zoo_over_timm")
        args.json.write_text(json.dumps({"header": header, "machine": machine, "repeats": args.repeats,
                                         "isolated": args.isolate, "cells": [dict(zip(keys, r)) for r in rows]},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
