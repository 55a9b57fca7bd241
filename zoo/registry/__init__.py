"""The model registry: families, variants (registry.yaml), plugins, and lookups by name.

    zoo.list_models("swin*"); zoo.model_info("deit_s"); zoo.register_family("my_family", builder)

`REGISTRY` is the process-wide instance; `core.Registry` the class (tests build their own), `files`
reads the YAML, `plugins` the `zoo.plugins` entry points. Imports only `zoo.specs`.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

from ..specs import Family, InputConfig, RegistryError, UnknownModelError, Variant, WeightTag
from .core import Registry
from .plugins import ENTRY_POINT_GROUP, ZooPluginWarning

REGISTRY = Registry()


def register_family(name: str, builder: Optional[Callable[..., Any]] = None, **hooks: Any):
    """Register a model family in the process-wide registry; see `Registry.register_family`."""
    return REGISTRY.register_family(name, builder, **hooks)


def list_models(pattern: str = "*", pretrained: bool = False, family: Optional[str] = None) -> List[str]:
    """Names of registered variants matching `pattern` (shell-style, e.g. "swin*"), sorted.

    `pretrained=True` keeps only variants with weight tags; `family="vit"` only that family.
    """
    return REGISTRY.list_models(pattern, pretrained=pretrained, family=family)


def model_info(name: str) -> Variant:
    """The registry entry for a variant name or alias (a `Variant`). Raises UnknownModelError."""
    return REGISTRY.model_info(name)


__all__ = [
    "ENTRY_POINT_GROUP", "REGISTRY", "Family", "InputConfig", "Registry", "RegistryError", "UnknownModelError",
    "Variant", "WeightTag", "ZooPluginWarning", "list_models", "model_info", "register_family",
]
