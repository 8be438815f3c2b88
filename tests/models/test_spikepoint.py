"""SpikePoint (Ren et al., ICLR 2024; evpipe's reconstruction, specs/algorithms.md §3)."""

import pytest
import torch
from torch import nn

from evpipe.errors import ConfigError
from evpipe.models import SpikePoint

SMALL = {"local_channels": (8, 12), "local_blocks": (1, 1), "global_channels": (16,),
         "global_blocks": (1,)}


def groups(seed, b=3, m=5, k=4, c=6):
    return torch.rand(b, m, k, c, generator=torch.Generator().manual_seed(seed))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def calibrate(model, x):
    """BN running statistics := this batch's (else eval mode at initialisation is silent)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = 1.0
    with torch.no_grad():
        model(x, generator=gen(99))
    return model.eval()


def expected_params(c_in, classes, local_channels, local_blocks, global_channels,
                    global_blocks):
    """By hand: bias-free Linear in*out, BN 2*C; a projection where the width changes,
    two Linear + BN per residual block; classifier Linear with bias."""
    n = c_in * local_channels[0] + 2 * local_channels[0]
    a = local_channels[0]
    for stage_channels, stage_blocks in ((local_channels, local_blocks),
                                         (global_channels, global_blocks)):
        for c, depth in zip(stage_channels, stage_blocks):
            if c != a:
                n += a * c + 2 * c
            n += depth * 2 * (c * c + 2 * c)
            a = c
        n += 2 * a  # BN after the max pooling
    return n + a * classes + classes


@pytest.mark.parametrize("kw", [
    {},
    SMALL,
    {"in_channels": 9, "num_classes": 4, "local_channels": (16, 16, 24),
     "local_blocks": (0, 2, 1), "global_channels": (24, 40), "global_blocks": (0, 3)},
])
def test_parameter_count_matches_hand_count(kw):
    model = SpikePoint(**kw)
    args = {"in_channels": 6, "num_classes": 10, "local_channels": (32, 64),
            "local_blocks": (1, 1), "global_channels": (128, 256), "global_blocks": (1, 1)}
    n = expected_params(*(args | kw).values())
    assert sum(p.numel() for p in model.parameters()) == n
    if not kw:
        assert n == 223_370


@pytest.mark.parametrize("m, k", [(5, 4), (1, 1), (7, 2)])
def test_shapes_and_default_t(m, k):
    torch.manual_seed(0)
    model = SpikePoint(**SMALL)
    assert model.T == 16
    seen = {}
    model.head_lif.register_forward_hook(lambda mod, a, out: seen.update(shape=out.shape))
    logits = model(groups(0, m=m, k=k), generator=gen(0))
    assert logits.shape == (3, 10) and logits.dtype == torch.float32
    assert seen["shape"] == (3, 16, 16)  # [B, T, global_channels[-1]]
    assert model.encode(groups(0, m=m, k=k)).shape == (3, 16, m, k, 6)


def test_sizes_are_honoured():
    torch.manual_seed(0)
    model = SpikePoint(in_channels=9, num_classes=4, T=3, local_channels=(8, 20),
                       local_blocks=(2, 0), global_channels=(24,), global_blocks=(1,))
    widths = {}
    for name in ("embed", "local", "glob"):
        getattr(model, name).register_forward_hook(
            lambda mod, a, out, name=name: widths.update({name: tuple(out.shape)}))
    assert model(groups(1, m=6, k=5, c=9), generator=gen(1)).shape == (3, 4)
    assert widths == {"embed": (3, 3, 6, 5, 8), "local": (3, 3, 6, 5, 20),
                      "glob": (3, 3, 6, 24)}
    assert len(model.local) == 3 and len(model.glob) == 2  # 2 blocks + projection; proj + 1


def test_bad_inputs_and_configs_raise():
    model = SpikePoint(**SMALL)
    for bad in (groups(0)[0], groups(0, c=5), groups(0, m=0), groups(0, k=0),
                groups(0).unsqueeze(0)):
        with pytest.raises(ValueError, match=r"\[B, M, K, 6\]"):
            model(bad)
    for kw in ({"T": 0}, {"num_classes": 0}, {"in_channels": 0}, {"coding": "poisson"},
               {"eval_coding": "rate"}, {"dropout": 1.0}, {"local_channels": ()},
               {"local_channels": (8, 0)}, {"global_blocks": (1,)},
               {"local_blocks": (1, -1)}):
        with pytest.raises(ConfigError):
            SpikePoint(**kw)


def test_same_generator_seed_same_output():
    torch.manual_seed(3)
    model = SpikePoint(**SMALL)
    x = groups(3)
    a, b = model(x, generator=gen(5)), model(x, generator=gen(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(model.encode(x, gen(5)), model.encode(x, gen(6)))
    # Without a generator the global RNG is used: torch.manual_seed repeats the run.
    torch.manual_seed(8)
    c = model(x)
    torch.manual_seed(8)
    torch.testing.assert_close(model(x), c, rtol=0, atol=0)
    calibrate(model, x)
    torch.testing.assert_close(model(x, generator=gen(5)), model(x, generator=gen(5)),
                               rtol=0, atol=0)


def test_gradients_reach_every_parameter():
    torch.manual_seed(4)
    model = SpikePoint(**SMALL, T=4)
    x = groups(4).requires_grad_()
    loss = nn.functional.cross_entropy(model(x, generator=gen(4)), torch.tensor([0, 3, 9]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    assert x.grad is None  # Bernoulli sampling has no gradient w.r.t. p


@pytest.mark.parametrize("kw", [{"straight_through": True}, {"coding": "expected"}])
def test_gradients_reach_the_input(kw):
    torch.manual_seed(5)
    model = SpikePoint(**SMALL, T=4, **kw)
    x = groups(5).requires_grad_()
    model(x, generator=gen(5)).sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)


def test_bernoulli_coding_rates():
    model = SpikePoint(T=4000)
    p = torch.tensor([-0.5, 0.0, 0.1, 0.5, 0.9, 1.0, 1.5]).view(1, 1, 7, 1).expand(1, 1, 7, 6)
    s = model.encode(p, gen(0))
    assert s.shape == (1, 4000, 1, 7, 6) and s.dtype == torch.float32
    assert set(s.unique().tolist()) == {0.0, 1.0}
    rate = s.mean(dim=(0, 1, 2, 4))
    # Clamped to [0, 1]; 5 sigma of the rate estimate is 5 * sqrt(0.25 / 24000) ~ 0.016.
    assert rate[[0, 1]].tolist() == [0.0, 0.0] and rate[[5, 6]].tolist() == [1.0, 1.0]
    torch.testing.assert_close(rate[2:5], torch.tensor([0.1, 0.5, 0.9]), rtol=0, atol=0.016)


def test_expected_coding_and_eval_coding():
    x = groups(6) * 1.4 - 0.2
    expected = SpikePoint(coding="expected", T=5).encode(x)
    assert expected.shape == (3, 5, 5, 4, 6)
    torch.testing.assert_close(expected, x.clamp(0, 1).unsqueeze(1).expand_as(expected))
    model = SpikePoint(T=5, eval_coding="expected")
    assert set(model.encode(x, gen(1)).unique().tolist()) == {0.0, 1.0}  # training
    torch.testing.assert_close(model.eval().encode(x, gen(1)), expected)
    assert SpikePoint(eval_coding=None).eval_coding == "bernoulli"


def test_straight_through_gradient_is_t_inside_and_zero_outside():
    model = SpikePoint(T=7, straight_through=True)
    x = torch.tensor([-0.2, 0.3, 0.7, 1.2]).view(1, 1, 4, 1).expand(1, 1, 4, 6).clone()
    x.requires_grad_()
    s = model.encode(x, gen(2))
    assert set(s.detach().unique().tolist()) <= {0.0, 1.0}
    s.sum().backward()
    assert x.grad[0, 0, :, 0].tolist() == [0.0, 7.0, 7.0, 0.0]


def test_mean_first_layer_input_matches_expected_coding():
    # The embedding is linear: averaged over T, Bernoulli spikes give the expected coding's
    # pre-BN activation (the first membrane input equals its expectation).
    torch.manual_seed(7)
    x = groups(7, b=1, m=2, k=3)
    model = SpikePoint(T=3000)
    fc = model.embed[0]
    sampled = fc(model.encode(x, gen(7))).mean(dim=1)
    torch.testing.assert_close(sampled, fc(x), rtol=0, atol=0.05)


def test_invariant_to_group_and_neighbour_order():
    # Max pooling over K and M: permuting neighbours within groups and the groups
    # themselves leaves the logits unchanged (expected coding, eval mode).
    torch.manual_seed(8)
    x = groups(8, b=4, m=6, k=5)
    model = calibrate(SpikePoint(**SMALL, T=4, coding="expected"), x)
    logits = model(x)
    assert logits.std(dim=0).min() > 0  # not a silent network
    g = gen(8)
    perm = x[:, torch.randperm(6, generator=g)][:, :, torch.randperm(5, generator=g)]
    torch.testing.assert_close(model(perm), logits)
