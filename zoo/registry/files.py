"""Reading `registry.yaml` (and plugins' variant files): YAML in, validated `Variant`s out.

Every error is a RegistryError naming the file, the variant and the field, with the allowed values.
The format is in docs/registry.md.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import yaml

from ..specs import (
    BUILTIN_SOURCE, Family, FieldError, RegistryError, Variant, WeightTag, parse_input, parse_weight_tag, suggest)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
VARIANT_FIELDS = {"family", "description", "aliases", "args", "input", "params", "weights"}
# (family name, builder args) -> (bad arg, message) or None: the registry's one argument check
ArgCheck = Callable[[str, Iterable[str]], Optional[Tuple[str, str]]]


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


def parse_file(path: Union[str, Path, Any], families: Mapping[str, Family], unknown_arg: ArgCheck,
               source: str = BUILTIN_SOURCE) -> List[Variant]:
    """Read and validate one variants YAML file against the registered `families` (`unknown_arg`
    checks builder arguments). Raises RegistryError naming file, variant and field."""
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
    return [_parse_variant(label, name, spec, default_input, source, families, unknown_arg)
            for name, spec in data["variants"].items()]


def _parse_variant(label: str, name: Any, spec: Any, default_input: Mapping[str, Any], source: str,
                   families: Mapping[str, Family], unknown_arg: ArgCheck) -> Variant:
    def fail(field_name: str, problem: str) -> RegistryError:
        return RegistryError(f"{label}: variant {name!r}, field '{field_name}': {problem}")

    if not isinstance(name, str) or not NAME_RE.match(name):
        raise fail("name", "a variant name must be lower-case letters, digits, '_' or '-'")
    if not isinstance(spec, dict):
        raise fail("(variant)", f"expected a mapping of fields, got {type(spec).__name__}")
    for key in spec:
        if key not in VARIANT_FIELDS:
            raise fail(str(key), f"unknown field{suggest(str(key), VARIANT_FIELDS)}; "
                                 f"allowed: {', '.join(sorted(VARIANT_FIELDS))}")
    family_name = spec.get("family")
    if not isinstance(family_name, str):
        raise fail("family", "required: the name of a registered family")
    if family_name not in families:
        raise fail("family", f"unknown family {family_name!r}{suggest(family_name, families)}; "
                             f"registered: {', '.join(sorted(families)) or 'none'}")
    aliases = spec.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and NAME_RE.match(a) for a in aliases):
        raise fail("aliases", "expected a list of lower-case names")
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise fail("args", "expected a mapping of builder arguments")
    unknown = unknown_arg(family_name, args)
    if unknown is not None:
        raise fail(f"args.{unknown[0]}", unknown[1])
    try:
        input_cfg = parse_input({**default_input, **(spec.get("input") or {})}, base=None)
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
            weights[tag] = parse_weight_tag(tag, wspec, input_cfg, int(args.get("num_classes", 1000)))
        except FieldError as e:
            raise fail(f"weights.{tag}.{e.field}" if e.field else f"weights.{tag}", str(e)) from None
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise fail("description", "expected a string")
    return Variant(name=name, family=family_name, args=dict(args), input=input_cfg, aliases=tuple(aliases),
                   params=params, weights=weights, description=description, source=source, path=label)
