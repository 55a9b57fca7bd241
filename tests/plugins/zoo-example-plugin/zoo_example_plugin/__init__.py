"""Example zoo plugin: a `patch_mlp` family (a tiny all-MLP image model) and a few variants."""
from pathlib import Path

import torch
from torch import nn

import zoo
from zoo.layers import Mlp, PatchEmbed

ZOO_VARIANTS = Path(__file__).with_name("variants.yaml")


@zoo.register_family("patch_mlp")
class PatchMLP(nn.Module):
    """Patch embedding, a token-wise MLP, mean pooling and a linear head."""

    def __init__(self, img_size: int = 32, patch_size: int = 8, in_chans: int = 3, embed_dim: int = 64,
                 hidden_dim: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.mlp = Mlp(embed_dim, hidden_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x + self.mlp(x)
        return self.head(x.mean(dim=1))
