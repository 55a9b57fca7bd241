"""Building blocks shared by every model family. Nothing here knows about models, the Hub or training."""
from .attention import Attention, capture_attention
from .block import Block
from .drop_path import DropPath, drop_path
from .helpers import to_2tuple
from .layer_scale import LayerScale
from .masking import random_masking
from .mlp import Mlp, SwiGLU, swiglu_hidden_features
from .norm import LayerNorm
from .patch_embed import PatchEmbed
from .pos_embed import resample_pos_embed, sincos_1d, sincos_2d_pos_embed

__all__ = [
    "Attention", "Block", "DropPath", "LayerNorm", "LayerScale", "Mlp", "PatchEmbed", "SwiGLU",
    "capture_attention", "drop_path", "random_masking", "resample_pos_embed", "sincos_1d", "sincos_2d_pos_embed",
    "swiglu_hidden_features", "to_2tuple",
]
