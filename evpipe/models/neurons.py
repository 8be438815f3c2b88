"""Spiking neurons with surrogate gradients.

- `LIF`: binary leaky integrate-and-fire (GAC), ZIF triangle surrogate.
- `ILIF` / `multispike`: integer-valued I-LIF of E-3DSNN / SpikeYOLO / SDT-V3, spikes 0..D
  with a straight-through gradient; `expand_spikes` and `spike_driven_forward` give its
  spike-driven reading as D binary virtual timesteps.

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


# ---------------------------------------------------------------------------------------
# Integer neuron (I-LIF, "MultiSpike") and spike-driven inference over D virtual timesteps.

ROUNDING_MODES = ("half_up", "half_even")
STE_WINDOWS = ("exclusive", "inclusive")


def _check_levels(levels) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ConfigError(f"levels (D, the largest spike count) must be an int >= 1, "
                          f"got {levels!r}")


def _check_integer_neuron(levels, rounding: str, window: str) -> None:
    _check_levels(levels)
    if rounding not in ROUNDING_MODES:
        raise ConfigError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    if window not in STE_WINDOWS:
        raise ConfigError(f"window must be one of {STE_WINDOWS}, got {window!r}")


class MultiSpike(torch.autograd.Function):
    """Integer spike `S = round(clamp(U, 0, D))` with a straight-through gradient.

    Forward, `half_even=False`: `floor(clamp(U, 0, D) + 0.5)` (round half up; E-3DSNN
    `multispike`, classify_seg/pointcept/models/sparse_unet/E_3DSNN.py, and SDT-V3 Large);
    `half_even=True`: `torch.round(clamp(U, 0, D))` (half to even; SpikeYOLO `MultiSpike4`,
    ultralytics/nn/modules/yolo_spikformer.py). Output has U's shape and dtype, values 0..D.
    Backward: `dS/dU = 1` inside the window, 0 outside: `0 < U < D` (`inclusive=False`,
    E-3DSNN) or `0 <= U <= D` (`inclusive=True`, SpikeYOLO).
    """

    @staticmethod
    def forward(ctx, u: torch.Tensor, levels: int, half_even: bool, inclusive: bool):
        c = u.clamp(0, levels)
        s = torch.round(c) if half_even else torch.floor(c + 0.5)
        if ctx.needs_input_grad[0]:
            mask = (u >= 0) & (u <= levels) if inclusive else (u > 0) & (u < levels)
            ctx.save_for_backward(mask)
        return s

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad_output * mask, None, None, None


def multispike(u: torch.Tensor, levels: int = 4, rounding: str = "half_up",
               window: str = "exclusive") -> torch.Tensor:
    """Integer spikes 0..`levels` from a real membrane potential (see `MultiSpike`)."""
    _check_integer_neuron(levels, rounding, window)
    return MultiSpike.apply(u, levels, rounding == "half_even", window == "inclusive")


class ILIF(nn.Module):
    """Integer-valued LIF neuron (I-LIF) of E-3DSNN / SpikeYOLO / SDT-V3.

    Stateless (`leak=None`, the default; E-3DSNN, T = 1): `S = multispike(U)` elementwise on
    any shape, e.g. sparse voxel features [M, C]. Spikes are float integers 0..D (D =
    `levels`); at inference each is read as D binary spikes on virtual timesteps
    (`expand_spikes`).

    Temporal (`leak=beta`): multi-step input `[B, T, ...]`, batch first with time on axis 1
    like `LIF` (SpikeYOLO's `mem_update` loops over axis 0 of [T, B, ...]: pass
    `x.transpose(0, 1)`). `U[0] = X[0]`, `S[t] = multispike(U[t])` and for t >= 1
    - `soft_reset=True`:  `U[t] = beta * (U[t-1] - sg(S[t-1])) + X[t]` (SpikeYOLO, beta 0.25);
    - `soft_reset=False`: `U[t] = beta * U[t-1] * 1[S[t-1] == 0] + X[t]` (hard reset to 0
      after any spike, detached, as BICLab's binary `mem_update`).
    sg = stop-gradient; the gradient still flows through U[t-1].
    """

    def __init__(self, levels: int = 4, rounding: str = "half_up", window: str = "exclusive",
                 leak: float | None = None, soft_reset: bool = False):
        super().__init__()
        _check_integer_neuron(levels, rounding, window)
        if leak is not None and not 0.0 <= leak <= 1.0:
            raise ConfigError(f"leak (beta, decay per step) must be in [0, 1], got {leak}")
        if soft_reset and leak is None:
            raise ConfigError("soft_reset needs a temporal neuron: set leak (beta)")
        self.levels = levels
        self.rounding = rounding
        self.window = window
        self.leak = None if leak is None else float(leak)
        self.soft_reset = bool(soft_reset)

    def _spike(self, u: torch.Tensor) -> torch.Tensor:
        return MultiSpike.apply(u, self.levels, self.rounding == "half_even",
                                self.window == "inclusive")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.leak is None:
            return self._spike(x)
        if x.dim() < 2:
            raise ValueError(f"temporal ILIF expects [B, T, ...], got shape {tuple(x.shape)}")
        u = x[:, 0]
        s = self._spike(u)
        spikes = [s]
        for t in range(1, x.shape[1]):
            prev = s.detach()
            u = self.leak * (u - prev if self.soft_reset else u * (prev == 0)) + x[:, t]
            s = self._spike(u)
            spikes.append(s)
        return torch.stack(spikes, dim=1)

    def extra_repr(self) -> str:
        text = f"levels={self.levels}, rounding={self.rounding}, window={self.window}"
        if self.leak is not None:
            text += f", leak={self.leak}, soft_reset={self.soft_reset}"
        return text


def expand_spikes(spikes: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer spikes S in 0..D `[*shape]` -> D binary spikes `[D, *shape]` (S's dtype).

    Virtual timestep d (0-based) fires when d < S ("fire first": S ones, then zeros), so
    the D steps sum to S (SpikeYOLO `expand_tensor_cumulative`; SDT-V3 spike firing
    approximation). Raises ValueError on values that are not integers in 0..D.
    """
    _check_levels(levels)
    if spikes.numel():
        bad = (spikes < 0) | (spikes > levels)
        if spikes.is_floating_point():
            bad |= spikes != torch.round(spikes)
        if bool(bad.any()):
            raise ValueError(f"spikes must be integers in 0..{levels}")
    steps = torch.arange(levels, device=spikes.device).view(levels, *([1] * spikes.dim()))
    return (steps < spikes.unsqueeze(0)).to(spikes.dtype)


def _weight_only(layer: nn.Module, x):
    """`layer(x)` without its bias, for nn.Linear, nn.Conv1d/2d/3d and spconv convolutions."""
    if isinstance(layer, nn.Linear):
        return torch.nn.functional.linear(x, layer.weight)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return layer._conv_forward(x, layer.weight, None)
    if hasattr(layer, "_conv_forward") and hasattr(x, "replace_feature"):
        return layer._conv_forward(layer.training, x, layer.weight, None)
    raise TypeError(f"spike-driven evaluation supports Linear, Conv1d/2d/3d and spconv "
                    f"convolutions, got {type(layer).__name__}")


def spike_driven_forward(layer: nn.Module, x, levels: int):
    """`layer(x)` for integer spikes x in 0..D, computed as D binary passes.

    `x`: a tensor (nn.Linear: [..., in]; nn.ConvNd: [B, C, ...]) or a
    `spconv.pytorch.SparseConvTensor` whose features are the spikes. Returns what `layer(x)`
    returns: `sum_d W s[d]` over the binary expansion (`expand_spikes`) plus the bias once
    (spike-driven inference, SpikeYOLO / SDT-V3 "virtual timesteps"). Equal to `layer(x)`
    exactly when every product and partial sum is representable (e.g. dyadic weights);
    otherwise up to float rounding, since the D passes add the same terms in another order.
    """
    sparse = hasattr(x, "replace_feature")
    binary = expand_spikes(x.features if sparse else x, levels)
    passes = [_weight_only(layer, x.replace_feature(b) if sparse else b) for b in binary]
    terms = [p.features for p in passes] if sparse else passes
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    bias = getattr(layer, "bias", None)
    if bias is not None:
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            out = out + bias.view(-1, *([1] * len(layer.kernel_size)))
        else:
            out = out + bias
    return passes[-1].replace_feature(out) if sparse else out
