"""torch.compile: every family's forward traces into ONE graph (no graph breaks: `torch._dynamo.explain`,
on the CPU), in inference (at the native size and another one, and under bf16 autocast) and in
training (with gradients);
the compiled model gives the eager model's outputs."""
import pytest
import torch
import torch._dynamo as dynamo

import zoo
from conftest import max_diff, randomize_

SWIN = dict(img_size=64, window_size=4, depths=(1, 1, 2, 1), embed_dim=24, num_heads=(1, 2, 2, 4))
FAMILIES = {  # one small model per family (and flavour): name, arguments, input sizes (native, another)
    "vit": ("vit_small_patch16_224", dict(depth=2, img_size=32, dynamic_img_size=True), [(32, 32), (48, 64)]),
    "deit_distilled": ("deit_small_distilled_patch16_224", dict(depth=2, img_size=32), [(32, 32)]),
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", dict(depth=2, img_size=28, dynamic_img_size=True), [(28, 28), (42, 56)]),
    "dinov3": ("vit_small_patch16_dinov3", dict(depth=2), [(32, 48), (40, 50)]),
    "swin": ("swin_tiny_patch4_window7_224", SWIN, [(64, 64), (80, 48)]),
    "mae": ("mae_vit_base_patch16_dec512d8b", dict(depth=2, img_size=32, embed_dim=64, num_heads=2, decoder_depth=1,
                                                   decoder_embed_dim=32, decoder_num_heads=2), [(32, 32)]),
}


def build(family):
    name, args, sizes = FAMILIES[family]
    return randomize_(zoo.create(name, **args)), sizes


@pytest.mark.parametrize("family", list(FAMILIES))
def test_no_graph_breaks(family):
    model, sizes = build(family)
    for training in (False, True):
        model.train(training)
        for h, w in sizes if not training else sizes[:1]:  # training: the native size
            dynamo.reset()
            x = torch.randn(2, 3, h, w)
            with torch.set_grad_enabled(training):
                explained = dynamo.explain(model)(x)
            reasons = [str(r.reason).splitlines()[0] for r in explained.break_reasons]
            assert explained.graph_break_count == 0 and explained.graph_count == 1, (family, training, reasons)
    model.eval()  # and under CPU bf16 autocast, where zoo's eager fast paths would otherwise step in
    dynamo.reset()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        explained = dynamo.explain(model)(torch.randn(2, 3, *sizes[0]))
    assert explained.graph_break_count == 0, [str(r.reason).splitlines()[0] for r in explained.break_reasons]


def test_compiled_model_gives_the_eager_outputs():
    """The captured graph run as is (backend "eager": tracing without code generation, which needs a C++
    compiler and minutes on 2 cores) gives the eager outputs and gradients (to float rounding: under the
    compiler zoo's CPU fast paths step aside for PyTorch's kernels)."""
    model, sizes = build("swin")  # the family with the most Python in its forward (the window layout)
    model.eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    for h, w in sizes[:1]:  # another size: a recompile, seconds more
        x = torch.randn(2, 3, h, w, requires_grad=True)
        out, ref = compiled(x), model(x)
        assert max_diff(out, ref) < 1e-4
        grad, = torch.autograd.grad(out.square().sum(), x)
        ref_grad, = torch.autograd.grad(ref.square().sum(), x)
        assert max_diff(grad, ref_grad) < 1e-4
    dynamo.reset()


def test_commands_compile(tmp_path):
    """--compile reaches the model in the training loop (MAE pretraining: the same losses as eager, the
    checkpoint's keys unchanged), the feature extraction of linear-probe / knn and `zoo predict`; backend
    "eager" keeps it quick on 2 cores (inductor works the same way, minutes slower to start)."""
    import json

    from safetensors.torch import load_file
    from test_training import micro_cfg

    from zoo.eval.features import extract_features
    from zoo.predict import predict
    from zoo.training.mae import pretrain_mae

    compiled = []  # graphs handed to the backend: proves each path really went through torch.compile

    @dynamo.register_backend(name="zoo_counting")
    def counting(gm, example_inputs):
        compiled.append(gm)
        return gm.forward

    runs = {}
    for backend in (None, "zoo_counting"):
        out = tmp_path / f"mae-{backend}"
        pretrain_mae(micro_cfg(out, epochs=1, compile=backend, log_to="none"))
        runs[backend] = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                         if "loss" in json.loads(line)]
        assert not any("_orig_mod" in k for k in load_file(str(out / "encoder" / "model.safetensors")))
    assert len(runs[None]) > 0 and max(abs(a - b) for a, b in zip(runs[None], runs["zoo_counting"])) < 1e-4
    assert compiled, "the training loop did not compile the model"
    dynamo.reset()

    model = randomize_(zoo.create("vit_small_patch16_224", depth=1, img_size=32, num_classes=3)).eval()
    model.zoo_config["input"].update(crop_pct=1.0)
    images = torch.rand(4, 3, 32, 32)
    eager = extract_features(model, torch.utils.data.TensorDataset(images), torch.zeros(4), 4, progress=False)
    before = len(compiled)
    fast = extract_features(model, torch.utils.data.TensorDataset(images), torch.zeros(4), 4, progress=False,
                            compile="zoo_counting")
    assert max_diff(eager.summaries, fast.summaries) < 1e-4 and len(compiled) > before
    from PIL import Image

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((images[i].permute(1, 2, 0) * 255).byte().numpy()).save(paths[-1])
    plain = predict(paths, model, top_k=3, num_workers=0)
    before = len(compiled)
    fast = predict(paths, model, top_k=3, num_workers=0, compile="zoo_counting")
    assert len(compiled) > before
    assert [[label for label, _ in p] for p in plain] == [[label for label, _ in p] for p in fast]
    assert max(abs(a[1] - b[1]) for p, q in zip(plain, fast) for a, b in zip(p, q)) < 1e-4
    dynamo.reset()
