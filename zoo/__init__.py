"""zoo: a small, readable model zoo for the Vision Transformer family.

    import zoo
    zoo.list_models("deit*")
    model = zoo.create("vit_b_16", num_classes=10)
    model = zoo.create("deit_s", pretrained=True)      # weights from the Hugging Face Hub
    zoo.save_pretrained(model, "out/")                  # model.safetensors + config.json + README.md

The map of the package is in docs/index.md.
"""
from .factory import create, push_to_hub, save_pretrained
from .layers.fast_paths import SlowPrecisionWarning, set_fast_paths
from .registry import ZooPluginWarning, list_models, model_info, register_family
from .specs import InputConfig, RegistryError, UnknownModelError, Variant, WeightTag
from .version import __version__

__all__ = [
    "InputConfig", "RegistryError", "SlowPrecisionWarning", "UnknownModelError", "Variant", "WeightTag",
    "ZooPluginWarning", "create", "list_models", "model_info", "push_to_hub", "register_family", "save_pretrained",
    "set_fast_paths", "transforms_for", "__version__",
]


def __getattr__(name: str):
    """`zoo.transforms_for` (zoo.predict), imported on first use: it brings torchvision's transforms."""
    if name == "transforms_for":
        from .predict import transforms_for

        return transforms_for
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
