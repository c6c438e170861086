"""The iUNet (Etmann et al., "iUNets: Fully invertible U-Nets with Learnable Up- and Downsampling")
of memcnn::models::IUNet in Python: the same options, structure and semantics, built from
memcnn's Python classes, so that its blocks can be any Python modules.

Level i runs layers[i] invertible blocks on channels[i] channels; a channel split keeps part of them
at this resolution (the skip connection) and an orthogonal downsampling takes the rest to level
i + 1, where channels[i + 1] = (the rest) * prod(stride[i]). The decoder mirrors it: orthogonal
upsampling, concatenation with the skip, layers[i] blocks. Every part (the blocks of a level with
their channel mixings as one InvertibleSequential, the split, the resampling, the concatenation)
runs in a memcnn.InvertibleModuleWrapper, so training keeps activation memory near that of the
input and the output however deep the network is; set_memory_saving(False) runs the same network
with a full autograd graph."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from memcnn.extras import InvertibleSequential
from memcnn.layers import (ChannelConcat, ChannelSplit, OrthogonalChannelMixing, OrthogonalDownsampling,
                           OrthogonalUpsampling, orthogonality_error)
from memcnn.models.additive import AdditiveCoupling
from memcnn.models.revop import InvertibleModuleWrapper


def _check_dims(dims, who):
    if isinstance(dims, bool) or not isinstance(dims, int) or dims not in (1, 2, 3):
        raise ValueError("{}: dims must be 1, 2 or 3, got {!r}".format(who, dims))


class ConvNormAct(nn.Module):
    """conv(3) - normalisation - LeakyReLU(0.01), keeping the channel count: F and G of the default
    iUNet block. The convolution has no bias (the normalisation after it would remove it).
    norm: 'group' (GroupNorm with gcd(channels, 8) groups) or 'batch' (BatchNorm)."""

    def __init__(self, dims, channels, norm="group"):
        super().__init__()
        _check_dims(dims, "ConvNormAct")
        self.conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](channels, channels, 3, padding=1, bias=False)
        if norm == "group":
            self.norm = nn.GroupNorm(math.gcd(channels, 8), channels)
        elif norm == "batch":
            self.norm = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dims - 1](channels)
        else:
            raise ValueError("ConvNormAct: norm must be 'group' or 'batch', got {!r}".format(norm))

    def forward(self, x):
        """Returns LeakyReLU(norm(conv(x)), 0.01), of x's shape."""
        return F.leaky_relu(self.norm(self.conv(x)), 0.01)


def iunet_coupling_blocks(norm="group"):
    """The default block factory with the normalisation `norm` ('group' or 'batch': running
    statistics in eval, for networks trained on patches that predict whole volumes)."""
    if norm not in ("group", "batch"):
        raise ValueError("iunet_coupling_blocks: norm must be 'group' or 'batch', got {!r}".format(norm))

    def block(channels, dims, level, index):
        _check_dims(dims, "iunet_coupling_block")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 2 or channels % 2:
            raise ValueError("iunet_coupling_block: an additive coupling needs an even channel count of at least "
                             "2, got {!r}; choose even channels per level or a block factory of your own"
                             .format(channels))
        half = channels // 2
        return AdditiveCoupling(Fm=ConvNormAct(dims, half, norm), Gm=ConvNormAct(dims, half, norm))

    return block


def iunet_coupling_block(channels, dims, level, index):
    """The default iUNet block: an additive coupling (memcnn.AdditiveCoupling) whose Fm and Gm are
    conv(3) - GroupNorm - LeakyReLU on half the channels (channels must be even)."""
    return iunet_coupling_blocks("group")(channels, dims, level, index)


def _ints(value):
    return isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


class IUNet(nn.Module):
    """An invertible U-Net for [N, C, spatial...] tensors of 1 to 3 spatial dimensions, the Python twin
    of memcnn::models::IUNet (see the module's docstring and __init__)."""

    def __init__(self, channels, layers, dims, block=None, stride=None, method="cayley", init="haar",
                 learnable_resampling=True, channel_mixing_every=1, pad=True, memory_saving=True,
                 preserve_rng_state=False):
        """channels: channels of each level, from the finest (the input's) to the coarsest.
        layers: invertible blocks per level and side (level i: layers[i] blocks before its split and
        layers[i] after its concatenation; the coarsest level has layers[-1] blocks once).
        dims: spatial dimensions, 1, 2 or 3.
        block: block(channels, dims, level, index) -> an invertible torch.nn.Module (forward and
        inverse) keeping the shape; encoder and decoder blocks are numbered on, the decoder's after
        the encoder's. Default: iunet_coupling_block.
        stride: resampling stride between level i and i + 1. None (or empty): 2 in every dimension at
        every level; an int: that in every dimension; one sequence of dims ints: the same at every level; a
        list of such sequences: one per level transition (a list of one: for every level).
        method: 'cayley' or 'exp' (how the orthogonal matrices are parametrised).
        init: 'haar' or 'squeeze', the resampling's initial transform.
        learnable_resampling: False keeps the initial transform.
        channel_mixing_every: an OrthogonalChannelMixing before every k-th block (0: none).
        pad: forward pads spatial sizes that the total stride does not divide (zeros at the end) and
        crops the output back; False: such sizes are an error.
        memory_saving: run every part memory-saving (set_memory_saving switches it later).
        preserve_rng_state: replay random numbers (dropout in the blocks) in the rebuild.

        As with any memory-saving wrapper (and MemCNN's), in training forward frees the tensor it is
        given (unless it pads it), a leaf that requires grad included, and backward rebuilds it. The
        first part keeps it only when it cannot be freed: another operation saved it or views it, or
        it shares storage with another input or with the output. Pass a tensor you do not need
        before backward has run, or x.clone()."""
        super().__init__()
        _check_dims(dims, "IUNet")
        if not _ints(channels) or not _ints(layers) or len(channels) == 0 or len(channels) != len(layers):
            raise ValueError("IUNet: channels and layers need one integer per level, got channels={!r} and "
                             "layers={!r}".format(channels, layers))
        if block is None:
            block = iunet_coupling_block
        if not callable(block):
            raise TypeError("IUNet: block must be a callable block(channels, dims, level, index), got a {}"
                            .format(type(block).__name__))
        if isinstance(channel_mixing_every, bool) or not isinstance(channel_mixing_every, int) or \
                channel_mixing_every < 0:
            raise ValueError("IUNet: channel_mixing_every must be 0 (none) or more, got {!r}"
                             .format(channel_mixing_every))
        if any(n < 0 for n in layers):
            raise ValueError("IUNet: layers per level must be 0 or more, got {!r}".format(list(layers)))
        if any(c < 1 for c in channels):
            raise ValueError("IUNet: channels must be positive, got {!r}".format(list(channels)))
        self.channels = tuple(channels)
        self.layers = tuple(layers)
        self.dims = dims
        self.strides = self._strides(stride, len(channels), dims)
        self.method = method
        self.init = init
        self.learnable_resampling = bool(learnable_resampling)
        self.channel_mixing_every = channel_mixing_every
        self.pad = bool(pad)
        self.preserve_rng_state = bool(preserve_rng_state)
        self.memory_saving = bool(memory_saving)

        levels = len(channels)
        for level in range(levels - 1):
            s = self.strides[level]
            b = math.prod(s)
            nxt = channels[level + 1]
            if nxt % b != 0 or nxt // b > channels[level]:
                raise ValueError(
                    "IUNet: level {} has {} channels, which must be a multiple of {} (the stride {} folds {} elements "
                    "into channels) and at most {} (level {}'s {} channels all sent down); the channels kept at "
                    "level {} as its skip connection are {} - {}/{}".format(
                        level + 1, nxt, b, list(s), b, channels[level] * b, level, channels[level], level,
                        channels[level], nxt, b))

        for level in range(levels):
            if layers[level] > 0:
                self._add_part("encoder", level, self._stage(block, level, 0))
            if level + 1 == levels:
                break
            if layers[level] > 0:
                self._add_part("decoder", level, self._stage(block, level, layers[level]))
            skip = self._skip_channels(level)
            down = channels[level] - skip
            if skip > 0:
                self._add_part("split", level, ChannelSplit(skip))
                self._add_part("concatenation", level, ChannelConcat(skip))
            options = dict(stride=self.strides[level], method=method, init=init, learnable=self.learnable_resampling)
            self._add_part("downsampling", level, OrthogonalDownsampling(down, **options))
            self._add_part("upsampling", level, OrthogonalUpsampling(down, **options))
        self.set_memory_saving(self.memory_saving)

    @staticmethod
    def _strides(stride, levels, dims):
        def one(s):
            if isinstance(s, int) and not isinstance(s, bool):
                s = (s,) * dims
            if not _ints(s) or len(s) != dims:
                raise ValueError("IUNet: every stride needs {} entries (one per spatial dimension), got {!r}"
                                 .format(dims, s))
            if any(e < 1 for e in s):
                raise ValueError("IUNet: every stride must be at least 1, got {!r}".format(s))
            return tuple(s)

        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
            return [(2,) * dims] * (levels - 1)
        if (isinstance(stride, int) and not isinstance(stride, bool)) or _ints(stride):
            return [one(stride)] * (levels - 1)
        if not isinstance(stride, (tuple, list)) or not stride:
            raise ValueError("IUNet: stride must be None, an int, one sequence of {} ints or a list of such "
                             "sequences, got {!r}".format(dims, stride))
        if len(stride) == 1:
            return [one(stride[0])] * (levels - 1)
        if len(stride) != levels - 1:
            raise ValueError("IUNet: give one stride per level transition ({}), one for all, or none; got {}"
                             .format(levels - 1, len(stride)))
        return [one(s) for s in stride]

    def _skip_channels(self, level):
        return self.channels[level] - self.channels[level + 1] // math.prod(self.strides[level])

    def _stage(self, block, level, first_index):
        members = []
        channels = self.channels[level]
        for i in range(self.layers[level]):
            if self.channel_mixing_every > 0 and i % self.channel_mixing_every == 0:
                members.append(OrthogonalChannelMixing(channels, method=self.method))
            module = block(channels, self.dims, level, first_index + i)
            if module is None:
                raise ValueError("IUNet: the block factory returned None for level {}, block {}"
                                 .format(level, first_index + i))
            if not isinstance(module, nn.Module) or not callable(getattr(module, "inverse", None)):
                raise TypeError("IUNet: the block factory returned a {} for level {}, block {}; it must return an "
                                "invertible torch.nn.Module (forward and inverse)"
                                .format(type(module).__name__, level, first_index + i))
            members.append(module)
        return InvertibleSequential(*members)

    def _add_part(self, name, level, module):
        wrapper = InvertibleModuleWrapper(module, preserve_rng_state=self.preserve_rng_state)
        self.add_module("{}_{}".format(name, level), wrapper)

    def _part(self, name, level):
        return self._modules.get("{}_{}".format(name, level))

    def _levels(self):
        return len(self.channels)

    def set_memory_saving(self, on):
        """Turns memory saving on or off in every wrapper (the same parameters either way)."""
        self.memory_saving = bool(on)
        for module in self.children():
            if isinstance(module, InvertibleModuleWrapper):
                module.disable = not self.memory_saving

    def total_stride(self):
        """What the spatial sizes must be multiples of: the product of the strides, per dimension."""
        total = [1] * self.dims
        for s in self.strides:
            total = [t * e for t, e in zip(total, s)]
        return tuple(total)

    def orthogonal_layers(self):
        """The resampling layers and channel mixings (for orthogonality checks)."""
        return [m for m in self.modules()
                if isinstance(m, (OrthogonalDownsampling, OrthogonalUpsampling, OrthogonalChannelMixing))]

    def orthogonality_error(self):
        """The largest max |Q^T Q - I| over all orthogonal matrices of the network (0 when it has none)."""
        with torch.no_grad():
            return max([orthogonality_error(m.matrices()) for m in self.orthogonal_layers()], default=0.0)

    def _check_input(self, x, who):
        if not isinstance(x, torch.Tensor):
            raise TypeError("{}: expects a tensor, got a {}".format(who, type(x).__name__))
        if x.dim() != self.dims + 2:
            raise RuntimeError("{}: expects [N, C, spatial...] with {} spatial dimensions, got shape {}"
                               .format(who, self.dims, list(x.shape)))
        if x.shape[1] != self.channels[0]:
            raise RuntimeError("{}: expects {} channels (channels[0]), got shape {}"
                               .format(who, self.channels[0], list(x.shape)))
        total = self.total_stride()
        if any(size % t for size, t in zip(x.shape[2:], total)):
            raise RuntimeError("{}: spatial size {} must be divisible by the total stride {} (forward pads for you "
                               "when pad is on; inverse cannot, as padding is not invertible)"
                               .format(who, list(x.shape[2:]), list(total)))

    def encode(self, x):
        """The multi-scale code: the skip tensor of each level that has one (finest first), then the
        coarsest level's tensor. Sizes must be divisible by total_stride()."""
        self._check_input(x, "IUNet.encode")
        code = []
        t = x
        levels = self._levels()
        for level in range(levels):
            if self._part("encoder", level) is not None:
                t = self._part("encoder", level)(t)
            if level + 1 == levels:
                break
            if self._part("split", level) is not None:
                skip, t = self._part("split", level)(t)
                code.append(skip)
            t = self._part("downsampling", level)(t)
        code.append(t)
        return code

    def decode(self, code):
        """The output from what encode returned (a list of tensors)."""
        code = list(code)
        if not code:
            raise RuntimeError("IUNet.decode: the code is empty; pass what encode returned")
        count = len(code)
        t = code.pop()
        for level in range(self._levels() - 2, -1, -1):
            t = self._part("upsampling", level)(t)
            if self._part("concatenation", level) is not None:
                if not code:
                    raise RuntimeError("IUNet.decode: the code has too few tensors; pass what encode returned")
                t = self._part("concatenation", level)(code.pop(), t)
            if self._part("decoder", level) is not None:
                t = self._part("decoder", level)(t)
        if code:
            raise RuntimeError("IUNet.decode: the code has {} tensors, {} more than the network uses"
                               .format(count, len(code)))
        return t

    def decode_inverse(self, y):
        """The code that decode maps to y."""
        self._check_input(y, "IUNet.inverse")
        code = []
        t = y
        for level in range(self._levels() - 1):
            if self._part("decoder", level) is not None:
                t = self._part("decoder", level).inverse(t)
            if self._part("concatenation", level) is not None:
                skip, t = self._part("concatenation", level).inverse(t)
                code.append(skip)
            t = self._part("upsampling", level).inverse(t)
        code.append(t)
        return code

    def encode_inverse(self, code):
        """The input that encode maps to `code`."""
        code = list(code)
        if not code:
            raise RuntimeError("IUNet.encode_inverse: the code is empty")
        t = code.pop()
        levels = self._levels()
        for level in range(levels - 1, -1, -1):
            if level + 1 < levels:
                t = self._part("downsampling", level).inverse(t)
                if self._part("split", level) is not None:
                    if not code:
                        raise RuntimeError("IUNet.encode_inverse: the code has too few tensors")
                    t = self._part("split", level).inverse(code.pop(), t)
            if self._part("encoder", level) is not None:
                t = self._part("encoder", level).inverse(t)
        return t

    def forward(self, x):
        """Same shape in and out; pads (zeros at the end) and crops back when pad is on and the total
        stride does not divide the spatial sizes (then the map is not exactly invertible)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError("IUNet: expects a tensor, got a {}".format(type(x).__name__))
        if x.dim() != self.dims + 2:
            raise RuntimeError("IUNet: expects [N, C, spatial...] with {} spatial dimensions, got shape {}"
                               .format(self.dims, list(x.shape)))
        total = self.total_stride()
        padding = []  # F.pad's order: the last dimension first
        for d in range(self.dims - 1, -1, -1):
            padding += [0, (total[d] - x.shape[d + 2] % total[d]) % total[d]]
        if not any(padding) or not self.pad:
            return self.decode(self.encode(x))
        y = self.decode(self.encode(F.pad(x, padding)))
        for d in range(self.dims):
            y = y.narrow(d + 2, 0, x.shape[d + 2])
        return y

    def inverse(self, y):
        """x with forward(x) == y; the spatial sizes must be divisible by total_stride()."""
        return self.encode_inverse(self.decode_inverse(y))

    def extra_repr(self):
        """The network's shape, for print(model)."""
        return "channels={}, layers={}, dims={}, memory_saving={}".format(
            list(self.channels), list(self.layers), self.dims, self.memory_saving)
