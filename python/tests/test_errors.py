"""Errors from the C++ core reach Python as Python exceptions with the core's message; errors
raised by Python F and G keep their type, in forward and in backward. Never a crash."""

import pytest
import torch
import torch.nn as nn

import memcnn


class Boom(Exception):
    pass


class Raises(nn.Module):
    def __init__(self, when):
        super().__init__()
        self.when = when
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        if self.when == "always" or (self.when == "backward" and torch.is_grad_enabled()):
            raise Boom("F failed")
        return self.conv(x)


def test_odd_channels_say_so():
    c = memcnn.AdditiveCoupling(nn.Conv2d(2, 2, 1))
    with pytest.raises(RuntimeError, match="odd size 5"):
        c(torch.rand(1, 5, 3, 3))


def test_wrong_shape_from_f_names_f():
    c = memcnn.AdditiveCoupling(nn.Conv2d(2, 3, 1), nn.Conv2d(2, 2, 1))
    with pytest.raises(RuntimeError, match="F returned a tensor of shape"):
        c(torch.rand(1, 4, 3, 3))


def test_f_returning_no_tensor_is_a_type_error():
    class NotATensor(nn.Module):
        def forward(self, x):
            return "x"
    with pytest.raises(TypeError, match="Fm returned an object of type str"):
        memcnn.AdditiveCoupling(NotATensor(), nn.Identity())(torch.rand(1, 4, 3, 3))


def test_python_exception_in_forward_keeps_its_type():
    w = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(Raises("always"), nn.Conv2d(2, 2, 1)))
    with pytest.raises(Boom, match="F failed"):
        w(torch.rand(1, 4, 3, 3, requires_grad=True) * 1.0)


@pytest.mark.parametrize("fused", [True, False])
def test_python_exception_in_backward_keeps_its_type(fused):
    # F works in forward (grad off) and fails when backward runs it with grad on.
    w = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(Raises("backward"), nn.Conv2d(2, 2, 1)),
                                       fused_backward=fused)
    y = w(torch.rand(1, 4, 3, 3, requires_grad=True) * 1.0)
    with pytest.raises(Boom, match="F failed"):
        y.sum().backward()


def test_freed_input_reused_in_forward_says_which_option():
    w = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(nn.Conv2d(2, 2, 1)))
    x = torch.rand(1, 4, 3, 3, requires_grad=True) * 1.0
    w(x)
    assert memcnn.is_freed(x)
    with pytest.raises(RuntimeError, match="keep_input"):
        w(x)


def test_too_many_backward_passes():
    w = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(nn.Conv2d(2, 2, 1)))
    y = w(torch.rand(1, 4, 3, 3, requires_grad=True) * 1.0)
    y.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="num_bwd_passes"):
        y.sum().backward()


def test_double_backward_is_refused():
    w = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(nn.Conv2d(2, 2, 1)))
    y = w(torch.rand(1, 4, 3, 3, requires_grad=True) * 1.0)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(y.sum(), list(w.parameters()), create_graph=True)


def test_bad_arguments_are_value_and_type_errors():
    with pytest.raises(ValueError, match="num_bwd_passes"):
        memcnn.InvertibleModuleWrapper(nn.Identity(), num_bwd_passes=0)
    with pytest.raises(ValueError, match="test_input_shape"):
        memcnn.is_invertible_module(memcnn.AdditiveCoupling(nn.Identity()), test_input_shape="1, 2")
    with pytest.raises(TypeError, match="not a torch.Tensor"):
        memcnn.AdditiveCoupling(nn.Identity())([1, 2])
    with pytest.raises(TypeError, match="no inverse method"):
        memcnn.InvertibleModuleWrapper(nn.Conv2d(2, 2, 1))(torch.rand(1, 2, 3, 3, requires_grad=True))
    with pytest.raises(NotImplementedError):
        memcnn.create_coupling(nn.Identity(), coupling="multiplicative")
    with pytest.raises(NotImplementedError):
        memcnn.AdditiveCoupling(nn.Identity(), implementation_fwd=7)(torch.rand(1, 2, 1, 1))
    with pytest.raises(ValueError, match="level"):
        memcnn.set_log_level("loud")


def test_inverse_not_matching_forward_is_reported():
    class Bad(nn.Module):
        def forward(self, x):
            return x * 2

        def inverse(self, y):
            return y[:, :1] / 2  # wrong shape

    w = memcnn.InvertibleModuleWrapper(Bad())
    y = w(torch.rand(1, 2, 3, requires_grad=True) * 1.0)
    with pytest.raises(RuntimeError, match="does not match its forward"):
        y.sum().backward()


@pytest.mark.parametrize("call,message", [
    (lambda: memcnn.InvertibleDownsampling(2)(torch.rand(1, 2, 5, 5)), "divisible by block_size"),
    (lambda: memcnn.InvertibleConv1x1(4)(torch.rand(1, 3, 2, 2)), "expects 4 channels"),
    (lambda: memcnn.ActNorm(3)(torch.rand(3)), "4 dimensions"),
    (lambda: memcnn.AffineCoupling(nn.Identity(), adapter=memcnn.AffineAdapterSigmoid)(torch.rand(1, 4, 2, 2)),
     "sigmoid adapter"),
])
def test_core_checks_of_shapes_arrive_as_runtime_errors(call, message):
    with pytest.raises(RuntimeError, match=message) as raised:
        call()
    assert type(raised.value) is RuntimeError


# The core's c10::ValueError, c10::IndexError and c10::TypeError arrive as ValueError, IndexError
# and TypeError: exactly those, not RuntimeError.
@pytest.mark.parametrize("call,error,message", [
    (lambda: memcnn.ChannelPermutation(0), ValueError, "channels must be at least 1, got 0"),
    (lambda: memcnn.InvertibleUpsampling(0), ValueError, "block_size must be at least 1, got 0"),
    (lambda: memcnn.AdditiveCoupling(nn.Identity(), exact=True, fraction_bits=53), ValueError,
     r"AdditiveCoupling: fraction_bits must lie in \[0, 52\]"),
    (lambda: memcnn.AdditiveCoupling(nn.Identity(), exact=True, fraction_bits=24)(torch.zeros(1, 4, 2, 2)),
     ValueError, r"fraction_bits must lie in \[0, 23\] for Float activations, got 24"),
    (lambda: memcnn.quantize_to_grid(torch.zeros(3), -1), ValueError, r"fraction_bits must lie in \[0, 23\]"),
    (lambda: memcnn.quantize_to_grid(torch.zeros(3, dtype=torch.int32), 8), TypeError,
     "need float32 or float64 activations, got Int"),
    (lambda: memcnn.AdditiveCoupling(nn.Identity(), exact=True)(torch.zeros(1, 4, 2, 2, dtype=torch.bfloat16)),
     TypeError, "need float32 or float64 activations, got BFloat16"),
    (lambda: memcnn.AdditiveCoupling(nn.Identity(), split_dim=5)(torch.rand(2, 2)), IndexError,
     "split_dim 5 is out of range"),
])
def test_core_checks_of_arguments_arrive_as_their_python_type(call, error, message):
    with pytest.raises(error, match=message) as raised:
        call()
    assert type(raised.value) is error


def test_empty_chain_is_a_value_error():
    with pytest.raises(ValueError, match="empty"):
        memcnn.InvertibleSequential()(torch.rand(1))
