"""MAE training step: zoo's model vs the research code's structure built from timm's blocks.

`TimmBlockMAE` below is the MAE reference model (Facebook's models_mae.py) written with timm's
`PatchEmbed` and `Block`, as the research code is; it carries zoo's weights, so both compute the
same function (tests/test_mae.py checks they agree). One training step = forward with a fixed
masking, backward, AdamW update. The two models are stepped alternately in one process (the order
flips every round); each cell is the median of `--repeats` steps after `--warmup`. Peak memory is
the largest amount of tensor memory alive during one step beyond what existed before it (weights,
gradients and optimizer state from earlier steps), read from PyTorch's profiler on the CPU or
`torch.cuda.max_memory_allocated` on a GPU.

    python benchmarks/mae_step.py                       # mae_vit_base_patch16_dec512d8b, batch 8, fp32 + bf16
    python benchmarks/mae_step.py --model mae_tiny_32 --batch-size 64
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
import zoo  # noqa: E402
from zoo.env import machine_header  # noqa: E402
from zoo.layers import random_masking  # noqa: E402


class TimmBlockMAE(nn.Module):
    """The MAE reference model (models_mae.py) from timm's PatchEmbed and Block. Key names are the
    research code's (flat encoder keys), i.e. zoo's with the `encoder.` prefix removed."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=True):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
                                     for _ in range(depth)])
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True,
                                                   norm_layer=norm) for _ in range(decoder_depth)])
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans)
        self.patch_size, self.norm_pix_loss = patch_size, norm_pix_loss

    def load_zoo_state_dict(self, state):
        self.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items()
                              if not k.startswith("encoder.head")}, strict=True)

    def forward(self, imgs, mask_ratio=0.75, noise=None):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = random_masking(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        mask_tokens = self.mask_token.expand(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens.to(x.dtype)], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        p = self.patch_size
        B, C, H, W = imgs.shape
        target = torch.einsum("nchpwq->nhwpqc", imgs.float().reshape(B, C, H // p, p, W // p, p))
        target = target.reshape(B, (H // p) * (W // p), p * p * C)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred.float() - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum(), pred, mask


def reference_for(model) -> TimmBlockMAE:
    """The timm-block reference with the same configuration and weights as a zoo MAE."""
    enc = model.encoder
    ref = TimmBlockMAE(
        img_size=enc.patch_embed.img_size, patch_size=model.patch_size, in_chans=model.in_chans,
        embed_dim=enc.embed_dim, depth=len(enc.blocks), num_heads=enc.blocks[0].attn.num_heads,
        decoder_embed_dim=model.decoder_embed.out_features, decoder_depth=len(model.decoder_blocks),
        decoder_num_heads=model.decoder_blocks[0].attn.num_heads if len(model.decoder_blocks) else 1,
        mlp_ratio=enc.blocks[0].mlp.fc1.out_features / enc.embed_dim, norm_pix_loss=model.norm_pix_loss)
    ref.load_zoo_state_dict(model.state_dict())
    return ref


def train_step(model, opt, imgs, noise, precision):
    ctx = torch.autocast(imgs.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    opt.zero_grad(set_to_none=True)
    with ctx:
        loss, _, _ = model(imgs, 0.75, noise)
    loss.backward()
    opt.step()
    return loss.item()


def peak_step_memory(fn) -> int:
    """Peak bytes of tensor memory allocated during `fn()` beyond what was alive before it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    deltas = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
                    for e in prof.events())
    live = peak = 0
    for _, delta in deltas:
        live += delta
        peak = max(peak, live)
    return peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mae_vit_base_patch16_dec512d8b")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    print(f"Machine: {machine_header()}.\n{args.model}, batch {args.batch_size}, {device}; median of "
          f"{args.repeats} alternated steps", flush=True)
    rows = []
    for precision in args.precisions:
        ours = zoo.create(args.model).to(device)
        ref = reference_for(ours).to(device)
        models = {"zoo": ours, "timm-block reference": ref}
        opts = {k: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4, betas=(0.9, 0.95))
                for k, m in models.items()}
        h, w = ours.encoder.patch_embed.img_size
        imgs = torch.randn(args.batch_size, 3, h, w, device=device)
        noise = torch.rand(args.batch_size, ours.grid_size[0] * ours.grid_size[1], device=device)
        times = {k: [] for k in models}
        for i in range(args.warmup + args.repeats):
            order = list(models) if i % 2 == 0 else list(models)[::-1]
            for k in order:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                train_step(models[k], opts[k], imgs, noise, precision)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times[k].append(time.perf_counter() - start)
        mem = {k: peak_step_memory(lambda k=k: train_step(models[k], opts[k], imgs, noise, precision)) for k in models}
        ips = {k: args.batch_size / statistics.median(v) for k, v in times.items()}
        rows.append((precision, ips["zoo"], ips["timm-block reference"], mem["zoo"], mem["timm-block reference"]))
        print(f"{precision}: zoo {ips['zoo']:.2f} img/s, reference {ips['timm-block reference']:.2f} img/s, "
              f"ratio {ips['zoo'] / ips['timm-block reference']:.3f}; peak step memory zoo "
              f"{mem['zoo'] / 2**20:.0f} MiB, reference {mem['timm-block reference'] / 2**20:.0f} MiB", flush=True)
    print("\n| precision | zoo img/s | reference img/s | zoo / reference | zoo peak MiB | reference peak MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | **{r[1] / r[2]:.2f}x** | {r[3] / 2**20:.0f} | {r[4] / 2**20:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
