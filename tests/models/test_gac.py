"""GAC (bollossom/GAC, CODE/CIFAR/models) and the LIF neuron it uses."""

import pytest
import torch
import torch.nn.functional as F

from evpipe.errors import ConfigError
from evpipe.models.gac import GAC
from evpipe.models.neurons import LIF, zif_spike


def frames(seed, b=2, t=6, c=3, h=8, w=10):
    return torch.rand(b, t, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2


def test_lif_matches_hand_computed_sequence():
    # tau 0.5, V_th 1, hard reset; m: 0.5, 1.0 (no spike: strict >), 1.0, 1.5 (spike, reset),
    # 1.5 (spike), 0, 2.0 (spike).
    x = torch.tensor([0.5, 0.75, 0.5, 1.0, 1.5, 0.0, 2.0]).view(1, 7, 1)
    s = LIF()(x)
    assert s.dtype == x.dtype and s.shape == x.shape
    assert s.flatten().tolist() == [0, 0, 0, 1, 1, 0, 1]


def test_lif_runs_per_batch_element_along_axis_1():
    x = torch.tensor([[0.6, 0.6, 0.6], [2.0, 0.0, 2.0]]).view(2, 3, 1, 1)
    # Row 0: m = 0.6, 0.9, 1.05 -> spike at t = 2; row 1: spikes at t = 0 and 2.
    assert LIF()(x).flatten(1).tolist() == [[0, 0, 1], [1, 0, 1]]


@pytest.mark.parametrize("gamma, expect", [(1.0, [0.0, 0.5, 1.0, 0.5, 0.0]),
                                           (0.5, [0.0, 0.0, 2.0, 0.0, 0.0])])
def test_zif_triangle_surrogate(gamma, expect):
    # One step: ds/dx = (1/gamma^2) max(0, gamma - |x - V_th|) at x = 0, .5, 1, 1.5, 2.5.
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.5], requires_grad=True)
    LIF(gamma=gamma)(x.view(5, 1)).sum().backward()
    assert x.grad.tolist() == expect
    y = torch.tensor([-0.25, 0.0, 0.25])
    assert zif_spike(y).tolist() == [0.0, 0.0, 1.0]


def test_lif_rejects_bad_parameters():
    for kw in ({"tau": 1.5}, {"v_threshold": 0.0}, {"gamma": -1.0}):
        with pytest.raises(ConfigError):
            LIF(**kw)


def test_output_shape_and_range():
    torch.manual_seed(0)
    gac = GAC(3, channels=16, T=6)
    out, gate = gac(frames(1), return_gate=True)
    assert out.shape == gate.shape == (2, 6, 16, 8, 10)
    assert out.dtype == torch.float32
    assert bool((gate > 0).all()) and bool((gate < 1).all())
    assert bool((out >= 0).all()) and bool((out < 1).all())
    spikes = out > 0
    assert 0 < spikes.float().mean() < 1
    # O is the gate where the LIF spikes and 0 elsewhere.
    torch.testing.assert_close(out[spikes], gate[spikes])


def reference_forward(gac: GAC, x):
    """The GAC definition written out with functional ops on the module's weights."""
    b, t = x.shape[:2]
    u = gac.bn(F.conv2d(x.flatten(0, 1), gac.conv.weight, padding=1)).view(b, t, -1, *x.shape[3:])
    m = torch.zeros_like(u[:, 0])
    s = []
    for i in range(t):
        m = 0.5 * m + u[:, i]
        s.append((m > 1.0).float())
        m = m * (1 - s[-1])
    s = torch.stack(s, 1)
    w0 = gac.ta.mlp[0].weight.flatten(1)   # [T/2, T]
    w1 = gac.ta.mlp[2].weight.flatten(1)   # [T, T/2]
    ta = sum(F.relu(p @ w0.T) @ w1.T for p in (u.mean((2, 3, 4)), u.amax((2, 3, 4))))
    k0, k1 = gac.sca.conv0.weight, gac.sca.conv1.weight
    sca = F.conv2d(F.relu(F.conv2d(u.flatten(0, 1), k0, padding="same")), k1, padding="same")
    gate = torch.sigmoid(ta.view(b, t, 1, 1, 1) * sca.view(u.shape))
    return gate * s, gate


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_matches_written_out_definition():
    torch.manual_seed(3)
    gac = GAC(2, channels=8, T=4).eval()
    x = frames(4, b=3, t=4, c=2, h=7, w=9)
    with torch.no_grad():
        out, gate = gac(x, return_gate=True)
        ref_out, ref_gate = reference_forward(gac, x)
    torch.testing.assert_close(gate, ref_gate)
    torch.testing.assert_close(out, ref_out)


def test_gradients_reach_input_through_the_surrogate():
    torch.manual_seed(0)
    gac = GAC(3, channels=8, T=6)
    x = frames(2).requires_grad_()
    gac(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gac.parameters())
    # The spike path alone: S = LIF(U) depends on x only through the surrogate gradient.
    captured = []
    gac.lif.register_forward_hook(lambda mod, inp, out: captured.append(out))
    x2 = frames(2).requires_grad_()
    gac(x2)
    (grad,) = torch.autograd.grad(captured[0].sum(), x2)
    assert grad.abs().sum() > 0


def test_parameter_count_equals_cifar_reference():
    # The encoding part of bollossom/GAC CODE/CIFAR/models/MS_ResNet.py msresnet18(T=6):
    # conv1 = Conv2d(3, 64, 3, padding=1, bias=False)                  -> 3*64*3*3 = 1728
    conv = 3 * 64 * 3 * 3
    # bn1 = BatchNorm2d(64): weight + bias (running mean/var are buffers) -> 2*64 = 128
    bn = 2 * 64
    # GAU.py TA(T=6, ratio=2): Conv3d(6, 3, 1) + Conv3d(3, 6, 1), no bias -> 18 + 18 = 36
    ta = 6 * 3 + 3 * 6
    # GAU.py SCA(in_planes=64, kerenel_size=4): two Conv2d(64, 64, 4), no bias
    #                                                                   -> 2*64*64*16 = 131072
    sca = 2 * 64 * 64 * 4 * 4
    assert conv + bn + ta + sca == 132_964
    gac = GAC(in_channels=3, channels=64, T=6, ratio=2, kernel_size=4)
    assert sum(p.numel() for p in gac.parameters()) == 132_964
    assert sum(p.numel() for p in gac.ta.parameters()) == ta
    assert sum(p.numel() for p in gac.sca.parameters()) == sca


def test_deterministic_under_manual_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        gac = GAC(2, channels=8, T=4)
        outs.append((gac(frames(5, t=4, c=2)), gac.state_dict()))
    assert torch.equal(outs[0][0], outs[1][0])
    for k, v in outs[0][1].items():
        assert torch.equal(v, outs[1][1][k])


def test_event_frames_and_odd_sizes():
    # Per-bin event frames [B, T, 2, H, W], odd H and W, odd and even k: "same" keeps H, W.
    torch.manual_seed(1)
    x = torch.poisson(torch.full((1, 5, 2, 11, 13), 0.7))
    for k in (3, 4, 5):
        assert GAC(2, channels=4, T=5, kernel_size=k)(x).shape == (1, 5, 4, 11, 13)


def test_bad_configuration_and_input():
    with pytest.raises(ConfigError):
        GAC(3, T=1, ratio=2)
    with pytest.raises(ConfigError):
        GAC(0)
    gac = GAC(3, channels=4, T=6)
    with pytest.raises(ValueError, match=r"\[B, 6, 3, H, W\]"):
        gac(torch.zeros(2, 4, 3, 8, 8))
