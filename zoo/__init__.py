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


# name -> (module, attribute): imported on first use (they bring torchvision, the data and training code)
_LAZY = {
    "transforms_for": ("zoo.predict", "transforms_for"),
    "pretrain_mae": ("zoo.training.mae", "pretrain_mae"),
    "finetune": ("zoo.training.finetune", "finetune"),
    "linear_probe": ("zoo.eval.linear_probe", "linear_probe"),
    "knn": ("zoo.eval.knn", "knn"),
    "attention_maps": ("zoo.eval.attention", "attention_maps"),
}


def __getattr__(name: str):
    """The job functions (`zoo.finetune(FinetuneConfig(...))`, ...) and `zoo.transforms_for`, imported
    on first use; each is documented where it lives (docs/index.md lists the modules)."""
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
