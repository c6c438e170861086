"""Gradient parity with plain PyTorch (the same modules, no memory saving) for Python-defined F and G
with BatchNorm, ReLU and dropout: float64 to 1e-10, float32 to 1e-4, relative to the largest value."""

import copy

import pytest
import torch
import torch.nn as nn

import memcnn
from helpers import ConvBnRelu, relative_error

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def make_stack(coupling, depth, channels, dropout, dtype, fused, preserve_rng_state, separate_wrappers=True):
    blocks = []
    for _ in range(depth):
        F = ConvBnRelu(channels // 2, dropout)
        G = ConvBnRelu(channels // 2, dropout)
        if coupling == "additive":
            blocks.append(memcnn.AdditiveCoupling(F, G))
        else:
            blocks.append(memcnn.AffineCoupling(F, G, adapter=memcnn.AffineAdapterNaive))
    plain = nn.Sequential(*blocks).to(dtype)
    saving = copy.deepcopy(plain)
    if separate_wrappers:
        saving = nn.Sequential(*[memcnn.InvertibleModuleWrapper(b, fused_backward=fused,
                                                                preserve_rng_state=preserve_rng_state)
                                 for b in saving])
    else:
        saving = memcnn.InvertibleModuleWrapper(memcnn.InvertibleSequential(*saving), fused_backward=fused,
                                                preserve_rng_state=preserve_rng_state)
    return plain, saving


def flat_grads(parameters):
    return torch.cat([p.grad.reshape(-1) for p in parameters])


def run(model, x, seed):
    torch.manual_seed(seed)
    xin = x.clone().requires_grad_()
    y = model(xin * 1.0)  # a non-leaf input, which the first wrapper may free
    loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)).sum()
    loss.backward()
    return y.detach(), xin.grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_parity_with_plain_pytorch(dtype, coupling, fused, dropout):
    plain, saving = make_stack(coupling, depth=4, channels=8, dropout=dropout, dtype=dtype, fused=fused,
                               preserve_rng_state=dropout > 0)
    x = torch.randn(4, 8, 8, 8, dtype=dtype)
    y_plain, gx_plain = run(plain, x, seed=3)
    y_saving, gx_saving = run(saving, x, seed=3)
    tol = TOLERANCE[dtype]
    assert relative_error(y_saving, y_plain) < tol
    assert relative_error(gx_saving, gx_plain) < tol
    plain_params = list(plain.parameters())
    saving_params = list(saving.parameters())
    assert len(plain_params) == len(saving_params) > 0
    assert all(q.grad is not None for q in saving_params)
    # One scale for all parameters: a conv bias before BatchNorm has a gradient of rounding noise only.
    assert relative_error(flat_grads(saving_params), flat_grads(plain_params)) < tol
    # BatchNorm statistics as after one plain forward (MemCNN updates them three times).
    for a, b in zip(plain.buffers(), saving.buffers()):
        assert relative_error(b.double(), a.double()) < tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_of_a_wrapped_chain(dtype):
    plain, saving = make_stack("additive", depth=5, channels=8, dropout=0.2, dtype=dtype, fused=True,
                               preserve_rng_state=True, separate_wrappers=False)
    x = torch.randn(4, 8, 8, 8, dtype=dtype)
    y_plain, gx_plain = run(plain, x, seed=5)
    y_saving, gx_saving = run(saving, x, seed=5)
    assert relative_error(gx_saving, gx_plain) < TOLERANCE[dtype]
    assert relative_error(flat_grads(saving.parameters()), flat_grads(plain.parameters())) < TOLERANCE[dtype]


@pytest.mark.parametrize("fused", [True, False])
def test_inverse_direction(fused):
    F, G = ConvBnRelu(3), ConvBnRelu(3)
    coupling = memcnn.AdditiveCoupling(F, G).double()
    reference = copy.deepcopy(coupling)
    wrapper = memcnn.InvertibleModuleWrapper(coupling, fused_backward=fused)
    y = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    ya, yb = y.clone().requires_grad_(), y.clone().requires_grad_()
    wrapper.inverse(ya * 1.0).pow(2).sum().backward()
    reference.inverse(yb).pow(2).sum().backward()
    assert relative_error(ya.grad, yb.grad) < 1e-10
    assert relative_error(flat_grads(coupling.parameters()), flat_grads(reference.parameters())) < 1e-10


def test_shared_fm_and_gm_get_the_sum_of_both_uses():
    conv = nn.Conv2d(2, 2, 3, padding=1).double()
    wrapper = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(conv, conv))
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    wrapper(x.clone().requires_grad_() * 1.0).pow(2).sum().backward()
    saved = conv.weight.grad.clone()
    conv.weight.grad = None
    memcnn.AdditiveCoupling(conv, conv)(x.clone().requires_grad_()).pow(2).sum().backward()
    assert relative_error(saved, conv.weight.grad) < 1e-10


def test_multi_tensor_coupling_and_wrapper():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 3, padding=1)
            self.b = nn.Linear(3, 3)

        def forward(self, u, v):
            return torch.tanh(self.a(u)), torch.tanh(self.b(v))

    coupling = memcnn.AdditiveCoupling(Pair(), Pair()).double()
    reference = copy.deepcopy(coupling)
    wrapper = memcnn.InvertibleModuleWrapper(coupling)
    u, v = torch.randn(2, 4, 5, 5, dtype=torch.float64), torch.randn(4, 6, 3, dtype=torch.float64)
    # split_dim=1 splits both: u into 2+2 channels, v into 3+3 rows
    ua, va = u.clone().requires_grad_(), v.clone().requires_grad_()
    ub, vb = u.clone().requires_grad_(), v.clone().requires_grad_()
    pa, qa = wrapper(ua * 1.0, va * 1.0)
    pb, qb = reference(ub, vb)
    (pa.sum() + qa.pow(2).sum()).backward()
    (pb.sum() + qb.pow(2).sum()).backward()
    assert relative_error(ua.grad, ub.grad) < 1e-10
    assert relative_error(va.grad, vb.grad) < 1e-10
    for p, q in zip(coupling.parameters(), reference.parameters()):
        assert relative_error(p.grad, q.grad) < 1e-10
    u2, v2 = wrapper.inverse(pa.detach(), qa.detach())
    assert relative_error(u2, u) < 1e-12 and relative_error(v2, v) < 1e-12


@pytest.mark.parametrize("fused", [True, False])
def test_exact_zeros_in_a_freed_input_are_restored(fused):
    # The input has exact zeros (a ReLU's output, copied so it can be freed) and F starts with a
    # ReLU, whose backward masks on its output > 0: a rebuilt +1e-17 instead of 0 would let gradient
    # through where the plain computation has none. The core remembers the zeros (one bit each).
    torch.manual_seed(2)
    F = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.Tanh())
    G = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.Tanh())
    coupling = memcnn.AdditiveCoupling(F, G).double()
    plain = copy.deepcopy(coupling)
    wrapper = memcnn.InvertibleModuleWrapper(coupling, fused_backward=fused)
    source = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    xa, xb = source.clone().requires_grad_(), source.clone().requires_grad_()
    ina = torch.relu(xa).clone()
    assert (ina == 0).any()
    ya = wrapper(ina)
    assert memcnn.is_freed(ina)
    ya.pow(2).sum().backward()
    plain(torch.relu(xb).clone()).pow(2).sum().backward()
    assert relative_error(xa.grad, xb.grad) < 1e-10
    assert relative_error(flat_grads(coupling.parameters()), flat_grads(plain.parameters())) < 1e-10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (this build of torch sees none)")
@pytest.mark.parametrize("fused", [True, False])
def test_parity_on_cuda(fused):
    plain, saving = make_stack("additive", depth=3, channels=8, dropout=0.2, dtype=torch.float64, fused=fused,
                               preserve_rng_state=True)
    plain, saving = plain.cuda(), saving.cuda()
    x = torch.randn(4, 8, 8, 8, dtype=torch.float64, device="cuda")
    y_plain, gx_plain = run(plain, x, seed=3)
    y_saving, gx_saving = run(saving, x, seed=3)
    assert relative_error(gx_saving, gx_plain) < 1e-10
    assert relative_error(flat_grads(saving.parameters()), flat_grads(plain.parameters())) < 1e-10
