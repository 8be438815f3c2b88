"""Gated Attention Coding (GAC): the encoding layer of Qiu et al., "Gated Attention Coding
for Training High-performance and Efficient Spiking Neural Networks", AAAI 2024.

Definitions follow the CIFAR code of bollossom/GAC (CODE/CIFAR/models/GAU.py `TA`, `SCA`;
MS_ResNet.py `GAC` and the encoding part of `ResNet._forward_impl`; layers.py `LIFSpike`):

    U = BN2d(Conv3x3(X))                 shared over t, [B, T, C, H, W]
    S = LIF(U)                           tau 0.5, V_th 1.0, hard reset, ZIF surrogate
    TA = MLP(AvgPool_CHW(U)) + MLP(MaxPool_CHW(U))   MLP = Conv3d 1x1x1 T -> T/r -> T, no bias
    SCA = Conv_k(ReLU(Conv_k(U)))        per timestep, C -> C, padding "same", no bias
    M = sigmoid(TA * SCA);  O = M * S

The paper repeats one static image over T. Feeding per-bin event frames (a different frame
at each t) is an extrapolation made by evpipe, not something the paper evaluates.

One deliberate difference: the reference ResNet repeats the image time-first
(`x.repeat(T, 1, 1, 1, 1)` -> [T, B, ...]) while its `LIFSpike` loops over axis 1, so there
the membrane recurrence runs along the batch axis; here the LIF runs along T. TA and SCA
see [B, T, ...] in both (the reference's GAC permutes first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .neurons import LIF


class TemporalAttention(nn.Module):
    """TA: `[B, T, C, H, W] -> [B, T, 1, 1, 1]` real-valued weights (no sigmoid).

    Average and max over (C, H, W), each through a shared bias-free MLP of 1x1x1 Conv3d
    layers T -> T // ratio -> T with a ReLU between, summed (GAU.py `TA`).
    """

    def __init__(self, T: int, ratio: int = 2):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv3d(T, T // ratio, 1, bias=False), nn.ReLU(),
                                 nn.Conv3d(T // ratio, T, 1, bias=False))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        avg = u.mean(dim=(2, 3, 4), keepdim=True)
        mx = u.amax(dim=(2, 3, 4), keepdim=True)
        return self.mlp(avg) + self.mlp(mx)


class SpatialChannelAttention(nn.Module):
    """SCA: `[B, T, C, H, W] -> [B, T, C, H, W]`, per timestep
    Conv_k(C -> C) . ReLU . Conv_k(C -> C), bias-free, padding "same" (GAU.py `SCA`, ratio 1).

    "same" padding is applied explicitly as PyTorch does it, (k - 1) // 2 zeros before and
    k // 2 after each spatial axis, which avoids PyTorch's per-call warning for even k.
    """

    def __init__(self, channels: int, kernel_size: int = 4):
        super().__init__()
        lo, hi = (kernel_size - 1) // 2, kernel_size // 2
        self.pad = (lo, hi, lo, hi)
        self.conv0 = nn.Conv2d(channels, channels, kernel_size, bias=False)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv0(F.pad(u.flatten(0, 1), self.pad)))
        return self.conv1(F.pad(y, self.pad)).view(u.shape)


class GAC(nn.Module):
    """Gated Attention Coding layer: frames `[B, T, in_channels, H, W]` (float) ->
    O `[B, T, channels, H, W]`, real values in [0, 1) where S spikes and 0 elsewhere.

    Static images: pass `x.unsqueeze(1).expand(-1, T, -1, -1, -1)`. Event frames: pass one
    frame per time bin, e.g. `to_frames(...)` as float `[B, T, 2, H, W]` (an extrapolation of
    the paper, see the module docstring). `forward(x, return_gate=True)` also returns the
    gate M (same shape as O, in (0, 1)). Defaults are the CIFAR configuration (64 channels,
    T = 6, r = 2, k = 4); BN runs over the B*T frames together as the reference's
    SeqToANNContainer does.
    """

    def __init__(self, in_channels: int, channels: int = 64, T: int = 6, ratio: int = 2,
                 kernel_size: int = 4, tau: float = 0.5, v_threshold: float = 1.0,
                 gamma: float = 1.0):
        super().__init__()
        if in_channels < 1 or channels < 1:
            raise ConfigError(f"in_channels and channels must be >= 1, got {in_channels}, "
                              f"{channels}")
        if ratio < 1 or T < ratio:
            raise ConfigError(f"need 1 <= ratio <= T for the temporal MLP T -> T // ratio, "
                              f"got T={T}, ratio={ratio}")
        if kernel_size < 1:
            raise ConfigError(f"kernel_size must be >= 1, got {kernel_size}")
        self.in_channels = in_channels
        self.channels = channels
        self.T = T
        self.conv = nn.Conv2d(in_channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.lif = LIF(tau=tau, v_threshold=v_threshold, gamma=gamma)
        self.ta = TemporalAttention(T, ratio)
        self.sca = SpatialChannelAttention(channels, kernel_size)

    def forward(self, x: torch.Tensor, return_gate: bool = False):
        if x.dim() != 5 or x.shape[1] != self.T or x.shape[2] != self.in_channels:
            raise ValueError(f"GAC expects [B, {self.T}, {self.in_channels}, H, W], "
                             f"got {tuple(x.shape)}")
        b, t = x.shape[:2]
        u = self.bn(self.conv(x.flatten(0, 1)))
        u = u.view(b, t, *u.shape[1:])
        s = self.lif(u)
        gate = torch.sigmoid(self.ta(u) * self.sca(u))
        out = gate * s
        return (out, gate) if return_gate else out
