"""Reading the config.json of a saved model, whatever wrote it: zoo, timm or transformers.

Each origin says what to build in its own words; these functions turn that into a family, builder
arguments and an input config, as plain data. They know nothing of the registry: `zoo.factory`
checks the result against it (registered family, accepted arguments) before any weights are read,
so no downloaded file makes zoo import or run code.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..specs import InputConfig, Variant, parse_input
from .errors import RepoConfigError
from .integrity import read_json
from .source import Source

# (family, builder args, input config, registry variant name or None, weight tag or None)
Spec = Tuple[str, Dict[str, Any], InputConfig, Optional[str], Optional[str]]


def config_format(config: Mapping[str, Any], what: str) -> str:
    """"zoo", "timm" or "transformers", from the keys of a config.json. Raises RepoConfigError."""
    if config.get("format") == "zoo" or config.get("library_name") == "zoo":
        return "zoo"
    if "architecture" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    raise RepoConfigError(f"{what}: not a zoo, timm or transformers config (no 'family', 'architecture' or "
                          f"'model_type')")


def zoo_spec(config: Mapping[str, Any], what: str) -> Spec:
    """What a config.json written by `zoo.save_pretrained` describes. Raises RepoConfigError for a
    missing family name, arguments that are not a JSON object, or a bad input config."""
    family = config.get("family")
    if not isinstance(family, str):
        raise RepoConfigError(f"{what}: 'family' must name a model family, got {family!r}")
    args = config.get("args")
    if not isinstance(args, dict):
        raise RepoConfigError(f"{what}: 'args' must be a JSON object of builder arguments")
    try:
        input_cfg = parse_input(config.get("input") or {"img_size": args.get("img_size", 224)}, base=None)
    except ValueError as e:
        raise RepoConfigError(f"{what}: field 'input': {e}") from None
    name, tag = config.get("variant"), config.get("tag")
    return family, args, input_cfg, name if isinstance(name, str) else None, tag if isinstance(tag, str) else None


def timm_spec(config: Mapping[str, Any], what: str, variant: Variant) -> Spec:
    """What timm's config.json describes, given `variant`, the zoo variant its `architecture` names:
    `model_args` on top of the variant's, `num_classes` and the input config from `pretrained_cfg`."""
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise RepoConfigError(f"{what}: 'model_args' must be a JSON object")
    pcfg = config.get("pretrained_cfg") or {}
    args = dict(variant.args, **model_args)
    args["num_classes"] = int(config.get("num_classes", pcfg.get("num_classes", variant.num_classes)))
    spec: Dict[str, Any] = {"img_size": list(pcfg.get("input_size", [3, *variant.input.img_size]))[1:]}
    spec.update({k: pcfg[k] for k in ("mean", "std", "crop_pct", "interpolation") if k in pcfg})
    try:
        input_cfg = parse_input(spec, base=variant.input)
    except ValueError as e:
        raise RepoConfigError(f"{what}: pretrained_cfg: {e}") from None
    return variant.family, args, input_cfg, variant.name, pcfg.get("tag")


def transformers_input(source: Source, img_size: Any, base: Optional[InputConfig]) -> InputConfig:
    """Input config of a transformers repo: `base` (the matching registry variant's, or ImageNet
    defaults) at the config's image size, with mean/std from preprocessor_config.json if present."""
    spec: Dict[str, Any] = {"img_size": img_size}
    path = source.fetch_optional("preprocessor_config.json")
    if path is not None:
        pre = read_json(path, source.describe("preprocessor_config.json"))
        spec.update({ours: pre[theirs] for ours, theirs in (("mean", "image_mean"), ("std", "image_std"))
                     if isinstance(pre.get(theirs), list) and len(pre[theirs]) == 3})
    return parse_input(spec, base=base or InputConfig(img_size=(0, 0)))


def label_names(config: Mapping[str, Any], fmt: str) -> Optional[List[str]]:
    """The class names a config.json records: zoo's and timm's `label_names`, transformers' `id2label`
    (in index order; its placeholder names LABEL_0, LABEL_1 ... count as none). None without any."""
    if fmt == "transformers":
        id2label = config.get("id2label")
        if not isinstance(id2label, dict) or not id2label:
            return None
        try:
            names = [str(id2label[k]) for k in sorted(id2label, key=int)]
        except ValueError:
            return None
        return None if all(re.fullmatch(r"LABEL_\d+", n) for n in names) else names
    names = config.get("label_names")
    if isinstance(names, dict):  # timm allows {index: name}
        names = [names[k] for k in sorted(names, key=int)]
    return [str(n) for n in names] if isinstance(names, list) else None


def card_license(source: Source) -> Optional[str]:
    """The `license` in the front matter of the repo's README.md (the Hub's model card metadata, read
    with huggingface_hub's ModelCard), or None without a card or a license in it."""
    path = source.fetch_optional("README.md")
    if path is None:
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path).data.license
    except Exception:  # a card that does not parse is no reason to refuse the weights
        return None


def saved_metadata(config: Mapping[str, Any], fmt: str, source: Optional[Source] = None) -> Dict[str, Any]:
    """{"license", "metrics", "label_names"} of a saved model: what its config.json records (timm keeps
    a license, transformers none) and, for transformers, the license of its model card (`source`)."""
    labels = label_names(config, fmt)
    if fmt == "zoo":
        metrics = config.get("metrics") if isinstance(config.get("metrics"), dict) else {}
        return {"license": config.get("license"), "label_names": labels,
                "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}
    license = (config.get("pretrained_cfg") or {}).get("license") if fmt == "timm" else None
    if fmt == "transformers" and source is not None:
        license = card_license(source)
    return {"license": license, "metrics": {}, "label_names": labels}
