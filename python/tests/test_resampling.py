"""iUNets' layers: OrthogonalDownsampling / OrthogonalUpsampling / OrthogonalChannelMixing and
ChannelSplit / ChannelConcat. Python-owned parameters, C++ computation: checked against the same
maps written in plain PyTorch here, invertible, orthogonal under training, with gradients inside a
memory-saving wrapper equal to those without one."""

import copy
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import memcnn
from helpers import relative_error

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def reference_orthogonal(free, base, method):
    """orthogonal(A) @ base, A the skew-symmetric matrix of free's strict upper triangle."""
    upper = torch.triu(free.double(), 1)
    skew = upper - upper.transpose(-1, -2)
    eye = torch.eye(skew.shape[-1], dtype=torch.float64).expand_as(skew)
    rotation = torch.linalg.solve(eye - skew, eye + skew) if method == "cayley" else torch.matrix_exp(skew)
    return rotation @ base


def reference_haar(stride):
    """Kronecker product of [[1, 1], [1, -1]] per dimension of stride 2 (1: [[1]]), each row then
    scaled to unit length (as memcnn scales the signs it keeps)."""
    signs = torch.ones(1, 1, dtype=torch.float64)
    for s in stride:
        assert s in (1, 2)
        one = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) if s == 2 else torch.ones(1, 1)
        signs = torch.kron(signs, one.double())
    return signs / signs.square().sum(-1, keepdim=True).sqrt()


def reference_resampling(layer, x, up):
    """The layer's map in plain PyTorch: a grouped (transposed) convolution with its matrices."""
    channels, stride = layer._options["channels"], layer._options["stride"]
    b = 1
    for s in stride:
        b *= s
    base = reference_haar(stride) if layer._options["init"] == "haar" else torch.eye(b, dtype=torch.float64)
    if layer._options["learnable"]:
        q = reference_orthogonal(layer.free, base, layer._options["method"]).to(layer.free.dtype)
    else:
        q = base.expand(channels, b, b).to(x.dtype)
    kernel = q.reshape(channels * b, 1, *stride)
    op = CONV_T if up else CONV
    return op[len(stride)](x, kernel, stride=stride, groups=channels)


def perturbed(layer, scale=0.3):
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * scale)
    return layer


CASES = [((2,), "haar", "cayley"), ((2, 2), "haar", "exp"), ((2, 1, 2), "haar", "cayley"),
         ((3,), "squeeze", "exp"), ((2, 3), "squeeze", "cayley"), ((2, 2, 2), "squeeze", "exp")]


@pytest.mark.parametrize("stride,init,method", CASES)
@pytest.mark.parametrize("up", [False, True])
def test_resampling_matches_plain_pytorch_and_inverts(stride, init, method, up):
    cls = memcnn.OrthogonalUpsampling if up else memcnn.OrthogonalDownsampling
    layer = perturbed(cls(3, stride, method=method, init=init).double())
    b = 1
    for s in stride:
        b *= s
    fine = torch.randn(2, 3, *[4 * s for s in stride], dtype=torch.float64)
    coarse = torch.randn(2, 3 * b, *[4] * len(stride), dtype=torch.float64)
    x = coarse if up else fine
    y = layer(x)
    assert y.shape == (fine if up else coarse).shape
    assert relative_error(y, reference_resampling(layer, x, up)) < 1e-12
    assert (layer.inverse(y) - x).abs().max().item() < 1e-12
    assert layer.orthogonality_error() < 1e-12
    assert torch.equal(layer.log_det(x), torch.zeros(2, dtype=torch.float64))


def test_fixed_resampling_has_no_parameters_and_computes_in_the_inputs_precision():
    layer = memcnn.OrthogonalDownsampling(2, (2, 2), learnable=False)
    assert list(layer.parameters()) == [] and [n for n, _ in layer.named_buffers()] == ["base_pattern"]
    assert list(layer.state_dict()) == []  # made from the options: no state
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    y = layer(x)
    assert y.dtype == torch.float64
    assert relative_error(y, reference_resampling(layer, x, False)) < 1e-15


def test_initial_transforms_are_haar_and_the_squeeze():
    x = torch.randn(2, 3, 4, 6)
    squeeze = memcnn.OrthogonalDownsampling(3, (2, 2), init="squeeze")
    assert torch.equal(squeeze(x), memcnn.InvertibleDownsampling(2)(x))
    haar = memcnn.OrthogonalDownsampling(3, (2, 2))
    constant = torch.full((1, 3, 4, 4), 1.5)
    y = haar(constant)
    assert torch.allclose(y[:, 0::4], torch.full((1, 3, 2, 2), 3.0))  # the scaled block mean: 4 * 1.5 / 2
    assert y[:, 1::4].abs().max() < 1e-6 and y[:, 2::4].abs().max() < 1e-6 and y[:, 3::4].abs().max() < 1e-6
    assert torch.equal(memcnn.layers.haar_matrix((2, 2, 2)), reference_haar((2, 2, 2)))
    big = memcnn.layers.haar_matrix((4,))
    assert memcnn.orthogonality_error(big) < 1e-15
    assert torch.allclose(big[0], torch.full((4,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("method", ["cayley", "exp"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_channel_mixing_matches_plain_pytorch_and_inverts(method, dims):
    layer = memcnn.OrthogonalChannelMixing(5, method=method).double()
    x = torch.randn(2, 5, *[3] * dims, dtype=torch.float64)
    q = reference_orthogonal(layer.free, torch.eye(5, dtype=torch.float64), method)[0]
    assert relative_error(layer.matrices(), q) < 1e-14
    y = layer(x)
    assert relative_error(y, CONV[dims](x, q.reshape(5, 5, *[1] * dims))) < 1e-12
    assert (layer.inverse(y) - x).abs().max().item() < 1e-12
    assert layer.orthogonality_error() < 1e-12
    assert torch.equal(layer.log_det(x), torch.zeros(2, dtype=torch.float64))


def test_channel_mixing_options():
    torch.manual_seed(1)
    a = memcnn.OrthogonalChannelMixing(4)
    torch.manual_seed(1)
    b = memcnn.OrthogonalChannelMixing(4)
    assert torch.equal(a.free, b.free) and a.free.abs().sum() > 0  # drawn from torch's generator
    identity = memcnn.OrthogonalChannelMixing(4, random_init=False)
    x = torch.randn(2, 4, 3)
    assert torch.equal(identity(x), x)
    fixed = memcnn.OrthogonalChannelMixing(4, learnable=False)
    assert list(fixed.parameters()) == [] and [n for n, _ in fixed.named_buffers()] == ["free"]
    assert fixed.free.abs().sum() > 0 and fixed.orthogonality_error() < 1e-6


def test_split_and_concat():
    x = torch.randn(2, 5, 3, 3)
    split, concat = memcnn.ChannelSplit(2), memcnn.ChannelConcat(2)
    a, b = split(x)
    assert torch.equal(a, x[:, :2]) and torch.equal(b, x[:, 2:])
    assert a.data_ptr() != x.data_ptr() and a.is_contiguous() and b.is_contiguous()  # copies, not views
    assert torch.equal(split.inverse(a, b), x) and torch.equal(concat(a, b), x)
    c, d = concat.inverse(x)
    assert torch.equal(c, a) and torch.equal(d, b)
    assert torch.equal(split.log_det(x), torch.zeros(2)) and torch.equal(concat.log_det(a, b), torch.zeros(2))
    along_3 = memcnn.ChannelSplit(1, dim=3)
    e, f = along_3(x)
    assert e.shape == (2, 5, 3, 1) and f.shape == (2, 5, 3, 2)
    assert list(split.parameters()) == [] and split.state_dict() == {}


def chain(dtype):
    """Resampling, mixing and a coupling in one chain: [N, 2, 8, 8] -> [N, 8, 4, 4] -> back."""
    torch.manual_seed(3)
    return nn.ModuleList([
        perturbed(memcnn.OrthogonalDownsampling(2, (2, 2))),
        perturbed(memcnn.OrthogonalChannelMixing(8, method="exp")),
        memcnn.AdditiveCoupling(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh())),
        perturbed(memcnn.OrthogonalUpsampling(2, (2, 2), method="exp", init="squeeze")),
    ]).to(dtype)


def plain_chain(modules, x):
    """The same chain in plain PyTorch (the layers by reference_resampling, the mixing as a conv)."""
    down, mix, coupling, up = modules
    x = reference_resampling(down, x, False)
    q = reference_orthogonal(mix.free, torch.eye(8, dtype=torch.float64), "exp")[0].to(x.dtype)
    x = F.conv2d(x, q.reshape(8, 8, 1, 1))
    x1, x2 = x.chunk(2, dim=1)
    y1 = x1 + coupling.Fm(x2)
    y2 = x2 + coupling.Gm(y1)
    return reference_resampling(up, torch.cat([y1, y2], dim=1), True)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("how", ["each", "sequential"])
def test_gradients_in_a_wrapper_equal_plain_pytorch(dtype, tolerance, how):
    modules = chain(dtype)
    plain = copy.deepcopy(modules)
    if how == "each":
        wrapped = nn.Sequential(*[memcnn.InvertibleModuleWrapper(m) for m in modules])
    else:
        wrapped = memcnn.InvertibleModuleWrapper(memcnn.InvertibleSequential(*modules))
    x = torch.randn(3, 2, 8, 8, dtype=dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = wrapped(xa * 1.0), plain_chain(plain, xb)
    assert relative_error(ya, yb) < tolerance
    weight = torch.randn_like(ya)
    (ya * weight).sum().backward()
    (yb * weight).sum().backward()
    assert relative_error(xa.grad, xb.grad) < tolerance
    for (name, p), q in zip(modules.named_parameters(), plain.parameters()):
        assert p.grad is not None and q.grad is not None, name
        assert q.grad.abs().max() > 0, name
        assert relative_error(p.grad, q.grad) < tolerance, name


def test_a_wrapped_split_frees_its_input_and_gradients_match():
    split = memcnn.InvertibleModuleWrapper(memcnn.ChannelSplit(3))
    concat = memcnn.InvertibleModuleWrapper(memcnn.ChannelConcat(3))
    conv = nn.Conv2d(5, 5, 3, padding=1).double()
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    h = conv(x)
    a, b = split(h)
    assert memcnn.is_freed(h)
    c = concat(a * 2, b.tanh())
    c.pow(2).sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in conv.parameters()]
    x.grad = None
    conv.zero_grad()
    h = conv(x)
    torch.cat([h[:, :3] * 2, h[:, 3:].tanh()], dim=1).pow(2).sum().backward()
    for g, r in zip(grads, [x.grad] + [p.grad for p in conv.parameters()]):
        assert relative_error(g, r) < 1e-12


@pytest.mark.parametrize("method", ["cayley", "exp"])
def test_orthogonal_after_training_in_float32(method):
    layers = nn.ModuleList([memcnn.OrthogonalDownsampling(4, (2, 2, 2), method=method),
                            memcnn.OrthogonalChannelMixing(32, method=method)])
    start = [p.detach().clone() for p in layers.parameters()]
    optimizer = torch.optim.Adam(layers.parameters(), lr=0.1)
    x = torch.randn(2, 4, 4, 4, 4)
    target = torch.randn(2, 32, 2, 2, 2)
    for _ in range(5):
        optimizer.zero_grad()
        y = memcnn.InvertibleModuleWrapper(layers[1])(memcnn.InvertibleModuleWrapper(layers[0])(x.clone()))
        (y - target).pow(2).mean().backward()
        optimizer.step()
    for p, s in zip(layers.parameters(), start):
        assert (p - s).abs().max() > 0.1  # they did move
    for layer in layers:
        assert layer.matrices().dtype == torch.float32
        assert layer.orthogonality_error() < 1e-6
    y = layers[0](x)
    assert (layers[0].inverse(y) - x).abs().max() < 1e-5


def test_state_dict_copies_and_devices():
    torch.manual_seed(0)
    down = perturbed(memcnn.OrthogonalDownsampling(3, (2,)))
    mix = memcnn.OrthogonalChannelMixing(6, learnable=False)
    x = torch.randn(2, 3, 8)
    for layer, inp in ((down, x), (mix, down(x))):
        expected = layer(inp)
        fresh = type(layer)(**layer._options)
        assert not torch.equal(fresh(inp), expected)
        fresh.load_state_dict(layer.state_dict())
        assert torch.equal(fresh(inp), expected)
        state = torch.random.get_rng_state()
        copies = [copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))]
        for other in copies:
            assert torch.equal(other(inp), expected)
        assert torch.equal(torch.random.get_rng_state(), state)  # rebuilding the C++ layers drew nothing
        for other in copies:
            with torch.no_grad():
                other.free.add_(0.5)
            assert not torch.equal(other(inp), expected) and torch.equal(layer(inp), expected)
        double = copy.deepcopy(layer).double()
        assert double.free.dtype == torch.float64
        assert relative_error(double(inp.double()), expected.double()) < 1e-5


def test_errors_are_clear():
    with pytest.raises(ValueError, match="one integer per spatial dimension"):
        memcnn.OrthogonalDownsampling(2, 2)
    with pytest.raises(ValueError, match="one integer per spatial dimension"):
        memcnn.OrthogonalDownsampling(2, (2, 2, 2, 2))
    with pytest.raises(ValueError, match="method must be 'cayley' or 'exp'"):
        memcnn.OrthogonalChannelMixing(2, method="householder")
    with pytest.raises(ValueError, match="init must be 'haar' or 'squeeze'"):
        memcnn.OrthogonalUpsampling(2, (2,), init="random")
    with pytest.raises(ValueError, match="power of 2"):
        memcnn.OrthogonalDownsampling(2, (3, 2))
    with pytest.raises(ValueError, match="channels must be at least 1"):
        memcnn.OrthogonalDownsampling(0, (2,))
    with pytest.raises(ValueError, match="first_channels must be at least 1"):
        memcnn.ChannelSplit(0)
    layer = memcnn.OrthogonalDownsampling(2, (2, 2))
    with pytest.raises(RuntimeError, match="must be divisible by the stride"):
        layer(torch.randn(1, 2, 5, 4))
    with pytest.raises(RuntimeError, match="expects 2 channels"):
        layer(torch.randn(1, 3, 4, 4))
    with pytest.raises(RuntimeError, match="the stride has 2 entries"):
        layer(torch.randn(1, 2, 4))
    with pytest.raises(RuntimeError, match="expects 8 channels"):
        layer.inverse(torch.randn(1, 2, 4, 4))
    with pytest.raises(RuntimeError, match="expects 4 channels"):
        memcnn.OrthogonalChannelMixing(4)(torch.randn(1, 3, 2))
    with pytest.raises(RuntimeError, match="must be larger than first_channels"):
        memcnn.ChannelSplit(3)(torch.randn(1, 3, 2))
    with pytest.raises(RuntimeError, match="the first tensor must have first_channels"):
        memcnn.ChannelConcat(2)(torch.randn(1, 3, 2), torch.randn(1, 1, 2))
    with pytest.raises(TypeError, match="not a torch.Tensor"):
        memcnn.ChannelSplit(1)([1, 2])
