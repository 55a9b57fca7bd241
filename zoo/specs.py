"""Plain data that describes models: input configs, weight tags, variants, and the errors of a bad name
or a bad registry entry. It imports nothing from zoo but `helpers`, so every other module may use it.

`parse_input` and `parse_weight_tag` turn YAML / JSON mappings into these records, with errors that
name the field and the allowed values.
"""
from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from .helpers import to_2tuple

# Named normalisation constants usable as `mean:` / `std:` in YAML.
NORM_PRESETS: Dict[str, Tuple[float, float, float]] = {
    "imagenet_mean": (0.485, 0.456, 0.406),
    "imagenet_std": (0.229, 0.224, 0.225),
    "inception_mean": (0.5, 0.5, 0.5),  # ViT augreg / original JAX weights
    "inception_std": (0.5, 0.5, 0.5),
}
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
WEIGHT_FORMATS = ("timm", "zoo", "transformers")
BUILTIN_SOURCE = "zoo"
INPUT_FIELDS = {"img_size", "mean", "std", "crop_pct", "interpolation"}
WEIGHT_FIELDS = {"hf_hub_id", "filename", "format", "license", "num_classes", "top1", "top5", "linear", "knn", "sha256",
                 "input", "description"}


class RegistryError(ValueError):
    """A registry file or registration is invalid. The message names the file, variant and field."""


class UnknownModelError(LookupError):
    """No variant, alias or tag of that name. The message suggests close matches."""


class ConversionError(ValueError):
    """A checkpoint or config zoo cannot map to its keys: unsupported model type, head or activation."""


@dataclass(frozen=True)
class InputConfig:
    """How images must be prepared for a model: size (H, W) in pixels, normalisation, eval resize/crop."""

    img_size: Tuple[int, int]
    mean: Tuple[float, float, float] = NORM_PRESETS["imagenet_mean"]
    std: Tuple[float, float, float] = NORM_PRESETS["imagenet_std"]
    crop_pct: float = 0.9
    interpolation: str = "bicubic"

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: tuples as lists (what config.json and `model.zoo_config["input"]` hold)."""
        return {"img_size": list(self.img_size), "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "interpolation": self.interpolation}


@dataclass(frozen=True)
class WeightTag:
    """One set of pretrained weights for a variant, stored on the Hugging Face Hub."""

    tag: str
    hf_hub_id: str
    filename: str = "model.safetensors"
    format: str = "timm"
    license: Optional[str] = None
    num_classes: int = 1000
    top1: Optional[float] = None  # reported ImageNet top-1, %
    top5: Optional[float] = None
    linear: Optional[float] = None  # published ImageNet-1k linear-probe top-1 of a backbone, %
    knn: Optional[float] = None  # published ImageNet-1k k-NN top-1 of a backbone, %
    sha256: Optional[str] = None
    input: Optional[InputConfig] = None
    description: str = ""

    @property
    def metrics(self) -> Dict[str, float]:
        """The reported metrics that are known, e.g. {"top1": 81.2} or {"linear": 84.5, "knn": 82.1}."""
        return {k: v for k, v in (("top1", self.top1), ("top5", self.top5), ("linear", self.linear),
                                  ("knn", self.knn)) if v is not None}


@dataclass(frozen=True)
class Variant:
    """A registered model: its family, constructor arguments, input config and weight tags."""

    name: str
    family: str
    args: Mapping[str, Any]
    input: InputConfig
    aliases: Tuple[str, ...] = ()
    params: Optional[int] = None
    weights: Mapping[str, WeightTag] = field(default_factory=dict)
    description: str = ""
    source: str = BUILTIN_SOURCE  # "zoo" or "plugin <entry point>"
    path: str = ""  # the YAML file it came from

    @property
    def default_tag(self) -> Optional[str]:
        """The first weight tag listed, or None for an architecture without weights."""
        return next(iter(self.weights), None)

    @property
    def num_classes(self) -> int:
        """Classifier outputs of the registered architecture (its `num_classes` argument, else 1000)."""
        return int(self.args.get("num_classes", 1000))


# More blocks than any published model has by far (ViT-7B: 40, Swin-L: 24); checked by the builders before
# building, so that a config asking for 100,000 blocks is refused at once, not after building them.
MAX_BLOCKS = 1000


def check_blocks(what: str, count: int) -> None:
    """Raise ValueError when a model asks for more than MAX_BLOCKS blocks (a config error, not a model)."""
    if count > MAX_BLOCKS:
        raise ValueError(f"{what}={count} asks for more blocks than any published model has (zoo builds at most "
                         f"{MAX_BLOCKS}): check the config that set it")


@dataclass
class Converted:
    """A checkpoint from elsewhere (transformers, a research release) in zoo's terms: what a family's
    converter returns (see `Family`), for the factory to build and load."""

    family: str
    args: Dict[str, Any]  # builder arguments the weights were made for (complete, unless `match` is given)
    state_dict: Dict[str, Any]  # tensors under zoo's (timm's) keys
    notes: List[str] = field(default_factory=list)  # what was dropped or changed, for the load report
    tag: Optional[str] = None  # the registry weight tag these weights are (research releases)
    match: Optional[Dict[str, Any]] = None  # partial args: the variant with `tag` having these completes `args`
    prefer: str = ""  # among registry variants of this architecture, prefer one whose name or tags contain it
    # builder arguments that reproduce the origin's behaviour (resampling, any-size input, window padding);
    # also in `args`. Applied whenever these weights are loaded, unless the caller overrides them.
    conventions: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """A model family: its builder and what the weights code needs to know about it.

    `checkpoint_filter(state_dict, model, source_args) -> (state_dict, notes)` fits a checkpoint in this
    family's (timm's) keys to `model`: another img_size, window, an older key layout (timm's
    `checkpoint_filter_fn`). `classifier` / `first_conv` name the head(s) and the patch projection
    (adapted for another num_classes / in_chans). `transformers` maps a transformers config
    `model_type`, `research` a research release name, to a converter returning `Converted`.
    `to_transformers(args, state_dict) -> (config, state_dict)` writes a model of this family (its
    complete builder arguments, its state dict) as a transformers checkpoint: config.json as a dict
    and the tensors under transformers' keys (raises ConversionError for what transformers cannot hold).
    """

    name: str
    builder: Callable[..., Any]
    source: str  # the module that registered it
    checkpoint_filter: Optional[Callable[..., Any]] = None
    classifier: Tuple[str, ...] = ()
    first_conv: Optional[str] = None
    transformers: Mapping[str, Callable[..., Converted]] = field(default_factory=dict)
    research: Mapping[str, Callable[..., Converted]] = field(default_factory=dict)
    to_transformers: Optional[Callable[..., Tuple[Dict[str, Any], Dict[str, Any]]]] = None

    def parameters(self) -> Optional[Dict[str, inspect.Parameter]]:
        """Keyword arguments the builder accepts; None when it takes **kwargs (anything goes)."""
        params = inspect.signature(self.builder).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return {n: p for n, p in params.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


class FieldError(ValueError):
    """A bad field inside a weight tag; `field` names it (None: the tag itself)."""

    def __init__(self, field_name: Optional[str], message: str) -> None:
        super().__init__(message)
        self.field = field_name


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'a', 'b'?)' for close matches of `word`, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _triple(value: Any, what: str) -> Tuple[float, float, float]:
    if isinstance(value, str):
        key = f"{value}_{what}"
        if key not in NORM_PRESETS:
            presets = sorted({k.rsplit('_', 1)[0] for k in NORM_PRESETS})
            raise ValueError(f"{what}: unknown preset {value!r}; presets: {', '.join(presets)}, or give 3 numbers")
        return NORM_PRESETS[key]
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return tuple(float(v) for v in value)  # type: ignore[return-value]
    raise ValueError(f"{what}: expected a preset name or 3 numbers, got {value!r}")


def parse_input(spec: Any, base: Optional[InputConfig]) -> InputConfig:
    """An `InputConfig` from a mapping with keys of `INPUT_FIELDS` (img_size required without `base`),
    each overriding `base`. Raises ValueError naming the bad key or value."""
    if not isinstance(spec, dict):
        raise ValueError(f"expected a mapping, got {spec!r}")
    unknown = set(spec) - INPUT_FIELDS
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(INPUT_FIELDS))}")
    if base is None and "img_size" not in spec:
        raise ValueError("img_size is required")
    cfg = base or InputConfig(img_size=to_2tuple(spec["img_size"], "img_size"))
    updates: Dict[str, Any] = {}
    if "img_size" in spec:
        updates["img_size"] = to_2tuple(spec["img_size"], "img_size")
    if "mean" in spec:
        updates["mean"] = _triple(spec["mean"], "mean")
    if "std" in spec:
        updates["std"] = _triple(spec["std"], "std")
    if "crop_pct" in spec:
        crop = spec["crop_pct"]
        if not isinstance(crop, (int, float)) or isinstance(crop, bool) or not 0 < crop <= 1:
            raise ValueError(f"crop_pct must be a number in (0, 1], got {crop!r}")
        updates["crop_pct"] = float(crop)
    if "interpolation" in spec:
        if spec["interpolation"] not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {spec['interpolation']!r}")
        updates["interpolation"] = spec["interpolation"]
    return replace(cfg, **updates)


def parse_weight_tag(tag: Any, spec: Any, variant_input: InputConfig, num_classes: int) -> WeightTag:
    """A `WeightTag` from its registry.yaml mapping. Raises FieldError naming the bad field."""
    if not isinstance(tag, str) or not re.match(r"^[a-z0-9][a-z0-9_]*$", tag):
        raise FieldError(None, "a weight tag must be lower-case letters, digits and '_'")
    if not isinstance(spec, dict):
        raise FieldError(None, "expected a mapping of weight fields")
    for key in spec:
        if key not in WEIGHT_FIELDS:
            raise FieldError(str(key), f"unknown field{suggest(str(key), WEIGHT_FIELDS)}; "
                                       f"allowed: {', '.join(sorted(WEIGHT_FIELDS))}")
    hub = spec.get("hf_hub_id")
    if not isinstance(hub, str) or not re.match(r"^[\w.\-]+/[\w.\-]+$", hub):
        raise FieldError("hf_hub_id", f"required: a Hub repo id 'org/name', got {hub!r}")
    fmt = spec.get("format", "timm")
    if fmt not in WEIGHT_FORMATS:
        raise FieldError("format", f"must be one of {WEIGHT_FORMATS}, got {fmt!r}")
    sha = spec.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise FieldError("sha256", "expected 64 lower-case hex digits")
    n = spec.get("num_classes", num_classes)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise FieldError("num_classes", f"expected a non-negative integer, got {n!r}")
    metrics = {}
    for key in ("top1", "top5", "linear", "knn"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value <= 100):
            raise FieldError(key, f"expected a percentage in [0, 100], got {value!r}")
        metrics[key] = None if value is None else float(value)
    try:
        input_cfg = parse_input(spec["input"], base=variant_input) if "input" in spec else None
    except ValueError as e:
        raise FieldError("input", str(e)) from None
    filename = spec.get("filename", "model.safetensors")
    if not isinstance(filename, str) or not filename.endswith(".safetensors"):
        raise FieldError("filename", f"expected a .safetensors file inside the Hub repo, got {filename!r}: zoo "
                                     f"never loads pickled weights from the Hub (convert them with `zoo convert`)")
    return WeightTag(tag=tag, hf_hub_id=hub, filename=filename, format=fmt, license=spec.get("license"),
                     num_classes=n, sha256=sha, input=input_cfg, description=spec.get("description") or "",
                     **metrics)
