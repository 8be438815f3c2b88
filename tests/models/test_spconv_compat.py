import numpy as np
import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

import evpipe.models.spconv_compat  # noqa: F401  (patches spconv for CPU backward)


def random_sparse(seed, n=120, size=10, channels=3):
    g = torch.Generator().manual_seed(seed)
    idx = torch.unique(torch.randint(0, size, (n, 3), generator=g), dim=0).int()
    idx = torch.cat([torch.zeros(len(idx), 1, dtype=torch.int32), idx], 1)
    feats = torch.randn(len(idx), channels, generator=g, requires_grad=True)
    return spconv.SparseConvTensor(feats, idx, [size] * 3, 1), feats


def dense_of(x: spconv.SparseConvTensor) -> torch.Tensor:
    """[B, C, Z, Y, X] scattered by hand from the sparse tensor."""
    out = torch.zeros(x.batch_size, x.features.shape[1], *x.spatial_shape)
    i = x.indices.long()
    out[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]] = x.features.detach()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subm_conv_matches_dense_conv3d(seed):
    torch.manual_seed(seed)
    x, feats = random_sparse(seed)
    conv = spconv.SubMConv3d(3, 5, 3, bias=False)
    y = conv(x)
    weight = conv.weight.detach().permute(0, 4, 1, 2, 3)  # [out, k, k, k, in] -> [out, in, k, k, k]
    ref = F.conv3d(dense_of(x), weight, padding=1)
    i = x.indices.long()
    expect = ref[i[:, 0], :, i[:, 1], i[:, 2], i[:, 3]]
    torch.testing.assert_close(y.features.detach(), expect, rtol=1e-5, atol=1e-6)


def test_gradients_reach_input_features():
    x, feats = random_sparse(3)
    net = spconv.SparseSequential(spconv.SubMConv3d(3, 4, 3, bias=False), torch.nn.ReLU(),
                                  spconv.SparseConv3d(4, 6, 2, stride=2, bias=False))
    out = net(x)
    out.features.pow(2).sum().backward()
    assert feats.grad is not None and feats.grad.shape == feats.shape
    assert feats.grad.abs().sum() > 0 and torch.isfinite(feats.grad).all()
    # Numerical check of one gradient entry for the SubM layer alone.
    conv = spconv.SubMConv3d(3, 2, 3, bias=False)
    x2, f2 = random_sparse(4)
    conv(x2).features.sum().backward()
    eps, k = 1e-2, 5
    with torch.no_grad():
        base = conv(spconv.SparseConvTensor(f2, x2.indices, x2.spatial_shape, 1)).features.sum()
        bumped = f2.clone()
        bumped[k, 1] += eps
        up = conv(spconv.SparseConvTensor(bumped, x2.indices, x2.spatial_shape, 1)).features.sum()
    np.testing.assert_allclose(((up - base) / eps).item(), f2.grad[k, 1].item(), rtol=1e-3, atol=1e-3)
