"""memcnn's invertible layers (the C++ core's layers.h), each with forward, inverse and log_det:
InvertibleDownsampling / InvertibleUpsampling (i-RevNet's squeeze and its inverse),
ChannelPermutation, InvertibleConv1x1 (Glow, optional LU form) and ActNorm (Glow). They are
torch.nn.Modules whose parameters and buffers live in Python; the C++ layer computes with them.
They chain in memcnn.InvertibleSequential and train inside memcnn.InvertibleModuleWrapper."""

import torch
import torch.nn as nn

from memcnn import _C
from memcnn._bridge import check_tensors


class _InvertibleLayer(nn.Module):
    _kind = None

    def __init__(self, **options):
        super().__init__()
        self._options = options
        layer = _C.layer(self._kind, **options)
        for name, tensor in _C.layer_tensors(layer):
            if tensor.requires_grad:
                self.register_parameter(name, nn.Parameter(tensor.detach().clone()))
            else:
                self.register_buffer(name, tensor.detach().clone())
        self.__dict__["_cpp_layer"] = layer

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_cpp_layer", None)
        return state

    def _memcnn_handle(self, n_tensors):
        if n_tensors != 1:
            raise ValueError("{} takes one tensor, got {}".format(type(self).__name__, n_tensors))
        layer = self.__dict__.get("_cpp_layer")
        if layer is None:
            layer = _C.layer(self._kind, **self._options)
            self.__dict__["_cpp_layer"] = layer
        tensors = dict(self._parameters)
        tensors.update(self._buffers)
        _C.bind_layer(layer, {k: v for k, v in tensors.items() if v is not None}, self.training)
        return layer

    def forward(self, x):
        check_tensors((x,), type(self).__name__ + ".forward")
        return _C.run(self._memcnn_handle(1), [x], False)[0]

    def inverse(self, y):
        check_tensors((y,), type(self).__name__ + ".inverse")
        return _C.run(self._memcnn_handle(1), [y], True)[0]

    def log_det(self, x):
        """log|det d forward / dx| per sample, shape [N]."""
        check_tensors((x,), type(self).__name__ + ".log_det")
        return _C.log_det(self._memcnn_handle(1), [x])

    def extra_repr(self):
        return ", ".join("{}={}".format(k, v) for k, v in self._options.items())


class InvertibleDownsampling(_InvertibleLayer):
    """Space to depth: [N, C, H, W] -> [N, C*b*b, H/b, W/b]; log_det 0."""
    _kind = "downsampling"

    def __init__(self, block_size=2):
        super().__init__(block_size=block_size)


class InvertibleUpsampling(_InvertibleLayer):
    """Depth to space, the inverse of InvertibleDownsampling."""
    _kind = "upsampling"

    def __init__(self, block_size=2):
        super().__init__(block_size=block_size)


class ChannelPermutation(_InvertibleLayer):
    """A fixed permutation of the channels (drawn from its own generator seeded with `seed`, or the
    reversed order); log_det 0."""
    _kind = "permutation"

    def __init__(self, channels, seed=0, reverse=False):
        super().__init__(channels=channels, seed=seed, reverse=reverse)


class InvertibleConv1x1(_InvertibleLayer):
    """Glow's invertible 1x1 convolution, starting as a random rotation; lu=True: the LU form."""
    _kind = "conv1x1"

    def __init__(self, channels, lu=False):
        super().__init__(channels=channels, lu=lu)


class ActNorm(_InvertibleLayer):
    """Glow's activation normalisation, y = (x + bias) * exp(log_scale) per channel, initialised from
    the first training batch."""
    _kind = "actnorm"

    def __init__(self, channels, eps=1e-6):
        super().__init__(channels=channels, eps=eps)
