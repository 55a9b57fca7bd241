"""The whole MAE (encoder, decoder, mask token) from published weights, so pretraining can continue
and reconstructions can be looked at: transformers' ViTMAEForPreTraining loaded with family="mae",
and the MAE repository's checkpoints that keep the decoder through `zoo convert --from mae --model`.
With the same noise, zoo's loss and predictions equal transformers' own."""
import pytest
import torch
import transformers

import zoo
from zoo.cli import main
from zoo.models import MaskedAutoencoder
from zoo.weights import RepoConfigError

from conftest import max_diff
from test_convert import randomize_hf_

# The registry's mae_vit_tiny_patch4_dec128d2b heads (3 and 4), narrower and shallower
CONFIG = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=192, image_size=32,
              patch_size=4, decoder_hidden_size=32, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
              decoder_intermediate_size=128)


def transformers_mae(tmp_path, **extra):
    hf = randomize_hf_(transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**CONFIG, **extra)))
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_transformers_vitmae_for_pretraining_loads_whole(norm_pix_loss, tmp_path):
    hf = transformers_mae(tmp_path, norm_pix_loss=norm_pix_loss, mask_ratio=0.75)
    ours = zoo.create(str(tmp_path), family="mae").eval()
    assert isinstance(ours, MaskedAutoencoder) and ours.norm_pix_loss == norm_pix_loss and ours.mask_ratio == 0.75
    x, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 64)
    with torch.no_grad():
        expected = hf(pixel_values=x, noise=noise)
        loss, pred, mask = ours(x, noise=noise)
    assert expected.loss.item() > 0 and abs(loss.item() - expected.loss.item()) < 1e-5
    assert max_diff(pred, expected.logits) < 1e-5 and torch.equal(mask, expected.mask)
    images, pasted, _ = ours.reconstruct(x, pred, mask)  # what one looks at
    assert images.shape == x.shape and torch.isfinite(pasted).all()


def test_the_encoder_stays_the_default(tmp_path):
    transformers_mae(tmp_path)
    encoder = zoo.create(str(tmp_path))
    assert encoder.zoo_config["family"] == "vit" and "dropped the MAE decoder" in encoder.zoo_config["weights"]["adapted"][0]
    with pytest.raises(RepoConfigError, match="family 'swin' does not read transformers model_type 'vit_mae'; "
                                              "it is read by family 'vit' or 'mae'"):
        zoo.create(str(tmp_path), family="swin")


def test_mae_repository_checkpoint_with_decoder_converts_whole(tmp_path):
    """The MAE repository's layout (encoder keys without a prefix, decoder_* beside them, under
    "model"), made from the transformers model above: the converted MAE gives transformers' outputs."""
    hf = transformers_mae(tmp_path / "hf", norm_pix_loss=True)
    whole = zoo.create(str(tmp_path / "hf"), family="mae")
    original = {k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in whole.state_dict().items()}
    torch.save({"model": original, "epoch": 799}, tmp_path / "mae_pretrain.pth")
    out = tmp_path / "converted"
    assert main(["convert", "--from", "mae", str(tmp_path / "mae_pretrain.pth"), "--out", str(out),
                 "--model", "mae_vit_tiny_patch4_dec128d2b"]) == 0
    ours = zoo.create(str(out), norm_eps=1e-12).eval()  # transformers' LayerNorm eps, to compare with it
    assert isinstance(ours, MaskedAutoencoder)
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    with torch.no_grad():
        expected = hf(pixel_values=x, noise=noise)
        loss, pred, _ = ours(x, noise=noise)
    assert abs(loss.item() - expected.loss.item()) < 1e-5 and max_diff(pred, expected.logits) < 1e-5
    # without an MAE-family --model the same file converts to the encoder only, as before
    assert main(["convert", "--from", "mae", str(tmp_path / "mae_pretrain.pth"), "--out", str(tmp_path / "enc"),
                 "--model", "vit_base_patch16_224"]) == 0
    assert zoo.create(str(tmp_path / "enc")).zoo_config["family"] == "vit"
