"""E-3DSNN classifier and U-Net segmenter (bollossom/E-3DSNN) on spconv, CPU."""

import io

import pytest
import spconv.pytorch as spconv
import torch

import evpipe.models.spconv_compat  # noqa: F401  (patches spconv for CPU backward)
from evpipe.errors import ConfigError
from evpipe.models.e3dsnn import E3DSNN, E3DSNNSeg, mean_per_sample
from evpipe.models.neurons import ILIF


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """spconv's CPU path runs one small GEMM per kernel offset; on 2 shared cores OpenMP
    threads mostly wait on each other, so the tests run single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def sparse_batch(seed=0, batch=3, per_sample=150, size=32, channels=6, requires_grad=False):
    """Random voxels per sample in a size^3 grid; features float32 [M, channels]."""
    g = torch.Generator().manual_seed(seed)
    idx = []
    for b in range(batch):
        zyx = torch.unique(torch.randint(0, size, (per_sample, 3), generator=g), dim=0)
        idx.append(torch.cat([torch.full((len(zyx), 1), b), zyx], 1))
    idx = torch.cat(idx).int()
    feats = torch.randn(len(idx), channels, generator=g).requires_grad_(requires_grad)
    return spconv.SparseConvTensor(feats, idx, [size] * 3, batch), feats


@pytest.mark.parametrize("variant, expect", [("T", 1_874_216), ("S", 3_271_144)])
def test_parameter_counts_match_the_reference(variant, expect):
    assert n_params(E3DSNN(6, 40, variant)) == expect


def test_parameter_count_for_other_inputs_and_classes():
    # Only the first conv (27 * C_in * 16) and the head (128 * K + K) depend on them.
    assert n_params(E3DSNN(4, 3)) == 1_874_216 - 27 * 2 * 16 - 37 * 129


def test_segmentation_parameter_count_semantickitti_config():
    assert n_params(E3DSNNSeg(4, 19)) == 20_049_683  # reference config comment: "20M"


def test_init_follows_reference():
    m = E3DSNN(6, 40)
    # trunc_normal(std 0.02) with timm's absolute bounds +-2: a plain N(0, 0.02^2) in effect.
    w = m.stages[3].blocks[0].conv1.conv.weight
    assert 0.019 < w.std() < 0.021 and abs(w.mean()) < 1e-3
    assert torch.all(m.head.bias == 0)
    assert torch.all(m.stages[0].down.bn.weight == 1) and torch.all(m.stages[0].down.bn.bias == 0)
    assert m.stages[0].down.bn.eps == 1e-3 and m.stages[0].down.bn.momentum == 0.01


def test_forward_logits_and_gradients_reach_input_features():
    torch.manual_seed(0)
    model = E3DSNN(6, 5)
    x, feats = sparse_batch(requires_grad=True)
    logits = model(x)
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert feats.grad.abs().sum() > 0
    assert model.stem[0].conv.weight.grad.abs().sum() > 0


def test_logits_are_per_sample_means_of_the_head():
    torch.manual_seed(0)
    model = E3DSNN(6, 4).eval()
    x, _ = sparse_batch(seed=1)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
        per_voxel = model.head(feats[-1])
    b = per_voxel.indices[:, 0].long()
    for i in range(3):
        torch.testing.assert_close(logits[i], per_voxel.features[b == i].mean(0))
    out = mean_per_sample(torch.ones(2, 3), torch.tensor([0, 2]), 4)
    assert out.tolist() == [[1] * 3, [0] * 3, [1] * 3, [0] * 3]


def test_return_features_shapes():
    model = E3DSNN(6, 5, variant="S").eval()
    x, _ = sparse_batch()
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
    assert logits.shape == (3, 5)
    assert model.feature_channels == (24, 24, 48, 96, 160)
    assert model.feature_strides == (1, 2, 4, 8, 16)
    assert len(feats) == 5 and torch.equal(feats[0].indices, x.indices)
    for f, c, s in zip(feats, model.feature_channels, model.feature_strides):
        assert f.features.shape == (f.indices.shape[0], c)
        assert list(f.spatial_shape) == [32 // s] * 3 and f.batch_size == 3
        assert set(f.indices[:, 0].tolist()) == {0, 1, 2}


def test_spikes_inside_are_integers_0_to_D():
    model = E3DSNN(6, 5, levels=2).eval()
    seen = []
    for m in model.modules():
        if isinstance(m, ILIF):
            m.register_forward_hook(lambda mod, args, out: seen.append(out))
    with torch.no_grad():
        model(sparse_batch()[0])
    assert len(seen) == 18  # stem 2, then per stage 1 before the downsampling + 3 per block
    for s in seen:
        assert torch.equal(s, s.round()) and s.min() >= 0 and s.max() <= 2


def test_integer_spike_features_are_accepted():
    model = E3DSNN(6, 5).eval()
    x, feats = sparse_batch()
    spikes = x.replace_feature(feats.abs().round().clamp(0, 4).to(torch.uint8))
    with torch.no_grad():
        assert torch.equal(model(spikes), model(x.replace_feature(spikes.features.float())))


def test_detection_downsampling_kernel_3():
    model = E3DSNN(4, 2, down_kernel=3, enc_channels=(8, 16), enc_depth=(1, 2),
                   embed_channels=8).eval()
    x, _ = sparse_batch(channels=4, size=20)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
    assert logits.shape == (3, 2)
    assert [list(f.spatial_shape) for f in feats] == [[20] * 3, [10] * 3, [5] * 3]
    assert model.stages[0].down.conv.kernel_size == [3, 3, 3]


def test_segmentation_logits_align_with_input_voxels():
    torch.manual_seed(0)
    model = E3DSNNSeg(4, 19, embed_channels=8, enc_channels=(8, 16, 16),
                      enc_depth=(1, 1, 1), dec_channels=(16, 16, 16))
    x, feats = sparse_batch(channels=4, requires_grad=True)
    out = model(x)
    assert out.shape == (feats.shape[0], 19)
    out.sum().backward()
    assert feats.grad.abs().sum() > 0
    model.eval()
    perm = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        shuffled = model(spconv.SparseConvTensor(feats.detach()[perm], x.indices[perm],
                                                 x.spatial_shape, x.batch_size))
    torch.testing.assert_close(shuffled, ref[perm], rtol=1e-4, atol=1e-5)


def test_segmentation_kernel_3_decoder_restores_voxels():
    model = E3DSNNSeg(4, 3, embed_channels=8, enc_channels=(8, 16), enc_depth=(1, 1),
                      dec_channels=(8, 16), down_kernel=3).eval()
    x, feats = sparse_batch(channels=4, size=20)
    with torch.no_grad():
        assert model(x).shape == (feats.shape[0], 3)


def test_state_dict_round_trip_gives_same_outputs():
    torch.manual_seed(0)
    model = E3DSNN(6, 5)
    x, _ = sparse_batch()
    model(x)  # one training step's BN statistics
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    clone = E3DSNN(6, 5)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    clone.eval()
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


def test_deterministic_under_manual_seed():
    x, _ = sparse_batch()
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = E3DSNN(6, 5).eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


def test_bad_configs_and_inputs():
    with pytest.raises(ConfigError):
        E3DSNN(6, 40, variant="M")
    with pytest.raises(ConfigError):
        E3DSNN(6, 0)
    with pytest.raises(ConfigError):
        E3DSNN(6, 4, down_kernel=4)
    with pytest.raises(ConfigError):
        E3DSNNSeg(4, 19, dec_channels=(256,))
    with pytest.raises(ValueError):
        E3DSNN(4, 3)(sparse_batch(channels=6)[0])
    with pytest.raises(ValueError):
        E3DSNN(4, 3)(torch.zeros(3, 4))
