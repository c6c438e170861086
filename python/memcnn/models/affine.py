"""AffineCoupling and its adapters (MemCNN's API). With AffineAdapterNaive or AffineAdapterSigmoid
the coupling is memcnn's C++ one (fused backward when wrapped); with another adapter, or none (Fm
then returns (s, t) itself), it is computed here in Python."""

import copy
import warnings

import torch
import torch.nn as nn

from memcnn import _C
from memcnn._bridge import check_tensors, unpack
from memcnn.models.additive import check_implementation


class AffineAdapterNaive(nn.Module):
    """s = exp(h), t = h with h = module(x)."""

    def __init__(self, module):
        super(AffineAdapterNaive, self).__init__()
        self.f = module

    def forward(self, x):
        """Returns (s, t) = (exp(h), h) for h = module(x)."""
        t = self.f(x)
        s = torch.exp(t)
        return s, t


class AffineAdapterSigmoid(nn.Module):
    """h = module(x) with twice the channels; s = sigmoid(h[:, 1::2] + 2), t = h[:, 0::2]."""

    def __init__(self, module):
        super(AffineAdapterSigmoid, self).__init__()
        self.f = module

    def forward(self, x):
        """Returns (s, t) = (sigmoid(h[:, 1::2] + 2), h[:, 0::2]) for h = module(x)."""
        h = self.f(x)
        shift = h[:, 0::2]
        scale = torch.sigmoid(h[:, 1::2] + 2.0)
        return scale, shift


class AffineCoupling(nn.Module):
    """Affine coupling: y1 = x1 * s(x2) + t(x2), y2 = x2 * s'(y1) + t'(y1), with (s, t) = adapter(Fm)(x2)
    and (s', t') = adapter(Gm)(y1). Gm defaults to a deep copy of Fm. Without an adapter Fm and Gm
    return (s, t) themselves.

    With AffineAdapterNaive or AffineAdapterSigmoid (the same for Fm and Gm) the C++ coupling computes
    it; otherwise it is computed in Python, for one input tensor only.

    Args:
        Fm (torch.nn.Module): F (wrapped in `adapter` when given).
        Gm (torch.nn.Module, optional): G; None: a deep copy of Fm.
        adapter (type, optional): AffineAdapterNaive, AffineAdapterSigmoid or another class whose
            instances wrap a module and return (s, t).
        implementation_fwd (int): MemCNN's implementation number: -1, or the deprecated 0 and 1.
        implementation_bwd (int): as implementation_fwd.
        split_dim (int): the dimension split into the two halves (1: channels).
    """

    def __init__(self, Fm, Gm=None, adapter=None, implementation_fwd=-1, implementation_bwd=-1, split_dim=1):
        super(AffineCoupling, self).__init__()
        if Gm is None:
            Gm = copy.deepcopy(Fm)
        self.Gm = adapter(Gm) if adapter is not None else Gm
        self.Fm = adapter(Fm) if adapter is not None else Fm
        self.implementation_fwd = implementation_fwd
        self.implementation_bwd = implementation_bwd
        self.split_dim = split_dim

    def _cpp_kind(self):
        kinds = {AffineAdapterNaive: "naive", AffineAdapterSigmoid: "sigmoid"}
        kind = kinds.get(type(self.Fm))
        if kind is None or type(self.Gm) is not type(self.Fm):
            return None
        if kind == "sigmoid" and self.split_dim not in (1, -3):
            return None  # MemCNN's sigmoid adapter interleaves along dim 1 whatever split_dim is
        return kind

    def _memcnn_handle(self, n_tensors):
        check_implementation(self.implementation_fwd, self.implementation_bwd)
        kind = self._cpp_kind()
        if kind is None:
            return None  # computed in Python: the generic adapter calls forward/inverse
        return _C.coupling(kind, self.Fm.f, self.Gm.f, self.split_dim, n_tensors, self.training)

    def forward(self, *x):
        """Computes y1 = x1 * s(x2) + t(x2), y2 = x2 * s'(y1) + t'(y1), joined along split_dim.

        Args:
            *x (torch.Tensor): the inputs (several only with the two adapters above).

        Returns:
            torch.Tensor or tuple: the output, one tensor per input (a single tensor alone).

        Raises:
            TypeError: when an argument is not a tensor.
            ValueError: when there is no input, several with another adapter, or an odd size along
                split_dim in the Python computation.
        """
        check_tensors(x, "AffineCoupling.forward")
        h = self._memcnn_handle(len(x))
        if h is None:
            return self._python_step(x, inverse=False)
        return unpack(_C.run(h, list(x), False))

    def inverse(self, *y):
        """Computes x from y = forward(x): x2 = (y2 - t'(y1)) / s'(y1), x1 = (y1 - t(x2)) / s(x2).

        Args:
            *y (torch.Tensor): outputs of forward.

        Returns:
            torch.Tensor or tuple: the input, one tensor per output (a single tensor alone).
        """
        check_tensors(y, "AffineCoupling.inverse")
        h = self._memcnn_handle(len(y))
        if h is None:
            return self._python_step(y, inverse=True)
        return unpack(_C.run(h, list(y), True))

    def _python_step(self, xs, inverse):
        if len(xs) != 1:
            raise ValueError("AffineCoupling: several input tensors need AffineAdapterNaive or AffineAdapterSigmoid")
        x = xs[0]
        if x.size(self.split_dim) % 2 != 0:
            raise ValueError("AffineCoupling: dimension {} of shape {} cannot be split into two equal halves"
                             .format(self.split_dim, tuple(x.shape)))
        a, b = torch.chunk(x, 2, dim=self.split_dim)
        if not inverse:
            s, t = self.Fm(b)
            a = a * s + t
            s, t = self.Gm(a)
            b = b * s + t
        else:
            s, t = self.Gm(a)
            b = (b - t) / s
            s, t = self.Fm(b)
            a = (a - t) / s
        return torch.cat([a, b], dim=self.split_dim)


class AffineBlock(AffineCoupling):
    """Deprecated (MemCNN's): :class:`AffineCoupling` with implementation 1; warns on creation."""

    def __init__(self, Fm, Gm=None, implementation_fwd=1, implementation_bwd=1):
        warnings.warn("This class has been deprecated. Use the AffineCoupling class instead.", DeprecationWarning)
        super(AffineBlock, self).__init__(Fm=Fm, Gm=Gm, implementation_fwd=implementation_fwd,
                                          implementation_bwd=implementation_bwd)
