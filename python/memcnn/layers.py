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
    """A torch.nn.Module computed by one of the C++ core's invertible layers (its tensors live here)."""

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
        """Applies the layer.

        Args:
            x (torch.Tensor): the input, [N, C, ...] as the layer's description says.

        Returns:
            torch.Tensor: the output.

        Raises:
            TypeError: when x is not a tensor.
        """
        check_tensors((x,), type(self).__name__ + ".forward")
        return _C.run(self._memcnn_handle(1), [x], False)[0]

    def inverse(self, y):
        """Applies the inverse: inverse(forward(x)) == x (to rounding).

        Args:
            y (torch.Tensor): an output of forward.

        Returns:
            torch.Tensor: the input x.
        """
        check_tensors((y,), type(self).__name__ + ".inverse")
        return _C.run(self._memcnn_handle(1), [y], True)[0]

    def log_det(self, x):
        """log|det d forward / dx| per sample, shape [N]."""
        check_tensors((x,), type(self).__name__ + ".log_det")
        return _C.log_det(self._memcnn_handle(1), [x])

    def extra_repr(self):
        """The layer's options, for print(module)."""
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


# The orthogonal layers of iUNets (resampling.h, channel_mixing.h) and the channel split
# (channel_split.h). Their tensors live in Python as well; the C++ layer is rebuilt after a copy
# (deepcopy, pickling) without drawing random numbers, so copying a model leaves torch's random
# stream alone.

def _stride(stride, who):
    if isinstance(stride, bool) or not isinstance(stride, (tuple, list)) or not 1 <= len(stride) <= 3 or any(
            isinstance(s, bool) or not isinstance(s, int) for s in stride):
        raise ValueError("{}: stride needs one integer per spatial dimension (1 to 3 entries, e.g. (2, 2) for "
                         "2-D data), got {!r}".format(who, stride))
    return tuple(stride)


def _method(method, who):
    if method not in ("cayley", "exp"):
        raise ValueError("{}: method must be 'cayley' or 'exp', got {!r}".format(who, method))
    return method


class _OrthogonalLayer(_InvertibleLayer):
    """An orthogonal layer: forward, inverse (the transpose, exact to rounding), log_det (0)."""

    # Made from the options alone (the fixed matrix's signs): moved with the module, but no state,
    # so not in state dicts (those written before it existed still load strictly).
    _FROM_OPTIONS = {"base_pattern"}

    def __init__(self, **options):
        nn.Module.__init__(self)
        self._options = options
        layer = self._build(initial=True)
        for name, tensor in _C.layer_tensors(layer):
            if tensor.requires_grad:
                self.register_parameter(name, nn.Parameter(tensor.detach().clone()))
            else:
                self.register_buffer(name, tensor.detach().clone(), persistent=name not in self._FROM_OPTIONS)
        self.__dict__["_cpp_layer"] = layer

    def _build(self, initial):
        options = dict(self._options)
        if not initial and "random_init" in options:
            options["random_init"] = False  # its tensor is bound from Python anyway
        if "stride" in options:
            options["stride"] = list(options["stride"])
        return _C.orthogonal_layer(self._kind, **options)

    def _memcnn_handle(self, n_tensors):
        if self.__dict__.get("_cpp_layer") is None:
            self.__dict__["_cpp_layer"] = self._build(initial=False)
        return super()._memcnn_handle(n_tensors)

    def matrices(self):
        """The orthogonal matrices the layer computes with, in its precision, differentiable in its
        parameter: [channels, B, B] (B = prod(stride)) for resampling, [C, C] for channel mixing."""
        return _C.orthogonal_layer_matrices(self._memcnn_handle(1))

    def orthogonality_error(self):
        """max |Q^T Q - I| over the layer's matrices, in float64."""
        return orthogonality_error(self.matrices())


class OrthogonalDownsampling(_OrthogonalLayer):
    """Learnable invertible downsampling (iUNets): every stride-sized block of each channel goes
    through that channel's orthogonal B x B matrix (B = prod(stride)) to B output channels,
    [N, C, *S] -> [N, C*B, *S/stride], for 1-D, 2-D or 3-D data (the stride has one entry per spatial
    dimension). The matrices start as the Haar wavelet transform (init='haar', strides 1 or powers
    of 2) or a pixel shuffle (init='squeeze') and stay orthogonal under training (method 'cayley' or
    'exp'); learnable=False keeps the initial transform (no parameters). log_det is 0."""
    _kind = "downsampling"

    def __init__(self, channels, stride, method="cayley", init="haar", learnable=True):
        super().__init__(channels=channels, stride=_stride(stride, type(self).__name__),
                         method=_method(method, type(self).__name__), init=init, learnable=bool(learnable))


class OrthogonalUpsampling(_OrthogonalLayer):
    """The same map the other way round: [N, C*B, *S] -> [N, C, *S*stride]; `channels` is C, the
    channel count at the fine resolution (the output)."""
    _kind = "upsampling"

    def __init__(self, channels, stride, method="cayley", init="haar", learnable=True):
        super().__init__(channels=channels, stride=_stride(stride, type(self).__name__),
                         method=_method(method, type(self).__name__), init=init, learnable=bool(learnable))


class OrthogonalChannelMixing(_OrthogonalLayer):
    """An orthogonal 1x1 convolution on [N, C, spatial...] (1 to 3 spatial dimensions): invertible by
    its transpose, log_det 0, orthogonal however it is trained. random_init: start from a random
    rotation (drawn from torch's global generator), else the identity; learnable=False: a fixed
    rotation, kept in a buffer."""
    _kind = "mixing"

    def __init__(self, channels, method="cayley", learnable=True, random_init=True):
        super().__init__(channels=channels, method=_method(method, type(self).__name__), learnable=bool(learnable),
                         random_init=bool(random_init))


class _SplitLayer(nn.Module):
    _kind = None

    def __init__(self, first_channels, dim=1):
        super().__init__()
        self._options = dict(first_channels=first_channels, dim=dim)
        _C.split_layer(self._kind, first_channels, dim)  # checks the options now

    @property
    def first_channels(self):
        """int: Channels of the first part, along `dim`."""
        return self._options["first_channels"]

    @property
    def dim(self):
        """int: The dimension split and concatenated (1: channels)."""
        return self._options["dim"]

    def _memcnn_handle(self, n_tensors):
        if n_tensors not in (1, 2):
            raise ValueError("{} takes one tensor or two, got {}".format(type(self).__name__, n_tensors))
        return _C.split_layer(self._kind, self.first_channels, self.dim)

    def _run(self, xs, inverse, who):
        check_tensors(xs, who)
        outputs = _C.run(self._memcnn_handle(len(xs)), list(xs), inverse)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def log_det(self, *x):
        """Zeros of shape [N]: the layer moves values without changing them."""
        check_tensors(x, type(self).__name__ + ".log_det")
        return _C.log_det(self._memcnn_handle(len(x)), list(x))

    def extra_repr(self):
        """The layer's options, for print(module)."""
        return "first_channels={}, dim={}".format(self.first_channels, self.dim)


class ChannelSplit(_SplitLayer):
    """forward(x) -> (x[:, :first_channels], x[:, first_channels:]) along `dim`, as new tensors (never
    views of x, which a memory-saving wrapper frees); inverse(a, b) -> x, their concatenation."""
    _kind = "split"

    def forward(self, x):
        """Splits x: returns (x[:, :first_channels], x[:, first_channels:]) along `dim`, as new tensors."""
        return self._run((x,), False, "ChannelSplit.forward")

    def inverse(self, a, b):
        """Concatenates a and b along `dim`: the x that forward split."""
        return self._run((a, b), True, "ChannelSplit.inverse")


class ChannelConcat(_SplitLayer):
    """forward(a, b) -> their concatenation along `dim` (a must have first_channels); inverse(y) ->
    (a, b), the split."""
    _kind = "concat"

    def forward(self, a, b):
        """Concatenates a (first_channels along `dim`) and b."""
        return self._run((a, b), False, "ChannelConcat.forward")

    def inverse(self, y):
        """Splits y back into (a, b), as new tensors."""
        return self._run((y,), True, "ChannelConcat.inverse")


def orthogonality_error(matrices):
    """max |Q^T Q - I| over a matrix [n, n] or a batch [G, n, n], computed in float64: 0 for
    orthogonal matrices."""
    if not isinstance(matrices, torch.Tensor):
        raise TypeError("orthogonality_error: expects a tensor, got a {}".format(type(matrices).__name__))
    return _C.orthogonality_error(matrices)


def haar_matrix(stride):
    """The orthogonal Haar wavelet matrix [B, B] (float64, B = prod(stride)) of a block of shape
    `stride` (entries 1 or powers of 2): row 0 the block's scaled mean, column k block element k in
    row-major order."""
    return _C.haar_matrix(list(_stride(stride, "haar_matrix")))
