"""zoo: a small, readable model zoo for the Vision Transformer family.

    import zoo
    zoo.list_models("deit*")
    model = zoo.create("vit_b_16", num_classes=10)
"""
__version__ = "0.1.0"

from .registry import (  # noqa: E402
    InputConfig,
    RegistryError,
    UnknownModelError,
    Variant,
    WeightTag,
    ZooPluginWarning,
    create,
    list_models,
    model_info,
    register_family,
)
from . import models  # noqa: E402,F401  (registers the built-in families)

__all__ = [
    "InputConfig", "RegistryError", "UnknownModelError", "Variant", "WeightTag", "ZooPluginWarning",
    "create", "list_models", "model_info", "register_family", "__version__",
]
