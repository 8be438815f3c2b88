"""GACResNet: GAC encoding + MS-ResNet stages (bollossom/GAC, CODE/CIFAR/models/MS_ResNet.py)."""

import pytest
import torch

from evpipe.errors import ConfigError
from evpipe.models import GACResNet, activity_report, format_report

SMALL = {"channels": (8, 16), "blocks": (1, 1)}


def frames(seed, b=2, t=4, c=2, h=12, w=10):
    """Event-count-like float frames: non-negative integers 0..3."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (b, t, c, h, w), generator=g).float()


def expected_params(c_in, classes, T, channels, blocks, k=4, r=2, c_gac=None):
    """By hand from the layer definitions: conv weights k*k*in*out (no bias), BN 2*C,
    TA two 1x1x1 convs T -> T//r -> T, SCA two kxk C -> C convs, FC with bias."""
    c_gac = channels[0] if c_gac is None else c_gac
    n = 9 * c_in * c_gac + 2 * c_gac + 2 * T * (T // r) + 2 * k * k * c_gac * c_gac
    n += 9 * c_gac * channels[0] + 2 * channels[0]  # embedding conv + BN
    a = channels[0]
    for i, (c, depth) in enumerate(zip(channels, blocks)):
        for j in range(depth):
            stride = 2 if i > 0 and j == 0 else 1
            n += 9 * a * c + 9 * c * c + 4 * c
            if stride != 1 or a != c:
                n += a * c + 2 * c
            a = c
    return n + channels[-1] * classes + classes


@pytest.mark.parametrize("kw", [
    {},
    {"T": 6, "channels": (8, 16, 24, 32), "blocks": (2, 1, 3, 1), "gac_kernel": 3,
     "gac_ratio": 3},
    {"channels": (16,), "blocks": (2,), "gac_channels": 12},
])
def test_parameter_count_matches_hand_count(kw):
    model = GACResNet(2, 7, **kw)
    args = {"T": 4, "channels": (32, 64, 128), "blocks": (1, 1, 1), "gac_kernel": 4,
            "gac_ratio": 2, "gac_channels": None} | kw
    n = expected_params(2, 7, args["T"], args["channels"], args["blocks"],
                        args["gac_kernel"], args["gac_ratio"], args["gac_channels"])
    assert sum(p.numel() for p in model.parameters()) == n


def test_default_size():
    assert sum(p.numel() for p in GACResNet(2, 10).parameters()) == 350_426


@pytest.mark.parametrize("h, w", [(12, 10), (9, 15), (1, 1)])
def test_shapes(h, w):
    torch.manual_seed(0)
    model = GACResNet(2, 5, **SMALL)
    seen = {}
    model.stages.register_forward_hook(lambda m, a, out: seen.update(shape=out.shape))
    logits = model(frames(0, h=h, w=w))
    assert logits.shape == (2, 5) and logits.dtype == torch.float32
    # One stride-2 stage: H, W -> ceil(H / 2), ceil(W / 2).
    assert seen["shape"] == (2, 4, 16, -(-h // 2), -(-w // 2))


def test_logits_are_mean_over_t_of_per_step_logits():
    torch.manual_seed(1)
    model = GACResNet(2, 3, **SMALL)  # train mode: BN on batch statistics, layers fire
    steps = {}
    model.fc.register_forward_hook(lambda m, a, out: steps.update(out=out))
    logits = model(frames(1))
    per_step = steps["out"].view(2, 4, 3)
    assert not torch.allclose(per_step[:, 0], per_step[:, -1])
    torch.testing.assert_close(logits, per_step.mean(dim=1))


def test_gradients_reach_input_and_every_parameter():
    torch.manual_seed(2)
    model = GACResNet(2, 3, **SMALL)
    x = frames(2).requires_grad_()
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2])).backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_shape_and_config_errors():
    model = GACResNet(2, 3, T=4, **SMALL)
    with pytest.raises(ConfigError, match=r"T=4 .*got frames .*\(2, 6, 2, 12, 10\)"):
        model(frames(0, t=6))
    with pytest.raises(ConfigError, match="2 channels"):
        model(frames(0, c=1))
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        model(frames(0)[0])
    with pytest.raises(ConfigError):
        GACResNet(2, 3, channels=(8, 16), blocks=(1,))
    with pytest.raises(ConfigError):
        GACResNet(2, 3, channels=(8, 16), blocks=(1, 0))
    with pytest.raises(ConfigError):
        GACResNet(2, 0)
    with pytest.raises(ConfigError):
        GACResNet(2, 3, T=1, gac_ratio=2)


def test_deterministic():
    x = frames(3)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = GACResNet(2, 4, **SMALL)
        outs.append(model(x))
        model.eval()
        outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[2], rtol=0, atol=0)
    torch.testing.assert_close(outs[1], outs[3], rtol=0, atol=0)
    torch.testing.assert_close(model(x), outs[3], rtol=0, atol=0)


def test_activity_report():
    torch.manual_seed(4)
    model = GACResNet(2, 3, **SMALL)
    x = frames(4, b=1, h=8, w=8)
    for m in model.modules():  # BN running statistics := this batch's, else eval is silent
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model(x)
    report = activity_report(model, x)
    rows = {r.name: r for r in report.rows}
    neurons = [n for n, m in model.named_modules() if m.__class__.__name__ == "LIF"]
    assert {n for n, r in rows.items() if r.kind == "neuron"} == set(neurons)
    # Count frames are integer spikes into the first conv; SCA reads U, the embedding
    # gated spikes, the head pooled rates: MACs. Every stage conv reads LIF spikes: ACs.
    assert rows["gac.conv"].kind == "AC"
    assert rows["gac.sca.conv0"].kind == rows["embed.0"].kind == rows["fc"].kind == "MAC"
    stage_convs = [n for n in rows if n.startswith("stages.") and n.endswith(".conv")]
    assert len(stage_convs) == 5 and all(rows[n].kind == "AC" for n in stage_convs)
    # gac.conv: 3x3, pad 1 on 8x8 -> 8*8*9 - 4*8*3 + 4 = 484 in-bounds taps per map.
    assert rows["gac.conv"].connections == 4 * 2 * 8 * 484
    assert rows["fc"].macs == 4 * 16 * 3
    assert 0 < report.totals["firing_rate"] < 1
    assert report.totals["energy_pj"] < report.totals["ann_energy_pj"]
    assert "stages.1.shortcut.conv" in format_report(report)
    assert model.training
