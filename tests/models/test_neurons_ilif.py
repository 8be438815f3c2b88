"""I-LIF (integer spikes, E-3DSNN / SpikeYOLO) and its binary virtual-timestep reading."""

import pytest
import spconv.pytorch as spconv
import torch
from torch import nn

import evpipe.models.spconv_compat  # noqa: F401  (patches spconv for CPU backward)
from evpipe.errors import ConfigError
from evpipe.models.neurons import ILIF, LIF, expand_spikes, multispike, spike_driven_forward

from .test_e3dsnn import one_thread  # noqa: F401  (autouse: spconv tests single-threaded)

U = torch.tensor([-1.0, 0.0, 0.49, 0.5, 1.5, 2.5, 3.5, 3.51, 4.0, 4.2, 10.0])


def test_rounding_half_up_is_e3dsnn_and_half_even_is_torch_round():
    assert multispike(U).tolist() == [0, 0, 0, 1, 2, 3, 4, 4, 4, 4, 4]
    assert multispike(U, rounding="half_even").tolist() == [0, 0, 0, 0, 2, 2, 4, 4, 4, 4, 4]
    x = torch.randn(1000) * 3
    assert torch.equal(multispike(x), torch.floor(torch.clamp(x, 0, 4) + 0.5))
    assert torch.equal(multispike(x, rounding="half_even"), torch.round(torch.clamp(x, 0, 4)))
    assert torch.equal(multispike(x, levels=8), torch.floor(torch.clamp(x, 0, 8) + 0.5))


@pytest.mark.parametrize("window, expect", [
    ("exclusive", [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]),   # 0 < U < D (E-3DSNN)
    ("inclusive", [0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),   # 0 <= U <= D (SpikeYOLO)
])
def test_straight_through_gradient_window(window, expect):
    u = U.clone().requires_grad_()
    s = ILIF(window=window)(u)
    (s * torch.arange(1.0, 12.0)).sum().backward()
    assert u.grad.tolist() == [e * w for e, w in zip(expect, range(1, 12))]


def test_stateless_ilif_is_elementwise_on_any_shape():
    x = torch.randn(7, 5, 3) * 3
    s = ILIF()(x)
    assert s.shape == x.shape and s.dtype == x.dtype
    assert torch.equal(s, multispike(x))
    assert torch.equal(ILIF(2, "half_even", "inclusive")(x),
                       multispike(x, 2, "half_even", "inclusive"))


def test_temporal_soft_reset_hand_sequence():
    # beta 0.25: U0 = 1.375 -> S 1; U1 = 0.25 * (1.375 - 1) + 0.4375 = 0.53125 -> 1;
    # U2 = 0.25 * (0.53125 - 1) + 0 < 0 -> 0; U3 = 0.25 * (-0.1171875) + 3.75 -> 4.
    x = torch.tensor([1.375, 0.4375, 0.0, 3.75]).view(1, 4, 1)
    assert ILIF(leak=0.25, soft_reset=True)(x).flatten().tolist() == [1, 1, 0, 4]
    # Hard reset: U1 = 0.4375 -> 0; U2 = 0.25 * 0.4375 -> 0; U3 = 0.109375 / 4 + 3.75 -> 4.
    assert ILIF(leak=0.25)(x).flatten().tolist() == [1, 0, 0, 4]


def spikeyolo_mem_update(x_time_first, decay=0.25):
    """BICLab/SpikeYOLO yolo_spikformer.py `mem_update` with `MultiSpike4`, [T, B, ...]."""
    out, mem_old, spike = [], None, None
    for i in range(x_time_first.shape[0]):
        mem = x_time_first[i] if i == 0 else (mem_old - spike.detach()) * decay + x_time_first[i]
        spike = multispike(mem, 4, "half_even", "inclusive")
        mem_old = mem
        out.append(spike)
    return torch.stack(out)


def test_temporal_matches_spikeyolo_forward_and_gradients():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 6, 4, 5, generator=g) * 2).requires_grad_()
    w = torch.randn(3, 6, 4, 5, generator=g)
    s = ILIF(rounding="half_even", window="inclusive", leak=0.25, soft_reset=True)(x)
    (s * w).sum().backward()
    grad, x.grad = x.grad.clone(), None
    ref = spikeyolo_mem_update(x.transpose(0, 1)).transpose(0, 1)
    (ref * w).sum().backward()
    assert torch.equal(s, ref)
    torch.testing.assert_close(grad, x.grad)
    assert grad[:, :-1].abs().sum() > 0


def test_lif_unchanged():
    x = torch.tensor([0.5, 0.75, 0.5, 1.0, 1.5, 0.0, 2.0]).view(1, 7, 1)
    assert LIF()(x).flatten().tolist() == [0, 0, 0, 1, 1, 0, 1]


@pytest.mark.parametrize("kwargs", [dict(levels=0), dict(levels=2.0), dict(rounding="up"),
                                    dict(window="open"), dict(leak=1.5),
                                    dict(soft_reset=True)])
def test_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        ILIF(**kwargs)


def test_temporal_needs_batch_and_time():
    with pytest.raises(ValueError):
        ILIF(leak=0.5)(torch.ones(3))


def test_expand_spikes_fire_first():
    s = torch.tensor([[0.0, 1.0], [4.0, 2.0]])
    b = expand_spikes(s, 4)
    assert b.shape == (4, 2, 2) and b.dtype == s.dtype
    assert b[:, 1, 1].tolist() == [1, 1, 0, 0] and b[:, 1, 0].tolist() == [1, 1, 1, 1]
    assert torch.equal(b.sum(0), s)
    assert torch.equal(expand_spikes(s.to(torch.uint8), 4).sum(0), s.to(torch.uint8))
    for bad in ([5.0], [-1.0], [1.5]):
        with pytest.raises(ValueError):
            expand_spikes(torch.tensor(bad), 4)


def dyadic_(*tensors, seed=0):
    """Weights k / 64, |k| <= 64: every product with a spike count and every partial sum
    is exact in float32, so any summation order gives the same bits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.randint(-64, 65, t.shape, generator=g).float() / 64)


def random_spikes(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return multispike(torch.randn(shape, generator=g) * 3)


def sparse_input(seed=2, channels=5):
    g = torch.Generator().manual_seed(seed)
    idx = torch.unique(torch.randint(0, 8, (150, 3), generator=g), dim=0).int()
    idx = torch.cat([torch.randint(0, 2, (len(idx), 1), generator=g).int(), idx], 1)
    return spconv.SparseConvTensor(random_spikes((len(idx), channels), seed), idx, [8, 8, 8], 2)


def layers_and_inputs():
    return [
        (nn.Linear(6, 7), random_spikes((10, 6))),
        (nn.Conv2d(3, 4, 3, padding=1, groups=1), random_spikes((2, 3, 6, 5))),
        (nn.Conv1d(4, 6, 3, stride=2, groups=2, bias=False), random_spikes((2, 4, 9))),
        (spconv.SubMConv3d(5, 3, 3, bias=False, indice_key="s"), sparse_input()),
        (spconv.SparseConv3d(5, 3, 2, stride=2, bias=False), sparse_input()),
        (spconv.SubMConv3d(5, 3, 3, bias=True), sparse_input()),
    ]


@pytest.mark.parametrize("case", range(6))
def test_binary_expansion_is_exact_with_dyadic_weights(case):
    layer, x = layers_and_inputs()[case]
    dyadic_(*layer.parameters())
    ref = layer(x)
    out = spike_driven_forward(layer, x, 4)
    if isinstance(ref, spconv.SparseConvTensor):
        assert torch.equal(out.indices, ref.indices)
        ref, out = ref.features, out.features
    assert torch.equal(out, ref)


@pytest.mark.parametrize("case", range(6))
def test_binary_expansion_with_float_weights_up_to_rounding(case):
    # General float32 weights: W * 3 is rounded once, W + W + W per pass and the GEMM
    # kernels sum channels in their own order, so bits can differ by float rounding.
    layer, x = layers_and_inputs()[case]
    ref = layer(x)
    out = spike_driven_forward(layer, x, 4)
    if isinstance(ref, spconv.SparseConvTensor):
        ref, out = ref.features, out.features
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_binary_expansion_rejects_other_layers():
    with pytest.raises(TypeError):
        spike_driven_forward(nn.ReLU(), torch.ones(2, 3), 4)
