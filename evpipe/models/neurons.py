"""Spiking neurons with surrogate gradients.

Layout: multi-step neurons take batch-first sequences `[B, T, ...]` (time on axis 1), as
GAC's CIFAR code (bollossom/GAC, CODE/CIFAR/models/layers.py `LIFSpike`) and the GAC
module do; state starts at zero for every forward call.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class ZIF(torch.autograd.Function):
    """Heaviside spike with the "ZIF" triangle surrogate gradient.

    Forward: `s = 1[x > 0]` (same dtype as x). Backward:
    `ds/dx = (1 / gamma^2) * max(0, gamma - |x|)`, a triangle of width 2*gamma and
    area 1 (bollossom/GAC, CODE/CIFAR/models/layers.py `ZIF`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.gamma = gamma
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        g = ctx.gamma
        return grad_output * (g - x.abs()).clamp(min=0) / (g * g), None


def zif_spike(x: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """`ZIF.apply(x, gamma)`: spikes where x > 0, triangle surrogate gradient."""
    return ZIF.apply(x, gamma)


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron with hard reset, over `[B, T, ...]`.

    For t = 0..T-1, starting from m = 0:
    `m = tau * m + x[:, t]`; `s = 1[m > v_threshold]`; `m = (1 - s) * m` (hard reset to 0,
    the reset is not detached from the graph). Returns spikes of x's shape and dtype
    (0.0 / 1.0). The spike uses the ZIF triangle surrogate of width `gamma` around the
    threshold. Defaults are GAC's CIFAR `LIFSpike` (tau 0.5, V_th 1.0, gamma 1.0).
    `tau` is the multiplicative decay per step (not a time constant in steps).
    """

    def __init__(self, tau: float = 0.5, v_threshold: float = 1.0, gamma: float = 1.0):
        super().__init__()
        if not 0.0 <= tau <= 1.0:
            raise ConfigError(f"tau (decay per step) must be in [0, 1], got {tau}")
        if not v_threshold > 0:
            raise ConfigError(f"v_threshold must be > 0, got {v_threshold}")
        if not gamma > 0:
            raise ConfigError(f"gamma (surrogate width) must be > 0, got {gamma}")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.gamma = float(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"LIF expects [B, T, ...], got shape {tuple(x.shape)}")
        m = torch.zeros_like(x[:, 0])
        spikes = []
        for t in range(x.shape[1]):
            m = self.tau * m + x[:, t]
            s = zif_spike(m - self.v_threshold, self.gamma)
            m = (1 - s) * m
            spikes.append(s)
        return torch.stack(spikes, dim=1)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, gamma={self.gamma}"
