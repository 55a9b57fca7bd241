"""Per-sample random masking of a token sequence, as in MAE (He et al. 2021)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random `1 - mask_ratio` of the tokens of each sample.

    x: (B, N, D) tokens. noise: optional (B, N) values; the tokens with the smallest noise are kept,
    so a given `noise` reproduces a masking exactly (default: uniform random).

    Returns:
        x_visible: (B, int(N * (1 - mask_ratio)), D), the kept tokens in ascending-noise order;
        mask: (B, N), 0 for kept and 1 for removed tokens, in the original token order;
        ids_restore: (B, N), the permutation that puts [kept, removed] back into the original order
            (`torch.gather(shuffled, 1, ids_restore)` unshuffles).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    B, N, D = x.shape
    len_keep = int(N * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(B, N, device=x.device)
    elif noise.shape != (B, N):
        raise ValueError(f"noise must have shape (batch, tokens) = {(B, N)}, got {tuple(noise.shape)}")

    ids_shuffle = torch.argsort(noise, dim=1)  # (B, N): small noise first = kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, N): inverse permutation
    ids_keep = ids_shuffle[:, :len_keep]  # (B, K)
    x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # (B, K, D)

    mask = torch.ones(B, N, device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (B, N) in the original order
    return x_visible, mask, ids_restore
