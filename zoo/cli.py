"""The `zoo` command line. Each subcommand parses its arguments and calls a library function;
no logic lives here.

    zoo list [PATTERN] [--pretrained] [--family F] [--json]
    zoo info NAME|DIR|hf-hub:ORG/NAME [--json]
    zoo env [--json]                     (also: zoo info --system)
    zoo pretrain-mae [--config FILE] [--resume RUN_DIR] [--data digits|FOLDER] [--epochs N] ...
    zoo linear-probe --model NAME|DIR [--pretrained] [--data digits|FOLDER] [--recipe dinov2|dinov3|mae] ...
    zoo knn --model NAME|DIR [--pretrained] [--data digits|FOLDER] ...
    zoo quickstart [--out DIR] [--epochs N]
    zoo attention IMAGE... --model NAME|DIR [--pretrained] [--layer L] [--head H|mean] [--rollout] [--out DIR]
    zoo download NAME[.TAG] | hf-hub:ORG/NAME[@REV]  [--revision R] [--cache-dir D] [--force]
    zoo push DIR REPO_ID [--private] [--revision R] [--message M]
    zoo convert --from {mae,dinov2,dinov3,swin,torchvision-swin} SRC --out DIR [--model NAME]
                [--branch teacher|student|ema]
    zoo export NAME[.TAG] | hf-hub:ORG/NAME | DIR --out DIR [--format zoo|timm]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from . import factory
from .cli_images import add_image_commands
from .factory import variant_cost
from .registry import REGISTRY, list_models, model_info
from .specs import RegistryError, UnknownModelError
from .version import __version__
from .weights import WeightsError
from .weights.save import SAVE_FORMATS
from .training.loop import NonFiniteLossError


def _millions(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 1e6:.1f}M"


def _size(hw: Sequence[int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def _table(rows: List[List[str]], header: List[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [header] + rows)


def cmd_list(args: argparse.Namespace) -> int:
    names = list_models(args.pattern, pretrained=args.pretrained, family=args.family)
    variants = [model_info(n) for n in names]
    if args.json:
        out = [{"name": v.name, "family": v.family, "aliases": list(v.aliases), "params": v.params,
                "img_size": list(v.input.img_size), "weights": list(v.weights)} for v in variants]
        print(json.dumps(out, indent=2))
        return 0
    if not variants:
        print(f"no models match {args.pattern!r}" + (f" in family {args.family!r}" if args.family else ""))
        return 1
    if args.pretrained:  # one row per weight tag
        rows = [[f"{v.name}.{w.tag}", str(w.num_classes), "" if w.top1 is None else f"{w.top1:.1f}",
                 w.license or "", w.hf_hub_id] for v in variants for w in v.weights.values()]
        print(_table(rows, ["model.tag", "classes", "top1", "license", "hub repo"]))
        print(f"\n{len(rows)} weight tags for {len(variants)} models")
    else:
        rows = [[v.name, v.family, _millions(v.params), _size(v.input.img_size), v.default_tag or "-",
                 ", ".join(v.aliases)] for v in variants]
        print(_table(rows, ["name", "family", "params", "input", "default weights", "aliases"]))
        print(f"\n{len(rows)} models")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from .env import format_system_info, system_info

    info = system_info()
    print(json.dumps(info, indent=2) if args.json else format_system_info(info))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if args.system:
        if args.name is not None:
            raise ValueError(f"give a model NAME or --system, not both (got {args.name!r} and --system)")
        return cmd_env(args)
    if args.name is None:
        raise ValueError("give a model NAME (zoo list shows them), or --system for this machine")
    if factory.is_repo_reference(args.name) or (Path(args.name).is_dir() and not REGISTRY.is_registered(args.name)):
        return _info_saved(args)
    variant = model_info(args.name)
    cost = variant_cost(variant.name)
    family = REGISTRY.families[variant.family]
    if args.json:
        print(json.dumps({
            "name": variant.name, "family": variant.family, "aliases": list(variant.aliases),
            "description": variant.description, "args": dict(variant.args), "params": cost["params"],
            "gmacs": cost["macs"] / 1e9, "input_size": list(cost["input_size"]), "input": variant.input.to_dict(),
            "input_sizes": cost["input_sizes"],
            "weights": {t: {"hf_hub_id": w.hf_hub_id, "filename": w.filename, "format": w.format,
                            "license": w.license, "num_classes": w.num_classes, "top1": w.top1, "top5": w.top5,
                            "linear": w.linear, "knn": w.knn,
                            "sha256": w.sha256} for t, w in variant.weights.items()},
            "source": variant.source,
        }, indent=2))
        return 0
    inp = variant.input
    lines = [
        variant.name + (f"  (aliases: {', '.join(variant.aliases)})" if variant.aliases else ""),
        f"  {variant.description}" if variant.description else None,
        f"  family       {variant.family} ({family.builder.__module__}.{family.builder.__qualname__})",
        f"  defined in   {variant.path}" + ("" if variant.source == "zoo" else f" by {variant.source}"),
        f"  params       {cost['params']:,} ({cost['params'] / 1e6:.2f}M)",
        f"  GMACs        {cost['macs'] / 1e9:.2f} per image at {'x'.join(map(str, cost['input_size']))}",
        f"  input        {_size(inp.img_size)}, mean {inp.mean}, std {inp.std}, crop_pct {inp.crop_pct}, "
        f"{inp.interpolation}",
        f"  sizes        {cost['input_sizes']}" if cost["input_sizes"] else None,
        "  args         " + " ".join(f"{k}={v}" for k, v in variant.args.items()),
    ]
    print("\n".join(line for line in lines if line is not None))
    if variant.weights:
        print("  weights")
        rows = []
        for i, w in enumerate(variant.weights.values()):
            metrics = " ".join(f"{k} {v:.1f}" for k, v in w.metrics.items())
            rows.append([f"    {w.tag}" + (" (default)" if i == 0 else ""), w.hf_hub_id, w.license or "?",
                         f"{w.num_classes} classes" if w.num_classes else "no head", metrics])
        print(_table(rows, ["    tag", "hub repo", "license", "head", "published (ImageNet-1k, %)"]))
    else:
        print("  weights      none (architecture only)")
    return 0


def _info_saved(args: argparse.Namespace) -> int:
    """`zoo info DIR` / `zoo info hf-hub:ORG/NAME`: a saved model (`zoo.factory.saved_info`)."""
    info = factory.saved_info(args.name)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    inp, weights = info["input"], info["weights"] or {}
    lines = [f"{args.name}  ({info['family']}" + (f", {info['variant']}" if info["variant"] else "") + ")",
             f"  params       {info['params']:,} ({info['params'] / 1e6:.2f}M)",
             f"  input        {_size(inp['img_size'])}, mean {inp['mean']}, std {inp['std']}, crop_pct "
             f"{inp['crop_pct']}, {inp['interpolation']}",
             f"  sizes        {info['input_sizes']}" if info["input_sizes"] else None,
             "  args         " + " ".join(f"{k}={v}" for k, v in info["args"].items()),
             f"  license      {weights.get('license') or '?'}"]
    lines += [f"  loaded       {note}" for note in weights.get("adapted", [])]
    print("\n".join(line for line in lines if line is not None))
    return 0


def _settings(cls, args: argparse.Namespace):
    """defaults < the resumed run's config.yaml < --config < flags. `--resume auto` resumes the run in
    --out when it holds a checkpoint and starts afresh otherwise (one command a job scheduler can requeue)."""
    from .config import resolve

    if str(getattr(args, "resume", None)) == "auto":
        from .training.checkpoint import auto_resume
        args.resume = auto_resume(Path(resolve(cls, args, [args.config] if args.config is not None else []).out))
    configs = []
    if getattr(args, "resume", None) is not None:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise ValueError(f"--resume {args.resume}: no config.yaml there; give the run directory of an earlier run")
        configs.append(saved)
    if args.config is not None:
        configs.append(args.config)
    cfg = resolve(cls, args, configs)
    cfg.out = Path(args.resume) if getattr(args, "resume", None) is not None else cfg.out  # a resumed run: its own dir
    return cfg


def cmd_pretrain_mae(args: argparse.Namespace) -> int:
    from .training.mae import MAEPretrainConfig, pretrain_mae

    cfg = _settings(MAEPretrainConfig, args)
    summary = pretrain_mae(cfg, resume=args.resume)
    if "finished" in summary:  # only the main process reports
        state = "finished" if summary["finished"] else f"paused after epoch {summary['epochs']} (--resume continues)"
        print(f"\n{state}: {summary['epochs']} epochs, {summary['steps']} optimizer steps, "
              f"last epoch loss {summary['final_loss']:.4f}\nrun directory: {cfg.out}")
        for name in ("reconstruction.png", "training_curves.png", "metrics.jsonl", "encoder"):
            if (Path(cfg.out) / name).exists():
                print(f"  {Path(cfg.out) / name}")
    return 0


def cmd_linear_probe(args: argparse.Namespace) -> int:
    from .eval.linear_probe import ProbeConfig, linear_probe, summary_text

    cfg = _settings(ProbeConfig, args)
    r = linear_probe(cfg)
    if r:  # under torchrun only the main process has results to report
        print(summary_text(r, cfg.out))
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    from .eval.knn import KnnConfig, knn
    from .eval.prepare import backbone_line

    cfg = _settings(KnnConfig, args)
    r = knn(cfg)
    if not r:
        return 0
    print(f"\nk={r['k']} (chosen on held-out train): {r['eval_split']} top-1 {r['test_top1']:.2f}%  "
          f"top-5 {r['test_top5']:.2f}%  (features {r['feature_cache']})")
    print(backbone_line(r, "knn"))
    print(f"results: {Path(cfg.out) / 'results.json'}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import QuickstartConfig, format_summary, quickstart

    cfg = _settings(QuickstartConfig, args)
    print(format_summary(quickstart(cfg), cfg.out))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .training.finetune import FinetuneConfig, finetune

    cfg = _settings(FinetuneConfig, args)
    s = finetune(cfg, resume=args.resume)
    if "best_dir" in s:  # only the main process reports (other ranks return without it)
        best = s["best"]
        state = "finished" if s["finished"] else f"paused after epoch {s['epochs']} (--resume continues)"
        print(f"\n{state}: {s['epochs']} epochs" + (" (early stop)" if s.get("early_stopped") else "")
              + f"; best val top-1 {best['top1']:.2f}% at epoch {best['epoch'] + 1} ({best['weights']} weights)")
        if "test" in s:
            t = s["test"]
            print(f"test (best model, once): top-1 {t['test_top1']:.2f}%  top-5 {t['test_top5']:.2f}%  "
                  f"ECE {t['test_ece']:.2f}%")
        print(f"best model: {s['best_dir']}  (zoo.create(...) loads it; zoo push uploads it)\nrun directory: {cfg.out}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    for path in factory.download(args.name, revision=args.revision, cache_dir=args.cache_dir, force=args.force):
        print(path)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    info = factory.push_folder(args.dir, args.repo_id, private=args.private or None, revision=args.revision,
                           commit_message=args.message)
    print(getattr(info, "commit_url", None) or f"https://huggingface.co/{args.repo_id}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    print(factory.convert_release(args.src, args.source, args.out, model=args.model, branch=args.branch,
                                  overwrite=args.overwrite))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    print(factory.export(args.src, args.out, format=args.format, revision=args.revision, cache_dir=args.cache_dir,
                         overwrite=args.overwrite))
    return 0


def _add_job(sub, name: str, settings_cls, func, help: str, description: str, resumable: bool = False):
    """A subcommand whose flags come from a settings dataclass, with --config (and --resume)."""
    from .config import add_arguments

    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML file of settings (keys as the flags)")
    if resumable:
        p.add_argument("--resume", type=Path, metavar="RUN_DIR|auto",
                       help="continue this run from its latest checkpoint, with its config.yaml (flags override); "
                            "'auto': resume --out if it holds a checkpoint, else start afresh there")
    add_arguments(p, settings_cls, amp_aliases=resumable)  # the training commands also take timm's --amp
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="A model zoo for the Vision Transformer family (ViT, DeiT, Swin, DINOv2, MAE).")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered models", description="List registered models.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'deit*' (default: all)")
    p.add_argument("--pretrained", action="store_true", help="only models with weights; one row per weight tag")
    p.add_argument("--family", help="only this family, e.g. vit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show one model: params, GMACs, input config, weight tags",
                       description="Show a model's registry entry, parameter count, GMACs and weight tags; "
                                   "with --system, this machine instead (as zoo env).")
    p.add_argument("name", nargs="?", help="variant name or alias (e.g. vit_b_16), or a saved model: a folder or "
                                           "hf-hub:ORG/NAME")
    p.add_argument("--system", action="store_true", help="show this machine instead of a model (zoo env)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("env", help="this machine: CPU features, threads, versions, which kernels each layer uses",
                       description="Show the CPU model and features (AVX2, AVX-512, native bf16, AMX), threads, "
                                   "torch / timm versions, and which path each layer kind takes here and why "
                                   "(ZOO_FAST_PATHS, ZOO_MAX_CPU_ISA). Paste it into bug reports and benchmark tables.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_env)

    from .eval.knn import KnnConfig
    from .eval.linear_probe import ProbeConfig
    from .quickstart import QuickstartConfig
    from .training.finetune import FinetuneConfig
    from .training.mae import MAEPretrainConfig

    _add_job(sub, "pretrain-mae", MAEPretrainConfig, cmd_pretrain_mae, resumable=True,
             help="MAE pretraining on a folder of images or the built-in digits",
             description="Masked-autoencoder pretraining (He et al. 2021): resumable, multi-process with torchrun, "
                         "progress bar, JSONL log, loss and reconstruction figures; the encoder is saved as a ViT. "
                         "Settings come from defaults < --config YAML < flags.")
    _add_job(sub, "linear-probe", ProbeConfig, cmd_linear_probe,
             help="DINOv2-style linear probe of a frozen backbone (52 heads, chosen on held-out train)",
             description="Linear evaluation of a frozen backbone: features extracted once (cached), 4 feature "
                         "configurations x 13 learning rates trained together, the best head chosen on a held-out "
                         "part of the train split, then scored once on the test split.")
    _add_job(sub, "knn", KnnConfig, cmd_knn, help="weighted kNN classification on frozen features",
             description="kNN on L2-normalised class-token features (or --features cls_patch_mean) (T=0.07), "
                         "k chosen on held-out train.")
    _add_job(sub, "quickstart", QuickstartConfig, cmd_quickstart,
             help="the whole pipeline on the built-in digits in a few minutes",
             description="MAE-pretrain a small ViT on scikit-learn's digits, linear-probe it, probe the "
                         "same ViT at random init, fit logistic regression on raw pixels, and compare.")
    _add_job(sub, "finetune", FinetuneConfig, cmd_finetune, resumable=True,
             help="fine-tune a model on a folder of labelled images or the built-in digits",
             description="Supervised fine-tuning with the modern ViT recipe (AdamW, layer-wise lr decay, warmup + "
                         "cosine, RandAugment, Mixup/CutMix, label smoothing, drop path, EMA, gradient clipping); "
                         "resumable, multi-process with torchrun; the best model is saved with zoo.save_pretrained.")

    add_image_commands(sub)

    p = sub.add_parser("download", help="fetch weights into the Hugging Face cache (for offline use later)",
                       description="Download and verify a model's weights into the Hugging Face cache ($HF_HOME/hub); "
                                   "copy that folder to an offline machine to load them there.")
    p.add_argument("name", help="NAME[.TAG] (default tag if none) or hf-hub:ORG/NAME[@REVISION]")
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument("--cache-dir", help="cache folder (default: $HF_HUB_CACHE or $HF_HOME/hub)")
    p.add_argument("--force", action="store_true", help="download again even if cached (replaces a corrupt file)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("push", help="upload a folder written by save_pretrained to the Hub",
                       description="Create REPO_ID on the Hugging Face Hub if needed and upload DIR's "
                                   "model.safetensors, config.json and README.md.")
    p.add_argument("dir", help="folder written by zoo.save_pretrained (or `zoo convert` / `zoo export`)")
    p.add_argument("repo_id", help="ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to push to (created if needed; default: main)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("convert", help="convert a research checkpoint (.pth) to a zoo folder",
                       description="Read a research release with torch.load(weights_only=True), map its keys "
                                   "and write a zoo folder (model.safetensors, config.json, README.md).")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="the release it is: mae, dinov2, dinov3, swin or torchvision-swin (and any a plugin "
                        "family reads)")
    p.add_argument("src", help="the checkpoint file (.pth, read with torch.load(weights_only=True))")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", help="registry variant it is, when the checkpoint's shapes do not say")
    p.add_argument("--branch", help="which copy to take from a training checkpoint that holds several: teacher "
                                    "(default where there is one), student, ema, or a key prefix ending in '.'")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if it holds files")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export", help="save a model with weights as a zoo, timm or transformers folder",
                       description="Load SRC (a registry name with weights, an hf-hub: repo or a folder) and "
                                   "save it; --format timm writes a folder timm.create_model('local-dir:...') loads.")
    p.add_argument("src", help="NAME[.TAG], hf-hub:ORG/NAME[@REVISION] or a folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=SAVE_FORMATS, default="zoo", help="config format (default: zoo)")
    p.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    p.add_argument("--cache-dir", help="cache folder (default: $HF_HUB_CACHE or $HF_HOME/hub)")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if it holds files")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # What loading adapted, downloaded or saved (logger "zoo", INFO) goes to stderr for this command.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("zoo: %(message)s"))
    logger = logging.getLogger("zoo")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return args.func(args)
    except NonFiniteLossError as e:  # a training job stopped cleanly; the message names the last checkpoint
        print(f"zoo {args.command}: stopped: {e}", file=sys.stderr)
        return 1
    except (UnknownModelError, RegistryError, ValueError, WeightsError) as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
