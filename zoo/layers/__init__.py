"""Building blocks shared by every model family. Nothing here knows about models, the Hub or training."""
from .attention import Attention, capture_attention
from .block import Block
from .drop_path import DropPath, drop_path
from .fast_paths import (
    CpuFeatures, PathChoice, SlowPrecisionWarning, cpu_features, fast_path_mode, fast_path_report, set_fast_paths)
from ..helpers import to_2tuple
from .layer_scale import LayerScale
from .linear import Linear
from .masking import random_masking
from .mlp import Mlp, SwiGLU, swiglu_hidden_features
from .norm import LayerNorm, LayerNorm2d
from .patch_embed import PatchEmbed
from .patch_merging import PatchMerging
from .rope import RotaryEmbedding2d, apply_rope, rotate_half
from .pos_embed import resample_pos_embed, sincos_1d, sincos_2d_pos_embed
from .window_attention import (
    WindowAttention, WindowGeometry, resize_relative_position_bias_table, window_geometry, window_partition,
    window_reverse)

__all__ = [
    "Attention", "Block", "CpuFeatures", "DropPath", "LayerNorm", "LayerNorm2d", "LayerScale", "Linear", "Mlp",
    "PatchEmbed", "PatchMerging", "PathChoice", "RotaryEmbedding2d", "SlowPrecisionWarning", "SwiGLU",
    "WindowAttention", "WindowGeometry",
    "capture_attention", "cpu_features", "drop_path", "fast_path_mode", "fast_path_report", "random_masking",
    "set_fast_paths",
    "apply_rope", "resample_pos_embed", "rotate_half", "resize_relative_position_bias_table", "sincos_1d",
    "sincos_2d_pos_embed",
    "swiglu_hidden_features", "to_2tuple", "window_geometry", "window_partition", "window_reverse",
]
