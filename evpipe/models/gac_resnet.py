"""GACResNet: a small MS-ResNet frame SNN whose first stage is evpipe's GAC layer.

Layout after bollossom/GAC, CODE/CIFAR/models/MS_ResNet.py (`ResNet`, `BasicBlock_MS`) and
CODE/ImageNet/models/MS_ResNet.py (`ResNet_origin_18`, `BasicBlock_18`); MS-ResNet is Hu et
al., "Advancing Spiking Neural Networks Towards Deep Residual Learning", TNNLS 2024.
Frames are batch-first `[B, T, C, H, W]`; every conv and BN runs over the B*T frames
together (SeqToANNContainer), every LIF runs along T (`evpipe.models.neurons.LIF`):

    encoding  GAC(C_in -> c_gac): O = sigmoid(TA * SCA) * LIF(BN(Conv3x3(x)))   (gac.py)
    embed     BN(Conv3x3(c_gac -> c_0)(O))
    stage i   block(c_in -> c_i, stride 1 for i = 0 else 2), then blocks[i] - 1 blocks(c_i):
              y = shortcut(x) + BN(Conv3x3(LIF(BN(Conv3x3_stride(LIF(x))))))
              shortcut = identity, or BN(Conv1x1_stride(LIF(x))) where the shape changes
    head      LIF -> AdaptiveAvgPool(1) -> Linear per timestep -> mean over T

Residuals add real-valued membrane inputs ("membrane shortcut"); every conv after the
embedding reads LIF spikes. Logits are the mean over T of the per-timestep logits, on which
GAC's training applies cross-entropy.

The embedding conv reads O itself (gate-weighted spikes, zero where GAC's LIF is silent).
O lies in [0, 1), so a LIF reading it (V_th 1, decay 0.5) fires only after two or more
consecutive values above 0.5: with a LIF first, as the reference's blocks have, stage 0
starts silent (measured: no spike in any later layer at initialisation). The reference
gets its signal past this point through the conv1x1 + BN shortcut that reads O in its
first block (ImageNet code also lowers V_th to 0.5); here the embedding conv plays that
role and hands the stages a BN-scale membrane.

Other differences from the reference, all deliberate: the projection shortcut spikes before its
1x1 conv (the reference applies conv1x1 + BN to the real-valued membrane), so that every
conv is spike driven; neurons are GAC's CIFAR LIF (tau 0.5, V_th 1.0, ZIF surrogate) in
place of the CIFAR BiLIFNode or the ImageNet `mem_update`; widths and depths are small
parameters, by default three stages 32/64/128 with one block each, for 2-channel event
frames of 32x32 to 64x64 (the reference: stem 64, stages 128/256/512, blocks 3/3/2).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .gac import GAC
from .neurons import LIF


class FrameConvBN(nn.Module):
    """`[B, T, c_in, H, W] -> [B, T, c_out, H', W']`: BN2d(Conv2d(LIF(x))), no conv bias,
    conv and BN over the B*T frames together; H' = ceil(H / stride) for both kernels used
    (3x3 with padding 1, 1x1 without)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, lif: dict):
        super().__init__()
        self.lif = LIF(**lif)
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride,
                              padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(self.lif(x).flatten(0, 1)))
        return y.view(*x.shape[:2], *y.shape[1:])


class MSBlock(nn.Module):
    """MS-ResNet basic block on `[B, T, c_in, H, W]` (real in, real out):
    `shortcut(x) + U2(U1(x))` with U1 = FrameConvBN(c_in -> c_out, 3x3, stride),
    U2 = FrameConvBN(c_out -> c_out, 3x3); the shortcut is the identity, or
    FrameConvBN(c_in -> c_out, 1x1, stride) when stride != 1 or c_in != c_out."""

    def __init__(self, c_in: int, c_out: int, stride: int, lif: dict):
        super().__init__()
        self.body = nn.Sequential(FrameConvBN(c_in, c_out, 3, stride, lif),
                                  FrameConvBN(c_out, c_out, 3, 1, lif))
        self.shortcut = (FrameConvBN(c_in, c_out, 1, stride, lif)
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class GACResNet(nn.Module):
    """GAC-coded MS-ResNet classifier: frames float `[B, T, in_channels, H, W]` (e.g.
    `to_frames` counts, one frame per time bin) -> logits float32 `[B, num_classes]`, the
    mean over T of per-timestep logits (module docstring).

    `channels[i]` / `blocks[i]`: width and block count of stage i (stage 0 at full
    resolution, every later stage halves H and W); `gac_channels` is GAC's width (default
    `channels[0]`), `gac_kernel` / `gac_ratio` its SCA kernel k and TA ratio r. `tau`,
    `v_threshold`, `gamma` set every LIF, GAC's included. Defaults, for in_channels 2 and
    10 classes: 350,426 parameters. Frames whose T or channel count differ from the
    model's raise ConfigError; input that is not 5-D raises ValueError.
    """

    def __init__(self, in_channels: int, num_classes: int, T: int = 4,
                 channels: tuple[int, ...] = (32, 64, 128), blocks: tuple[int, ...] = (1, 1, 1),
                 gac_kernel: int = 4, gac_ratio: int = 2, gac_channels: int | None = None,
                 tau: float = 0.5, v_threshold: float = 1.0, gamma: float = 1.0):
        super().__init__()
        channels, blocks = tuple(channels), tuple(blocks)
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(f"channels must be a non-empty sequence of ints >= 1, "
                              f"got {channels}")
        if len(blocks) != len(channels) or any(not isinstance(n, int) or n < 1
                                               for n in blocks):
            raise ConfigError(f"blocks must give one int >= 1 per stage of channels "
                              f"{channels}, got {blocks}")
        lif = {"tau": tau, "v_threshold": v_threshold, "gamma": gamma}
        gac_channels = channels[0] if gac_channels is None else gac_channels
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.T = T
        self.gac = GAC(in_channels, gac_channels, T, ratio=gac_ratio, kernel_size=gac_kernel,
                       **lif)
        self.embed = nn.Sequential(nn.Conv2d(gac_channels, channels[0], 3, padding=1,
                                             bias=False),
                                   nn.BatchNorm2d(channels[0]))
        stages, c_in = [], channels[0]
        for i, (c, n) in enumerate(zip(channels, blocks)):
            stages.append(MSBlock(c_in, c, 1 if i == 0 else 2, lif))
            stages.extend(MSBlock(c, c, 1, lif) for _ in range(n - 1))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.head_lif = LIF(**lif)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"GACResNet expects frames [B, T, C, H, W], got shape "
                             f"{tuple(x.shape)}")
        if x.shape[1] != self.T or x.shape[2] != self.in_channels:
            raise ConfigError(f"GACResNet was built for T={self.T} time bins of "
                              f"{self.in_channels} channels, got frames [B, T, C, H, W] = "
                              f"{tuple(x.shape)}")
        u = self.embed(self.gac(x).flatten(0, 1))
        s = self.head_lif(self.stages(u.view(*x.shape[:2], *u.shape[1:])))
        pooled = self.pool(s.flatten(0, 1)).flatten(1)
        return self.fc(pooled).view(x.shape[0], self.T, -1).mean(dim=1)
