"""How the Python modules reach the C++ core: each call builds a small C++ tree for the module as it
is now (couplings become memcnn::AdditiveCoupling/AffineCoupling around Python F and G, chains
memcnn::InvertibleSequential, anything else with forward and inverse a generic adapter)."""

import torch

from memcnn import _C


def handle(module, n_tensors):
    """The C++ invertible block for `module`, called with `n_tensors` tensors."""
    build = getattr(module, "_memcnn_handle", None)
    if build is not None:
        h = build(n_tensors)
        if h is not None:
            return h
    if not callable(getattr(module, "inverse", None)):
        raise TypeError("memcnn: {} has no inverse method; an invertible module needs forward and "
                        "inverse".format(type(module).__name__))
    return _C.python_invertible(module, bool(getattr(module, "training", True)))


def check_tensors(tensors, who):
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError("{}: argument {} is a {}, not a torch.Tensor".format(who, i, type(t).__name__))
    if not tensors:
        raise ValueError("{}: needs at least one input tensor".format(who))


def unpack(outputs):
    """A list from C++ as MemCNN returns it: one tensor alone, several as a tuple."""
    outputs = tuple(outputs)
    return outputs[0] if len(outputs) == 1 else outputs


def pack(x):
    return x if isinstance(x, tuple) else (x,)
