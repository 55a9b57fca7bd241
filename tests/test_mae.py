"""The MAE model: masking, patch order, the loss, and the encoder as a plain ViT."""
import pytest
import torch

import zoo
from conftest import max_diff, randomize_
from zoo.layers import random_masking
from zoo.models.mae import MaskedAutoencoder, patchify, unpatchify
from zoo.models.vit import VisionTransformer

SMALL = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2, decoder_embed_dim=32,
             decoder_depth=1, decoder_num_heads=2)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_masking_keeps_exact_count_and_restores_order(ratio):
    B, N, D = 3, 50, 4
    x = torch.arange(B * N, dtype=torch.float32).view(B, N, 1).expand(B, N, D).clone()
    visible, mask, ids_restore = random_masking(x, ratio)
    keep = int(N * (1 - ratio))
    assert visible.shape == (B, keep, D)
    assert torch.all(mask.sum(1) == N - keep)
    for b in range(B):
        kept_ids = visible[b, :, 0].long() - b * N
        assert torch.all(mask[b, kept_ids] == 0)  # kept tokens are the 0s of the mask
        # ids_restore is the inverse of the shuffle: kept first, then removed, gathered back -> 0..N-1
        removed_ids = torch.nonzero(mask[b]).flatten()
        removed_ids = removed_ids[torch.argsort(ids_restore[b, removed_ids])]
        shuffled = torch.cat([kept_ids, removed_ids])
        assert torch.equal(shuffled[ids_restore[b]], torch.arange(N))


def test_random_masking_follows_given_noise():
    x = torch.randn(2, 6, 3)
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.8, 0.2], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])
    visible, mask, _ = random_masking(x, 0.5, noise)
    assert torch.equal(mask, torch.tensor([[1.0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1]]))
    assert torch.equal(visible[0], x[0, [1, 5, 3]])  # ascending noise order
    with pytest.raises(ValueError, match=r"noise must have shape \(batch, tokens\) = \(2, 6\)"):
        random_masking(x, 0.5, torch.rand(2, 5))


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_patchify_order_and_round_trip(size):
    x = torch.randn(2, 3, *size)
    patches = patchify(x, 4)
    h, w = size[0] // 4, size[1] // 4
    assert patches.shape == (2, h * w, 4 * 4 * 3)
    # patch (row 1, col 2), pixel (p=3, q=1), channel 2 sits at index (p * 4 + q) * 3 + c
    assert patches[1, 1 * w + 2, (3 * 4 + 1) * 3 + 2] == x[1, 2, 1 * 4 + 3, 2 * 4 + 1]
    assert torch.equal(unpatchify(patches, 4, (h, w), 3), x)


def _reference_loss(imgs, pred, noise, ratio, p):
    """The MAE loss from its definition, one sample and one removed patch at a time."""
    B, C, H, W = imgs.shape
    n, keep = (H // p) * (W // p), int((H // p) * (W // p) * (1 - ratio))
    total, count = 0.0, 0
    for b in range(B):
        removed = torch.argsort(noise[b])[keep:]  # the largest noise values are removed
        for idx in removed.tolist():
            r, c = divmod(idx, W // p)
            patch = imgs[b, :, r * p:(r + 1) * p, c * p:(c + 1) * p].permute(1, 2, 0).reshape(-1)  # (p, q, c)
            target = (patch - patch.mean()) / (patch.var() + 1e-6).sqrt()
            total += ((pred[b, idx] - target) ** 2).mean().item()
            count += 1
    assert count == B * (n - keep)
    return total / count


def test_loss_matches_definition_and_ignores_visible_patches():
    model = randomize_(MaskedAutoencoder(**SMALL)).eval()
    imgs = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 64)
    loss, pred, mask = model(imgs, mask_ratio=0.75, noise=noise)
    assert pred.shape == (2, 64, 48) and int(mask.sum()) == 2 * 48
    assert abs(loss.item() - _reference_loss(imgs, pred.detach(), noise, 0.75, 4)) < 1e-5
    changed = pred.detach().clone()
    changed[mask == 0] += 100.0  # visible patches' predictions do not count
    assert abs(model.forward_loss(imgs, changed, mask).item() - loss.item()) < 1e-6
    changed[mask == 1] += 1.0
    assert model.forward_loss(imgs, changed, mask).item() > loss.item() + 0.5


def test_rectangular_images_and_reconstruction():
    model = MaskedAutoencoder(**{**SMALL, "img_size": (24, 40)}).eval()
    imgs = torch.rand(2, 3, 24, 40)
    loss, pred, mask = model(imgs)
    assert pred.shape == (2, 60, 48) and torch.isfinite(loss)
    recon, pasted, removed = model.reconstruct(imgs, pred, mask)
    assert recon.shape == pasted.shape == removed.shape == imgs.shape
    assert torch.allclose(pasted * (1 - removed), imgs * (1 - removed), atol=1e-6)  # visible pasted back


def test_encoder_is_a_plain_vit_and_exports_like_timm_mae_weights():
    mae = randomize_(MaskedAutoencoder(**SMALL)).eval()
    assert isinstance(mae.encoder, VisionTransformer)
    vit = zoo.create("vit_tiny_patch16_224", img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=2).eval()
    result = vit.load_state_dict(mae.encoder.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"] and not result.unexpected_keys
    imgs = torch.randn(2, 3, 32, 32)
    identity = torch.arange(64, dtype=torch.float32).expand(2, 64)  # no masking, original order
    with torch.no_grad():
        latent, mask, _ = mae.forward_encoder(imgs, mask_ratio=0.0, noise=identity)
        assert mask.sum() == 0
        assert max_diff(latent, vit.forward_features(imgs)) < 1e-5
        assert max_diff(latent, mae.encoder.forward_features(imgs)) < 1e-5


def test_positions_are_fixed_sincos_and_init_follows_the_recipe():
    mae = MaskedAutoencoder(**SMALL)
    assert not mae.encoder.pos_embed.requires_grad and not mae.decoder_pos_embed.requires_grad
    assert torch.allclose(mae.encoder.pos_embed[0, 1:], zoo.layers.sincos_2d_pos_embed(64, (8, 8)))
    assert torch.all(mae.decoder_pos_embed[0, 0] == 0)
    assert torch.all(mae.decoder_pred.bias == 0)
    w = mae.decoder_embed.weight  # xavier-uniform bound sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= (6 / (64 + 32)) ** 0.5 and w.std() > 0.5 * (2 / (64 + 32)) ** 0.5
    assert {"encoder.pos_embed", "mask_token"} <= mae.no_weight_decay()


def test_registry_variants():
    assert zoo.list_models(family="mae") == [
        "mae_vit_base_patch16_dec512d8b", "mae_vit_huge_patch14_dec512d8b", "mae_vit_large_patch16_dec512d8b",
        "mae_vit_micro_patch4_dec64d2b", "mae_vit_tiny_patch4_dec128d2b"]
    tiny = zoo.create("mae_tiny_32")
    loss, pred, mask = tiny(torch.rand(2, 3, 32, 32))
    assert pred.shape == (2, 64, 48) and int(mask[0].sum()) == 48
    micro = zoo.create("mae_micro_32")  # the quickstart's
    assert micro.encoder.embed_dim == 96 and len(micro.encoder.blocks) == 6 and len(micro.decoder_blocks) == 2
