"""zoo: a small, readable model zoo for the Vision Transformer family.

    import zoo
    zoo.list_models("deit*")
    model = zoo.create("vit_b_16", num_classes=10)
    model = zoo.create("deit_s", pretrained=True)      # weights from the Hugging Face Hub
    zoo.save_pretrained(model, "out/")                  # model.safetensors + config.json + README.md
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
from .layers.fast_paths import SlowPrecisionWarning, set_fast_paths  # noqa: E402
from .hub import push_to_hub, save_pretrained  # noqa: E402

__all__ = [
    "InputConfig", "RegistryError", "SlowPrecisionWarning", "UnknownModelError", "Variant", "WeightTag",
    "ZooPluginWarning", "create", "list_models", "model_info", "push_to_hub", "register_family", "save_pretrained",
    "set_fast_paths", "__version__",
]
