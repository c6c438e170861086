"""The wrapper and couplings behave as torch.nn.Modules: parameters, state_dict, .to(), train/eval,
deepcopy, pickling; the API has MemCNN 1.5.2's names, arguments and defaults."""

import copy
import inspect
import io
import pickle

import pytest
import torch
import torch.nn as nn

import memcnn
import memcnn.models.additive
import memcnn.models.affine
import memcnn.models.revop
from helpers import ConvBnRelu


def defaults(fn):
    return {k: v.default for k, v in inspect.signature(fn).parameters.items()}


def test_memcnn_152_signatures():
    assert defaults(memcnn.InvertibleModuleWrapper.__init__) == {
        "self": inspect.Parameter.empty, "fn": inspect.Parameter.empty, "keep_input": False,
        "keep_input_inverse": False, "num_bwd_passes": 1, "disable": False, "preserve_rng_state": False,
        "fused_backward": True}
    assert defaults(memcnn.AdditiveCoupling.__init__) == {
        "self": inspect.Parameter.empty, "Fm": inspect.Parameter.empty, "Gm": None, "implementation_fwd": -1,
        "implementation_bwd": -1, "split_dim": 1, "exact": False, "fraction_bits": 16}  # memcnn's extras last
    assert defaults(memcnn.AffineCoupling.__init__) == {
        "self": inspect.Parameter.empty, "Fm": inspect.Parameter.empty, "Gm": None, "adapter": None,
        "implementation_fwd": -1, "implementation_bwd": -1, "split_dim": 1}
    assert defaults(memcnn.is_invertible_module) == {
        "module_in": inspect.Parameter.empty, "test_input_shape": inspect.Parameter.empty,
        "test_input_dtype": torch.float32, "atol": 1e-6, "random_seed": 42}
    assert defaults(memcnn.create_coupling) == {
        "Fm": inspect.Parameter.empty, "Gm": None, "coupling": "additive", "implementation_fwd": -1,
        "implementation_bwd": -1, "adapter": None}
    assert memcnn.models.revop.InvertibleModuleWrapper is memcnn.InvertibleModuleWrapper
    assert memcnn.models.additive.AdditiveCoupling is memcnn.AdditiveCoupling
    assert memcnn.models.affine.AffineAdapterSigmoid is memcnn.AffineAdapterSigmoid
    for cls in (memcnn.InvertibleModuleWrapper, memcnn.AdditiveCoupling, memcnn.AffineCoupling,
                memcnn.InvertibleSequential):
        assert issubclass(cls, nn.Module)


def model():
    return memcnn.InvertibleModuleWrapper(
        memcnn.AffineCoupling(ConvBnRelu(2), ConvBnRelu(2), adapter=memcnn.AffineAdapterNaive))


def test_parameters_and_state_dict_are_memcnns():
    m = model()
    names = [n for n, _ in m.named_parameters()]
    assert names[0].startswith("_fn.Gm.f.") or names[0].startswith("_fn.Fm.f.")
    assert len(names) == 8  # conv weight and bias, BN weight and bias, in Fm and in Gm
    keys = set(m.state_dict())
    assert "_fn.Fm.f.seq.1.running_mean" in keys and "_fn.Gm.f.seq.0.weight" in keys
    other = model()
    other.load_state_dict(m.state_dict())
    x = torch.rand(2, 4, 6, 6)
    m.eval()
    other.eval()
    assert torch.equal(m(x), other(x))


def test_to_dtype_and_train_eval_reach_the_core():
    m = model().double()
    x = torch.rand(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    y = m(x * 1.0)
    assert y.dtype == torch.float64
    y.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float64 for p in m.parameters())
    m.eval()
    before = [b.clone() for b in m.buffers()]
    m(x)
    assert all(torch.equal(a, b) for a, b in zip(before, m.buffers()))  # eval: BN uses its statistics
    m.train()
    m(x * 1.0)
    assert not all(torch.equal(a, b) for a, b in zip(before, m.buffers()))


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_are_independent_and_equal(how):
    m = model()
    if how == "deepcopy":
        c = copy.deepcopy(m)
    elif how == "pickle":
        c = pickle.loads(pickle.dumps(m))
    else:
        buffer = io.BytesIO()
        torch.save(m, buffer)
        buffer.seek(0)
        c = torch.load(buffer)
    assert type(c) is type(m) and c.keep_input == m.keep_input
    x = torch.rand(2, 4, 6, 6)
    m.eval()
    c.eval()
    assert torch.equal(m(x), c(x))
    with torch.no_grad():
        next(c.parameters()).add_(1.0)
    assert not torch.equal(m(x), c(x))
    c.train()
    xin = torch.rand(2, 4, 6, 6, requires_grad=True)
    c(xin * 1.0).sum().backward()
    assert all(p.grad is not None for p in c.parameters())
    assert all(p.grad is None for p in m.parameters())


def test_gm_defaults_to_a_deep_copy_of_fm():
    F = nn.Conv2d(2, 2, 3, padding=1)
    c = memcnn.AdditiveCoupling(F)
    assert c.Gm is not c.Fm and torch.equal(c.Gm.weight, c.Fm.weight)
    a = memcnn.AffineCoupling(F, adapter=memcnn.AffineAdapterSigmoid)
    assert isinstance(a.Fm, memcnn.AffineAdapterSigmoid) and a.Gm.f is not F


def test_replaced_submodule_is_used():
    c = memcnn.AdditiveCoupling(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1))
    x = torch.rand(1, 4, 3, 3)
    y = c(x)
    c.Fm = nn.Identity()
    assert not torch.equal(c(x), y)
    x1, x2 = x.chunk(2, 1)
    assert torch.allclose(c(x)[:, :2], x1 + x2)


def test_invertible_sequential_and_checkpoint():
    chain = memcnn.InvertibleSequential(memcnn.AdditiveCoupling(ConvBnRelu(2)),
                                        memcnn.AffineCoupling(ConvBnRelu(2), adapter=memcnn.AffineAdapterNaive))
    assert memcnn.is_invertible_module(chain, test_input_shape=(2, 4, 5, 5), atol=1e-5)
    x = torch.rand(2, 4, 5, 5, dtype=torch.float64)
    chain = chain.double()
    plain = copy.deepcopy(chain)
    wrapped = memcnn.InvertibleModuleWrapper(chain)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    wrapped(xa * 1.0).sum().backward()
    plain(xb).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-12)

    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3)).double()
    ref = copy.deepcopy(net)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(1)
    memcnn.checkpoint(net, xa).pow(2).sum().backward()
    torch.manual_seed(1)
    ref(xb).pow(2).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-12)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-12)
    for p, q in zip(net.buffers(), ref.buffers()):
        assert torch.equal(p, q)
