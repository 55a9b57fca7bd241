"""zoo.factory and zoo.weights: pretrained weights through the real Hugging Face client, offline.

Every load runs huggingface_hub's real `hf_hub_download` against a Hub cache laid out in a temporary
folder (tests/hub_cache.py), filled with safetensors files written by timm (`timm.models.save_for_hf`)
from timm-initialised models. The acceptance run sets HF_HUB_OFFLINE=1 and HF_HOME in a fresh
interpreter, since huggingface_hub reads both when it is imported. The other tests run in this process
with `huggingface_hub.constants.HF_HUB_OFFLINE` patched to True (the `offline` fixture): other test
modules import huggingface_hub (through timm) before this one, so the variable alone would come too
late; `hf_hub_download` reads that constant on every call. The only mock is in `test_push...`: this
machine cannot reach the Hub, so the Hub's push endpoints are answered in-process (see FakeHub).
"""
import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
import yaml

import zoo
from conftest import builtin_family, max_diff, randomize_
from hub_cache import add_folder_to_cache, add_to_cache
from zoo import factory
from zoo.weights import (
    CheckpointMismatchError, CorruptWeightsError, RepoConfigError, UnsafeWeightsError, WeightsNotCachedError, WeightsNotFoundError)
from zoo.cli import main
from zoo.complexity import count_macs, count_params
from zoo.models.vit import VisionTransformer
from zoo.registry import Registry, RegistryError

try:  # the HTTP library huggingface_hub uses: httpx2 in recent releases, httpx in 1.x
    import httpx2 as httpx
except ImportError:
    import httpx

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4


def timm_repo(folder, name, **overrides):
    """A randomly initialised timm model and its Hub folder, as timm writes it (model.safetensors, config.json)."""
    model = randomize_(timm.create_model(name, **overrides)).eval()
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    return model


def cache_timm_weights(cache, name, **overrides):
    """timm weights for the registry's default tag of `name`, in the cache where zoo will look for them."""
    variant = zoo.model_info(name)
    folder = Path(cache).parent / f"src-{name}"
    model = timm_repo(folder, name, **overrides)
    add_folder_to_cache(cache, variant.weights[variant.default_tag].hf_hub_id, folder)
    return model


# ------------------------------------------------------------------------- acceptance, HF_HUB_OFFLINE=1
ACCEPTANCE = [  # (name, overrides, batch): the default tag of each; fewer blocks to stay fast
    ("vit_base_patch16_224", {"depth": 2}, 2),
    ("deit_tiny_distilled_patch16_224", {"depth": 2}, 2),
    ("vit_small_patch14_reg4_dinov2", {"depth": 2}, 1),
    ("swin_tiny_patch4_window7_224", {"depths": (2, 2, 2, 2)}, 2),
]

OFFLINE_SCRIPT = """
import json, sys, torch, safetensors.torch
import zoo
from zoo.cli import main
cases, inputs = json.load(open(sys.argv[1])), safetensors.torch.load_file(sys.argv[2])
outputs, report = {}, {}
for name, overrides, _ in cases:
    model = zoo.create(name, pretrained=True, **overrides).eval()
    with torch.no_grad():
        outputs[name] = model(inputs[name])
    report[name] = model.zoo_config["weights"]
try:
    zoo.create("deit_small_patch16_224", pretrained=True)
except Exception as e:
    report["not_cached"] = [type(e).__name__, str(e)]
report["cli_missing"] = main(["download", "deit_small_patch16_224"])
report["cli_cached"] = main(["download", "deit_tiny_distilled_patch16_224"])
safetensors.torch.save_file(outputs, sys.argv[3])
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One fresh interpreter with HF_HOME=<tmp> and HF_HUB_OFFLINE=1 loads every ACCEPTANCE model with
    `zoo.create(name, pretrained=True)`; timm's outputs on the same inputs are computed here."""
    tmp = tmp_path_factory.mktemp("offline")
    cache = tmp / "hf_home" / "hub"
    inputs, expected = {}, {}
    for name, overrides, batch in ACCEPTANCE:
        ref = cache_timm_weights(cache, name, **overrides)
        inputs[name] = torch.randn(batch, 3, *ref.patch_embed.img_size)
        with torch.no_grad():
            expected[name] = ref(inputs[name])
    (tmp / "cases.json").write_text(json.dumps(ACCEPTANCE))
    safetensors.torch.save_file(inputs, tmp / "inputs.safetensors")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    files = [str(tmp / f) for f in ("cases.json", "inputs.safetensors", "outputs.safetensors")]
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, *files], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"expected": expected, "outputs": safetensors.torch.load_file(tmp / "outputs.safetensors"),
            "report": report, "stdout": proc.stdout, "stderr": proc.stderr, "cache": cache}


@pytest.mark.parametrize("name", [case[0] for case in ACCEPTANCE])
def test_pretrained_true_reproduces_timm_offline(offline_run, name):
    out, ref = offline_run["outputs"][name], offline_run["expected"][name]
    assert out.std() > 1e-2
    assert max_diff(out, ref) < TOL
    weights = offline_run["report"][name]
    variant = zoo.model_info(name)
    assert weights["source"] == f"hf-hub:{variant.weights[variant.default_tag].hf_hub_id}/model.safetensors"
    assert weights["adapted"] == [] and weights["license"] == variant.weights[variant.default_tag].license


def test_not_cached_offline_says_what_to_do(offline_run):
    kind, message = offline_run["report"]["not_cached"]
    assert kind == "WeightsNotCachedError"
    for part in ("timm/deit_small_patch16_224.fb_in1k", "model.safetensors", "HF_HUB_OFFLINE=1",
                 str(offline_run["cache"]), "`zoo download deit_small_patch16_224.fb_in1k`",
                 "models--timm--deit_small_patch16_224.fb_in1k"):
        assert part in message, part


def test_cli_download_offline(offline_run):
    assert offline_run["report"]["cli_missing"] == 2
    assert "zoo download: error: timm/deit_small_patch16_224.fb_in1k" in offline_run["stderr"]
    assert offline_run["report"]["cli_cached"] == 0
    assert "models--timm--deit_tiny_distilled_patch16_224.fb_in1k/snapshots/" in offline_run["stdout"]


# ---------------------------------------------------------------------------------- adapting on load
def test_another_num_classes_img_size_and_in_chans_are_adapted_like_timm(tmp_path, offline, caplog):
    cache = tmp_path / "cache"
    cache_timm_weights(cache, "deit_tiny_patch16_224", depth=2)
    with caplog.at_level("INFO", logger="zoo.weights"):
        ours = zoo.create("deit_tiny_patch16_224", pretrained=True, depth=2, num_classes=10, img_size=160,
                          in_chans=1, cache_dir=cache).eval()
    notes = ["resampled pos_embed 14x14 -> 10x10 (bicubic_antialias)",  # the family's checkpoint filter first
             "dropped the 1000-class head (head), new 10-class head initialised",
             "adapted patch_embed.proj from 3 to 1 input channels (summed over the input channels)"]
    assert ours.zoo_config["weights"]["adapted"] == notes
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == notes
    assert ours.head.out_features == 10 and ours.zoo_config["input"]["img_size"] == [160, 160]
    # timm adapting the same file (its checkpoint filter and adapt_input_conv) gives the same features
    file = next((cache / "models--timm--deit_tiny_patch16_224.fb_in1k" / "snapshots").glob("*/model.safetensors"))
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=True, depth=2, num_classes=10, img_size=160,
                            in_chans=1, pretrained_cfg_overlay={"file": str(file)}).eval()
    x = torch.randn(2, 1, 160, 160)
    with torch.no_grad():
        assert max_diff(ours.forward_features(x), ref.forward_features(x)) < TOL
    assert torch.all(ours.head.bias == 0)  # freshly initialised


def test_four_input_channels_and_headless_weights(tmp_path):
    from timm.models._manipulate import adapt_input_conv

    src = randomize_(zoo.create("vit_tiny_patch16_224", depth=1, img_size=32, num_classes=0))
    file = tmp_path / "w.safetensors"
    safetensors.torch.save_file(src.state_dict(), file)
    model = zoo.create("vit_tiny_patch16_224", depth=1, img_size=32, in_chans=4, num_classes=3, checkpoint_path=file)
    expected = adapt_input_conv(4, src.patch_embed.proj.weight.detach())
    assert max_diff(model.patch_embed.proj.weight, expected) < 1e-7
    assert model.zoo_config["weights"]["adapted"] == [
        "the checkpoint has no classifier: new 3-class head initialised (head)",
        "adapted patch_embed.proj from 3 to 4 input channels (repeated and scaled by 3/4)"]


def test_checkpoint_path_loads_a_local_safetensors_file_and_refuses_pickle(tmp_path):
    src = randomize_(zoo.create("deit_tiny_distilled_patch16_224", depth=1, img_size=64)).eval()
    file = tmp_path / "finetuned.safetensors"
    safetensors.torch.save_file(src.state_dict(), file)
    model = zoo.create("deit_tiny_distilled_patch16_224", depth=1, img_size=64, checkpoint_path=file).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(model(x), src(x)) == 0
    assert model.zoo_config["weights"] == {"source": str(file), "adapted": []}
    torch.save(src.state_dict(), tmp_path / "finetuned.pth")
    with pytest.raises(UnsafeWeightsError, match="safetensors files only"):
        zoo.create("deit_tiny_distilled_patch16_224", depth=1, checkpoint_path=tmp_path / "finetuned.pth")
    with pytest.raises(ValueError, match="not both"):
        zoo.create("deit_tiny_distilled_patch16_224", pretrained=True, checkpoint_path=file)


# ------------------------------------------------------------------------------ save, load, export
@pytest.fixture
def loaded(tmp_path, offline):
    """deit_tiny_distilled (2 blocks) loaded from a Hub cache with a new 10-class head."""
    cache = tmp_path / "cache"
    cache_timm_weights(cache, "deit_tiny_distilled_patch16_224", depth=2)
    model = zoo.create("deit_tiny_distilled_patch16_224", pretrained=True, depth=2, num_classes=10, cache_dir=cache)
    randomize_(model.head, seed=1), randomize_(model.head_dist, seed=2)  # as if fine-tuned
    return model.eval(), cache


def test_save_load_round_trip_is_exact(loaded, tmp_path):
    model, cache = loaded
    out = zoo.save_pretrained(model, tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "vit" and config["variant"] == "deit_tiny_distilled_patch16_224"
    assert config["args"]["depth"] == 2 and config["num_classes"] == 10 and config["zoo_version"] == zoo.__version__
    assert config["input"]["img_size"] == [224, 224] and config["license"] == "apache-2.0"
    assert config["metrics"] == {}  # the tag's 74.5 top-1 was measured with another head
    again = zoo.create(str(out)).eval()
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    # the same folder as a Hub repo, at a revision
    add_folder_to_cache(cache, "me/deit-tiny-pets", out, revision="v1")
    from_hub = zoo.create("hf-hub:me/deit-tiny-pets@v1", cache_dir=cache).eval()
    with torch.no_grad():
        assert torch.equal(from_hub(x), model(x))
    assert from_hub.zoo_config["weights"]["source"] == "hf-hub:me/deit-tiny-pets@v1/model.safetensors"


def test_model_card(loaded, tmp_path):
    model, _ = loaded
    card = (zoo.save_pretrained(model, tmp_path / "saved", repo_id="me/deit-tiny-pets") / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta == {"library_name": "zoo", "license": "apache-2.0", "tags": ["image-classification", "vit", "zoo"],
                    "pipeline_tag": "image-classification",
                    "base_model": "timm/deit_tiny_distilled_patch16_224.fb_in1k"}  # where the weights came from
    from huggingface_hub import ModelCard

    parsed = ModelCard.load(tmp_path / "saved" / "README.md")  # the Hub's own parser reads it back
    assert parsed.data.base_model == "timm/deit_tiny_distilled_patch16_224.fb_in1k" and parsed.data.license == "apache-2.0"
    with torch.device("meta"):
        shape = zoo.create("deit_tiny_distilled_patch16_224", depth=2, num_classes=10)
    assert f"| Parameters | {count_params(shape) / 1e6:.2f} M |" in body
    assert f"| GMACs | {count_macs(shape, (3, 224, 224)) / 1e9:.2f} at 3x224x224 |" in body
    assert "| Input size | 224x224, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)" in body
    assert 'zoo.create("hf-hub:me/deit-tiny-pets")' in body
    # weights used as published keep their reported metrics; a headless backbone is a feature extractor
    plain = zoo.create("deit_tiny_distilled_patch16_224", pretrained=True, depth=2, cache_dir=loaded[1])
    body = (zoo.save_pretrained(plain, tmp_path / "plain") / "README.md").read_text()
    assert "| top1 (published) | 74.5 |" in body
    backbone = zoo.create("vit_small_patch14_dinov2", depth=1, img_size=28)
    meta = yaml.safe_load((zoo.save_pretrained(backbone, tmp_path / "b", license="mit") / "README.md")
                          .read_text().split("---\n")[1])
    assert meta["pipeline_tag"] == "image-feature-extraction" and meta["license"] == "mit"


def test_timm_loads_a_timm_format_export(loaded, tmp_path):
    model, _ = loaded
    out = zoo.save_pretrained(model, tmp_path / "for-timm", format="timm")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "deit_tiny_distilled_patch16_224"
    ref_cfg = tmp_path / "timm_config.json"  # what timm writes itself for the same model
    timm.models._hub.save_config_for_hf(timm.create_model("deit_tiny_distilled_patch16_224", depth=2, num_classes=10),
                                        str(ref_cfg))
    assert config["model_args"] == json.loads(ref_cfg.read_text())["model_args"]
    assert config["model_args"]["depth"] == 2 and config["model_args"]["num_classes"] == 10
    assert yaml.safe_load((out / "README.md").read_text().split("---\n")[1])["library_name"] == "timm"
    ref = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(ref(x), model(x)) < TOL
    giant = zoo.create("vit_small_patch14_dinov2", depth=1, mlp_layer="swiglu")
    with pytest.raises(ValueError, match="mlp_layer='swiglu' differs from timm's vit_small_patch14_dinov2"):
        zoo.save_pretrained(giant, tmp_path / "x", format="timm")


def test_timm_hub_repo_loads_by_hf_hub_name(tmp_path, offline):
    ref = timm_repo(tmp_path / "src", "vit_small_patch14_reg4_dinov2", depth=1, img_size=56)
    add_folder_to_cache(tmp_path / "cache", "timm/vit_small_patch14_reg4_dinov2.lvd142m", tmp_path / "src")
    model = zoo.create("hf-hub:timm/vit_small_patch14_reg4_dinov2.lvd142m", cache_dir=tmp_path / "cache").eval()
    assert model.zoo_config["name"] == "vit_small_patch14_reg4_dinov2" and model.zoo_config["tag"] == "lvd142m"
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        assert max_diff(model(x), ref(x)) < TOL


# ------------------------------------------------------------------------------------------ push
class FakeHub:
    """The Hub's push endpoints, answered in-process: creating a repo and a branch, and the upload
    (validate-yaml, preupload, commit). The only mock in these tests: this machine cannot reach the
    Hub. huggingface_hub's own client code runs unchanged up to the HTTP transport; the commit it sends
    is decoded here so the test can check what would have been uploaded. Any other request fails."""

    PUSH_ENDPOINTS = ("/api/repos/create", "/api/validate-yaml", "/preupload/", "/commit/", "/branch/")

    def __init__(self):
        self.requests, self.created, self.uploaded, self.unexpected = [], None, {}, []

    def __call__(self, request):
        path = request.url.path
        if not any(p in path for p in self.PUSH_ENDPOINTS):
            self.unexpected.append(f"{request.method} {path}")
            return httpx.Response(404, json={"error": "not a push endpoint"})
        self.requests.append(f"{request.method} {path}")
        if path == "/api/repos/create":
            self.created = json.loads(request.content)
            repo = f"{self.created['organization']}/{self.created['name']}"
            return httpx.Response(200, json={"url": f"https://huggingface.co/{repo}", "name": repo})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            lines = [json.loads(line) for line in request.content.decode().splitlines()]
            self.commit_header = lines[0]["value"]
            self.uploaded = {e["value"]["path"]: base64.b64decode(e["value"]["content"])
                             for e in lines if e["key"] == "file"}
            return httpx.Response(200, json={"commitUrl": "https://huggingface.co/me/x/commit/" + "1" * 40,
                                              "commitOid": "1" * 40, "success": True})
        return httpx.Response(200, json={})


@pytest.fixture
def fake_hub():
    fake = FakeHub()
    huggingface_hub.set_client_factory(lambda: httpx.Client(
        transport=httpx.MockTransport(fake), follow_redirects=True,
        event_hooks={"request": [huggingface_hub.utils._http.hf_request_event_hook]}))
    yield fake
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


def test_push_to_hub_uploads_the_saved_folder(loaded, tmp_path, fake_hub, monkeypatch):
    model, _ = loaded
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # pushing is online, to FakeHub
    info = zoo.push_to_hub(model, "me/deit-tiny-pets", private=True, revision="v1", commit_message="first",
                           token="hf_test")
    assert fake_hub.created == {"name": "deit-tiny-pets", "organization": "me", "visibility": "private"}
    assert "POST /api/models/me/deit-tiny-pets/branch/v1" in fake_hub.requests
    assert "POST /api/models/me/deit-tiny-pets/commit/v1" in fake_hub.requests
    assert fake_hub.commit_header["summary"] == "first" and info.commit_url.endswith("1" * 40)
    assert sorted(fake_hub.uploaded) == ["README.md", "config.json", "model.safetensors"]
    expected = zoo.save_pretrained(model, tmp_path / "same", repo_id="me/deit-tiny-pets")
    for name, data in fake_hub.uploaded.items():
        assert data == (expected / name).read_bytes(), name
    weights = safetensors.torch.load(fake_hub.uploaded["model.safetensors"])
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    # the CLI pushes a folder as it is
    (expected / "notes.txt").write_text("not uploaded")
    assert main(["push", str(expected), "me/deit-tiny-pets", "--private"]) == 0
    assert sorted(fake_hub.uploaded) == ["README.md", "config.json", "model.safetensors"]
    assert fake_hub.unexpected in ([], ["GET /api/agent-harnesses"])  # huggingface_hub's own agent check


# ------------------------------------------------------------------------------------------ errors
def test_flipped_byte_in_an_lfs_blob_is_reported_as_corrupt(tmp_path, offline):
    cache = tmp_path / "cache"
    cache_timm_weights(cache, "deit_tiny_patch16_224", depth=1)
    blobs = cache / "models--timm--deit_tiny_patch16_224.fb_in1k" / "blobs"
    blob = max(blobs.iterdir(), key=lambda p: p.stat().st_size)  # model.safetensors, not config.json
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0x01  # one bit of one weight: safetensors itself would load this silently
    blob.write_bytes(bytes(data))
    safetensors.torch.load_file(blob)
    with pytest.raises(CorruptWeightsError) as err:
        zoo.create("deit_tiny_patch16_224", pretrained=True, depth=1, cache_dir=cache)
    message = str(err.value)
    for part in ("hf-hub:timm/deit_tiny_patch16_224.fb_in1k/model.safetensors is corrupt",
                 f"its Hub cache blob is named by sha256 {blob.name}", "hashes to ",
                 "`zoo download deit_tiny_patch16_224.fb_in1k --force`"):
        assert part in message, part


def test_sha256_in_registry_yaml_is_verified(tmp_path, offline):
    cache = tmp_path / "cache"
    folder = tmp_path / "src"
    timm_repo(folder, "deit_tiny_patch16_224", depth=1, img_size=32)
    data = (folder / "model.safetensors").read_bytes()
    import hashlib

    good = hashlib.sha256(data).hexdigest()
    # a cache without symlinks (copies, as on Windows): only the registry's hash can catch damage
    snapshot = add_to_cache(cache, "me/tiny", {"model.safetensors": data})
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    text = textwrap.dedent(f"""\
        variants:
          tiny:
            family: vit
            args: {{img_size: 32, patch_size: 16, embed_dim: 192, depth: 1, num_heads: 3}}
            input: {{img_size: 32}}
            weights:
              bad: {{hf_hub_id: me/tiny, sha256: "{'0' * 64}"}}
              good: {{hf_hub_id: me/tiny, sha256: "{good}"}}
    """)
    (tmp_path / "reg.yaml").write_text(text)
    reg = Registry(builtin_files=[tmp_path / "reg.yaml"], plugins=False)
    reg.add_family(builtin_family("vit"))
    with pytest.raises(CorruptWeightsError, match=f"registry.yaml records sha256 {'0' * 64}, but .* hashes to"):
        zoo.create("tiny", pretrained="bad", cache_dir=cache, registry=reg)
    with pytest.raises(CorruptWeightsError, match=f"registry.yaml records sha256 {good}"):
        zoo.create("tiny", pretrained="good", cache_dir=cache, registry=reg)  # the flipped byte
    (snapshot / "model.safetensors").write_bytes(data)
    assert zoo.create("tiny", pretrained="good", cache_dir=cache, registry=reg).zoo_config["weights"]["adapted"] == []
    with pytest.raises(RegistryError, match="field 'weights.p.filename': expected a .safetensors file"):
        bad = tmp_path / "p.yaml"
        bad.write_text(text.replace("bad: {", "p: {filename: pytorch_model.bin, "))
        r = Registry(builtin_files=[bad], plugins=False)
        r.register_family("vit", VisionTransformer)
        r.ensure_loaded()


def test_truncated_file_is_reported(loaded, tmp_path):
    model, _ = loaded
    out = zoo.save_pretrained(model, tmp_path / "saved")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptWeightsError) as err:
        zoo.create(str(out))
    assert f"{weights} (" in str(err.value) and "truncated or damaged" in str(err.value)
    assert "of a " in str(err.value) and "-byte data section" in str(err.value)  # the first tensor past the end
    with pytest.raises(CorruptWeightsError, match="truncated or damaged"):  # before any request to the Hub
        factory.push_folder(out, "me/broken")


def test_missing_and_unexpected_keys_are_listed_and_counted(tmp_path, offline):
    cache = tmp_path / "cache"
    cache_timm_weights(cache, "deit_tiny_patch16_224", depth=3)
    with pytest.raises(CheckpointMismatchError) as err:
        zoo.create("deit_tiny_patch16_224", pretrained=True, depth=2, cache_dir=cache)
    assert "0 missing keys" in str(err.value)
    assert "12 unexpected keys: blocks.2.* (12 keys)" in str(err.value)
    with pytest.raises(CheckpointMismatchError) as err:
        zoo.create("deit_tiny_patch16_224", pretrained=True, depth=14, qk_norm=True, cache_dir=cache)
    message = str(err.value)
    assert "hf-hub:timm/deit_tiny_patch16_224.fb_in1k/model.safetensors does not fit the model deit_tiny" in message
    # blocks 0-2 lack their 4 q/k-norm tensors, blocks 3-13 all 16 tensors: 14 groups, 10 listed
    assert "188 missing keys: blocks.0.* (4 keys), blocks.1.* (4 keys), blocks.2.* (4 keys), blocks.3.* (16 keys)" \
        in message
    assert "blocks.9.* (16 keys), ... and 4 more" in message and "0 unexpected keys" in message
    with pytest.raises(CheckpointMismatchError, match=r"1 with another shape: pos_embed: checkpoint "
                                                          r"\(1, 197, 192\) vs model \(1, 198, 192\)"):
        zoo.create("deit_tiny_patch16_224", pretrained=True, depth=3, reg_tokens=1, cache_dir=cache)


@pytest.mark.parametrize("config, message", [
    ({"format": "zoo", "family": "evil", "args": {}},
     ["names family 'evil', which is not registered here (registered: mae, swin, vit)", "never imports code"]),
    ({"format": "zoo", "family": "vit", "args": {"depth": 1, "exec": "import os"}},
     ["unknown argument 'exec' for family 'vit'"]),
    ({"format": "zoo", "family": "vit", "args": [1, 2]}, ["'args' must be a JSON object"]),
    ({"architecture": "resnet50"}, ["timm architecture 'resnet50' is not a zoo model"]),
    ({"model_type": "bert", "auto_map": {"AutoModel": "evil.Model"}}, ["model_type 'bert' is not supported"]),
    ({"something": 1}, ["not a zoo, timm or transformers config"]),
])
def test_config_json_can_name_only_registered_families_and_arguments(tmp_path, config, message):
    folder = tmp_path / "repo"
    folder.mkdir()
    safetensors.torch.save_file({"x": torch.zeros(1)}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RepoConfigError) as err:
        zoo.create(str(folder))
    for part in [f"{folder / 'config.json'}"] + message:
        assert part in str(err.value), part


def test_repo_with_only_pickle_weights_is_refused(tmp_path, offline, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called on a Hub or folder path")

    monkeypatch.setattr(torch, "load", no_unpickling)
    config = json.dumps({"format": "zoo", "family": "vit", "args": {"depth": 1}}).encode()
    add_to_cache(tmp_path / "cache", "someone/old-vit", {"config.json": config, "pytorch_model.bin": b"\x80\x04..."})
    with pytest.raises(UnsafeWeightsError) as err:
        zoo.create("hf-hub:someone/old-vit", cache_dir=tmp_path / "cache")
    for part in ("hf-hub:someone/old-vit has no model.safetensors, only pickled weights (pytorch_model.bin)",
                 "zoo does not unpickle", "zoo convert"):
        assert part in str(err.value), part
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_bytes(config)
    (folder / "model.pth").write_bytes(b"\x80\x04...")
    with pytest.raises(UnsafeWeightsError, match="only pickled weights \\(model.pth\\)"):
        zoo.create(str(folder))


def test_revision_and_reference_errors(tmp_path, offline):
    with pytest.raises(ValueError, match="conflicting revisions"):
        zoo.create("hf-hub:me/x@v1", revision="v2")
    with pytest.raises(ValueError, match="expected 'hf-hub:org/name'"):
        zoo.create("hf-hub:not-a-repo")
    with pytest.raises(ValueError, match="only apply with pretrained=True"):
        zoo.create("deit_s", revision="v1")
    with pytest.raises(WeightsNotFoundError, match="no such folder"):
        zoo.create("./does-not-exist")
    with pytest.raises(WeightsNotCachedError, match="me/x: config.json \\(revision v1\\)"):
        zoo.create("hf-hub:me/x@v1", cache_dir=tmp_path)


# --------------------------------------------------------------------------------------------- CLI
def test_cli_export_to_timm_format(tmp_path, offline, capsys):
    cache = tmp_path / "cache"
    ref = cache_timm_weights(cache, "deit_tiny_patch16_224")
    rc = main(["export", "deit_tiny_patch16_224", "--out", str(tmp_path / "out"), "--format", "timm",
               "--cache-dir", str(cache)])
    assert rc == 0 and str(tmp_path / "out") in capsys.readouterr().out
    exported = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_diff(exported(x), ref(x)) < 1e-6
    rc = main(["export", str(tmp_path / "out"), "--out", str(tmp_path / "zoo-out")])
    assert rc == 0 and json.loads((tmp_path / "zoo-out" / "config.json").read_text())["format"] == "zoo"


def test_swin_weights_load_into_another_window_with_resized_bias_tables(tmp_path):
    """A window-7 Swin checkpoint in a window-12 model at 384: every bias table is resized as timm's
    filter resizes it (13x13 -> 23x23 offsets per head), the rest loads strictly, and the model runs."""
    src = randomize_(zoo.create("swin_tiny_patch4_window7_224", depths=(2, 2, 2, 2), num_classes=5)).eval()
    path = tmp_path / "w7.safetensors"
    safetensors.torch.save_file(src.state_dict(), str(path))
    model = zoo.create("swin_tiny_patch4_window7_224", depths=(2, 2, 2, 2), num_classes=5, img_size=384,
                       window_size=12, checkpoint_path=str(path)).eval()
    notes = model.zoo_config["weights"]["adapted"]
    assert notes == ["resized 8 relative-position bias tables (geometric) for window 12x12: 169 -> 529 rows"]
    for name, table in model.named_parameters():
        if name.endswith("relative_position_bias_table"):
            old = src.state_dict()[name]
            expected = timm.layers.resize_rel_pos_bias_table(old, (12, 12), tuple(table.shape))
            assert max_diff(table, expected) < 1e-5, name
    assert torch.equal(model.state_dict()["head.fc.weight"], src.state_dict()["head.fc.weight"])
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 384, 384))).all()


def test_no_name_resolution_reads_the_cache_at_once(tmp_path, monkeypatch):
    """Without HF_HUB_OFFLINE, on a machine whose resolver cannot find the Hub (simulated: DNS is what this
    test cannot choose), zoo asks the cache only: a cached repo loads, a missing file is reported as not
    cached, and no request goes out (huggingface_hub would retry it for ~25 s)."""
    import socket

    import huggingface_hub
    from huggingface_hub import constants

    from zoo.weights import source

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    requests = []

    def no_request(*args, **kwargs):  # what huggingface_hub sends (and retries) its requests through
        requests.append(args)
        raise AssertionError("zoo sent a request to a Hub it cannot resolve")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.utils._http, "http_backoff", no_request)
    source.hub_resolves.cache_clear()
    try:
        config = json.dumps({"format": "zoo", "family": "vit", "args": {"depth": 1, "img_size": 32, "patch_size": 16,
                                                                          "embed_dim": 64, "num_heads": 2}}).encode()
        with pytest.raises(WeightsNotCachedError, match="cannot be reached"):
            add_to_cache(tmp_path / "cache", "someone/vit", {"config.json": config})
            zoo.create("hf-hub:someone/vit", cache_dir=tmp_path / "cache")
        assert requests == [] and not source.hub_resolves()
    finally:
        source.hub_resolves.cache_clear()
