"""Writing a model to a folder: model.safetensors, config.json (zoo's, timm's or transformers') and a
model card.

`zoo.save_pretrained` (in `zoo.factory`) calls `save_pretrained` here with what it knows from the
registry (the family record, the complete arguments); the folder then loads with `zoo.create(folder)`,
or with `timm.create_model("local-dir:...")` in timm's format.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from ..complexity import count_macs, count_params
from ..specs import ConversionError, Family
from ..version import __version__
from .card import input_sizes, model_card
from .source import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, PathLike

log = logging.getLogger("zoo.weights")
SAVE_FORMATS = ("zoo", "timm", "transformers", "onnx")
PREPROCESSOR_NAME = "preprocessor_config.json"
_PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL's codes, which transformers' processors use


def save_pretrained(model: nn.Module, save_dir: PathLike, family: Family, full_args: Mapping[str, Any],
                    timm_args: Optional[Mapping[str, Any]] = None, format: str = "zoo",
                    license: Optional[str] = None, metrics: Optional[Mapping[str, float]] = None,
                    repo_id: Optional[str] = None) -> Path:
    """Write `model` to `save_dir`: model.safetensors, config.json and a README.md model card.

    `format="zoo"` (default) writes a config zoo reads back (`zoo.create(save_dir)`, or
    `zoo.create("hf-hub:...")` once pushed); `format="timm"` writes timm's config instead, so that
    `timm.create_model("local-dir:DIR", pretrained=True)` (or `hf-hub:`) loads it; `format="transformers"`
    writes transformers' config.json, weights under its keys and a preprocessor_config.json, for
    `transformers.AutoModel` / `AutoModelForImageClassification.from_pretrained(DIR)` (the family's
    `to_transformers`; label names become `id2label`); `format="onnx"` writes the zoo folder and
    `model.onnx` (`zoo.weights.onnx`: dynamic batch, and height and width where the model takes any
    size), checked in ONNX Runtime at two sizes when it is installed (logged). `license` and
    `metrics` (e.g. {"top1": 81.2}) go into the card and config; by default they come from the weights
    the model was loaded from (metrics only when the architecture was not adapted). `repo_id` is used
    in the card's usage snippet. The model must come from `zoo.create` (it needs `model.zoo_config`);
    `family` is its family record, `full_args` its builder arguments with the defaults filled in,
    `timm_args` those of the timm architecture of the same name (format "timm" only: the config
    records what differs). Raises ValueError for an unknown format, a model without zoo_config, a
    model timm or transformers has no architecture for, or arguments JSON cannot hold; nothing is
    written then.
    """
    if format not in SAVE_FORMATS:
        raise ValueError(f"format must be one of {SAVE_FORMATS}, got {format!r}")
    cfg = zoo_config_of(model)
    args = _jsonable_args(cfg["args"])
    loaded = cfg.get("weights") or {}
    license = license or loaded.get("license")
    if metrics is None:
        metrics = {} if loaded.get("adapted") else dict(loaded.get("metrics") or {})
    save_dir = Path(save_dir).expanduser()
    save_dir.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    if format in ("zoo", "onnx"):
        config = {
            "library_name": "zoo", "format": "zoo", "zoo_version": __version__, "family": cfg["family"],
            "variant": cfg.get("name"), "tag": cfg.get("tag"),
            "num_classes": getattr(model, "num_classes", args.get("num_classes")),
            "args": args, "input": cfg["input"], "license": license, "metrics": dict(metrics),
            "source": loaded.get("source"), "base_model": loaded.get("base_model"),
        }
        if cfg.get("training"):  # what a training run measured, how it was run (zoo finetune)
            config["training"] = cfg["training"]
        if cfg.get("label_names"):
            config["label_names"] = list(cfg["label_names"])
        (save_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    elif format == "timm":  # first: it refuses what timm cannot build
        _write_timm_config(save_dir / CONFIG_NAME, model, cfg, full_args, timm_args, license)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if format == "transformers":  # first: it refuses what transformers cannot hold
        tensors = _write_transformers_config(save_dir, model, cfg, family, full_args, tensors)
    save_file(tensors, str(save_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    params, macs = _cost(family, args, cfg["input"])
    card = model_card(cfg, args, license, metrics, format, repo_id, save_dir, params, macs, input_sizes(model))
    (save_dir / CARD_NAME).write_text(card, encoding="utf-8")
    if format == "onnx":
        _write_onnx(model, save_dir, cfg, args)
    log.info("saved %s to %s (%s format)", cfg.get("name") or cfg["family"], save_dir, format)
    return save_dir


def _write_onnx(model: nn.Module, save_dir: Path, cfg: Mapping[str, Any], args: Mapping[str, Any]) -> None:
    """model.onnx beside the zoo folder, then ONNX Runtime's outputs against PyTorch's at the input size
    and (where the graph takes any size) at another, logged; skipped with a note without onnxruntime."""
    from . import onnx

    (h, w), in_chans = cfg["input"]["img_size"], int(args.get("in_chans", 3))
    path = onnx.write_onnx(model, save_dir / onnx.ONNX_NAME, (h, w), in_chans)
    sizes = [(2, h, w)]
    if onnx.dynamic_sizes(model):
        ph, pw = onnx.exported_module(model).patch_embed.patch_size
        sizes.append((3, h + 2 * ph, w + pw))
    try:
        diffs = onnx.check_onnx(path, model, sizes, in_chans)
    except ImportError:
        log.info("wrote %s; install onnxruntime to check it against PyTorch", path)
        return
    except Exception as e:  # onnxruntime's own errors: the file does not run as exported
        raise ValueError(f"format='onnx': ONNX Runtime could not run {path} at {sizes}: {e}") from e
    log.info("wrote %s; ONNX Runtime vs PyTorch, largest difference: %s", path,
             ", ".join(f"{d:.1e} at {b}x{hh}x{ww}" for d, (b, hh, ww) in zip(diffs, sizes)))


def check_out_dir(out_dir: PathLike, overwrite: bool) -> None:
    """Refuse to write into a folder that already holds files, unless `overwrite` (the commands'
    --overwrite): nothing is lost. Raises ValueError."""
    out = Path(out_dir).expanduser()
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} already holds files; choose another folder, or pass --overwrite "
                         f"(overwrite=True) to replace its model files")


def zoo_config_of(model: nn.Module) -> Dict[str, Any]:
    """`model.zoo_config` (family, arguments, input config ...), which `zoo.create` attaches. Raises
    ValueError for a model built some other way: its family and arguments are unknown."""
    if hasattr(model, "out_indices") and hasattr(model, "feature_info"):  # zoo.models.features.FeatureBackbone
        raise ValueError("a features_only backbone holds a pruned model and cannot be saved as its variant: save the "
                         "model built without features_only=True, and wrap it again after loading")
    cfg = getattr(model, "zoo_config", None)
    if not isinstance(cfg, dict) or "family" not in cfg:
        raise ValueError(f"{type(model).__name__} has no zoo_config: build it with zoo.create(...) so that its family "
                         f"and arguments are known")
    return cfg


def _jsonable_args(args: Mapping[str, Any]) -> Dict[str, Any]:
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
    for k, v in out.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            raise ValueError(f"argument {k}={v!r} cannot be written to config.json (JSON values only)") from None
    return out


# zoo arguments timm's constructor has no equivalent for: the timm architecture name sets them.
_ZOO_ONLY_ARGS = ("distilled", "mlp_layer", "norm_eps", "ls_layout")
# zoo arguments timm's constructor takes under another name (its Eva class, which builds DINOv3)
_TIMM_NAMES = {"rope_shift": "rope_shift_coords", "rope_jitter": "rope_jitter_coords",
               "rope_rescale": "rope_rescale_coords", "rope_base": "rope_temperature"}
# An origin's conventions for other input sizes (docs/hub.md): timm has its own, which the export takes.
_ORIGIN_ARGS = ("pos_embed_resample", "bias_table_resample", "window_padding", "dynamic_img_crop")


def _write_timm_config(path: Path, model: nn.Module, cfg: Mapping[str, Any], full_args: Mapping[str, Any],
                       timm_args: Optional[Mapping[str, Any]], license: Optional[str]) -> None:
    """timm's config.json, written by timm's own `save_config_for_hf` for the timm model of the same
    name and arguments (built on the meta device: no memory): architecture, model_args that differ
    from the architecture's, num_classes, label names and the pretrained_cfg with zoo's input config."""
    import timm  # local import: only this export needs timm itself
    from timm.models._hub import save_config_for_hf

    name = cfg.get("name")
    if not name or not timm.is_model(name) or timm_args is None:
        raise ValueError(f"format='timm' needs a model timm knows by name; {name!r} is not one")
    model_args = {k: v for k, v in full_args.items() if _plain(timm_args.get(k)) != _plain(v)}
    if model_args.get("pos_embed") == "sincos":
        del model_args["pos_embed"]  # a fixed table in zoo; timm loads the same values as a learned one
    conventions = {k: model_args.pop(k) for k in _ORIGIN_ARGS if k in model_args}
    if conventions:
        log.warning("format='timm': %s: timm has its own rules for other input sizes; the export gives zoo's "
                    "outputs at %s and may differ from them at other sizes",
                    ", ".join(f"{k}={v!r}" for k, v in conventions.items()),
                    "x".join(str(x) for x in cfg["input"]["img_size"]))
    clash = [k for k in model_args if k in _ZOO_ONLY_ARGS]
    if clash:
        raise ValueError(f"format='timm': {', '.join(f'{k}={model_args[k]!r}' for k in clash)} differs from timm's "
                         f"{name}, and timm's constructor has no such argument")
    model_args = {_TIMM_NAMES.get(k, k): tuple(v) if isinstance(v, list) else v for k, v in model_args.items()}
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False, **model_args)
        # where zoo's variant chose otherwise than timm's builder (DINOv3: class-token pooling, padding of
        # partial patches), say so in model_args, so timm builds what zoo saved
        chosen = {k: v for k, v in _behaviour(model).items() if v is not None and _behaviour(reference).get(k) != v}
        if chosen:
            model_args.update(chosen)
            reference = timm.create_model(name, pretrained=False, **model_args)
    inp = cfg["input"]
    reference.pretrained_cfg = dict(reference.pretrained_cfg, tag=cfg.get("tag"), license=license)
    data_config = {"input_size": (full_args.get("in_chans", 3), *inp["img_size"]), "interpolation": inp["interpolation"],
                   "mean": tuple(inp["mean"]), "std": tuple(inp["std"]), "crop_pct": inp["crop_pct"],
                   "crop_mode": "center"}
    labels = cfg.get("label_names")
    save_config_for_hf(reference, str(path), model_config={"label_names": list(labels)} if labels else None,
                       model_args=_jsonable_args(model_args), data_config=data_config)


def _behaviour(model: nn.Module) -> Dict[str, Any]:
    """The builder arguments where zoo's variant and timm's builder of the same name may choose otherwise
    (pooling, padding of partial patches), as the built `model` (zoo's or timm's) has them."""
    embed = getattr(model, "patch_embed", None)
    return {"global_pool": getattr(model, "global_pool", None),
            "dynamic_img_pad": getattr(embed, "dynamic_img_pad", None) if hasattr(model, "cls_token") else None}


def _write_transformers_config(save_dir: Path, model: nn.Module, cfg: Mapping[str, Any], family: Family,
                               full_args: Mapping[str, Any], tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """transformers' config.json (with id2label / label2id from the label names) and
    preprocessor_config.json (size, mean, std, resampling) in `save_dir`; returns the tensors under
    transformers' keys. Raises ValueError for a family or model transformers cannot hold."""
    if family.to_transformers is None:
        raise ValueError(f"format='transformers': family {family.name!r} has no transformers export")
    try:
        config, out = family.to_transformers(full_args, tensors)
    except ConversionError as e:
        raise ValueError(f"format='transformers': {e}") from None
    labels = cfg.get("label_names") or [f"LABEL_{i}" for i in range(getattr(model, "num_classes", 0) or 0)]
    if labels:
        config["id2label"] = {str(i): str(name) for i, name in enumerate(labels)}
        config["label2id"] = {str(name): i for i, name in enumerate(labels)}
    inp = cfg["input"]
    h, w = inp["img_size"]  # zoo's eval recipe: short side to size / crop_pct, centre crop, normalise
    processor = {"image_processor_type": "BitImageProcessor", "do_resize": True,
                 "size": {"shortest_edge": int(max(h, w) / inp["crop_pct"])}, "do_center_crop": True,
                 "crop_size": {"height": h, "width": w}, "resample": _PIL_RESAMPLE.get(inp["interpolation"], 3),
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
                 "image_mean": list(inp["mean"]), "image_std": list(inp["std"])}
    (save_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (save_dir / PREPROCESSOR_NAME).write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _cost(family: Family, args: Mapping[str, Any], inp: Mapping[str, Any]) -> Tuple[Optional[int], Optional[int]]:
    """Parameters and MACs of the architecture, measured on the meta device (no memory, no arithmetic)."""
    try:
        with torch.device("meta"):
            meta = family.builder(**args)
        return count_params(meta), count_macs(meta, (args.get("in_chans", 3), *inp["img_size"]))
    except Exception as e:  # a card without numbers beats no card
        log.info("could not measure %s for the model card: %s", family.name, e)
        return None, None
