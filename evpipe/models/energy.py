"""Activity and energy report for evpipe spiking models.

Forward hooks record, for one forward pass:
- neuron modules (`LIF`, `ILIF`, or any `neuron_types`): output elements and spike count
  (sum of S); firing rate = spikes / (elements x D), the mean spike per neuron and virtual
  timestep (D = the module's `levels`, 1 for binary neurons; specs/algorithms.md §2.3);
- synaptic layers (nn.Linear, nn.Conv1d/2d/3d, spconv convolutions): connections, the
  synapses the layer evaluates: (input element, output element) pairs, for spconv
  C_in x C_out per (input, output, kernel offset) rulebook pair, as E-3DSNN's
  energy_calculate.py counts them (zero padding is not a connection).
  A layer is spike driven when its input is a neuron module's output of this pass (or a
  view of it), or else holds non-negative integers that are not all zero (spike counts fed
  to the model, pooled or gathered spikes). Then ACs = sum over connections of the input
  spike count, i.e. input spikes x fan-out, each virtual-step spike costing one accumulate
  per target. Any other input (real voxel features, membrane potentials into a head, even
  an all-zero membrane) costs MACs = connections.

Energy = MACs x E_MAC + ACs x E_AC, by default the 45 nm figures for 32-bit float
multiply-add (4.6 pJ) and add (0.9 pJ) from M. Horowitz, "Computing's energy problem (and
what we can do about it)", ISSCC 2014, as used by SpikeYOLO, SDT-V3 and E-3DSNN. BN
(folded into the conv at inference), residual adds, pooling and neuron updates are not
counted. Counts cover every sample and timestep of the given inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from spconv.pytorch import ops as spconv_ops
from spconv.pytorch.conv import SparseConvolution
from torch import nn

from . import spconv_compat  # noqa: F401  (spconv backward on CPU-only torch)
from .neurons import ILIF, LIF

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
NEURON_TYPES = (LIF, ILIF)
SYNAPSE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, SparseConvolution)


@dataclass
class LayerActivity:
    """One module's counts, summed over its calls. `kind`: "neuron", "AC" (spike-driven
    synaptic layer) or "MAC" (synaptic layer fed by real values). `elements`: output
    elements of a neuron, input elements of a synaptic layer; `spikes`: their sum (AC
    layers: input spikes; MAC layers: 0); `levels`: D used for the firing rate."""

    name: str
    type: str
    kind: str
    levels: int = 1
    calls: int = 0
    elements: int = 0
    spikes: int = 0
    connections: int = 0
    macs: int = 0
    acs: int = 0
    energy_pj: float = 0.0

    @property
    def firing_rate(self) -> float | None:
        """Neurons: output rate; AC layers: input rate (spikes per element and virtual
        step); MAC layers: None."""
        if self.kind == "MAC":
            return None
        return self.spikes / (self.elements * self.levels) if self.elements else 0.0


@dataclass
class ActivityReport:
    """`rows` in first-call order; `totals`: macs, acs, connections, energy_pj,
    ann_energy_pj (every connection a MAC: the same network with real activations),
    neurons, spikes, firing_rate (all neuron rows)."""

    rows: list[LayerActivity]
    e_mac_pj: float
    e_ac_pj: float
    totals: dict = field(default_factory=dict)


def _spike_values(x: torch.Tensor) -> bool:
    """Non-negative integers, not all zero."""
    if x.numel() == 0 or not bool(x.any()):
        return False
    if not x.is_floating_point():
        return bool((x >= 0).all())
    return bool(((x >= 0) & (x == torch.floor(x))).all())


def _linear_counts(m: nn.Linear, x: torch.Tensor, spikes: bool) -> tuple[int, float]:
    connections = x.numel() * m.out_features
    weighted = float(x.double().sum()) * m.out_features if spikes else 0.0
    return connections, weighted


def _dense_conv_counts(m: nn.Module, x: torch.Tensor, spikes: bool) -> tuple[int, float]:
    """Taps inside the (unpadded) input: a conv of x with an all-ones kernel per group."""
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(m.kernel_size) - 1]
    padding = m.padding
    if m.padding_mode != "zeros":
        x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
        padding = 0
    ones = torch.ones(m.groups, m.in_channels // m.groups, *m.kernel_size, device=x.device)
    per_group_out = m.out_channels // m.groups

    def taps(t: torch.Tensor) -> float:
        return float(conv(t.float(), ones, None, m.stride, padding, m.dilation,
                          m.groups).double().sum()) * per_group_out

    return round(taps(torch.ones_like(x))), (taps(x) if spikes else 0.0)


def sparse_fan_out(m: SparseConvolution, x, y) -> torch.Tensor:
    """int64 [M_in]: rulebook pairs (input, output, kernel offset) each input voxel of the
    spconv layer `m` takes part in, for its call `y = m(x)`. Uses the pairs stored under
    `m.indice_key` (spconv's Native layout [2, KV, N] with per-offset counts; a SubM
    table keeps only offsets before the centre, which pairs every voxel with itself and is
    mirrored after it) or recomputes them when the layer has no key."""
    n = x.features.shape[0]
    if m.conv1x1:
        return torch.ones(n, dtype=torch.int64)
    data = (x if m.inverse else y).find_indice_pair(m.indice_key)
    if data is None:
        _, pairs, nums = spconv_ops.get_indice_pairs(
            x.indices, x.batch_size, x.spatial_shape, m.algo, m.kernel_size, m.stride,
            m.padding, m.dilation, m.output_padding, m.subm, m.transposed)
    else:
        pairs, nums = data.indice_pairs, data.indice_pair_num
    pairs, nums = pairs.long().cpu(), nums.long().cpu()
    if m.subm:
        centre = pairs.shape[1] // 2
        valid = torch.arange(pairs.shape[2]) < nums[:centre, None]
        return (1 + torch.bincount(pairs[0, :centre][valid], minlength=n)
                + torch.bincount(pairs[1, :centre][valid], minlength=n))
    valid = torch.arange(pairs.shape[2]) < nums[:, None]
    side = 1 if m.inverse else 0
    return torch.bincount(pairs[side][valid], minlength=n)


def _sparse_conv_counts(m: SparseConvolution, x, y, spikes: bool) -> tuple[int, float]:
    fan = sparse_fan_out(m, x, y)
    connections = int(fan.sum()) * m.in_channels * m.out_channels
    weighted = 0.0
    if spikes:
        per_voxel = x.features.double().sum(dim=1).cpu()
        weighted = float((per_voxel * fan.double()).sum()) * m.out_channels
    return connections, weighted


def activity_report(model: nn.Module, inputs, *, e_mac_pj: float = E_MAC_PJ,
                    e_ac_pj: float = E_AC_PJ, neuron_types: tuple = NEURON_TYPES
                    ) -> ActivityReport:
    """Run `model(inputs)` (`model(*inputs)` for a tuple) once in eval mode without
    gradients and count spikes, MACs, ACs and energy per module (module docstring).
    Training flags are restored afterwards. `neuron_types`: classes whose outputs are
    spikes, with D = their `levels` attribute (default 1). An AC layer's input rate uses
    the D of the neuron that fed it, else the largest D in the model."""
    rows: dict[str, LayerActivity] = {}
    fed_by: dict[int, int] = {}  # storage address of a neuron output -> its D
    alive: list[torch.Tensor] = []  # keeps those storages from being reused in this pass
    model_levels = max((getattr(m, "levels", 1) for m in model.modules()
                        if isinstance(m, neuron_types)), default=1)

    def row(name: str, m: nn.Module, kind: str, d: int) -> LayerActivity:
        if name not in rows:
            rows[name] = LayerActivity(name, type(m).__name__, kind, d)
        r = rows[name]
        r.calls += 1
        return r

    def neuron_hook(name):
        def hook(m, args, out):
            d = getattr(m, "levels", 1)
            r = row(name, m, "neuron", d)
            r.elements += out.numel()
            r.spikes += round(float(out.double().sum()))
            fed_by[out.untyped_storage().data_ptr()] = d
            alive.append(out)
        return hook

    def synapse_hook(name):
        def hook(m, args, out):
            x = args[0]
            feats = x.features if isinstance(m, SparseConvolution) else x
            d = fed_by.get(feats.untyped_storage().data_ptr())
            spikes = d is not None or _spike_values(feats)
            if isinstance(m, SparseConvolution):
                connections, weighted = _sparse_conv_counts(m, x, out, spikes)
            elif isinstance(m, nn.Linear):
                connections, weighted = _linear_counts(m, feats, spikes)
            else:
                connections, weighted = _dense_conv_counts(m, feats, spikes)
            r = row(name, m, "AC" if spikes else "MAC", d or model_levels)
            r.elements += feats.numel()
            r.connections += connections
            if spikes:
                r.spikes += round(float(feats.double().sum()))
                r.acs += round(weighted)
            else:
                r.kind = "MAC"  # any real-valued call makes the row a MAC row
                r.macs += connections
        return hook

    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, neuron_types):
            hooks.append(m.register_forward_hook(neuron_hook(name)))
        elif isinstance(m, SYNAPSE_TYPES):
            hooks.append(m.register_forward_hook(synapse_hook(name)))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(inputs, tuple):
                model(*inputs)
            else:
                model(inputs)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    for r in rows.values():
        r.energy_pj = r.macs * e_mac_pj + r.acs * e_ac_pj
    return ActivityReport(list(rows.values()), e_mac_pj, e_ac_pj,
                          _totals(list(rows.values()), e_mac_pj))


def _totals(rows: list[LayerActivity], e_mac_pj: float) -> dict:
    neurons = [r for r in rows if r.kind == "neuron"]
    capacity = sum(r.elements * r.levels for r in neurons)
    spikes = sum(r.spikes for r in neurons)
    connections = sum(r.connections for r in rows)
    return {"macs": sum(r.macs for r in rows), "acs": sum(r.acs for r in rows),
            "connections": connections, "energy_pj": sum(r.energy_pj for r in rows),
            "ann_energy_pj": connections * e_mac_pj,
            "neurons": sum(r.elements for r in neurons), "spikes": spikes,
            "firing_rate": spikes / capacity if capacity else 0.0}


def format_report(report: ActivityReport) -> str:
    """The report as a text table: layer, type, rate in (AC layers), rate out (neurons),
    MACs, ACs, energy in uJ; then the totals."""
    head = ("layer", "type", "rate in", "rate out", "MACs", "ACs", "energy uJ")
    lines = []
    for r in report.rows:
        rate = "-" if r.firing_rate is None else f"{r.firing_rate:.4f}"
        lines.append((r.name, r.type, rate if r.kind == "AC" else "-",
                      rate if r.kind == "neuron" else "-",
                      f"{r.macs:,}" if r.kind != "neuron" else "-",
                      f"{r.acs:,}" if r.kind != "neuron" else "-",
                      f"{r.energy_pj / 1e6:.3f}" if r.kind != "neuron" else "-"))
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    t = report.totals
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    out += ["",
            f"total: {t['macs']:,} MACs x {report.e_mac_pj} pJ + {t['acs']:,} ACs x "
            f"{report.e_ac_pj} pJ = {t['energy_pj'] / 1e9:.4f} mJ",
            f"same connections as MACs (real-valued activations): "
            f"{t['ann_energy_pj'] / 1e9:.4f} mJ",
            f"neurons {t['neurons']:,}, spikes {t['spikes']:,}, mean firing rate "
            f"{t['firing_rate']:.4f} per neuron and virtual step"]
    return "\n".join(out)
