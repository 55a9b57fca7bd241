"""The model registry: which families and variants exist, looked up by name, alias and weight tag.

Three sources fill it, in this order:

1. Families are registered in code: `zoo.models.FAMILIES` (by `zoo.factory`, when zoo is imported),
   and anything calling `zoo.register_family`. A family turns keyword arguments into an `nn.Module`.
2. `registry.yaml` (top of the repository, shipped inside the wheel) lists the variants: name,
   aliases, family, arguments, input config, parameter count and weight tags (`files.py`).
3. Third-party packages add families and variants through the `zoo.plugins` entry points (`plugins.py`).

Everything is read lazily, on the first call that needs it. The registry builds nothing and loads no
weights: `zoo.factory.create` does, using it. See docs/registry.md for the YAML format.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ..specs import BUILTIN_SOURCE, Family, RegistryError, UnknownModelError, Variant, suggest
from . import files, plugins


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
    def register_family(self, name: str, builder: Optional[Callable[..., Any]] = None, **hooks: Any):
        """Register `builder` (a class or function returning an nn.Module) as family `name`.

        Usable as a decorator, `@register_family("vit")`, or a call, `register_family("vit", fn)`.
        `hooks` are `Family`'s optional fields (checkpoint_filter, classifier, first_conv, transformers,
        research). A class builder that declares `classifier` / `first_conv` class attributes or an
        `adapt_state_dict(state_dict, source_args) -> notes` method (how zoo read them before 0.2)
        gets them as the default hooks. A name can be registered once; trying to replace it raises
        RegistryError.
        """
        if not isinstance(name, str) or not files.NAME_RE.match(name):
            raise RegistryError(f"family name must be lower-case letters, digits, '_' or '-', got {name!r}")

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(fn):
                raise RegistryError(f"family {name!r}: the builder must be callable, got {fn!r}")
            try:
                family = Family(name, fn, getattr(fn, "__module__", "?"), **{**_declared_hooks(fn), **hooks})
            except TypeError as e:
                raise RegistryError(f"family {name!r}: {e}") from None
            self.add_family(family)
            return fn

        return decorator if builder is None else decorator(builder)

    def add_family(self, family: Family) -> None:
        """Add a `Family` record (what `register_family` makes). Re-adding the same builder is harmless;
        another builder under a taken name raises RegistryError."""
        existing = self.families.get(family.name)
        if existing is not None and existing.builder is not family.builder:
            raise RegistryError(
                f"family {family.name!r} is already registered by {_qualname(existing.builder)}; "
                f"{_qualname(family.builder)} cannot replace it: pick another family name")
        if existing is None:
            self.families[family.name] = family

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
                                  f"{suggest(str(arg), accepted)}")
        return None

    def complete_args(self, family_name: str, args: Mapping[str, Any]) -> Dict[str, Any]:
        """`args` with the builder's defaults filled in for every argument not given."""
        accepted = self.families[family_name].parameters() or {}
        full = {n: p.default for n, p in accepted.items() if p.default is not inspect.Parameter.empty}
        full.update(args)
        return full

    def readers(self, origin: str) -> List[str]:
        """What the registered families can read from `origin`: transformers `model_type`s
        (`origin="transformers"`) or research release names (`origin="research"`), sorted."""
        self.ensure_loaded()
        return sorted({k for f in self.families.values() for k in getattr(f, origin)})

    def converter(self, origin: str, key: str, family: Optional[str] = None) -> Tuple[Family, Callable[..., Any]]:
        """The family and converter for `key`, one of `readers(origin)`: the first registered family
        that reads it, or `family`'s (a transformers ViTMAEForPreTraining is a "vit" encoder by default
        and the whole "mae" model on request). Raises UnknownModelError listing what is supported."""
        self.ensure_loaded()
        readers = [f for f in self.families.values() if key in getattr(f, origin)]
        chosen = [f for f in readers if family in (None, f.name)]
        if chosen:
            return chosen[0], getattr(chosen[0], origin)[key]
        what = "transformers model_type" if origin == "transformers" else "checkpoint source"
        raise UnknownModelError(f"family {family!r} does not read {what} {key!r}; it is read by family "
                                f"{' or '.join(repr(f.name) for f in readers)}" if readers else
                                f"{what} {key!r} is not supported; zoo reads {', '.join(self.readers(origin))}")

    # ------------------------------------------------------------------------------------ variants
    def parse_file(self, path: Union[str, Path, Any], source: str = BUILTIN_SOURCE) -> List[Variant]:
        """Read and validate one variants YAML file. Raises RegistryError naming file, variant, field."""
        return files.parse_file(path, self.families, self.unknown_arg, source)

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

    def ensure_loaded(self) -> None:
        """Read registry.yaml and the plugins, once. Called by every lookup."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            for path in self._builtin_files if self._builtin_files is not None else _builtin_paths():
                self.add_variants(self.parse_file(path, BUILTIN_SOURCE))
            self._loaded = True  # set before plugins so a plugin calling zoo.list_models() does not recurse
            if self._use_plugins:
                for ep in plugins.entry_points():
                    self.load_plugin(ep)

    def load_plugin(self, ep: Any) -> bool:
        """Import one `zoo.plugins` entry point; see `zoo.registry.plugins.load_plugin`."""
        return plugins.load_plugin(self, ep, self.parse_file)

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
                    f"model {variant.name!r} has no weight tag {tag!r}{suggest(tag, variant.weights)}; tags: {tags}")
            return variant, tag
        return variant, None

    def is_registered(self, name: str) -> bool:
        """Whether `resolve(name)` finds a variant (and tag)."""
        try:
            self.resolve(name)
            return True
        except UnknownModelError:
            return False

    def list_models(self, pattern: str = "*", pretrained: bool = False, family: Optional[str] = None) -> List[str]:
        """Sorted variant names matching the shell-style `pattern` (also tried against aliases)."""
        self.ensure_loaded()
        return sorted(v.name for v in self.variants.values()
                      if (family is None or v.family == family) and (v.weights or not pretrained)
                      and (fnmatch.fnmatchcase(v.name, pattern) or any(fnmatch.fnmatchcase(a, pattern)
                                                                       for a in v.aliases)))

    def model_info(self, name: str) -> Variant:
        """The `Variant` of a name or alias (a tag is ignored). Raises UnknownModelError."""
        return self.resolve(name)[0]

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

    def variant_with_tag(self, family_name: str, tag: str, match: Mapping[str, Any]) -> Optional[Variant]:
        """The first variant of `family_name` with weight tag `tag` whose (completed) arguments include
        every item of `match`, or None. How a research release finds the architecture it is."""
        self.ensure_loaded()
        for v in self.variants.values():
            full = self.complete_args(v.family, v.args) if v.family == family_name else None
            if full is not None and tag in v.weights and all(full.get(k) == x for k, x in match.items()):
                return v
        return None


def _declared_hooks(builder: Any) -> Dict[str, Any]:
    """Weight-loading hooks a builder class declares itself: `classifier` / `first_conv` class
    attributes and an in-place `adapt_state_dict(state_dict, source_args) -> notes` method."""
    hooks: Dict[str, Any] = {}
    if isinstance(builder, type):
        if isinstance(getattr(builder, "classifier", None), (tuple, list, str)):
            value = builder.classifier
            hooks["classifier"] = (value,) if isinstance(value, str) else tuple(value)
        if isinstance(getattr(builder, "first_conv", None), str):
            hooks["first_conv"] = builder.first_conv
        if callable(getattr(builder, "adapt_state_dict", None)):
            def checkpoint_filter(state_dict, model, source_args):
                state_dict = dict(state_dict)
                return state_dict, list(model.adapt_state_dict(state_dict, source_args) or [])
            hooks["checkpoint_filter"] = checkpoint_filter
    return hooks


def _builtin_paths() -> List[Any]:
    packaged = resources.files("zoo") / "registry.yaml"  # inside an installed wheel
    if packaged.is_file():
        return [packaged]
    checkout = Path(__file__).resolve().parents[2] / "registry.yaml"  # source / editable install
    if checkout.is_file():
        return [checkout]
    raise RegistryError(f"registry.yaml not found inside the zoo package nor at {checkout}; reinstall zoo")


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
