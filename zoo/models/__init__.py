"""Model families. Importing this package registers the built-in families with the registry."""
from .vit import VisionTransformer

__all__ = ["VisionTransformer"]
