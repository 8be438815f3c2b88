"""Activity / energy report: counts against hand-computed values and brute force."""

import itertools

import pytest
import spconv.pytorch as spconv
import torch
from torch import nn

import evpipe.models.spconv_compat  # noqa: F401  (patches spconv for CPU backward)
from evpipe.models.e3dsnn import E3DSNN
from evpipe.models.energy import activity_report, format_report, sparse_fan_out
from evpipe.models.neurons import ILIF, LIF, expand_spikes

from .test_e3dsnn import one_thread  # noqa: F401  (autouse: spconv tests single-threaded)


class SpikeThen(nn.Module):
    """ILIF on the input (sparse features or a tensor), then `layer`."""

    def __init__(self, layer, levels=4):
        super().__init__()
        self.spike = ILIF(levels)
        self.layer = layer

    def forward(self, x):
        if isinstance(x, spconv.SparseConvTensor):
            return self.layer(x.replace_feature(self.spike(x.features)))
        return self.layer(self.spike(x))


def three_voxels(feats):
    # (0,0,0) and (0,0,1) are neighbours, (0,0,3) is alone: SubM 3x3x3 pairs 2 + 2 + 1 = 5.
    idx = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 3]], dtype=torch.int32)
    return spconv.SparseConvTensor(torch.tensor(feats), idx, [2, 2, 4], 1)


def test_subm_conv_on_three_voxels_spike_driven():
    model = SpikeThen(spconv.SubMConv3d(2, 3, 3, bias=False, indice_key="k"))
    report = activity_report(model, three_voxels([[1.0, 2.0], [0.0, 3.0], [4.0, 0.0]]))
    neuron, conv = report.rows
    assert (neuron.name, neuron.kind, neuron.elements, neuron.spikes) == ("spike", "neuron", 6, 10)
    assert neuron.firing_rate == pytest.approx(10 / (6 * 4))
    assert (conv.name, conv.type, conv.kind) == ("layer", "SubMConv3d", "AC")
    # fan-out per voxel 2, 2, 1; ACs = C_out * sum(row spikes * fan-out) = 3 * (3*2 + 3*2 + 4*1).
    assert conv.connections == 5 * 2 * 3 and conv.acs == 48 and conv.macs == 0
    assert conv.firing_rate == pytest.approx(10 / 24)
    assert conv.energy_pj == pytest.approx(48 * 0.9)
    assert report.totals["energy_pj"] == pytest.approx(43.2)
    assert report.totals["ann_energy_pj"] == pytest.approx(30 * 4.6)


def test_subm_conv_on_real_features_costs_macs():
    conv = spconv.SubMConv3d(2, 3, 3, bias=False)  # no indice_key: pairs recomputed
    report = activity_report(conv, three_voxels([[0.5, 2.0], [0.0, 3.0], [4.0, -1.0]]),
                             e_mac_pj=2.0)
    (row,) = report.rows
    assert (row.kind, row.macs, row.acs, row.firing_rate) == ("MAC", 30, 0, None)
    assert row.energy_pj == 60.0


def test_linear_fed_by_known_spikes():
    spikes = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    report = activity_report(SpikeThen(nn.Linear(3, 2)), spikes)
    lin = report.rows[1]
    assert (lin.kind, lin.spikes, lin.connections, lin.acs) == ("AC", 4, 12, 8)
    # The same ACs as the D binary virtual steps, each costing 1 AC per spike and target.
    binary = expand_spikes(spikes, 4)
    assert sum(activity_report(nn.Linear(3, 2), b).rows[0].acs for b in binary) == 8
    real = activity_report(nn.Linear(3, 2), spikes + 0.5).rows[0]
    assert (real.kind, real.macs, real.acs) == ("MAC", 12, 0)


def test_conv2d_counts_taps_inside_the_image():
    # 2x2 image, 3x3 kernel, padding 1: every pixel reaches all 4 outputs of both channels.
    x = torch.tensor([[1.0, 0.0], [2.0, 1.0]]).view(1, 1, 2, 2)
    row = activity_report(nn.Conv2d(1, 2, 3, padding=1), x).rows[0]
    assert (row.kind, row.connections, row.acs) == ("AC", 32, 32)
    grouped = activity_report(nn.Conv2d(4, 6, 1, groups=2), torch.ones(1, 4, 3, 3)).rows[0]
    assert grouped.connections == 9 * 4 * 3 and grouped.acs == grouped.connections


def random_voxels(seed, n=200, size=9):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, size, (n, 4), generator=g) % torch.tensor([2, size, size, size])
    idx = torch.unique(idx, dim=0).int()
    return spconv.SparseConvTensor(torch.ones(len(idx), 1), idx, [size] * 3, 2)


def test_fan_out_matches_brute_force():
    x = random_voxels(0)
    idx = x.indices.long()
    # SubM 3x3x3: active voxels of the same sample within Chebyshev distance 1, itself included.
    subm = spconv.SubMConv3d(1, 1, 3, bias=False, indice_key="a")
    d = (idx[:, None, 1:] - idx[None, :, 1:]).abs().amax(-1)
    expect = ((d <= 1) & (idx[:, None, 0] == idx[None, :, 0])).sum(1)
    assert torch.equal(sparse_fan_out(subm, x, subm(x)), expect)
    # k = 3, stride 2, padding 1: per axis, taps k with (p + 1 - k) even and the output inside.
    down = spconv.SparseConv3d(1, 1, 3, stride=2, padding=1, bias=False, indice_key="d")
    y = down(x)
    out_size = y.spatial_shape[0]
    per_axis = lambda p: sum((p + 1 - k) % 2 == 0 and 0 <= (p + 1 - k) // 2 < out_size
                             for k in range(3))
    expect = torch.tensor([per_axis(z) * per_axis(yy) * per_axis(xx)
                           for _, z, yy, xx in idx.tolist()])
    assert torch.equal(sparse_fan_out(down, x, y), expect)
    # k = 2, stride 2 and its inverse: one parent per voxel (none on the odd last plane of
    # the 9-grid, which the 4-wide output does not cover); a parent feeds its children.
    down2 = spconv.SparseConv3d(1, 1, 2, stride=2, bias=False, indice_key="p")
    y2 = down2(x)
    assert torch.equal(sparse_fan_out(down2, x, y2), (idx[:, 1:] < 8).all(1).long())
    inv = spconv.SparseInverseConv3d(1, 1, 2, indice_key="p", bias=False)
    parents = {tuple(r) for r in y2.indices.tolist()}
    children = [sum(tuple([b, z // 2, yy // 2, xx // 2]) == p for b, z, yy, xx in idx.tolist())
                for p in map(tuple, y2.indices.tolist())]
    assert len(parents) == len(children)
    assert sparse_fan_out(inv, y2, inv(y2)).tolist() == children


def test_e3dsnn_report_kinds_and_totals():
    torch.manual_seed(0)
    model = E3DSNN(4, 3, embed_channels=8, enc_channels=(8, 16), enc_depth=(1, 1))
    g = torch.Generator().manual_seed(0)
    idx = torch.unique(torch.randint(0, 12, (300, 3), generator=g), dim=0)
    idx = torch.cat([torch.zeros(len(idx), 1, dtype=torch.int64), idx], 1).int()
    x = spconv.SparseConvTensor(torch.randn(len(idx), 4, generator=g), idx, [12] * 3, 1)
    for m in model.modules():  # BN running statistics := this batch's, else eval is silent
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = 1.0
    with torch.no_grad():
        model(x)
    report = activity_report(model, x)
    assert model.training  # mode restored
    kinds = {r.name: r.kind for r in report.rows}
    assert kinds["stem.0.conv"] == "MAC" and kinds["head"] == "MAC"
    assert sum(k == "neuron" for k in kinds.values()) == 2 + 2 * 4
    assert all(k == "AC" for n, k in kinds.items() if n.endswith("conv") and n != "stem.0.conv")
    stem = next(r for r in report.rows if r.name == "stem.0.conv")
    pairs = model.stem[0].conv(x).indice_dict["stem"]
    n_pairs = len(idx) + 2 * int(pairs.indice_pair_num[:13].sum())
    assert stem.macs == n_pairs * 4 * 8
    head = report.rows[-1]
    assert head.name == "head" and head.macs == head.elements * 3  # 16 in, 3 out, 1 pair
    t = report.totals
    assert t["energy_pj"] == pytest.approx(t["macs"] * 4.6 + t["acs"] * 0.9)
    assert t["connections"] == sum(r.connections for r in report.rows)
    assert 0 < t["firing_rate"] < 1
    text = format_report(report)
    assert text.splitlines()[0].split()[:3] == ["layer", "type", "rate"]
    assert "stages.1.blocks.0.conv3.conv" in text and "mJ" in text


def test_lif_model_rows():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.lif = LIF()
            self.fc = nn.Linear(3 * 4 * 4, 5)

        def forward(self, x):  # [B, T, 2, 4, 4]
            b, t = x.shape[:2]
            u = self.conv(x.flatten(0, 1)).view(b, t, 3, 4, 4)
            return self.fc(self.lif(u).flatten(2))

    x = torch.rand(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 4
    report = activity_report(Tiny(), x)
    conv, lif, fc = report.rows
    assert (conv.kind, lif.kind, fc.kind) == ("MAC", "neuron", "AC")
    assert lif.levels == 1 and lif.elements == 2 * 3 * 48
    assert fc.spikes == lif.spikes and fc.acs == lif.spikes * 5
    assert fc.firing_rate == pytest.approx(lif.firing_rate)


@pytest.mark.parametrize("e_mac, e_ac", list(itertools.product([4.6, 3.1], [0.9, 0.1])))
def test_energy_constants_are_parameters(e_mac, e_ac):
    model = nn.Sequential(nn.Linear(3, 4), ILIF(), nn.Linear(4, 2))
    report = activity_report(model, torch.randn(5, 3), e_mac_pj=e_mac, e_ac_pj=e_ac)
    first, _, last = report.rows
    assert first.energy_pj == pytest.approx(first.macs * e_mac)
    assert last.energy_pj == pytest.approx(last.acs * e_ac)


def test_spike_driven_by_provenance_or_by_values():
    # A neuron's all-zero output is still spikes (0 ACs); an all-zero real membrane costs
    # MACs; pooled spikes (a copy, not the neuron's tensor) are recognised by their values.
    silent = nn.Sequential(ILIF(), nn.Linear(3, 2))
    assert activity_report(silent, -torch.ones(4, 3)).rows[1].kind == "AC"
    zero = nn.Linear(3, 2)
    row = activity_report(zero, torch.zeros(4, 3)).rows[0]
    assert (row.kind, row.macs) == ("MAC", 24)
    pooled = nn.Sequential(ILIF(2), nn.MaxPool1d(2), nn.Linear(2, 3))
    x = torch.tensor([[[0.0, 2.0, 1.0, 1.0]]])  # [1, 1, 4] -> pooled spikes [[[2, 1]]]
    row = activity_report(pooled, x).rows[1]
    assert (row.kind, row.spikes, row.acs, row.levels) == ("AC", 3, 9, 2)
