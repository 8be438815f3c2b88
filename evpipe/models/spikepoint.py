"""SpikePoint: a point-based spiking network on grouped event clouds (Ren et al.,
"SpikePoint: An Efficient Point-based Spiking Neural Network for Event Cameras Action
Recognition", ICLR 2024, arXiv 2310.07189).

No official code is public (specs/algorithms.md §3). The paper fixes the pipeline: one
sampling + grouping stage, rate coding with T = 16, a local feature extractor with
identity-mapping residual blocks, a global feature extractor and a classifier. The rest is
evpipe's reconstruction, with sizes as parameters:

    groups [B, M, K, C] in [0, 1]          evpipe.encoders.event_cloud / EventCloudCollate
    rate coding  s_t = 1[u_t < p]          -> spikes [B, T, M, K, C]
    local, per point (shared over M, K, t):
        Linear(C -> c_0) + BN on the input spikes, then per stage a projection
        LIF -> Linear -> BN where the width changes and residual blocks
        x + BN(Linear(LIF(BN(Linear(LIF(x))))))
        max over K, BN                     -> [B, T, M, c_local]
    global, per group: the same stages; max over M, BN -> [B, T, c_global]
    classifier: LIF, spike rate averaged over T, Linear -> logits [B, num_classes]

The residual blocks are pre-activation ("identity mapping", He et al. 2016, as MS-ResNet
uses them in SNNs): the shortcut carries real-valued membrane inputs and every Linear
reads spikes. Max pooling acts on those real values before the next neuron (as spiking
CNNs pool before the LIF); the BN after each pooling recentres the maxima, which would
otherwise make the next LIF fire at every step. Per-point shared layers are written as
Linear over the channel-last axis (EventMamba's Conv1d with kernel 1 computes the same;
rhwxmx/EventMamba models/eventmamba.py). Neurons: `evpipe.models.neurons.LIF`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .neurons import LIF

CODINGS = ("bernoulli", "expected")


class ChannelLastBN(nn.BatchNorm1d):
    """BatchNorm1d over the last axis of `[..., C]` (statistics over every other axis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class Projection(nn.Module):
    """`[B, T, ..., c_in] -> [B, T, ..., c_out]`: BN(Linear(LIF(x))), no bias."""

    def __init__(self, c_in: int, c_out: int, lif: dict):
        super().__init__()
        self.lif = LIF(**lif)
        self.fc = nn.Linear(c_in, c_out, bias=False)
        self.bn = ChannelLastBN(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(self.lif(x)))


class ResidualBlock(nn.Module):
    """Identity-mapping residual block on `[B, T, ..., C]` (real in, real out):
    `x + BN(Linear(LIF(BN(Linear(LIF(x))))))`, C -> C -> C, no bias."""

    def __init__(self, channels: int, lif: dict):
        super().__init__()
        self.body = nn.Sequential(Projection(channels, channels, lif),
                                  Projection(channels, channels, lif))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stages(c_in: int, channels, blocks, lif: dict) -> nn.Sequential:
    """A projection wherever the width changes, then `blocks[i]` residual blocks at
    `channels[i]`."""
    layers = []
    for c, n in zip(channels, blocks):
        if c != c_in:
            layers.append(Projection(c_in, c, lif))
        layers.extend(ResidualBlock(c, lif) for _ in range(n))
        c_in = c
    return nn.Sequential(*layers)


def _check_sizes(name: str, channels, blocks) -> tuple[tuple[int, ...], tuple[int, ...]]:
    channels, blocks = tuple(channels), tuple(blocks)
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ConfigError(f"{name}_channels must be a non-empty sequence of ints >= 1, "
                          f"got {channels}")
    if len(blocks) != len(channels) or any(not isinstance(n, int) or n < 0 for n in blocks):
        raise ConfigError(f"{name}_blocks must give one int >= 0 per entry of "
                          f"{name}_channels {channels}, got {blocks}")
    return channels, blocks


class SpikePoint(nn.Module):
    """SpikePoint classifier: groups float `[B, M, K, in_channels]` with values in [0, 1]
    (`event_cloud` groups, C = 6 for modes abs/shift, 9 for split) -> logits float32
    `[B, num_classes]`. Any M, K >= 1; values outside [0, 1] are clamped.

    Rate coding (module docstring) happens inside `forward(groups, generator=None)`:
    - `coding="bernoulli"` (default): T steps of s_t = 1[u_t < p], u_t ~ U[0, 1) drawn
      from `generator` when given, else from torch's global RNG (so `torch.manual_seed`
      makes runs repeatable). A fixed-seed generator makes evaluation deterministic:
      `model.eval(); model(x, generator=torch.Generator().manual_seed(0))`.
    - `coding="expected"`: the expected spike train, p at every step (no sampling; the
      first layer then reads real values, as direct coding does).
    `eval_coding` picks the coding in eval mode (None: the same as `coding`);
    `eval_coding="expected"` gives deterministic evaluation of a model trained on
    Bernoulli spikes (the first membrane input equals its expectation; later layers
    approximate it).
    Bernoulli coding has no gradient with respect to p; `straight_through=True` passes
    the gradient of the spikes to p unchanged (s + p - p.detach()).

    Sizes: `local_channels`/`local_blocks` and `global_channels`/`global_blocks` give
    per-stage widths and residual block counts; defaults have 223,370 parameters for
    C = 6 and 10 classes (the paper reports ~0.16-1.05 M, specs/algorithms.md §3.6).
    LIF defaults follow `evpipe.models.neurons.LIF` (tau 0.5, V_th 1.0, ZIF gamma 1.0;
    SpikePoint's own neuron settings are unverified). `dropout` applies to the spike
    rates before the classifier.
    """

    def __init__(self, in_channels: int = 6, num_classes: int = 10, T: int = 16,
                 local_channels=(32, 64), local_blocks=(1, 1),
                 global_channels=(128, 256), global_blocks=(1, 1),
                 coding: str = "bernoulli", eval_coding: str | None = None,
                 straight_through: bool = False, dropout: float = 0.0,
                 tau: float = 0.5, v_threshold: float = 1.0, gamma: float = 1.0):
        super().__init__()
        if in_channels < 1 or num_classes < 1 or T < 1:
            raise ConfigError(f"in_channels, num_classes and T must be >= 1, got "
                              f"{in_channels}, {num_classes}, {T}")
        if coding not in CODINGS or eval_coding not in (*CODINGS, None):
            raise ConfigError(f"coding and eval_coding must be one of {CODINGS} "
                              f"(eval_coding also None), got {coding!r}, {eval_coding!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        local_channels, local_blocks = _check_sizes("local", local_channels, local_blocks)
        global_channels, global_blocks = _check_sizes("global", global_channels,
                                                      global_blocks)
        lif = {"tau": tau, "v_threshold": v_threshold, "gamma": gamma}
        self.in_channels = in_channels
        self.T = T
        self.coding = coding
        self.eval_coding = coding if eval_coding is None else eval_coding
        self.straight_through = bool(straight_through)
        self.embed = nn.Sequential(nn.Linear(in_channels, local_channels[0], bias=False),
                                   ChannelLastBN(local_channels[0]))
        self.local = _stages(local_channels[0], local_channels, local_blocks, lif)
        self.local_bn = ChannelLastBN(local_channels[-1])
        self.glob = _stages(local_channels[-1], global_channels, global_blocks, lif)
        self.global_bn = ChannelLastBN(global_channels[-1])
        self.head_lif = LIF(**lif)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(global_channels[-1], num_classes)

    def encode(self, groups: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Rate coding `[B, M, K, C]` -> `[B, T, M, K, C]` of groups' dtype: 0/1 spikes
        (Bernoulli) or the clamped values repeated (expected), per the mode's coding."""
        p = groups.clamp(0.0, 1.0).unsqueeze(1).expand(-1, self.T, *groups.shape[1:])
        if (self.coding if self.training else self.eval_coding) == "expected":
            return p
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
        s = (u < p).to(p.dtype)
        return s + (p - p.detach()) if self.straight_through else s

    def features(self, groups: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Pooled global features (real, before the head LIF) `[B, T, c_global]`."""
        if groups.dim() != 4 or groups.shape[-1] != self.in_channels or 0 in groups.shape[1:3]:
            raise ValueError(f"SpikePoint expects groups [B, M, K, {self.in_channels}] with "
                             f"M, K >= 1, got {tuple(groups.shape)}")
        x = self.local(self.embed(self.encode(groups, generator)))
        x = self.local_bn(x.amax(dim=3))
        return self.global_bn(self.glob(x).amax(dim=2))

    def forward(self, groups: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        rates = self.head_lif(self.features(groups, generator)).mean(dim=1)
        return self.fc(self.dropout(rates))
