"""The invertible layers: Python-owned parameters, C++ computation; invertible, log-determinants
as autograd's Jacobian says, trainable inside a wrapper, copies independent."""

import copy
import pickle

import pytest
import torch
import torch.nn as nn

import memcnn


def layers():
    return [memcnn.InvertibleDownsampling(2), memcnn.ChannelPermutation(4, seed=3),
            memcnn.ChannelPermutation(4, reverse=True), memcnn.InvertibleConv1x1(4),
            memcnn.InvertibleConv1x1(4, lu=True), memcnn.ActNorm(4)]


@pytest.mark.parametrize("index", range(6))
def test_invertible_with_exact_log_det(index):
    layer = layers()[index].double()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    layer(x)  # ActNorm initialises from its first training batch
    y = layer(x)
    assert torch.allclose(layer.inverse(y), x, atol=1e-10)
    jacobian = torch.autograd.functional.jacobian(lambda t: layer(t.unsqueeze(0)).reshape(-1), x[0])
    expected = torch.linalg.slogdet(jacobian.reshape(x[0].numel(), -1))[1]
    assert torch.allclose(layer.log_det(x)[0], expected, atol=1e-8)


def test_parameters_train_in_a_wrapped_chain():
    chain = memcnn.InvertibleSequential(memcnn.ActNorm(4), memcnn.InvertibleConv1x1(4, lu=True),
                                        memcnn.AdditiveCoupling(nn.Conv2d(2, 2, 3, padding=1)))
    names = [n for n, _ in chain.named_parameters()]
    assert "0.log_scale" in names and "1.lower" in names and "2.Fm.weight" in names
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    chain = chain.double()
    chain(x)  # ActNorm's initialisation, outside the comparison
    plain = copy.deepcopy(chain)
    wrapped = memcnn.InvertibleModuleWrapper(chain)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    wrapped(xa * 1.0).pow(2).sum().backward()
    plain(xb).pow(2).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-10)
    for p, q in zip(chain.parameters(), plain.parameters()):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, atol=1e-10)


def test_actnorm_initialisation_lands_in_python_buffers_and_copies_are_independent():
    norm = memcnn.ActNorm(3)
    assert norm.initialized.item() == 0
    x = torch.randn(8, 3, 4, 4) * 5 + 2
    y = norm(x)
    assert norm.initialized.item() == 1
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    for other in (copy.deepcopy(norm), pickle.loads(pickle.dumps(norm))):
        assert other.initialized.item() == 1
        assert torch.allclose(other(x), y)
        with torch.no_grad():
            other.bias.add_(1)
        assert not torch.allclose(other(x), norm(x))
