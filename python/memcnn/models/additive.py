"""AdditiveCoupling (MemCNN's API): y1 = x1 + Fm(x2), y2 = x2 + Gm(y1), computed by memcnn's C++
coupling, whose fused backward runs Fm and Gm once each when wrapped."""

import copy
import warnings

import torch.nn as nn

from memcnn import _C
from memcnn._bridge import check_tensors, unpack

_IMPLEMENTATIONS = (-1, 0, 1)


def check_implementation(implementation_fwd, implementation_bwd):
    """MemCNN's implementation numbers: -1 (the plain coupling), 0 and 1 (its deprecated autograd
    functions, computing the same). Ours computes all three with the C++ coupling."""
    for name, value in (("implementation_fwd", implementation_fwd), ("implementation_bwd", implementation_bwd)):
        if value not in _IMPLEMENTATIONS:
            raise NotImplementedError("Selected {} ({}) is not implemented; use -1 (0 and 1 are deprecated "
                                      "aliases)".format(name, value))
    if implementation_fwd != -1 or implementation_bwd != -1:
        warnings.warn("implementation_fwd/implementation_bwd 0 and 1 are deprecated; memcnn computes the "
                      "coupling the same way for all of them", DeprecationWarning)


class AdditiveCoupling(nn.Module):
    """Additive coupling: y1 = x1 + Fm(x2), y2 = x2 + Gm(y1), with x split in two halves along
    split_dim. Gm defaults to a deep copy of Fm. Several input tensors: each is split, and Fm
    and Gm take (and return) one tensor per input.

    exact=True (memcnn only): what Fm and Gm add is rounded to a fixed-point grid of
    fraction_bits fraction bits (straight-through gradient), on which float32 addition is exact
    for |values| < 2**(24 - fraction_bits); inputs must lie on it (memcnn.quantize_to_grid), and
    the memory-saving wrapper then rebuilds them bit for bit: its gradients equal those
    without memory saving exactly.

    Args:
        Fm (torch.nn.Module): F, from half of the channels to half of the channels.
        Gm (torch.nn.Module, optional): G; None: a deep copy of Fm.
        implementation_fwd (int): MemCNN's implementation number, -1 (0 and 1 are deprecated).
        implementation_bwd (int): as implementation_fwd.
        split_dim (int): the dimension split into the two halves (1: channels).
        exact (bool): round what Fm and Gm add to the fixed-point grid (see above).
        fraction_bits (int): fraction bits of that grid.

    Raises:
        ValueError: for fraction_bits outside the range the core accepts.
    """

    def __init__(self, Fm, Gm=None, implementation_fwd=-1, implementation_bwd=-1, split_dim=1, exact=False,
                 fraction_bits=16):
        super(AdditiveCoupling, self).__init__()
        _C.check_fraction_bits("AdditiveCoupling", fraction_bits)
        if Gm is None:
            Gm = copy.deepcopy(Fm)
        self.Gm = Gm
        self.Fm = Fm
        self.implementation_fwd = implementation_fwd
        self.implementation_bwd = implementation_bwd
        self.split_dim = split_dim
        self.exact = exact
        self.fraction_bits = fraction_bits

    def _memcnn_handle(self, n_tensors):
        check_implementation(self.implementation_fwd, self.implementation_bwd)
        return _C.coupling("additive", self.Fm, self.Gm, self.split_dim, n_tensors, self.training,
                           exact=getattr(self, "exact", False), fraction_bits=getattr(self, "fraction_bits", 16))

    def forward(self, *x):
        """Computes (y1, y2) = (x1 + Fm(x2), x2 + Gm(y1)), joined along split_dim.

        Args:
            *x (torch.Tensor): one or more inputs, each of even size along split_dim.

        Returns:
            torch.Tensor or tuple: the output, one tensor per input (a single tensor alone).

        Raises:
            TypeError: when an argument is not a tensor.
            ValueError: when there is no input.
            NotImplementedError: for an implementation number other than -1, 0 or 1.
        """
        check_tensors(x, "AdditiveCoupling.forward")
        return unpack(_C.run(self._memcnn_handle(len(x)), list(x), False))

    def inverse(self, *y):
        """Computes x from y = forward(x): x2 = y2 - Gm(y1), x1 = y1 - Fm(x2).

        Args:
            *y (torch.Tensor): one or more outputs of forward.

        Returns:
            torch.Tensor or tuple: the input, one tensor per output (a single tensor alone).
        """
        check_tensors(y, "AdditiveCoupling.inverse")
        return unpack(_C.run(self._memcnn_handle(len(y)), list(y), True))


class AdditiveBlock(AdditiveCoupling):
    """Deprecated (MemCNN's): :class:`AdditiveCoupling` with implementation 1; warns on creation."""

    def __init__(self, Fm, Gm=None, implementation_fwd=1, implementation_bwd=1):
        warnings.warn("This class has been deprecated. Use the AdditiveCoupling class instead.", DeprecationWarning)
        super(AdditiveBlock, self).__init__(Fm=Fm, Gm=Gm, implementation_fwd=implementation_fwd,
                                            implementation_bwd=implementation_bwd)
