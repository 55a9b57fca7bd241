"""Checkpoints as research code writes them: every nesting and prefix the MAE, DeiT, DINO, DINOv2 and
Swin repositories, timm's train.py and the DDP / FSDP / torch.compile / EMA wrappers produce load,
with the teacher taken by default and the others on request; what cannot be found is refused with
the keys seen. The references: timm's own conversion of the bare state dict (`checkpoint_filter_fn`)
and the layouts as those repositories' training scripts save them (written out in each case)."""
import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import checkpoint_filter_fn

import timm
import zoo
from zoo.cli import main
from zoo.weights import CheckpointMismatchError
from zoo.weights.unwrap import unwrap_state_dict

from conftest import max_diff, randomize_

NAME, IMG = "vit_small_patch14_dinov2", 28


def prefixed(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


def other(sd, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in sd.items()}


@pytest.fixture(scope="module")
def weights():
    """A DINOv2 release state dict (timm keys, depth 1), another copy (the student / EMA), and a
    projection head as DINO's wrappers carry one."""
    sd = randomize_(timm.create_model(NAME, depth=1, img_size=IMG)).state_dict()
    head = {"mlp.0.weight": torch.randn(8, 384), "last_layer.weight": torch.randn(16, 8)}
    return sd, other(sd, 1), head


LAYOUTS = {  # name -> (layout from (teacher-or-model, student-or-ema, head), branch, which copy loads)
    "bare": (lambda a, b, h: a, None, 0),
    "mae / swin / deit: model": (lambda a, b, h: {"model": a, "optimizer": {"state": {}}, "epoch": 3}, None, 0),
    "deit: model + model_ema": (lambda a, b, h: {"model": a, "model_ema": b}, None, 0),
    "deit: model_ema asked for": (lambda a, b, h: {"model": a, "model_ema": b}, "ema", 1),
    "timm train.py: state_dict + ema": (lambda a, b, h: {"state_dict": a, "state_dict_ema": b, "epoch": 1}, None, 0),
    "ddp: module.": (lambda a, b, h: prefixed(a, "module."), None, 0),
    "ddp multi-crop: module.backbone.": (lambda a, b, h: {**prefixed(a, "module.backbone."),
                                                         **prefixed(h, "module.head.")}, None, 0),
    "dino: teacher + student": (lambda a, b, h: {
        "student": {**prefixed(b, "module.backbone."), **prefixed(h, "module.head.")},
        "teacher": {**prefixed(a, "backbone."), **prefixed(h, "head.")}, "epoch": 100}, None, 0),
    "dino: student asked for": (lambda a, b, h: {
        "student": {**prefixed(b, "module.backbone."), **prefixed(h, "module.head.")},
        "teacher": {**prefixed(a, "backbone."), **prefixed(h, "head.")}}, "student", 1),
    "dinov2 trainer: model.teacher/student": (lambda a, b, h: {"model": {
        **prefixed(a, "teacher.backbone."), **prefixed(h, "teacher.dino_head."),
        **prefixed(b, "student.backbone."), **prefixed(h, "student.ibot_head.")}, "iteration": 9}, None, 0),
    "dinov2 teacher_checkpoint": (lambda a, b, h: {"teacher": {**prefixed(a, "backbone."),
                                                               **prefixed(h, "dino_head.")}}, None, 0),
    "fsdp + compile infixes": (lambda a, b, h: {"model": {
        "_orig_mod." + k.replace("blocks.0.", "blocks.0._fsdp_wrapped_module._checkpoint_wrapped_module."): v
        for k, v in a.items()}}, None, 0),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_research_layouts_convert(layout, weights, tmp_path):
    """`zoo convert --from dinov2` on each layout gives timm's model for the copy it should take."""
    make, branch, which = LAYOUTS[layout]
    copies = weights[:2]
    torch.save(make(*weights), tmp_path / "ckpt.pth")
    argv = ["convert", "--from", "dinov2", str(tmp_path / "ckpt.pth"), "--out", str(tmp_path / "o")]
    assert main(argv + (["--branch", branch] if branch else [])) == 0
    ref = timm.create_model(NAME, depth=1, img_size=IMG).eval()
    ref.load_state_dict(checkpoint_filter_fn(dict(copies[which]), ref))
    ours = zoo.create(str(tmp_path / "o")).eval()
    x = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < 1e-5


@pytest.mark.parametrize("prefix", ["module.", "module.backbone.", "teacher.backbone.", "_orig_mod.module."])
def test_checkpoint_path_with_wrapper_prefixes(prefix, weights, tmp_path):
    """A safetensors file of a wrapped model loads through `checkpoint_path=`; the prefix is reported."""
    sd, _, head = weights
    heads = prefixed(head, prefix.replace("backbone.", "head.")) if "backbone" in prefix else {}
    save_file({**prefixed(sd, prefix), **heads}, str(tmp_path / "w.safetensors"))
    model = zoo.create(NAME, depth=1, img_size=IMG, checkpoint_path=tmp_path / "w.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    notes = " ".join(model.zoo_config["weights"]["adapted"])
    assert "took the" in notes and (prefix.replace("_orig_mod.", "") in notes)


def test_checkpoint_branch_and_its_errors(weights, tmp_path):
    a, b, head = weights
    save_file({**prefixed(a, "teacher.backbone."), **prefixed(b, "student.backbone.")}, str(tmp_path / "w.safetensors"))
    student = zoo.create(NAME, depth=1, img_size=IMG, checkpoint_path=tmp_path / "w.safetensors",
                         checkpoint_branch="student")
    assert torch.equal(student.cls_token, b["cls_token"])
    with pytest.raises(CheckpointMismatchError, match=r"branch='ema' matches none .*'student\.backbone\.', "
                                                      r"'teacher\.backbone\.'\. Pass one of 'student', 'teacher', or "
                                                      r"one of those prefixes"):
        zoo.create(NAME, depth=1, img_size=IMG, checkpoint_path=tmp_path / "w.safetensors", checkpoint_branch="ema")
    with pytest.raises(ValueError, match="checkpoint_branch= only applies with checkpoint_path="):
        zoo.create(NAME, depth=1, checkpoint_branch="student")


def test_several_copies_and_nothing_to_say_which_is_refused(weights):
    a, b, _ = weights
    with pytest.raises(CheckpointMismatchError, match=r"several prefixes: 'run1\.', 'run2\.'.*branch="):
        unwrap_state_dict({"run1": a, "run2": b}, a.keys())
    out, notes, prefix = unwrap_state_dict({"run1": a, "run2": b}, a.keys(), branch="run2")
    assert prefix == "run2."
    assert torch.equal(out["cls_token"], b["cls_token"]) and "took the" in notes[0]


def test_nothing_found_names_what_was_seen(tmp_path):
    w = torch.zeros(2)
    torch.save({"net": {"conv1.weight": w, "fc.weight": w}, "epoch": 3}, tmp_path / "resnet.pth")
    argv = ["convert", "--from", "dinov2", str(tmp_path / "resnet.pth"), "--out", str(tmp_path / "o")]
    with pytest.raises(CheckpointMismatchError) as e:
        unwrap_state_dict(torch.load(tmp_path / "resnet.pth"), ["patch_embed.proj.weight"], what="resnet.pth")
    assert "Top-level keys: net, epoch" in str(e.value) and "net.conv1.*" in str(e.value)
    assert main(argv) == 2


def test_a_training_run_is_not_labelled_as_the_published_release(weights, tmp_path):
    """The DINOv2 repository's release is a bare state dict and gets its registry tag and license; the
    same architecture out of a training run's teacher / student wrapper is the user's own weights."""
    import json

    sd, other_copy, _ = weights
    torch.save(sd, tmp_path / "release.pth")
    torch.save({"model": {**prefixed(sd, "teacher.backbone."), **prefixed(other_copy, "student.backbone.")}},
               tmp_path / "run.pth")
    for name in ("release", "run"):
        assert main(["convert", "--from", "dinov2", str(tmp_path / f"{name}.pth"), "--out", str(tmp_path / name),
                     "--model", NAME]) == 0
    tags = {n: json.loads((tmp_path / n / "config.json").read_text())["tag"] for n in ("release", "run")}
    assert tags == {"release": "lvd142m", "run": None}


def test_convert_refuses_to_overwrite_and_names_a_wrong_source(weights, tmp_path, capsys):
    sd = weights[0]
    torch.save(sd, tmp_path / "vit.pth")
    out = str(tmp_path / "o")
    assert main(["convert", "--from", "dinov2", str(tmp_path / "vit.pth"), "--out", out]) == 0
    assert main(["convert", "--from", "dinov2", str(tmp_path / "vit.pth"), "--out", out]) == 2
    assert "already holds files; choose another folder, or pass --overwrite" in capsys.readouterr().err
    assert main(["convert", "--from", "dinov2", str(tmp_path / "vit.pth"), "--out", out, "--overwrite"]) == 0
    assert main(["convert", "--from", "swin", str(tmp_path / "vit.pth"), "--out", str(tmp_path / "s")]) == 2
    assert "not a Swin checkpoint (check --from)" in capsys.readouterr().err
