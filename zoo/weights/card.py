"""The model card (README.md) written beside saved weights, in the Hugging Face Hub's format."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..version import __version__


def input_sizes(model: Any) -> Optional[str]:
    """Which input sizes `model` takes, in words, read from its patch embedding (None without one):
    "224x224 only ...", "any multiple of 14 ...", "any (...)", with how positions are resampled."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not hasattr(embed, "strict_img_size"):
        return None
    (h, w), (ph, pw) = embed.img_size, embed.patch_size
    if embed.strict_img_size:
        return f"{h}x{w} only (build with img_size=... or dynamic_img_size=True for others)"
    if getattr(embed, "dynamic_img_crop", False):
        what = "any (pixels of a partial patch are ignored)"
    elif embed.dynamic_img_pad:
        what = "any (padded to whole patches)"
    else:
        what = f"any multiple of {ph}x{pw}" if ph != pw else f"any multiple of {ph}"
    method = getattr(model, "pos_embed_resample", None)
    if method is not None and getattr(model, "pos_embed", None) is not None:
        what += f"; positions resampled from {embed.grid_size[0]}x{embed.grid_size[1]} on each call ({method})"
    padding = getattr(model, "window_padding", None)
    if padding is not None:
        what += f"; maps padded to whole windows by the {padding!r} rule"
    return what


def model_card(cfg: Mapping[str, Any], args: Mapping[str, Any], license: Optional[str],
               metrics: Mapping[str, float], format: str, repo_id: Optional[str], save_dir: Path,
               params: Optional[int], macs: Optional[int], sizes: Optional[str] = None) -> str:
    """The README.md of a saved model, written with huggingface_hub's `ModelCard` / `ModelCardData` so
    that the Hub parses it: metadata (library_name, license, tags, pipeline_tag: classification or
    feature extraction, base_model: the Hub repo the weights were loaded from, datasets, and a
    model-index with the results a training run measured: `cfg["training"]["results"]`, e.g.
    {"test_top1": 91.2}), then a table (family, architecture, weights, parameters, GMACs, input, input
    sizes taken (`sizes`), classes, labels, published metrics (`metrics`), measured results, source),
    the training hyper-parameters and command (`cfg["training"]`), and a usage snippet.
    `params` / `macs` may be None (shown as ?)."""
    from huggingface_hub import EvalResult, ModelCardData

    family, name, tag = cfg["family"], cfg.get("name"), cfg.get("tag")
    title = (f"{name}.{tag}" if tag else name) or f"{family} model"
    num_classes = args.get("num_classes", 0)
    pipeline = "image-classification" if num_classes else "image-feature-extraction"
    library = format if format in ("timm", "transformers") else "zoo"
    training = cfg.get("training") or {}
    dataset = training.get("dataset")
    hub_dataset = dataset if isinstance(dataset, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", dataset) else None
    results = [EvalResult(task_type=pipeline, dataset_type=hub_dataset or str(dataset), dataset_name=str(dataset),
                          dataset_split=key.split("_")[0], metric_type="accuracy", metric_name=key.replace("_", " "),
                          metric_value=round(float(value), 4))
               for key, value in (training.get("results") or {}).items()] if dataset else None
    data = ModelCardData(library_name=library, license=license or "other",
                         tags=["image-classification", family, "zoo"] + ([library] if library != "zoo" else []),
                         pipeline_tag=pipeline, base_model=(cfg.get("weights") or {}).get("base_model"),
                         datasets=[hub_dataset] if hub_dataset else None, model_name=title if results else None,
                         eval_results=results or None)
    inp = cfg["input"]
    size = "x".join(str(s) for s in inp["img_size"])
    rows = [("Family", family), ("Architecture", name or "-"), ("Weights", tag or "-"),
            ("Parameters", f"{params / 1e6:.2f} M" if params is not None else "?"),
            ("GMACs", f"{macs / 1e9:.2f} at {args.get('in_chans', 3)}x{size}" if macs is not None else "?"),
            ("Input size", f"{size}, mean {_nums(inp['mean'])}, std {_nums(inp['std'])}, crop_pct {inp['crop_pct']}, "
                           f"{inp['interpolation']}"),
            *([("Input sizes taken", sizes)] if sizes else []),
            ("Classes", str(num_classes) if num_classes else "none (features)")]
    labels = cfg.get("label_names")
    if labels:
        rows.append(("Labels", ", ".join(str(x) for x in labels[:20]) + (f", ... ({len(labels)} in all)"
                                                                            if len(labels) > 20 else "")))
    rows += [(f"{k} (published)", f"{v:.1f}") for k, v in metrics.items()]
    rows += [(f"{k.replace('_', ' ')} (this run, {dataset})", f"{v:.2f}") for k, v in
             (training.get("results") or {}).items()]
    source = (cfg.get("weights") or {}).get("source")
    if source:
        rows.append(("Loaded from", f"`{source}`"))
    where = f"hf-hub:{repo_id}" if repo_id else str(save_dir)
    if format == "timm":
        ref = f"hf-hub:{repo_id}" if repo_id else f"local-dir:{where}"
        usage = f"import timm\n\nmodel = timm.create_model(\"{ref}\", pretrained=True).eval()"
    elif format == "transformers":
        auto = "AutoModelForImageClassification" if num_classes else "AutoModel"
        usage = (f"from transformers import {auto}\n\nmodel = {auto}.from_pretrained(\"{repo_id or where}\").eval()"
                 f"\n# or zoo: zoo.create(\"{where if not repo_id else 'hf-hub:' + repo_id}\")")
    elif format == "onnx":
        usage = ("import onnxruntime\n\nsession = onnxruntime.InferenceSession(\"model.onnx\")\n"
                 "output = session.run(None, {\"pixel_values\": images})[0]  # images: (B, 3, H, W) float32, "
                 f"normalised as above\n# or zoo: zoo.create(\"{where}\")")
    else:
        usage = f"import zoo\n\nmodel = zoo.create(\"{where}\").eval()  # weights, config and input size from this repo"
    if format == "onnx":
        pass
    elif format == "transformers":
        usage += f"\noutputs = model(pixel_values=images)  # {'.logits' if num_classes else '.last_hidden_state'}"
    else:
        usage += ("\nlogits = model(images)  # images: (B, 3, H, W), normalised as above" if num_classes else
                  "\nfeatures = model(images)  # (B, D); model.forward_features(images) gives every token")
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    body = (f"# {title}\n\nA {family} model saved with zoo {__version__}.\n\n| | |\n|---|---|\n{table}\n\n"
            f"## Usage\n\n```python\n{usage}\n```\n")
    if training.get("hyperparameters") or training.get("command"):
        hyper = "\n".join(f"- {k}: `{v}`" for k, v in (training.get("hyperparameters") or {}).items())
        body += ("\n## Training\n\n" + (f"```\n{training['command']}\n```\n\n" if training.get("command") else "")
                 + (f"{hyper}\n" if hyper else ""))
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def _nums(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
