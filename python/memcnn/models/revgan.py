"""Reversible GANs for image-to-image translation from memcnn's C++ models (memcnn::models,
revgan.h): van der Ouderaa & Worrall, "Reversible GANs for Memory-efficient Image-to-Image
Translation" (CVPR 2019), and the 3-D generator of van der Ouderaa et al. (MIDL 2019).

- RevGANGenerator: ONE generator for both directions. ``forward`` maps domain A to B (A's encoder,
  an invertible core, B's decoder), ``inverse`` maps B to A (B's encoder, the inverse of the same
  core, A's decoder). The core's additive couplings run in memcnn's memory-saving wrapper, so its
  activation memory in training does not grow with depth; ``set_memory_saving(False)`` runs the
  same weights with a full autograd graph.
- ConvGANGenerator and ConvGANPair: the conventional counterpart (pix2pix, CycleGAN), the same
  encoder and decoder around a ResNet core, one generator per direction.
- PatchGAN: the PatchGAN discriminator; give it input and output concatenated along the channels
  (in_channels = channels_a + channels_b) for paired, conditional training.

Sizes left as None take the authors' defaults for ``dims`` (2-D: ngf 64, 2 downsamplings, stem
kernel 7, depth 9, reflection padding, post-norm blocks; 3-D: ngf 32, 1 downsampling, stem kernel
5, depth 8, replication padding, pre-norm blocks whose last convolution starts at zero). The
networks compute in C++; the modules here own the parameters under the C++ names (see
memcnn.models._cpp_network), so torch.optim, .to(), state_dict and copies work as usual.

    generator = memcnn.RevGANGenerator(dims=3, channels_a=1, channels_b=1, depth=16)
    b = generator(a)              # A to B
    a_again = generator.inverse(b)  # B to A through the same core
    discriminator = memcnn.PatchGAN(dims=3, in_channels=2)
"""

from memcnn import _C
from memcnn._bridge import check_tensors
from memcnn.models._cpp_network import CppNetwork

__all__ = ['RevGANGenerator', 'ConvGANGenerator', 'ConvGANPair', 'PatchGAN']


class _GANNetwork(CppNetwork):
    _kind = None

    def __init__(self, **options):
        super().__init__(**options)
        # The sizes the defaults resolved to: shown by repr and used when a copy builds it again.
        self._options = self._public_options(_C.gan_options(self.__dict__['_cpp_network']))

    def _build(self, options):
        return _C.gan_network(self._kind, self._cpp_options(options))

    @staticmethod
    def _parameters_of(network):
        return _C.gan_parameters(network)

    @staticmethod
    def _bind(network, tensors, training):
        _C.bind_gan(network, tensors, training)

    @staticmethod
    def _plannable_blocks(network):
        return _C.gan_plannable_blocks(network)

    @staticmethod
    def _cpp_options(options):
        return {key: value for key, value in options.items() if value is not None}

    @staticmethod
    def _public_options(resolved):
        return dict(resolved)

    def _call(self, method, x):
        check_tensors((x,), '{}.{}'.format(type(self).__name__, method))
        return _C.gan_call(self._network(), method, x)


class RevGANGenerator(_GANNetwork):
    """The RevGAN generator: A to B by ``forward``, B to A by ``inverse``, through one invertible core.

    Encoder per domain: a stem convolution to ``ngf`` channels, then ``downsamplings`` stride-2
    convolutions doubling them (InstanceNorm and ReLU after each). Core: ``depth`` additive
    couplings on ngf * 2**downsamplings channels, each in a memory-saving wrapper. Decoder per
    domain: stride-2 transposed convolutions halving the channels, the stem's kernel to the
    domain's channels, tanh.

    Args:
        dims: 2 (images [N, C, H, W]) or 3 (volumes [N, C, D, H, W]).
        channels_a: channels of domain A (input of forward, output of inverse).
        channels_b: channels of domain B (output of forward, input of inverse).
        ngf: channels after the stem (None: 64 in 2-D, 32 in 3-D).
        downsamplings: stride-2 convolutions per encoder (None: 2 in 2-D, 1 in 3-D).
        stem_kernel: odd kernel of the first and last convolution (None: 7 in 2-D, 5 in 3-D).
        depth: core blocks (None: 9 in 2-D, 8 in 3-D).
        block: 'post_norm' (CVPR 2019) or 'pre_norm_zero_init' (MIDL 2019); None: by dims.
        padding: 'reflect', 'replicate' or 'zeros' for the stride-1 convolutions; None: by dims.
        pad_to_stride: pad spatial sizes that 2**downsamplings does not divide (replicating the
            last row, column, slice) and crop the output back; False: such sizes raise.
        add_input: return the input plus the decoder's output, the decoders' last convolution
            starting at zero (the generator starts as the identity; global residual learning, not
            in the authors' code). Needs channels_a == channels_b.
        memory_saving: run the core under memory saving (the same weights either way).
        init_std: standard deviation of the N(0, init_std) convolution weights.

    Raises:
        ValueError: an option out of range (dims not 2 or 3, an even stem_kernel, depth 0, an odd
            core width, an unknown block or padding), with what to change.
    """
    _kind = 'revgan'

    def __init__(self, dims=2, channels_a=3, channels_b=3, ngf=None, downsamplings=None, stem_kernel=None, depth=None,
                 block=None, padding=None, pad_to_stride=False, add_input=False, memory_saving=True, init_std=0.02):
        super().__init__(dims=dims, channels_a=channels_a, channels_b=channels_b, ngf=ngf, downsamplings=downsamplings,
                         stem_kernel=stem_kernel, depth=depth, block=block, padding=padding,
                         pad_to_stride=pad_to_stride, add_input=add_input, memory_saving=memory_saving,
                         init_std=init_std)

    def forward(self, a):
        """Translates domain A to domain B.

        Args:
            a: [N, channels_a, *spatial] with dims spatial dimensions.

        Returns:
            [N, channels_b, *spatial], in (-1, 1) (without add_input).

        Raises:
            TypeError: a is not a tensor.
            ValueError: wrong dimensionality or channel count, or a spatial size the strides do
                not divide (without pad_to_stride) or too small; the message says what to change.
        """
        return self._call('forward', a)

    def inverse(self, b):
        """Translates domain B to domain A through the inverse of forward's core.

        Args:
            b: [N, channels_b, *spatial] with dims spatial dimensions.

        Returns:
            [N, channels_a, *spatial], in (-1, 1) (without add_input).

        Raises:
            TypeError: b is not a tensor.
            ValueError: as for forward, with channels_b.
        """
        return self._call('inverse', b)

    def a_to_b(self, a):
        """The same as forward (the name a GAN trainer can use for any generator pair).

        Args:
            a: [N, channels_a, *spatial].

        Returns:
            [N, channels_b, *spatial].
        """
        return self.forward(a)

    def b_to_a(self, b):
        """The same as inverse.

        Args:
            b: [N, channels_b, *spatial].

        Returns:
            [N, channels_a, *spatial].
        """
        return self.inverse(b)

    def core_forward(self, x):
        """Runs the invertible core alone, forward (what forward runs between encoder and decoder).

        With memory saving, in a computation that needs gradients, the core frees its input's
        storage and rebuilds it in backward (as memcnn.InvertibleModuleWrapper does): pass a tensor
        you do not need afterwards, e.g. ``x.clone()``.

        Args:
            x: [N, ngf * 2**downsamplings, *spatial].

        Returns:
            A tensor of x's shape.

        Raises:
            ValueError: wrong dimensionality or channel count.
        """
        return self._call('core_forward', x)

    def core_inverse(self, y):
        """Runs the invertible core alone, inverse: ``core_inverse(core_forward(x))`` gives x back.

        Args:
            y: [N, ngf * 2**downsamplings, *spatial].

        Returns:
            A tensor of y's shape.

        Raises:
            ValueError: wrong dimensionality or channel count.
        """
        return self._call('core_inverse', y)

    @property
    def memory_saving(self):
        """Whether the core runs under memory saving (bool)."""
        return self._options['memory_saving']

    def set_memory_saving(self, on):
        """Turns the core's memory saving on or off; the parameters stay the same.

        Args:
            on: True to rebuild the core's activations in backward instead of keeping them.

        Returns:
            This module.
        """
        self._options['memory_saving'] = bool(on)
        _C.gan_set_memory_saving(self._network(), bool(on))
        return self


class ConvGANGenerator(_GANNetwork):
    """One conventional generator (pix2pix, CycleGAN): RevGANGenerator's encoder and decoder around
    a ResNet core of ``depth`` residual blocks x + F(x), F at the full core width.

    Args:
        dims: 2 or 3.
        in_channels: channels of the input domain.
        out_channels: channels of the output domain.
        ngf, downsamplings, stem_kernel, depth, block, padding, pad_to_stride, add_input, init_std: as for
            RevGANGenerator (None: the defaults for dims).

    Raises:
        ValueError: an option out of range, with what to change.
    """
    _kind = 'convgan'

    def __init__(self, dims=2, in_channels=3, out_channels=3, ngf=None, downsamplings=None, stem_kernel=None,
                 depth=None, block=None, padding=None, pad_to_stride=False, add_input=False, init_std=0.02):
        super().__init__(dims=dims, in_channels=in_channels, out_channels=out_channels, ngf=ngf,
                         downsamplings=downsamplings, stem_kernel=stem_kernel, depth=depth, block=block,
                         padding=padding, pad_to_stride=pad_to_stride, add_input=add_input, init_std=init_std)

    @staticmethod
    def _cpp_options(options):
        options = dict(options)
        options['channels_a'] = options.pop('in_channels')
        options['channels_b'] = options.pop('out_channels')
        return _GANNetwork._cpp_options(options)

    @staticmethod
    def _public_options(resolved):
        options = dict(resolved)
        options['in_channels'] = options.pop('channels_a')
        options['out_channels'] = options.pop('channels_b')
        options.pop('memory_saving')  # a ResNet core has none
        return options

    def forward(self, x):
        """Translates the input domain to the output domain.

        Args:
            x: [N, in_channels, *spatial] with dims spatial dimensions.

        Returns:
            [N, out_channels, *spatial], in (-1, 1) (without add_input).

        Raises:
            TypeError: x is not a tensor.
            ValueError: wrong dimensionality or channel count, or a spatial size the strides do
                not divide (without pad_to_stride) or too small.
        """
        return self._call('forward', x)


class ConvGANPair(_GANNetwork):
    """The conventional generator pair: ``generator_ab`` (A to B) and ``generator_ba`` (B to A), two
    ConvGANGenerators with their own parameters (RevGANGenerator's counterpart).

    Args:
        dims: 2 or 3.
        channels_a: channels of domain A.
        channels_b: channels of domain B.
        ngf, downsamplings, stem_kernel, depth, block, padding, pad_to_stride, add_input, init_std: as for
            RevGANGenerator (None: the defaults for dims).

    Raises:
        ValueError: an option out of range, with what to change.
    """
    _kind = 'convgan_pair'

    def __init__(self, dims=2, channels_a=3, channels_b=3, ngf=None, downsamplings=None, stem_kernel=None,
                 depth=None, block=None, padding=None, pad_to_stride=False, add_input=False, init_std=0.02):
        super().__init__(dims=dims, channels_a=channels_a, channels_b=channels_b, ngf=ngf,
                         downsamplings=downsamplings, stem_kernel=stem_kernel, depth=depth, block=block,
                         padding=padding, pad_to_stride=pad_to_stride, add_input=add_input, init_std=init_std)

    @staticmethod
    def _public_options(resolved):
        options = dict(resolved)
        options.pop('memory_saving')
        return options

    def forward(self, a):
        """A to B by generator_ab (the same as a_to_b).

        Args:
            a: [N, channels_a, *spatial].

        Returns:
            [N, channels_b, *spatial].

        Raises:
            TypeError, ValueError: as for ConvGANGenerator.forward.
        """
        return self._call('forward', a)

    def a_to_b(self, a):
        """A to B by generator_ab.

        Args:
            a: [N, channels_a, *spatial].

        Returns:
            [N, channels_b, *spatial].
        """
        return self.forward(a)

    def b_to_a(self, b):
        """B to A by generator_ba.

        Args:
            b: [N, channels_b, *spatial].

        Returns:
            [N, channels_a, *spatial].

        Raises:
            TypeError, ValueError: as for ConvGANGenerator.forward, with channels_b.
        """
        return self._call('inverse', b)


class PatchGAN(_GANNetwork):
    """The PatchGAN discriminator (pix2pix): 4x4(x4) convolutions, ``layers`` of stride 2 (the first
    without normalisation), one of stride 1, LeakyReLU 0.2 after each, and a convolution to one
    logit per patch (no sigmoid).

    Args:
        dims: 2 or 3.
        in_channels: channels of what it judges: an image's, or channels_a + channels_b when it is
            conditioned on the input (input and output concatenated along the channels).
        ndf: channels of the first layer, doubled per layer up to 8 ndf.
        layers: stride-2 convolutions (None: 3 in 2-D, a 70x70 receptive field; 2 in 3-D, 34^3).
        instance_norm: InstanceNorm after every convolution but the first and the last.
        init_std: standard deviation of the N(0, init_std) convolution weights.

    Raises:
        ValueError: an option out of range (dims, channels, layers not in 1..8), with what to change.
    """
    _kind = 'patchgan'

    def __init__(self, dims=2, in_channels=3, ndf=64, layers=None, instance_norm=True, init_std=0.02):
        super().__init__(dims=dims, in_channels=in_channels, ndf=ndf, layers=layers, instance_norm=instance_norm,
                         init_std=init_std)

    def forward(self, x):
        """Logits, one per patch.

        Args:
            x: [N, in_channels, *spatial] with dims spatial dimensions, each side at least
                3 * 2**layers.

        Returns:
            [N, 1, *patches].

        Raises:
            TypeError: x is not a tensor.
            ValueError: wrong dimensionality or channel count, or a side too small for the layers.
        """
        return self._call('forward', x)

    @property
    def receptive_field(self):
        """The side of the input window each logit sees (70 for 3 layers, 34 for 2)."""
        return _C.gan_receptive_field(self._network())
