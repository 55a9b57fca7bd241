"""zoo.layers.Linear: the oneDNN fast path equals F.linear, runs only where fast_paths allows it, and
steps aside whenever it must. Where this machine cannot run a kernel, the tests assert the fallback."""
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


@pytest.mark.kernels
def test_autocast_uses_a_cached_bf16_weight_that_follows_changes(calls, cpu_isa):
    features = cpu_isa(mode="on")  # the bf16 path wherever oneDNN can run bf16 here at all
    layer = randomize_(Linear(32, 64))
    x = torch.randn(4, 32)
    with torch.no_grad():
        reference = F.linear(x, layer.weight, layer.bias)  # float32, outside autocast (whose own cast
        with torch.autocast("cpu", dtype=torch.bfloat16):  # cache would not see the in-place edit)
            out = layer(x)
            assert out.dtype == torch.bfloat16 and max_diff(out, reference) < 0.02
            if not features.onednn_bf16:  # the fallback: PyTorch's autocast F.linear, nothing cached
                assert not layer._cached_weights and calls == []
                return
            cached = next(iter(layer._cached_weights.values()))
            layer(x)
            assert next(iter(layer._cached_weights.values())) is cached  # built once
            layer.weight.mul_(-1)  # an optimizer step or load_state_dict changes the weight in place
            out = layer(x)
        assert max_diff(out, F.linear(x, layer.weight, layer.bias)) < 0.02
    assert len(layer._cached_weights) == 1 and len(calls) == 3
    layer.to(torch.float64)
    assert not layer._cached_weights
    layer.float()
    layer.drop_cached_weights()


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
