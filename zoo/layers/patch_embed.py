"""Image -> patch tokens with one strided Conv2d (key `patch_embed.proj`)."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..helpers import IntOrPair, to_2tuple


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and project each to `embed_dim`.

    Output is `(B, N, D)` tokens in row-major patch order (`output_fmt="NLC"`) or a `(B, h, w, D)` map
    (`output_fmt="NHWC"`, used by Swin). With `strict_img_size` the input must be exactly `img_size`;
    otherwise any size divisible by the patch works, and with `dynamic_img_pad` any size at all
    (the image is zero-padded right/bottom up to a multiple of the patch), or with `dynamic_img_crop`
    (the right/bottom pixels that do not fill a whole patch are ignored, as transformers' strided
    convolution does).
    """

    def __init__(
        self,
        img_size: IntOrPair = 224,
        patch_size: IntOrPair = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        norm_layer: Optional[Callable[[int], nn.Module]] = None,
        output_fmt: str = "NLC",
        strict_img_size: bool = True,
        dynamic_img_pad: bool = False,
        dynamic_img_crop: bool = False,
    ) -> None:
        super().__init__()
        if output_fmt not in ("NLC", "NHWC"):
            raise ValueError(f"output_fmt must be 'NLC' or 'NHWC', got {output_fmt!r}")
        if dynamic_img_pad and dynamic_img_crop:
            raise ValueError("dynamic_img_pad and dynamic_img_crop are alternatives (pad the image to whole patches, "
                             "or ignore the pixels of a partial patch); pass one")
        self.img_size = to_2tuple(img_size, "img_size")
        self.patch_size = to_2tuple(patch_size, "patch_size")
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.output_fmt = output_fmt
        self.strict_img_size = strict_img_size
        self.dynamic_img_pad = dynamic_img_pad
        self.dynamic_img_crop = dynamic_img_crop
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        """Patch grid (h, w) that an image of `img_size` (H, W) produces."""
        (H, W), (ph, pw) = img_size, self.patch_size
        if self.dynamic_img_pad:
            return math.ceil(H / ph), math.ceil(W / pw)
        return H // ph, W // pw

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError, with expected vs given, for an input this layer cannot embed."""
        if x.ndim != 4:
            raise ValueError(
                f"expected a batch of images shaped (B, C, H, W), got a {x.ndim}-d tensor of shape "
                f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0) for a single image")
        _, C, H, W = x.shape
        if C != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels, got {C} (input shape {tuple(x.shape)}); "
                f"build the model with in_chans={C} or convert the images")
        if self.strict_img_size and (H, W) != self.img_size:
            raise ValueError(
                f"expected input size {self.img_size[0]}x{self.img_size[1]} (the model's img_size), got {H}x{W}; "
                f"resize the images, build with img_size=({H}, {W}), or pass dynamic_img_size=True")
        if not self.strict_img_size and not self.dynamic_img_pad and not self.dynamic_img_crop:
            ph, pw = self.patch_size
            if H % ph or W % pw:
                raise ValueError(
                    f"input size {H}x{W} is not divisible by the patch size {ph}x{pw}; "
                    f"crop or resize to a multiple of the patch, or pass dynamic_img_pad=True (or dynamic_img_crop=True)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.dynamic_img_pad:
            ph, pw = self.patch_size
            x = F.pad(x, (0, (-x.shape[-1]) % pw, 0, (-x.shape[-2]) % ph))  # pad right, bottom
        x = self.proj(x)  # (B, D, h, w)
        if self.output_fmt == "NLC":
            x = x.flatten(2).transpose(1, 2)  # (B, h*w, D)
        else:
            x = x.permute(0, 2, 3, 1)  # (B, h, w, D)
        return self.norm(x)
