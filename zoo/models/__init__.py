"""Model families. Importing this package registers the built-in families with the registry."""
from .swin import SwinTransformer
from .vit import VisionTransformer

__all__ = ["SwinTransformer", "VisionTransformer"]
