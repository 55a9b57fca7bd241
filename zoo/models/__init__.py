"""Model families built from `zoo/layers/`, and for each what the weights code needs to load its
checkpoints from every origin (`*_checkpoints.py`). Nothing here imports the registry or the weights
code: `zoo.factory` registers `FAMILIES` when zoo is imported.
"""
from ..specs import Family
from . import dinov3_checkpoints, mae_checkpoints, swin_checkpoints, transformers_export, vit_checkpoints
from .mae import MaskedAutoencoder
from .swin import SwinTransformer
from .vit import VisionTransformer

FAMILIES = (
    Family("vit", VisionTransformer, __name__ + ".vit", checkpoint_filter=vit_checkpoints.checkpoint_filter_fn,
           classifier=vit_checkpoints.CLASSIFIER, first_conv=vit_checkpoints.FIRST_CONV,
           transformers={**vit_checkpoints.TRANSFORMERS, **dinov3_checkpoints.TRANSFORMERS},
           research={**vit_checkpoints.RESEARCH, **dinov3_checkpoints.RESEARCH},
           to_transformers=transformers_export.vit_to_transformers),
    Family("swin", SwinTransformer, __name__ + ".swin", checkpoint_filter=swin_checkpoints.checkpoint_filter_fn,
           classifier=swin_checkpoints.CLASSIFIER, first_conv=swin_checkpoints.FIRST_CONV,
           transformers=swin_checkpoints.TRANSFORMERS, research=swin_checkpoints.RESEARCH,
           to_transformers=transformers_export.swin_to_transformers),
    Family("mae", MaskedAutoencoder, __name__ + ".mae", first_conv="encoder.patch_embed.proj",
           transformers=mae_checkpoints.TRANSFORMERS, research=mae_checkpoints.RESEARCH),
)

__all__ = ["FAMILIES", "MaskedAutoencoder", "SwinTransformer", "VisionTransformer"]
