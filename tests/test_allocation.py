"""Nothing is allocated before the file or config has been checked: models are built on the meta
device first, their size compared with this machine's memory and their keys, shapes and kinds with the
safetensors header (whose byte ranges are checked against the file size); only then is anything built
for real. The spy below records the default device at every ViT construction."""
import json
import struct
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.models import vit as vit_module
from zoo.registry import Registry
from zoo.weights import CheckpointMismatchError, CorruptWeightsError, RepoConfigError
from zoo.weights.integrity import read_header

from conftest import builtin_family

TINY = dict(img_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=3)


@pytest.fixture
def builds(monkeypatch):
    """The default device ('meta' or 'cpu') at each VisionTransformer construction."""
    seen = []
    init = vit_module.VisionTransformer.__init__

    def spy(self, *args, **kwargs):
        seen.append(torch.empty(()).device.type)
        init(self, *args, **kwargs)

    monkeypatch.setattr(vit_module.VisionTransformer, "__init__", spy)
    return seen


@pytest.fixture
def saved(tmp_path):
    return zoo.save_pretrained(zoo.create("vit_base_patch16_224", **TINY), tmp_path / "saved")


def edit_config(folder, **args):
    config = json.loads((folder / "config.json").read_text())
    config["args"].update(args)
    (folder / "config.json").write_text(json.dumps(config))


def test_an_absurd_config_is_refused_on_the_meta_device(saved, builds):
    edit_config(saved, embed_dim=4_000_000, num_heads=1)
    with pytest.raises(ValueError, match=r"need [\d,.]+ GiB, more than this machine's .* nothing was allocated.*"
                                         r"embed_dim=4000000"):
        zoo.create(str(saved))
    assert builds == ["meta"]


def test_a_config_that_disagrees_with_the_header_is_refused_before_building(saved, builds):
    edit_config(saved, embed_dim=96)
    with pytest.raises(CheckpointMismatchError, match=r"pos_embed: checkpoint \(1, 5, 48\) vs model \(1, 5, 96\)"):
        zoo.create(str(saved))
    assert builds == ["meta"]
    edit_config(saved, embed_dim=48)
    assert zoo.create(str(saved)).embed_dim == 48 and builds == ["meta", "meta", "cpu"]


def test_checkpoint_path_is_checked_on_the_meta_device(tmp_path, builds):
    save_file(zoo.create("vit_base_patch16_224", **TINY).state_dict(), str(tmp_path / "w.safetensors"))
    builds.clear()
    with pytest.raises(CheckpointMismatchError, match="blocks.1"):
        zoo.create("vit_base_patch16_224", **dict(TINY, depth=2), checkpoint_path=tmp_path / "w.safetensors")
    assert builds == ["meta"]


def test_a_tensor_of_another_kind_is_refused(tmp_path):
    sd = zoo.create("vit_base_patch16_224", **TINY).state_dict()
    sd["cls_token"] = sd["cls_token"].to(torch.int32)
    save_file(sd, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"cls_token: checkpoint torch.int32 vs model torch.float32"):
        zoo.create("vit_base_patch16_224", **TINY, checkpoint_path=tmp_path / "w.safetensors")
    sd["cls_token"] = sd["cls_token"].to(torch.bfloat16)  # another float dtype loads, cast to the model's
    save_file(sd, str(tmp_path / "w.safetensors"))
    assert zoo.create("vit_base_patch16_224", **TINY, checkpoint_path=tmp_path / "w.safetensors").cls_token.dtype \
        == torch.float32


def test_absurd_registry_arguments_are_refused_on_the_meta_device(tmp_path, builds):
    """registry.yaml (and a plugin's YAML, read by the same parser) with a size nobody can build."""
    (tmp_path / "reg.yaml").write_text(textwrap.dedent("""\
        variants:
          huge_by_mistake:
            family: vit
            args: {img_size: 224, patch_size: 16, embed_dim: 1000000, depth: 48, num_heads: 1}
            input: {img_size: 224}
    """))
    reg = Registry(builtin_files=[tmp_path / "reg.yaml"], plugins=False)
    reg.add_family(builtin_family("vit"))
    with pytest.raises(ValueError, match=r"huge_by_mistake: its parameters and buffers alone need .* \(largest: "
                                         r"blocks\.\d+\.mlp\.fc1\.weight \(4000000, 1000000\)\)"):
        zoo.create("huge_by_mistake", registry=reg)
    assert builds == ["meta"]


def header_file(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("header, data, message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, r"claims bytes \[0, 8\] of a 4-byte"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes but its range holds 8"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "leave a gap at byte 0"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8, "end at byte 4 of a 8-byte"),
    ({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "stored as Q4, which this torch"),
])
def test_header_byte_ranges_are_checked_against_the_file(tmp_path, header, data, message):
    with pytest.raises(CorruptWeightsError, match=message):
        read_header(header_file(tmp_path / "w.safetensors", header, data), "w.safetensors")


def test_header_length_and_json_are_checked(tmp_path):
    (tmp_path / "a").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(CorruptWeightsError, match="header length field says 1,000,000,000,000 bytes"):
        read_header(tmp_path / "a", "a")
    (tmp_path / "b").write_bytes(struct.pack("<Q", 4) + b"{oops")
    with pytest.raises(CorruptWeightsError, match="header is not JSON"):
        read_header(tmp_path / "b", "b")
    sd = {"x": torch.randn(2, 3), "y": torch.arange(4)}
    save_file(sd, str(tmp_path / "ok.safetensors"))
    meta = read_header(tmp_path / "ok.safetensors", "ok")
    assert {k: (v.shape, v.dtype, v.device.type) for k, v in meta.items()} == {
        "x": ((2, 3), torch.float32, "meta"), "y": ((4,), torch.int64, "meta")}


def test_a_config_asking_for_absurdly_many_blocks_is_refused_before_building_them(saved, builds):
    """Building 100,000 blocks even on the meta device takes minutes and gigabytes of Python objects:
    the builders refuse more blocks than any published model has, naming the config."""
    edit_config(saved, depth=100_000)
    with pytest.raises(RepoConfigError, match=r"config.json: depth=100000 asks for more blocks than any published "
                                              r"model has"):
        zoo.create(str(saved))
    assert builds == ["meta"]
    edit_config(saved, depth=1, embed_dim=50)  # a builder's own error names the config too
    with pytest.raises(RepoConfigError, match=r"config.json: embed dim 50 is not divisible by num_heads 3"):
        zoo.create(str(saved))
