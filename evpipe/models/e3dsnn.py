"""E-3DSNN: spike sparse convolution (SSC) networks on sparse voxels (Qiu et al., AAAI 2025).

Layer by layer as bollossom/E-3DSNN, classify_seg/pointcept/models/sparse_unet/E_3DSNN.py
(`SNN_3dv`, classification) and models/E_3DSNN/E_3DSNN_v1m1_base.py (`E_3DSNN_seg`,
segmentation); specs/algorithms.md §1.2-1.4. Every unit is "pre-activation": I-LIF spike ->
conv -> BN, and residuals add membrane potentials (BN outputs), MS-ResNet style.

- stem: SubM3(C_in -> E) -> BN, then 2 x [I-LIF -> SubM3(E -> E) -> BN] (first conv sees the
  real voxel features, all later convs integer spikes 0..D).
- BasicBlock(C): r = x + U1(x); y = r + U3(U2(r)), each U = I-LIF -> SubM3(C -> C) -> BN.
- DownBlock ("DonwBlock"): I-LIF -> SparseConv3d(k, stride 2) -> BN, then `depth` BasicBlocks;
  k = 2, padding 0 (cls/seg) or k = 3, padding 1 (the detection copy, `down_kernel=3`).
- classification head: SubMConv3d(C_last -> classes, k = 1, bias) on the last block's
  membrane (no spike before it), then the mean over each sample's voxels.
- segmentation decoder (UpBlock): I-LIF -> SparseInverseConv3d(k) -> BN, then
  up + [I-LIF -> Linear(C_up + C_skip -> C) -> BN -> I-LIF -> Linear(C -> C) -> BN](cat(up, skip)).
- BatchNorm1d(eps 1e-3, momentum 0.01); init trunc_normal(std 0.02, cut at +-2 absolute as
  timm's `trunc_normal_`, so effectively untruncated) for Linear and SubMConv3d weights, zero
  biases, BN weight 1 / bias 0; strided and inverse convs keep spconv's init.

Differences from the reference, none of which changes the computation: the head's padding=1
is dropped (a 1x1 SubM conv ignores it); unused OA-CNN arguments (groups, grid sizes,
num_ref) and the reference's unused voxel-grid clustering are left out.
"""

from __future__ import annotations

from functools import partial

import spconv.pytorch as spconv
import torch
from torch import nn

from ..errors import ConfigError
from . import spconv_compat  # noqa: F401  (spconv backward on CPU-only torch)
from .neurons import ILIF

# name -> (stem channels E, stage channels, blocks per stage); configs/modelnet40/
# cls-E3DSNN-v1m1-0-{T,S}.py. "T"/"S" are model sizes, not timesteps.
VARIANTS = {
    "T": (16, (16, 32, 64, 128), (1, 1, 1, 1)),
    "S": (24, (24, 48, 96, 160), (1, 1, 1, 1)),
}


def _norm(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


def init_weights(module: nn.Module) -> None:
    """E-3DSNN `_init_weights`, for `model.apply`."""
    if isinstance(module, (nn.Linear, spconv.SubMConv3d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SpikeConvBN(nn.Module):
    """[I-LIF ->] sparse conv -> BN on a SparseConvTensor (features [M, C_in] -> [M', C_out])."""

    def __init__(self, conv: nn.Module, spike: nn.Module | None):
        super().__init__()
        self.spike = spike
        self.conv = conv
        self.bn = _norm(conv.out_channels)

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        if self.spike is not None:
            x = x.replace_feature(self.spike(x.features))
        x = self.conv(x)
        return x.replace_feature(self.bn(x.features))


def _subm(c_in: int, c_out: int, key: str) -> spconv.SubMConv3d:
    return spconv.SubMConv3d(c_in, c_out, 3, padding=1, bias=False, indice_key=key)


class BasicBlock(nn.Module):
    """Membrane-residual block: r = x + U1(x); y = r + U3(U2(r)) (E_3DSNN.py `BasicBlock`)."""

    def __init__(self, channels: int, indice_key: str, neuron):
        super().__init__()
        self.conv1 = SpikeConvBN(_subm(channels, channels, indice_key), neuron())
        self.conv2 = SpikeConvBN(_subm(channels, channels, indice_key), neuron())
        self.conv3 = SpikeConvBN(_subm(channels, channels, indice_key), neuron())

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        r = x.replace_feature(x.features + self.conv1(x).features)
        y = self.conv3(self.conv2(r))
        return y.replace_feature(y.features + r.features)


class DownBlock(nn.Module):
    """I-LIF -> SparseConv3d(k, stride 2) -> BN, then `depth` BasicBlocks (`DonwBlock`)."""

    def __init__(self, c_in: int, c_out: int, depth: int, kernel: int, index: int, neuron):
        super().__init__()
        conv = spconv.SparseConv3d(c_in, c_out, kernel, stride=2, padding=(kernel - 1) // 2,
                                   bias=False, indice_key=f"spconv{index}")
        self.down = SpikeConvBN(conv, neuron())
        self.blocks = nn.ModuleList(BasicBlock(c_out, f"subm{index + 1}", neuron)
                                    for _ in range(depth))

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        x = self.down(x)
        for block in self.blocks:
            x = block(x)
        return x


class _Encoder(nn.Module):
    """Stem + DownBlocks shared by `E3DSNN` and `E3DSNNSeg`."""

    def __init__(self, in_channels: int, embed_channels: int, enc_channels, enc_depth,
                 levels: int, rounding: str, window: str, down_kernel: int):
        super().__init__()
        enc_channels, enc_depth = tuple(enc_channels), tuple(enc_depth)
        if not enc_channels or len(enc_channels) != len(enc_depth) or min(enc_depth) < 0:
            raise ConfigError(f"enc_channels {enc_channels} and enc_depth {enc_depth} must be "
                              "non-empty, of equal length, depths >= 0")
        if min(in_channels, embed_channels, *enc_channels) < 1:
            raise ConfigError("in_channels, embed_channels and enc_channels must be >= 1")
        if down_kernel not in (2, 3):
            raise ConfigError(f"down_kernel must be 2 (cls/seg) or 3 (detection), "
                              f"got {down_kernel}")
        neuron = partial(ILIF, levels, rounding, window)
        self.in_channels = in_channels
        self.levels = levels
        self.stem = nn.Sequential(
            SpikeConvBN(_subm(in_channels, embed_channels, "stem"), None),
            SpikeConvBN(_subm(embed_channels, embed_channels, "stem"), neuron()),
            SpikeConvBN(_subm(embed_channels, embed_channels, "stem"), neuron()))
        ins = (embed_channels, *enc_channels[:-1])
        self.stages = nn.ModuleList(DownBlock(c_in, c_out, depth, down_kernel, i, neuron)
                                    for i, (c_in, c_out, depth)
                                    in enumerate(zip(ins, enc_channels, enc_depth)))
        self.feature_channels = (embed_channels, *enc_channels)
        self.feature_strides = tuple(2 ** i for i in range(len(enc_channels) + 1))

    def forward_features(self, x: spconv.SparseConvTensor) -> list[spconv.SparseConvTensor]:
        """Membrane potentials after the stem and after each stage: one SparseConvTensor per
        entry of `feature_channels` / `feature_strides` (1, 2, 4, ...), e.g. for a detection
        head. Integer (e.g. uint8 spike) input features are converted to float32."""
        if not isinstance(x, spconv.SparseConvTensor):
            raise ValueError(f"expected a spconv.pytorch.SparseConvTensor, got {type(x).__name__}")
        if x.features.dim() != 2 or x.features.shape[1] != self.in_channels:
            raise ValueError(f"expected features [M, {self.in_channels}], "
                             f"got {tuple(x.features.shape)}")
        if not x.features.is_floating_point():
            x = x.replace_feature(x.features.float())
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


def mean_per_sample(features: torch.Tensor, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Mean of features [M, C] over rows with the same batch index (int [M]) -> [batch_size, C];
    samples without rows get zeros (torch_geometric `scatter(reduce="mean")`)."""
    batch = batch.long()
    sums = features.new_zeros(batch_size, features.shape[1]).index_add_(0, batch, features)
    counts = torch.bincount(batch, minlength=batch_size).clamp_(min=1)
    return sums / counts.unsqueeze(1).to(features.dtype)


class E3DSNN(_Encoder):
    """E-3DSNN classifier (`SNN_3dv`): SparseConvTensor (features [M, in_channels], indices
    int32 [M, 4] (batch, z, y, x)) -> logits float32 [batch_size, num_classes].

    `variant` "T" (stem 16, stages 16/32/64/128) or "S" (24; 24/48/96/160), one block per
    stage; `embed_channels`, `enc_channels`, `enc_depth` override it. `levels` = D of the
    I-LIF neurons, `rounding` / `window` as `ILIF`. Every stage halves the grid, so each
    spatial_shape axis should be >= 2 ** len(enc_channels) (the reference pads the grid
    by 96). With in_channels 6 and 40 classes: 1,874,216 (T) and 3,271,144 (S) parameters.
    """

    def __init__(self, in_channels: int, num_classes: int, variant: str = "T", levels: int = 4,
                 rounding: str = "half_up", window: str = "exclusive", down_kernel: int = 2,
                 embed_channels: int | None = None, enc_channels=None, enc_depth=None):
        if variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        e, ch, depth = VARIANTS[variant]
        super().__init__(in_channels, embed_channels or e, enc_channels or ch,
                         enc_depth or depth, levels, rounding, window, down_kernel)
        self.num_classes = num_classes
        self.head = spconv.SubMConv3d(self.feature_channels[-1], num_classes, 1, bias=True)
        self.apply(init_weights)

    def forward(self, x: spconv.SparseConvTensor, return_features: bool = False):
        """Logits [batch_size, num_classes]; with `return_features`, (logits, features) where
        features is `forward_features(x)`."""
        feats = self.forward_features(x)
        out = self.head(feats[-1])
        logits = mean_per_sample(out.features, out.indices[:, 0], out.batch_size)
        return (logits, feats) if return_features else logits


class UpBlock(nn.Module):
    """Decoder step (`UpBlock`): up = BN(InvConv(I-LIF(x))) on the skip's voxels, then
    up + fuse(cat(up, skip)) with fuse = I-LIF -> Linear -> BN -> I-LIF -> Linear -> BN."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, kernel: int, index: int, neuron):
        super().__init__()
        conv = spconv.SparseInverseConv3d(c_in, c_out, kernel, indice_key=f"spconv{index}",
                                          bias=False)
        self.up = SpikeConvBN(conv, neuron())
        self.fuse = nn.Sequential(neuron(), nn.Linear(c_out + c_skip, c_out), _norm(c_out),
                                  neuron(), nn.Linear(c_out, c_out), _norm(c_out))

    def forward(self, x: spconv.SparseConvTensor,
                skip: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        x = self.up(x)
        fused = self.fuse(torch.cat([x.features, skip.features], dim=1))
        return x.replace_feature(fused + x.features)


class E3DSNNSeg(_Encoder):
    """E-3DSNN U-Net segmenter (`E_3DSNN_seg`): SparseConvTensor -> per-voxel logits float32
    [M, num_classes], row i for input voxel i (`x.indices[i]`).

    Defaults are the SemanticKITTI config (configs/semantic_kitti/semseg-3dsnn-v1m1-0-base.py,
    "20M"): stem 64, stages 64/128/128/256 with 2 blocks each, decoder 256 x 4; use
    in_channels 4 (x, y, z, intensity) and 19 classes there. Stage i is decoded by
    `decoder[i]` back onto the voxels of stage i - 1 (the stem for i = 0).
    """

    def __init__(self, in_channels: int, num_classes: int, embed_channels: int = 64,
                 enc_channels=(64, 128, 128, 256), enc_depth=(2, 2, 2, 2),
                 dec_channels=(256, 256, 256, 256), levels: int = 4, rounding: str = "half_up",
                 window: str = "exclusive", down_kernel: int = 2):
        super().__init__(in_channels, embed_channels, enc_channels, enc_depth, levels,
                         rounding, window, down_kernel)
        dec_channels = tuple(dec_channels)
        if len(dec_channels) != len(self.stages) or min(dec_channels) < 1:
            raise ConfigError(f"dec_channels {dec_channels} needs one entry >= 1 per stage")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        neuron = partial(ILIF, levels, rounding, window)
        n = len(dec_channels)
        enc = self.feature_channels
        self.decoder = nn.ModuleList(
            UpBlock(enc[-1] if i == n - 1 else dec_channels[i + 1], enc[i], dec_channels[i],
                    down_kernel, i, neuron) for i in range(n))
        self.num_classes = num_classes
        self.head = spconv.SubMConv3d(dec_channels[0], num_classes, 1, bias=True)
        self.apply(init_weights)

    def forward(self, x: spconv.SparseConvTensor) -> torch.Tensor:
        feats = self.forward_features(x)
        y = feats[-1]
        for i in reversed(range(len(self.decoder))):
            y = self.decoder[i](y, feats[i])
        return self.head(y).features
