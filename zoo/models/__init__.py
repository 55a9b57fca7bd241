"""Model families. Importing this package registers the built-in families with the registry."""
from .mae import MaskedAutoencoder
from .swin import SwinTransformer
from .vit import VisionTransformer

__all__ = ["MaskedAutoencoder", "SwinTransformer", "VisionTransformer"]
