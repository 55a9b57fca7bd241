"""Masked autoencoder (MAE, He et al. 2021) whose encoder is zoo's VisionTransformer.

    imgs (B, C, H, W)
      -> encoder.patch_embed + fixed 2D sin-cos positions          (B, N, D)
      -> random_masking: keep int(N * (1 - mask_ratio)) per sample  (B, K, D)
      -> [cls] + visible tokens -> encoder blocks -> encoder.norm   (B, 1 + K, D)
      -> decoder_embed, mask tokens in the removed slots, unshuffle (B, 1 + N, Dd)
      -> + decoder positions -> decoder blocks -> norm -> pred      (B, N, p * p * C)
    loss: mean squared error per patch against the (per-patch normalised) pixels, averaged over
          the REMOVED patches only.

The encoder is an ordinary `VisionTransformer` (`model.encoder`): its state dict has timm's ViT
keys, so it exports as a plain ViT checkpoint (`zoo.create("vit_base_patch16_224", ...)` loads it
apart from the head, like timm's `.mae` weights). The decoder is built from the same `Block`.
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Set, Tuple, Union

import torch
from torch import nn

from ..layers import Block, LayerNorm, Linear, random_masking, sincos_2d_pos_embed
from ..specs import check_blocks
from .vit import VisionTransformer


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, h*w, p*p*C), pixels of each patch in (row p, column q, channel c) order."""
    B, C, H, W = imgs.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p}")
    h, w = H // p, W // p
    x = imgs.reshape(B, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (B, h, w, p, p, C)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(x: torch.Tensor, patch_size: int, grid_size: Tuple[int, int], in_chans: int = 3) -> torch.Tensor:
    """(B, h*w, p*p*C) -> (B, C, h*p, w*p); the inverse of `patchify`."""
    B = x.shape[0]
    (h, w), p = grid_size, patch_size
    if x.shape[1] != h * w or x.shape[2] != p * p * in_chans:
        raise ValueError(f"expected patches of shape (B, {h * w}, {p * p * in_chans}), got {tuple(x.shape)}")
    x = x.reshape(B, h, w, p, p, in_chans)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, h, p, w, p)
    return x.reshape(B, in_chans, h * p, w * p)


class MaskedAutoencoder(nn.Module):
    """MAE: a ViT encoder on the visible patches and a light transformer decoder that predicts pixels.

    Args:
        img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: the encoder ViT.
        decoder_embed_dim, decoder_depth, decoder_num_heads: the decoder (512, 8, 16 in the paper).
        norm_pix_loss: predict per-patch normalised pixels (the paper's best setting).
        mask_ratio: default fraction of patches removed in `forward` (0.75).
        drop_path_rate: stochastic depth in the encoder.
        norm_eps: epsilon of every LayerNorm: 1e-6 as in the MAE repository (transformers' ViTMAE: 1e-12).
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = True,
        mask_ratio: float = 0.75,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        check_blocks("decoder_depth", decoder_depth)
        # The encoder's own arguments, kept so it can be saved and rebuilt as a plain ViT.
        self.encoder_args = dict(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0, global_pool="token",
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
            pos_embed="sincos", drop_path_rate=drop_path_rate, norm_eps=norm_eps)
        self.encoder = VisionTransformer(**self.encoder_args)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = self.encoder.patch_embed.grid_size
        self.norm_pix_loss = norm_pix_loss
        self.mask_ratio = mask_ratio

        self.decoder_embed = Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(  # fixed, like the encoder's; cls row of zeros in front
            sincos_2d_pos_embed(decoder_embed_dim, self.grid_size, num_prefix_tokens=1).unsqueeze(0),
            requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                  norm_layer=partial(LayerNorm, eps=norm_eps))
            for _ in range(decoder_depth)])
        self.decoder_norm = LayerNorm(decoder_embed_dim, eps=norm_eps)
        self.decoder_pred = Linear(decoder_embed_dim, patch_size * patch_size * in_chans)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The MAE recipe: xavier-uniform Linears (the patch projection viewed as one), zero biases,
        N(0, 0.02) class and mask tokens, LayerNorm 1 / 0; positions stay the fixed sin-cos tables."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        proj = self.encoder.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> Set[str]:
        return {"encoder.pos_embed", "encoder.cls_token", "mask_token", "decoder_pos_embed"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

    # ------------------------------------------------------------------------------------ forward
    def forward_intermediates(self, x: torch.Tensor, *args, **kwargs):
        """The encoder's blocks on whole (B, C, H, W) images, no masking: timm's `forward_intermediates`
        arguments and results (`VisionTransformer.forward_intermediates`): `(final tokens (B, 1 + N, D),
        [maps (B, D, h, w)])`, or the maps alone with `intermediates_only=True`."""
        return self.encoder.forward_intermediates(x, *args, **kwargs)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.patch_size, self.grid_size, self.in_chans)

    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> latent (B, 1 + K, D), mask (B, N) with 1 = removed, ids_restore (B, N)."""
        enc = self.encoder
        x = enc.patch_embed(imgs)  # (B, N, D); validates the input
        x = x + enc.pos_embed[:, 1:]  # positions before masking
        x, mask, ids_restore = random_masking(x, mask_ratio, noise)  # (B, K, D)
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = enc.forward_tokens(torch.cat([cls, x], dim=1))  # (B, 1 + K, D)
        return enc.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (B, 1 + K, D), ids_restore (B, N) -> per-patch pixel predictions (B, N, p*p*C)."""
        x = self.decoder_embed(latent)  # (B, 1 + K, Dd)
        B, N = ids_restore.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(B, N + 1 - x.shape[1], -1)  # (B, N - K, Dd)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # (B, N, Dd), in shuffled order
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # original order
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed  # (B, 1 + N, Dd)
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_pred(self.decoder_norm(x))  # (B, 1 + N, p*p*C)
        return x[:, 1:]

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """What the decoder learns to predict: (B, N, p*p*C) patches, per-patch normalised if norm_pix_loss."""
        target = self.patchify(imgs.float())
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over the removed patches (mask == 1) only."""
        loss = (pred.float() - self.target(imgs)).pow(2).mean(dim=-1)  # (B, N)
        return (loss * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, mask_ratio: Optional[float] = None, noise: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (loss, pred (B, N, p*p*C), mask (B, N)). `noise` (B, N) fixes which patches are removed."""
        latent, mask, ids_restore = self.forward_encoder(
            imgs, self.mask_ratio if mask_ratio is None else mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Images for looking at, each (B, C, H, W) in the input's scale: the reconstruction, the
        reconstruction with the visible patches pasted back, and the mask (1 = removed). With
        norm_pix_loss the predictions are mapped back through each patch's own mean and variance."""
        patches = self.patchify(imgs.float())
        pred = pred.float()
        if self.norm_pix_loss:
            mean = patches.mean(dim=-1, keepdim=True)
            std = (patches.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
            pred = pred * std + mean
        removed = mask.unsqueeze(-1).expand_as(patches)  # (B, N, p*p*C), 1 = removed
        pasted = patches * (1 - removed) + pred * removed
        return self.unpatchify(pred), self.unpatchify(pasted), self.unpatchify(removed.float())
