"""Exact (fixed-point) additive couplings from Python: with memory saving, gradients equal those
without it bit for bit, because every freed input is rebuilt with the same bits."""

import copy

import pytest
import torch
import torch.nn as nn

import memcnn
from helpers import ConvBnRelu


def chain(depth, channels, disable):
    blocks = [memcnn.InvertibleModuleWrapper(
        memcnn.AdditiveCoupling(ConvBnRelu(channels // 2), ConvBnRelu(channels // 2), exact=True),
        disable=disable) for _ in range(depth)]
    return nn.Sequential(*blocks)


def gradients(model, x):
    leaf = x.clone().requires_grad_()
    out = model(memcnn.quantize_to_grid(leaf * 1.0, 16))
    out.pow(2).sum().backward()
    return [leaf.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("depth", [1, 6])
def test_exact_chain_gradients_are_bitwise_those_of_the_plain_chain(depth):
    torch.manual_seed(0)
    saving = chain(depth, 8, disable=False)
    plain = copy.deepcopy(saving)
    for block in plain:
        block.disable = True
    x = torch.randn(4, 8, 6, 6)
    before = memcnn.exact_rebuild_fallbacks()
    a, b = gradients(saving, x), gradients(plain, x)
    assert memcnn.exact_rebuild_fallbacks() == before
    for i, (ga, gb) in enumerate(zip(a, b)):
        assert torch.equal(ga, gb), "gradient {} differs by {}".format(i, (ga - gb).abs().max().item())


def test_exact_coupling_inverts_bit_for_bit():
    torch.manual_seed(1)
    coupling = memcnn.AdditiveCoupling(ConvBnRelu(2), ConvBnRelu(2), exact=True)
    x = memcnn.quantize_to_grid(torch.randn(3, 4, 5, 5), 16)
    with torch.no_grad():
        y = coupling(x)
        for _ in range(10):
            y = coupling(y)
        for _ in range(11):
            y = coupling.inverse(y)
    assert torch.equal(y, x)


def test_quantize_to_grid_has_a_straight_through_gradient():
    x = torch.randn(100, requires_grad=True)
    q = memcnn.quantize_to_grid(x, 8)
    assert (q - x).abs().max().item() <= 2.0 ** -9
    g = torch.randn(100)
    q.backward(g)
    assert torch.equal(x.grad, g)


def test_exact_affine_coupling_is_refused():
    with pytest.raises(ValueError, match="additive couplings only"):
        memcnn._C.coupling("naive", nn.Identity(), nn.Identity(), 1, 1, True, exact=True)
