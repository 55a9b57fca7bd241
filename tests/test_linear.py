"""zoo.layers.Linear: the oneDNN fast path equals F.linear, runs only where fast_paths allows it, and
steps aside whenever it must. Where this machine cannot run a kernel, the tests assert the fallback."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import zoo.layers.linear as linear_module
from conftest import max_diff, randomize_
from zoo.layers import Linear, Mlp
from zoo.layers.fast_paths import SlowPrecisionWarning, use_fast_path


@pytest.fixture
def calls(monkeypatch):
    """Count calls into the oneDNN op."""
    count = []
    op = linear_module._op

    def spy(*args):
        count.append(args[-3])  # the post-op: 'none' or 'gelu'
        return op(*args)

    monkeypatch.setattr(linear_module, "_op", spy if op is not None else None)
    return count


@pytest.mark.kernels
@pytest.mark.parametrize("mode", ["auto", "on", "off"])
def test_float32_inference_matches_f_linear_on_either_path(calls, cpu_isa, mode):
    features = cpu_isa(mode=mode)
    expected = {"off": False, "on": features.onednn, "auto": features.onednn and features.avx512}[mode]
    assert use_fast_path("linear_fp32") is expected
    layer = randomize_(Linear(96, 384))
    x = torch.randn(2, 7, 5, 96)
    with torch.no_grad():
        assert max_diff(layer(x), F.linear(x, layer.weight, layer.bias)) < 1e-5
        assert max_diff(layer(x, activation="gelu"), F.gelu(F.linear(x, layer.weight, layer.bias))) < 1e-5
    assert calls == (["none", "gelu"] if expected else [])
    bias_free = randomize_(Linear(96, 8, bias=False))
    with torch.inference_mode():
        assert max_diff(bias_free(x), x @ bias_free.weight.T) < 1e-5


@pytest.mark.kernels
@pytest.mark.filterwarnings("ignore::zoo.layers.fast_paths.SlowPrecisionWarning")
def test_float32_training_runs_forward_and_backward_on_onednn_where_enabled(calls, cpu_isa):
    features = cpu_isa(mode="on")  # oneDNN's float32 kernels run on any x86-64 CPU with oneDNN
    layer = randomize_(Linear(16, 4))
    x = torch.randn(3, 5, 16, requires_grad=True)
    g = torch.randn(3, 5, 4)
    layer(x, activation="gelu").backward(g)
    # forward, grad_input, grad_weight (GELU outside: it needs its input); none without oneDNN
    assert calls == (["none", "none", "none"] if features.onednn else [])
    ours = [x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]
    x.grad = layer.weight.grad = layer.bias.grad = None
    F.gelu(F.linear(x, layer.weight, layer.bias)).backward(g)
    for a, b in zip(ours, (x.grad, layer.weight.grad, layer.bias.grad)):
        assert max_diff(a, b) < 1e-5
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 training: PyTorch's F.linear
        layer(x).float().sum().backward()
    cpu_isa(mode="off")
    layer(x).sum().backward()
    with torch.no_grad():
        layer(x)
    assert calls == []
    with pytest.raises(ValueError, match="activation"):
        layer(x, activation="relu")


def test_the_bf16_weight_cache_follows_changes(monkeypatch):
    """The cache logic of the bf16 fast path, on any CPU: oneDNN's ops are replaced by F.linear-based
    stand-ins and the path is switched on (the real kernels: the next test)."""
    made, calls = [], []

    def fake_op(x, weight, bias, attr, scalars, algorithm):
        calls.append(attr)
        out = F.linear(x, weight, bias)
        return F.gelu(out) if attr == "gelu" else out

    def fake_reorder(weight, _):
        made.append(weight)
        return weight.clone()

    monkeypatch.setattr(linear_module, "_op", fake_op)
    monkeypatch.setattr(linear_module, "_reorder", fake_reorder)
    monkeypatch.setattr(linear_module, "use_fast_path", lambda name: name == "linear_bf16")
    layer = randomize_(Linear(32, 64))
    x = torch.randn(4, 32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowPrecisionWarning)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
            cached = next(iter(layer._cached_weights.values()))
            assert out.dtype == torch.bfloat16 and cached[0].dtype == torch.bfloat16
            layer(x, activation="gelu")
            assert next(iter(layer._cached_weights.values())) is cached and len(made) == 1  # built once
            layer.weight.mul_(-1)  # an optimizer step or load_state_dict changes the weight in place
            out = layer(x)
        assert len(made) == 2 and len(layer._cached_weights) == 1  # rebuilt, the old copy dropped
        assert max_diff(out, F.linear(x, layer.weight, layer.bias)) < 0.02
    assert calls == ["none", "gelu", "none"]
    layer.to(torch.float64)
    assert not layer._cached_weights
    layer.float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowPrecisionWarning)
        layer(x)
    assert layer._cached_weights
    layer.drop_cached_weights()
    assert not layer._cached_weights


@pytest.mark.kernels
@pytest.mark.filterwarnings("ignore::zoo.layers.fast_paths.SlowPrecisionWarning")
def test_bf16_autocast_on_onednn_where_it_can_run(calls, cpu_isa):
    features = cpu_isa(mode="on")  # the bf16 path wherever oneDNN can run bf16 here at all
    layer = randomize_(Linear(32, 64))
    x = torch.randn(4, 32)
    with torch.no_grad():
        reference = F.linear(x, layer.weight, layer.bias)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x, activation="gelu")
    assert out.dtype == torch.bfloat16 and max_diff(out, F.gelu(reference)) < 0.02
    if features.onednn_bf16:
        assert calls == ["gelu"] and len(layer._cached_weights) == 1
    else:  # the fallback: PyTorch's autocast F.linear, nothing cached
        assert calls == [] and not layer._cached_weights


@pytest.mark.kernels
def test_without_native_bf16_autocast_takes_pytorchs_path(calls, cpu_isa):
    cpu_isa("avx2")  # an AVX2 CPU: no AVX-512, no native bf16
    layer = randomize_(Linear(32, 64))
    x = torch.randn(4, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), \
            pytest.warns(SlowPrecisionWarning):
        out = layer(x)
        expected = F.linear(x, layer.weight, layer.bias)
    assert calls == [] and not layer._cached_weights and torch.equal(out, expected)


def test_mlp_fuses_gelu_and_matches_timms_mlp():
    import timm.layers

    fast = randomize_(Mlp(48, 192))
    plain = timm.layers.Mlp(48, 192)
    plain.load_state_dict(fast.state_dict(), strict=True)
    assert fast.fuse_gelu and isinstance(fast.fc1, Linear)
    x = torch.randn(2, 9, 48)
    with torch.no_grad():
        assert max_diff(fast(x), plain(x)) < 1e-5  # GELU inside fc1's call where oneDNN runs
    assert max_diff(fast(x), plain(x)) < 1e-5  # with autograd
    tanh = Mlp(48, 192, act_layer=torch.nn.Tanh)
    assert not tanh.fuse_gelu
