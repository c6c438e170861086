"""memcnn.IUNet (the Python twin of memcnn::models::IUNet): built from memcnn's Python layers and
wrappers; gradients with memory saving equal those without in 1-D, 2-D and 3-D, invertible,
activation memory flat in depth, orthogonal after training, clear errors."""

import copy
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import memcnn
from helpers import relative_error
from test_resampling import reference_resampling

# Per dims: channels and an input size for which the GroupNorm groups of the coarsest level hold
# at least 16 elements (with fewer, some gradients vanish analytically and only noise is left to
# compare).
CONFIGS = {
    1: ([4, 6, 8], (2, 4, 64)),
    2: ([4, 8, 16], (2, 4, 16, 16)),
    3: ([4, 16, 64], (1, 4, 8, 8, 8)),
}


def perturbed(net, scale=0.3):
    """Moves the orthogonal layers off their initial transforms (and the upsampling off the
    downsampling's inverse), so that the comparison is not at a special point."""
    with torch.no_grad():
        for layer in net.orthogonal_layers():
            for p in layer.parameters():
                p.add_(torch.randn_like(p) * scale)
    return net


def gradients(net, x, weight, memory_saving):
    net.set_memory_saving(memory_saving)
    net.zero_grad()
    leaf = x.clone().requires_grad_()
    y = net(leaf * 1.0)  # a copy: the first part frees what it is given (a leaf too) until backward
    (y * weight).sum().backward()
    return y.detach(), [("x", leaf.grad)] + [(n, p.grad) for n, p in net.named_parameters()]


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_gradients_with_memory_saving_equal_those_without(dims, dtype, tolerance):
    channels, shape = CONFIGS[dims]
    net = perturbed(memcnn.IUNet(channels, [2, 1, 2], dims)).to(dtype)
    assert net.learnable_resampling and len(net.orthogonal_layers()) == (4 + 2 + 2) + 2 * 2  # mixings, resamplings
    x = torch.randn(*shape, dtype=dtype)
    weight = torch.randn(*shape, dtype=dtype)
    y_saving, g_saving = gradients(net, x, weight, True)
    y_plain, g_plain = gradients(net, x, weight, False)
    assert torch.equal(y_saving, y_plain)
    assert len(g_saving) == len(list(net.parameters())) + 1
    for (name, a), (_, b) in zip(g_saving, g_plain):
        assert a is not None and b is not None, name
        assert b.abs().max() > 0, name
        assert relative_error(a, b) < tolerance, name


def test_memory_saving_frees_what_it_is_given_and_keeps_only_the_output():
    channels, shape = CONFIGS[2]
    net = memcnn.IUNet(channels, [1, 1, 1], 2)
    x = torch.randn(*shape)
    net(x.clone())  # the first call lets the C++ layers drop their own initial tensors for Python's
    with memcnn.MemoryProbe() as probe:
        given = x.clone()
        y = net(given)
        held = probe.current_above_start()
    assert memcnn.is_freed(given)
    assert held == y.numel() * y.element_size()  # the input freed, every activation freed
    net.eval()
    kept = x.clone()
    net(kept)
    assert not memcnn.is_freed(kept)  # eval(): a plain call


def peak_training_bytes(depth, memory_saving, dims):
    torch.manual_seed(0)
    net = memcnn.IUNet([8, 16, 32], [depth] * 3, dims, memory_saving=memory_saving)
    x = torch.randn(2, 8, 32, 32) if dims == 2 else torch.randn(1, 8, 16, 16, 16)
    net(x.clone()).sum().backward()  # allocates the parameters' .grad outside the measurement
    with memcnn.MemoryProbe() as probe:
        y = net(x.clone())
        after_forward = probe.current_above_start()
        y.sum().backward()
        del y
    return after_forward, probe.peak_above_start()


@pytest.mark.parametrize("dims", [2, 3])
def test_activation_memory_is_flat_in_depth(dims):
    held_2, peak_2 = peak_training_bytes(2, True, dims)
    held_8, peak_8 = peak_training_bytes(8, True, dims)
    plain_held_2, _ = peak_training_bytes(2, False, dims)
    plain_held_8, plain_peak_8 = peak_training_bytes(8, False, dims)
    assert held_8 == held_2  # the output alone
    assert peak_8 < 1.05 * peak_2
    assert plain_held_8 > 3 * plain_held_2  # a full graph grows with depth
    assert peak_8 < 0.5 * plain_peak_8


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_inverse_encode_and_decode(dims):
    channels, shape = CONFIGS[dims]
    net = perturbed(memcnn.IUNet(channels, [1, 2, 1], dims, method="exp")).double()
    x = torch.randn(*shape, dtype=torch.float64)
    for training in (True, False):
        net.train(training)
        y = net(x.clone())
        assert (net.inverse(y.detach().clone()) - x).abs().max() < 1e-10
        code = net.encode(x.clone())
        assert [c.shape[1] for c in code] == [channels[0] - channels[1] // 2 ** dims,
                                              channels[1] - channels[2] // 2 ** dims, channels[2]]
        assert relative_error(net.decode([c.clone() for c in code]), y) < 1e-12  # decode frees what it gets
        rebuilt = net.decode_inverse(y.detach().clone())
        for a, b in zip(rebuilt, code):
            assert (a - b).abs().max() < 1e-10
        assert (net.encode_inverse(rebuilt) - x).abs().max() < 1e-10


def test_the_parts_are_wired_as_the_cpp_iunet():
    net = perturbed(memcnn.IUNet([4, 8], [1, 1], 2, channel_mixing_every=0)).double()
    assert [name for name, _ in net.named_children()] == [
        "encoder_0", "decoder_0", "split_0", "concatenation_0", "downsampling_0", "upsampling_0", "encoder_1"]
    net.set_memory_saving(False)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    enc0, dec0, enc1 = net.encoder_0._fn[0], net.decoder_0._fn[0], net.encoder_1._fn[0]
    t = enc0(x)
    skip, t = t[:, :2], t[:, 2:]  # 4 - 8 / 4 channels stay
    t = reference_resampling(net.downsampling_0._fn, t, False)
    t = enc1(t)
    t = reference_resampling(net.upsampling_0._fn, t, True)
    expected = dec0(torch.cat([skip, t], dim=1))
    assert relative_error(net(x), expected) < 1e-12
    identity = memcnn.IUNet([4, 8, 16], [0, 0, 0], 2)  # no blocks: resampling and its inverse
    assert relative_error(identity(x.float()), x.float()) < 1e-6


def test_block_factory_coordinates_and_channel_mixing():
    calls = []

    def block(channels, dims, level, index):
        calls.append((channels, dims, level, index))
        return memcnn.AdditiveCoupling(nn.Conv1d(channels // 2, channels // 2, 3, padding=1))

    net = memcnn.IUNet([4, 6, 8], [2, 3, 1], 1, block=block, channel_mixing_every=2)
    assert calls == [(4, 1, 0, 0), (4, 1, 0, 1), (4, 1, 0, 2), (4, 1, 0, 3),
                     (6, 1, 1, 0), (6, 1, 1, 1), (6, 1, 1, 2), (6, 1, 1, 3), (6, 1, 1, 4), (6, 1, 1, 5),
                     (8, 1, 2, 0)]
    kinds = [type(m).__name__ for m in net.encoder_1._fn]
    assert kinds == ["OrthogonalChannelMixing", "AdditiveCoupling", "AdditiveCoupling",
                     "OrthogonalChannelMixing", "AdditiveCoupling"]
    assert net.total_stride() == (4,)
    assert net(torch.randn(2, 4, 16)).shape == (2, 4, 16)


def test_strides_per_level_and_padding():
    net = perturbed(memcnn.IUNet([4, 8, 16], [1, 1, 1], 2, stride=[(2, 1), (1, 2)])).double()
    assert net.total_stride() == (2, 2)
    assert memcnn.IUNet([4, 8, 16], [1, 1, 1], 2, stride=[(2, 1)]).total_stride() == (4, 1)
    assert memcnn.IUNet([4, 8, 16], [1, 1, 1], 2, stride=(1, 2)).total_stride() == (1, 4)
    assert memcnn.IUNet([4, 16], [1, 1], 2, stride=4).total_stride() == (4, 4)
    assert memcnn.IUNet([4, 8, 16], [1, 1, 1], 2, stride=[]).total_stride() == (4, 4)
    x = torch.randn(2, 4, 15, 15, dtype=torch.float64)  # padded to 16 x 16, cropped back
    y = net(x.clone())
    assert y.shape == x.shape
    expected = net.decode(net.encode(F.pad(x, [0, 1, 0, 1])))[:, :, :15, :15]
    assert relative_error(y, expected) < 1e-12
    weight = torch.randn_like(x)
    _, g_saving = gradients(net, x, weight, True)
    _, g_plain = gradients(net, x, weight, False)
    for (name, a), (_, b) in zip(g_saving, g_plain):
        assert relative_error(a, b) < 1e-10, name


def test_dropout_in_blocks_with_preserve_rng_state():
    def block(channels, dims, level, index):
        return memcnn.AdditiveCoupling(nn.Sequential(nn.Conv2d(channels // 2, channels // 2, 3, padding=1),
                                                     nn.Dropout(0.3)))

    net = memcnn.IUNet([4, 8], [2, 2], 2, block=block, preserve_rng_state=True).double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    weight = torch.randn_like(x)
    torch.manual_seed(5)
    _, g_saving = gradients(net, x, weight, True)
    torch.manual_seed(5)
    _, g_plain = gradients(net, x, weight, False)
    for (name, a), (_, b) in zip(g_saving, g_plain):
        assert relative_error(a, b) < 1e-10, name


def test_batchnorm_blocks_update_running_statistics_once():
    net = memcnn.IUNet([4, 8], [1, 1], 2, block=memcnn.iunet_coupling_blocks("batch"))
    plain = copy.deepcopy(net)
    plain.set_memory_saving(False)
    x = torch.randn(4, 4, 8, 8)
    net(x.clone()).sum().backward()
    plain(x.clone()).sum().backward()
    buffers = [b for n, b in net.named_buffers() if "running" in n]
    assert buffers and all(b.abs().sum() > 0 for b in buffers)
    for (name, a), b in zip(net.named_buffers(), plain.buffers()):
        assert relative_error(a.float(), b.float()) < 1e-5, name


@pytest.mark.parametrize("method", ["cayley", "exp"])
def test_orthogonal_after_a_few_optimiser_steps_in_float32(method):
    channels, shape = CONFIGS[3]
    net = memcnn.IUNet(channels, [1, 1, 1], 3, method=method)
    layers = net.orthogonal_layers()
    start = [layer.free.detach().clone() for layer in layers]
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    x, target = torch.randn(*shape), torch.randn(*shape)
    for _ in range(4):
        optimizer.zero_grad()
        F.mse_loss(net(x.clone()), target).backward()
        optimizer.step()
    assert all((layer.free - s).abs().max() > 0.05 for layer, s in zip(layers, start))
    assert net.orthogonality_error() < 1e-6
    net.eval()
    with torch.no_grad():
        assert (net.inverse(net(x)) - x).abs().max() < 1e-4


def test_copies_state_dict_and_memory_saving_switch():
    channels, shape = CONFIGS[1]
    net = perturbed(memcnn.IUNet(channels, [1, 1, 1], 1, learnable_resampling=False))
    assert len([m for m in net.orthogonal_layers() if list(m.parameters())]) == 5  # the mixings only
    x = torch.randn(*shape)
    net.eval()
    y = net(x)
    keys = list(net.state_dict())
    net.set_memory_saving(False)
    assert list(net.state_dict()) == keys and not net.memory_saving
    assert all(m.disable for m in net.children())
    fresh = memcnn.IUNet(channels, [1, 1, 1], 1, learnable_resampling=False).eval()
    fresh.load_state_dict(net.state_dict())
    for other in (fresh, copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert torch.equal(other(x), y)
    assert "memory_saving=False" in repr(net)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="dims must be 1, 2 or 3"):
        memcnn.IUNet([4, 8], [1, 1], 4)
    with pytest.raises(ValueError, match="one integer per level"):
        memcnn.IUNet([4, 8], [1], 2)
    with pytest.raises(ValueError, match="must be a multiple of 4"):
        memcnn.IUNet([4, 6], [1, 1], 2)
    with pytest.raises(ValueError, match=r"at most 16 \(level 0's 4 channels all sent down\)"):
        memcnn.IUNet([4, 32], [1, 1], 2)
    with pytest.raises(ValueError, match="every stride needs 2 entries"):
        memcnn.IUNet([4, 8], [1, 1], 2, stride=[(2, 2, 2)])
    with pytest.raises(ValueError, match="one stride per level transition"):
        memcnn.IUNet([4, 8, 16], [1, 1, 1], 2, stride=[(2, 2)] * 3)
    with pytest.raises(ValueError, match="even channel count"):
        memcnn.IUNet([3, 4], [1, 1], 1)
    with pytest.raises(ValueError, match="channel_mixing_every must be 0"):
        memcnn.IUNet([4, 8], [1, 1], 2, channel_mixing_every=-1)
    with pytest.raises(ValueError, match="method must be 'cayley' or 'exp'"):
        memcnn.IUNet([4, 8], [1, 1], 2, method="householder")
    with pytest.raises(ValueError, match="returned None for level 0, block 0"):
        memcnn.IUNet([4, 8], [1, 1], 2, block=lambda c, d, level, i: None)
    with pytest.raises(TypeError, match="invertible torch.nn.Module"):
        memcnn.IUNet([4, 8], [1, 1], 2, block=lambda c, d, level, i: nn.Conv2d(c, c, 1))
    net = memcnn.IUNet([4, 8], [1, 1], 2, pad=False)
    with pytest.raises(RuntimeError, match=r"expects 4 channels \(channels\[0\]\)"):
        net(torch.randn(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="with 2 spatial dimensions"):
        net(torch.randn(1, 4, 8))
    with pytest.raises(RuntimeError, match="must be divisible by the total stride"):
        net(torch.randn(1, 4, 7, 8))
    with pytest.raises(RuntimeError, match="inverse cannot"):
        net.inverse(torch.randn(1, 4, 7, 8))
    with pytest.raises(RuntimeError, match="the code has 3 tensors, 1 more"):
        net.decode([torch.randn(1, 1)] + net.encode(torch.randn(1, 4, 8, 8)))
