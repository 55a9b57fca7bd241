"""The `zoo` commands that read image files: `zoo predict` (top-k labels) and `zoo attention` (attention
maps drawn over the photos). Their arguments and the calls they make; `zoo.cli` adds them to its parser.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import factory


def _pretrained(args: argparse.Namespace):
    """--pretrained: False, True (the default tag; also spelled 'true' or 'default') or a tag."""
    return True if args.pretrained is True or str(args.pretrained).lower() in ("true", "default") else args.pretrained


def _head(value: str):
    """--head: 'mean' or a head index."""
    if value == "mean":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a head index (0, 1, ...) or 'mean'") from None


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import image_files, load_classifier, predict, write_predictions

    paths = image_files(args.images)
    model = load_classifier(args.model, _pretrained(args))
    results = predict(paths, model, args.top_k, batch_size=args.batch_size, device=args.device,
                      precision=args.precision, tta=args.tta, num_workers=args.workers, compile=args.compile,
                      progress=len(paths) > args.batch_size and sys.stderr.isatty())
    if args.out:
        print(write_predictions(paths, results, args.out))
        return 0
    for path, top in zip(paths, results):
        print(path)
        for label, p in top:
            print(f"  {p * 100:6.2f}%  {label}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from .eval.attention import draw
    from .predict import image_files

    paths = image_files(args.images)
    model = factory.create(args.model, pretrained=_pretrained(args)).eval()
    for path in draw(model, paths, Path(args.out), args.layer, args.head, args.rollout, args.size):
        print(path)
    return 0


def _images_and_model(p: argparse.ArgumentParser) -> None:
    """The arguments both image commands take: the images, --model and --pretrained."""
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--model", required=True, help="registered NAME[.TAG], a saved model directory or hf-hub:ORG/NAME")
    p.add_argument("--pretrained", nargs="?", const=True, default=False,
                   help="with a registered name: load its weights (optionally a tag)")


def add_image_commands(sub) -> None:
    """Add `predict` and `attention` to the CLI's subcommand parsers `sub`."""
    p = sub.add_parser("predict", help="top-k labels for images (files, folders, patterns)",
                       description="Classify images with a registered model (--pretrained) or a saved one "
                                   "(e.g. the best/ folder of zoo finetune); prints the top-k labels with probabilities, "
                                   "or writes them to --out (.csv or .jsonl).")
    _images_and_model(p)
    p.add_argument("--top-k", type=int, default=5, help="labels per image (default: 5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast (default: fp32)")
    p.add_argument("--tta", choices=("none", "flip", "five-crop"), default="none",
                   help="test-time augmentation: mean probabilities over the mirror or five crops (default: none)")
    p.add_argument("--out", help="write the predictions to this .csv or .jsonl file instead of printing them")
    p.add_argument("--workers", type=int, help="image-loading processes (default: CPUs - 1, at most 8)")
    p.add_argument("--compile", "--torchcompile", nargs="?", const="inductor",
                   help="torch.compile the model: --compile (inductor) or --compile=BACKEND (after the images, or "
                        "with '=': the flag takes an optional value)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("attention", help="draw attention maps over images (class token, rollout; Swin windows)",
                       description="For each image, write <stem>_attention.png: the photo with the class token's "
                                   "attention over the patches (registers left out) at one block, one head or their "
                                   "mean; with --rollout also <stem>_rollout.png (attention rollout, Abnar & Zuidema "
                                   "2020). Swin: the attention tokens receive in the last stage's windows.")
    _images_and_model(p)
    p.add_argument("--layer", type=int, default=-1, help="block index, negative from the end (Swin: of the last "
                                                          "stage; default: -1, the last)")
    p.add_argument("--head", type=_head, default="mean", help="head index, or mean (default)")
    p.add_argument("--rollout", action="store_true", help="also draw attention rollout up to --layer (ViT family)")
    p.add_argument("--size", type=int, help="pixels of the image's shorter side as the model sees it "
                                            "(default: the model's input size)")
    p.add_argument("--out", default="attention", help="output folder (default: ./attention)")
    p.set_defaults(func=cmd_attention)
