"""The model registry: which variants exist, how each is built, and what weights it has.

Three sources fill it, in this order:

1. Families register in code: `@register_family("vit")` on a class or builder function
   (`zoo/models/*.py`). A family turns keyword arguments into an `nn.Module`.
2. `registry.yaml` (top of the repository, shipped inside the wheel) lists the variants: name,
   aliases, family, arguments, input config, parameter count and weight tags.
3. Third-party packages add families and variants through the entry-point group `zoo.plugins`: the
   entry point names a module; importing it may call `register_family`, and if it defines
   `ZOO_VARIANTS` (a path, or list of paths, to YAML in the same format) those variants are added.
   A plugin that fails to load, or that would replace a name zoo already has, is skipped with one
   `ZooPluginWarning` naming it; everything else keeps working.

Everything is read lazily, on the first call that needs it. See docs/registry.md for the YAML format.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import inspect
import os
import re
import sys
import threading
import warnings
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import yaml

ENTRY_POINT_GROUP = "zoo.plugins"
BUILTIN_SOURCE = "zoo"

# Named normalisation constants usable as `mean:` / `std:` in YAML.
NORM_PRESETS: Dict[str, Tuple[float, float, float]] = {
    "imagenet_mean": (0.485, 0.456, 0.406),
    "imagenet_std": (0.229, 0.224, 0.225),
    "inception_mean": (0.5, 0.5, 0.5),  # ViT augreg / original JAX weights
    "inception_std": (0.5, 0.5, 0.5),
}
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
WEIGHT_FORMATS = ("timm", "zoo", "transformers")
_VARIANT_FIELDS = {"family", "description", "aliases", "args", "input", "params", "weights"}
_INPUT_FIELDS = {"img_size", "mean", "std", "crop_pct", "interpolation"}
_WEIGHT_FIELDS = {"hf_hub_id", "filename", "format", "license", "num_classes", "top1", "top5", "sha256",
                  "input", "description"}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


class RegistryError(ValueError):
    """A registry file or registration is invalid. The message names the file, variant and field."""


class UnknownModelError(LookupError):
    """No variant, alias or tag of that name. The message suggests close matches."""


class ZooPluginWarning(UserWarning):
    """A `zoo.plugins` entry point could not be loaded and was skipped."""


@dataclass(frozen=True)
class InputConfig:
    """How images must be prepared for a model: size, normalisation and eval-time resize/crop."""

    img_size: Tuple[int, int]
    mean: Tuple[float, float, float] = NORM_PRESETS["imagenet_mean"]
    std: Tuple[float, float, float] = NORM_PRESETS["imagenet_std"]
    crop_pct: float = 0.9
    interpolation: str = "bicubic"

    def to_dict(self) -> Dict[str, Any]:
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
    top1: Optional[float] = None
    top5: Optional[float] = None
    sha256: Optional[str] = None
    input: Optional[InputConfig] = None
    description: str = ""


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
        return int(self.args.get("num_classes", 1000))


@dataclass(frozen=True)
class Family:
    name: str
    builder: Callable[..., Any]
    source: str  # the module that registered it

    def parameters(self) -> Optional[Dict[str, inspect.Parameter]]:
        """Keyword arguments the builder accepts; None when it takes **kwargs (anything goes)."""
        params = inspect.signature(self.builder).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return {n: p for n, p in params.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKeyError(f"duplicate key {key!r} at line {line} (first at line {seen[key]}): "
                                         f"names, and the fields inside a variant, must be unique")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class Registry:
    """Families, variants and aliases. `zoo.create` and friends use the process-wide `REGISTRY`."""

    def __init__(self, builtin_files: Optional[Iterable[Union[str, Path]]] = None, plugins: bool = True) -> None:
        self.families: Dict[str, Family] = {}
        self.variants: Dict[str, Variant] = {}
        self.aliases: Dict[str, str] = {}  # alias -> variant name
        self._builtin_files = None if builtin_files is None else [Path(p) for p in builtin_files]
        self._use_plugins = plugins
        self._loaded = False
        self._lock = threading.RLock()
        self.plugin_errors: Dict[str, str] = {}  # entry point name -> why it was skipped

    # ----------------------------------------------------------------------------------- families
    def register_family(self, name: str, builder: Optional[Callable[..., Any]] = None):
        """Register `builder` (a class or function returning an nn.Module) as family `name`.

        Usable as a decorator, `@register_family("vit")`, or a call, `register_family("vit", fn)`.
        A name can be registered once; trying to replace it raises RegistryError.
        """
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RegistryError(f"family name must be lower-case letters, digits, '_' or '-', got {name!r}")

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(fn):
                raise RegistryError(f"family {name!r}: the builder must be callable, got {fn!r}")
            existing = self.families.get(name)
            if existing is not None and existing.builder is not fn:
                raise RegistryError(
                    f"family {name!r} is already registered by {_qualname(existing.builder)}; "
                    f"{_qualname(fn)} cannot replace it: pick another family name")
            self.families[name] = Family(name, fn, getattr(fn, "__module__", "?"))
            return fn

        return decorator if builder is None else decorator(builder)

    def unknown_arg(self, family_name: str, args: Iterable[str]) -> Optional[Tuple[str, str]]:
        """(name, message) for the first of `args` that family `family_name`'s builder does not accept,
        or None when all are accepted. The one check behind registry.yaml, `create(**overrides)` and
        the config.json of a saved model."""
        accepted = self.families[family_name].parameters()
        if accepted is None:
            return None
        for arg in args:
            if arg not in accepted:
                return str(arg), (f"unknown argument {str(arg)!r} for family {family_name!r}"
                                  f"{_suggest(str(arg), accepted)}")
        return None

    def complete_args(self, family_name: str, args: Mapping[str, Any]) -> Dict[str, Any]:
        """`args` with the builder's defaults filled in for every argument not given."""
        accepted = self.families[family_name].parameters() or {}
        full = {n: p.default for n, p in accepted.items() if p.default is not inspect.Parameter.empty}
        full.update(args)
        return full

    def match_variant(self, family_name: str, args: Mapping[str, Any],
                      prefer: Optional[Callable[[Variant], bool]] = None,
                      ignore: Iterable[str] = ("num_classes", "img_size")) -> Optional[Variant]:
        """The registered variant whose architecture is `args` (arguments in `ignore` aside), or None.
        Among several (ViT-B and DeiT-B share one), the first for which `prefer` is true wins."""
        self.ensure_loaded()
        if family_name not in self.families:
            return None

        def arch(a: Mapping[str, Any]) -> Dict[str, Any]:  # tuples as lists: YAML and JSON give lists
            return {k: list(x) if isinstance(x, tuple) else x for k, x in self.complete_args(family_name, a).items()
                    if k not in ignore}

        want = arch(args)
        found = [v for v in self.variants.values() if v.family == family_name and arch(v.args) == want]
        preferred = [v for v in found if prefer is not None and prefer(v)]
        return (preferred or found or [None])[0]

    # ---------------------------------------------------------------------------------- YAML files
    def parse_file(self, path: Union[str, Path, Any], source: str = BUILTIN_SOURCE) -> List[Variant]:
        """Read and validate one variants YAML file. Raises RegistryError naming file, variant, field."""
        label = str(path)
        try:
            text = path.read_text(encoding="utf-8") if hasattr(path, "read_text") else Path(path).read_text("utf-8")
        except OSError as e:
            raise RegistryError(f"{label}: cannot read the registry file: {e}") from e
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except _DuplicateKeyError as e:
            raise RegistryError(f"{label}: {e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e)
            raise RegistryError(f"{label}: malformed YAML{where}: {problem}") from e
        if not isinstance(data, dict) or not isinstance(data.get("variants"), dict):
            raise RegistryError(f"{label}: expected a mapping with a 'variants:' mapping at the top level")
        unknown_top = set(data) - {"variants", "defaults", "version"}
        if unknown_top:
            raise RegistryError(f"{label}: unknown top-level field(s) {sorted(unknown_top)}; "
                                f"allowed: version, defaults, variants")
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict) or set(defaults) - {"input"}:
            raise RegistryError(f"{label}: field 'defaults' may only hold an 'input' mapping")
        default_input = defaults.get("input") or {}
        return [self._parse_variant(label, name, spec, default_input, source)
                for name, spec in data["variants"].items()]

    def _parse_variant(self, label: str, name: Any, spec: Any, default_input: Mapping[str, Any],
                       source: str) -> Variant:
        def fail(field_name: str, problem: str) -> RegistryError:
            return RegistryError(f"{label}: variant {name!r}, field '{field_name}': {problem}")

        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise fail("name", "a variant name must be lower-case letters, digits, '_' or '-'")
        if not isinstance(spec, dict):
            raise fail("(variant)", f"expected a mapping of fields, got {type(spec).__name__}")
        for key in spec:
            if key not in _VARIANT_FIELDS:
                raise fail(str(key), f"unknown field{_suggest(str(key), _VARIANT_FIELDS)}; "
                                     f"allowed: {', '.join(sorted(_VARIANT_FIELDS))}")
        family_name = spec.get("family")
        if not isinstance(family_name, str):
            raise fail("family", "required: the name of a registered family")
        family = self.families.get(family_name)
        if family is None:
            raise fail("family", f"unknown family {family_name!r}{_suggest(family_name, self.families)}; "
                                 f"registered: {', '.join(sorted(self.families)) or 'none'}")
        aliases = spec.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) and _NAME_RE.match(a) for a in aliases):
            raise fail("aliases", "expected a list of lower-case names")
        args = spec.get("args") or {}
        if not isinstance(args, dict):
            raise fail("args", "expected a mapping of builder arguments")
        unknown = self.unknown_arg(family_name, args)
        if unknown is not None:
            raise fail(f"args.{unknown[0]}", unknown[1])
        try:
            input_cfg = _parse_input({**default_input, **(spec.get("input") or {})}, base=None)
        except ValueError as e:
            raise fail("input", str(e)) from None
        params = spec.get("params")
        if params is not None and (not isinstance(params, int) or isinstance(params, bool) or params <= 0):
            raise fail("params", f"expected a positive integer parameter count, got {params!r}")
        weights_spec = spec.get("weights") or {}
        if not isinstance(weights_spec, dict):
            raise fail("weights", "expected a mapping of tag -> weight fields")
        weights: Dict[str, WeightTag] = {}
        for tag, wspec in weights_spec.items():
            try:
                weights[tag] = _parse_weight(tag, wspec, input_cfg, int(args.get("num_classes", 1000)))
            except _FieldError as e:
                raise fail(f"weights.{tag}.{e.field}" if e.field else f"weights.{tag}", str(e)) from None
        description = spec.get("description") or ""
        if not isinstance(description, str):
            raise fail("description", "expected a string")
        return Variant(name=name, family=family_name, args=dict(args), input=input_cfg, aliases=tuple(aliases),
                       params=params, weights=weights, description=description, source=source, path=label)

    def add_variants(self, variants: List[Variant]) -> None:
        """Add parsed variants. All are checked for name/alias clashes before any is added."""
        names = dict(self.aliases, **{n: n for n in self.variants})  # every taken name -> its variant
        for v in variants:
            for new in (v.name, *v.aliases):
                owner = names.get(new)
                if owner is not None:
                    existing = self.variants.get(owner)
                    where = (f"{existing.path} ({existing.source})" if existing is not None else v.path)
                    kind = "alias" if new != v.name else "name"
                    raise RegistryError(
                        f"{v.path}: variant {v.name!r}, field '{'aliases' if kind == 'alias' else 'name'}': "
                        f"duplicate {kind} {new!r}, already taken by variant {owner!r} in {where}")
                names[new] = v.name
        for v in variants:
            self.variants[v.name] = v
            for a in v.aliases:
                self.aliases[a] = v.name

    # ------------------------------------------------------------------------------------ loading
    def _builtin_paths(self) -> List[Any]:
        if self._builtin_files is not None:
            return list(self._builtin_files)
        packaged = resources.files("zoo") / "registry.yaml"  # inside an installed wheel
        if packaged.is_file():
            return [packaged]
        checkout = Path(__file__).resolve().parent.parent / "registry.yaml"  # source / editable install
        if checkout.is_file():
            return [checkout]
        raise RegistryError(f"registry.yaml not found inside the zoo package nor at {checkout}; reinstall zoo")

    def ensure_loaded(self) -> None:
        """Read registry.yaml and the plugins, once. Called by every lookup."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            # Built-in families are registered by `import zoo` (zoo/models/__init__.py) before this runs.
            for path in self._builtin_paths():
                self.add_variants(self.parse_file(path, BUILTIN_SOURCE))
            self._loaded = True  # set before plugins so a plugin calling zoo.list_models() does not recurse
            if self._use_plugins:
                for ep in _entry_points():
                    self.load_plugin(ep)

    def load_plugin(self, ep: importlib.metadata.EntryPoint) -> bool:
        """Import one `zoo.plugins` entry point and add its variants; on any failure, undo and warn once.

        Undo means: families registered while it loaded are removed again, except those registered by
        a parent package of the entry point's module (e.g. `pkg` for `pkg.broken`), which imported
        fine and may serve the package's other entry points.
        """
        source = f"plugin {ep.name!r} ({ep.value})"
        families_before = set(self.families)
        try:
            module = ep.load()
            files = getattr(module, "ZOO_VARIANTS", None)
            if files is None:
                files = []
            elif isinstance(files, (str, Path)) or hasattr(files, "read_text"):
                files = [files]
            self.add_variants([v for f in files for v in self.parse_file(f, source)])
            return True
        except Exception as e:  # a broken plugin must not break zoo: undo its families, warn, go on
            for name in set(self.families) - families_before:
                module_name = self.families[name].builder.__module__
                if not (ep.module.startswith(module_name + ".") and module_name in sys.modules):
                    del self.families[name]
            self.plugin_errors[ep.name] = f"{type(e).__name__}: {e}"
            warnings.warn(f"zoo: skipped {source}: {type(e).__name__}: {e}", ZooPluginWarning, stacklevel=2)
            return False

    # ------------------------------------------------------------------------------------ lookups
    def resolve(self, name: str) -> Tuple[Variant, Optional[str]]:
        """`"name_or_alias[.tag]"` -> (variant, tag or None). Unknown names suggest close matches."""
        self.ensure_loaded()
        if not isinstance(name, str) or not name:
            raise UnknownModelError(f"model name must be a non-empty string, got {name!r}")
        base, _, tag = name.partition(".")
        key = base if base in self.variants or base in self.aliases else base.lower()
        key = self.aliases.get(key, key)
        variant = self.variants.get(key)
        if variant is None:
            close = _close_names(base.lower(), list(self.variants) + list(self.aliases))
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownModelError(f"unknown model {base!r}{hint} (zoo.list_models() lists them all)")
        if tag:
            if tag not in variant.weights:
                tags = ", ".join(variant.weights) or "none"
                raise UnknownModelError(
                    f"model {variant.name!r} has no weight tag {tag!r}{_suggest(tag, variant.weights)}; tags: {tags}")
            return variant, tag
        return variant, None

    def _is_registered(self, name: str) -> bool:
        try:
            self.resolve(name)
            return True
        except UnknownModelError:
            return False

    def list_models(self, pattern: str = "*", pretrained: bool = False, family: Optional[str] = None) -> List[str]:
        """Sorted variant names matching the shell-style `pattern` (also tried against aliases)."""
        self.ensure_loaded()
        out = []
        for v in self.variants.values():
            if family is not None and v.family != family:
                continue
            if pretrained and not v.weights:
                continue
            if fnmatch.fnmatchcase(v.name, pattern) or any(fnmatch.fnmatchcase(a, pattern) for a in v.aliases):
                out.append(v.name)
        return sorted(out)

    def model_info(self, name: str) -> Variant:
        return self.resolve(name)[0]

    def create(
        self,
        name: Union[str, "os.PathLike[str]"],
        pretrained: Union[bool, str] = False,
        num_classes: Optional[int] = None,
        img_size: Optional[Union[int, Tuple[int, int]]] = None,
        checkpoint_path: Optional[Union[str, "os.PathLike[str]"]] = None,
        revision: Optional[str] = None,
        cache_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        **overrides: Any,
    ):
        """Build a registered model, or load a saved one. See `zoo.create` for the arguments."""
        if is_repo_reference(name) or (isinstance(name, str) and os.path.isdir(name) and not self._is_registered(name)):
            if checkpoint_path is not None:
                raise ValueError(f"create({str(name)!r}): a saved model brings its own weights; checkpoint_path= "
                                 f"only applies to a registry name")
            from .hub import create_from_repo  # local import: the Hub code loads on first use

            return create_from_repo(name, num_classes=num_classes, img_size=img_size, revision=revision,
                                    cache_dir=cache_dir, **overrides)
        variant, tag = self.resolve(name)
        if isinstance(pretrained, str):
            if tag is not None and pretrained != tag:
                raise ValueError(f"conflicting weight tags: {name!r} names {tag!r} but pretrained={pretrained!r}")
            tag = self.resolve(f"{variant.name}.{pretrained}")[1]
        elif pretrained and tag is None:
            tag = variant.default_tag
            if tag is None:
                raise ValueError(f"model {variant.name!r} has no pretrained weights; use pretrained=False, or "
                                 f"pick one of: {', '.join(self.list_models(pretrained=True))}")
        if pretrained and checkpoint_path is not None:
            raise ValueError(f"create({name!r}): give pretrained=True (weights from the Hub) or checkpoint_path= "
                             f"(a local file), not both")
        if not pretrained and (revision is not None or cache_dir is not None):
            raise ValueError(f"create({name!r}): revision= and cache_dir= only apply with pretrained=True")
        weight = variant.weights[tag] if tag else None
        args = dict(variant.args)
        if weight is not None:
            args["num_classes"] = weight.num_classes  # the architecture the tag's weights were made for
        input_cfg = weight.input if weight is not None and weight.input is not None else variant.input
        model = self.build(variant.family, args, input_cfg, num_classes=num_classes, img_size=img_size,
                           overrides=overrides, name=variant.name, tag=tag)
        if pretrained or checkpoint_path is not None:
            from .hub import load_checkpoint, load_pretrained  # local import: the Hub code loads on first use

            if pretrained:
                load_pretrained(model, weight, self.complete_args(variant.family, args), revision=revision,
                                cache_dir=cache_dir)
            else:
                load_checkpoint(model, checkpoint_path)  # made for an architecture we only know from its shapes
        return model

    def build(
        self,
        family_name: str,
        args: Mapping[str, Any],
        input_cfg: InputConfig,
        num_classes: Optional[int] = None,
        img_size: Optional[Union[int, Tuple[int, int]]] = None,
        overrides: Optional[Mapping[str, Any]] = None,
        name: Optional[str] = None,
        tag: Optional[str] = None,
    ):
        """Family `family_name` built from `args`, updated by the caller's `overrides`, `num_classes` and
        `img_size`; the module gets `zoo_config`. `args` must already be valid for the family."""
        overrides = dict(overrides or {})
        unknown = self.unknown_arg(family_name, overrides)
        if unknown is not None:
            raise TypeError(f"create({name or family_name!r}): {unknown[1]}")
        args = {**args, **overrides}
        if num_classes is not None:
            args["num_classes"] = num_classes
        if img_size is not None:
            args["img_size"] = img_size
            input_cfg = replace(input_cfg, img_size=_pair(img_size))
        model = self.families[family_name].builder(**args)
        model.zoo_config = {
            "name": name, "family": family_name, "tag": tag, "args": args, "input": input_cfg.to_dict(),
        }
        return model


def is_repo_reference(name: Any) -> bool:
    """True for what `create` loads as a saved model rather than a registry name: `"hf-hub:org/repo"`,
    a path object, or a string that looks like a path (has a '/' or starts with '.' or '~'). (`create` also
    takes a bare folder name, such as "runs", when no registered model has that name.)"""
    if isinstance(name, os.PathLike):
        return True
    return isinstance(name, str) and (name.startswith(("hf-hub:", ".", "~")) or "/" in name or os.sep in name)


class _FieldError(ValueError):
    def __init__(self, field_name: Optional[str], message: str) -> None:
        super().__init__(message)
        self.field = field_name


def _pair(value: Any) -> Tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"img_size must be an int or [height, width], got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"img_size must be an int or [height, width], got {value!r}")


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


def _parse_input(spec: Any, base: Optional[InputConfig]) -> InputConfig:
    if not isinstance(spec, dict):
        raise ValueError(f"expected a mapping, got {spec!r}")
    unknown = set(spec) - _INPUT_FIELDS
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(_INPUT_FIELDS))}")
    if base is None and "img_size" not in spec:
        raise ValueError("img_size is required")
    cfg = base or InputConfig(img_size=_pair(spec["img_size"]))
    updates: Dict[str, Any] = {}
    if "img_size" in spec:
        updates["img_size"] = _pair(spec["img_size"])
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


def _parse_weight(tag: Any, spec: Any, variant_input: InputConfig, num_classes: int) -> WeightTag:
    if not isinstance(tag, str) or not re.match(r"^[a-z0-9][a-z0-9_]*$", tag):
        raise _FieldError(None, "a weight tag must be lower-case letters, digits and '_'")
    if not isinstance(spec, dict):
        raise _FieldError(None, "expected a mapping of weight fields")
    for key in spec:
        if key not in _WEIGHT_FIELDS:
            raise _FieldError(str(key), f"unknown field{_suggest(str(key), _WEIGHT_FIELDS)}; "
                                        f"allowed: {', '.join(sorted(_WEIGHT_FIELDS))}")
    hub = spec.get("hf_hub_id")
    if not isinstance(hub, str) or not re.match(r"^[\w.\-]+/[\w.\-]+$", hub):
        raise _FieldError("hf_hub_id", f"required: a Hub repo id 'org/name', got {hub!r}")
    fmt = spec.get("format", "timm")
    if fmt not in WEIGHT_FORMATS:
        raise _FieldError("format", f"must be one of {WEIGHT_FORMATS}, got {fmt!r}")
    sha = spec.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise _FieldError("sha256", "expected 64 lower-case hex digits")
    n = spec.get("num_classes", num_classes)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise _FieldError("num_classes", f"expected a non-negative integer, got {n!r}")
    metrics = {}
    for key in ("top1", "top5"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value <= 100):
            raise _FieldError(key, f"expected a percentage in [0, 100], got {value!r}")
        metrics[key] = None if value is None else float(value)
    try:
        input_cfg = _parse_input(spec["input"], base=variant_input) if "input" in spec else None
    except ValueError as e:
        raise _FieldError("input", str(e)) from None
    filename = spec.get("filename", "model.safetensors")
    if not isinstance(filename, str) or not filename.endswith(".safetensors"):
        raise _FieldError("filename", f"expected a .safetensors file inside the Hub repo, got {filename!r}: zoo "
                                      f"never loads pickled weights from the Hub (convert them with `zoo convert`)")
    return WeightTag(tag=tag, hf_hub_id=hub, filename=filename, format=fmt, license=spec.get("license"),
                     num_classes=n, sha256=sha, input=input_cfg, description=spec.get("description") or "",
                     **metrics)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _close_names(word: str, names: List[str], n: int = 5) -> List[str]:
    """Names most like `word`, also comparing `word` with each name's same-length prefix, so a
    short misspelling such as 'vit_bse' still finds 'vit_base_patch16_224'."""
    def score(name: str) -> float:
        whole = difflib.SequenceMatcher(None, word, name).ratio()
        prefix = difflib.SequenceMatcher(None, word, name[: len(word) + 1]).ratio()
        return max(whole, prefix)

    ranked = sorted(((score(c), c) for c in names), key=lambda sc: (-sc[0], sc[1]))
    return [c for s, c in ranked[:n] if s >= 0.6]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _entry_points() -> List[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


REGISTRY = Registry()


def register_family(name: str, builder: Optional[Callable[..., Any]] = None):
    """Register a model family; see `Registry.register_family`."""
    return REGISTRY.register_family(name, builder)


def list_models(pattern: str = "*", pretrained: bool = False, family: Optional[str] = None) -> List[str]:
    """Names of registered variants matching `pattern` (shell-style, e.g. "swin*"), sorted.

    `pretrained=True` keeps only variants with weight tags; `family="vit"` only that family.
    """
    return REGISTRY.list_models(pattern, pretrained=pretrained, family=family)


def model_info(name: str) -> Variant:
    """The registry entry for a variant name or alias (a `Variant`)."""
    return REGISTRY.model_info(name)


def create(
    name: Union[str, "os.PathLike[str]"],
    pretrained: Union[bool, str] = False,
    num_classes: Optional[int] = None,
    img_size: Optional[Union[int, Tuple[int, int]]] = None,
    checkpoint_path: Optional[Union[str, "os.PathLike[str]"]] = None,
    revision: Optional[str] = None,
    cache_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    **overrides: Any,
):
    """Build a model by variant name or alias, optionally with a weight tag: `"vit_b_16"`, `"deit_s"`,
    `"vit_base_patch16_224.mae"`; or load a saved one: `"hf-hub:org/repo[@revision]"` or a folder
    written by `zoo.save_pretrained` (also a timm or transformers repo of a supported family).

    A tag (in the name or as `pretrained="tag"`) sets the architecture that tag's weights need
    (e.g. its num_classes) and its input config. `num_classes`, `img_size` and any other builder
    argument (`drop_path_rate=0.1`, `dynamic_img_size=True`, ...) override the registry's values.

    `pretrained=True` (the default tag) or `pretrained="tag"` downloads the tag's safetensors file from
    the Hugging Face Hub (`revision`, `cache_dir`; HF_HOME and HF_HUB_OFFLINE are honoured) and loads it
    strictly. Weights made for another num_classes, img_size or in_chans are adapted and each change
    is logged (logger "zoo.hub"); `checkpoint_path=` loads a local .safetensors file instead.
    See docs/hub.md. The returned module carries `model.zoo_config` (name, family, tag, arguments,
    input config and, when weights were loaded, where from and what was adapted).
    """
    return REGISTRY.create(name, pretrained=pretrained, num_classes=num_classes, img_size=img_size,
                           checkpoint_path=checkpoint_path, revision=revision, cache_dir=cache_dir, **overrides)
