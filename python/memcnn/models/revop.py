"""InvertibleModuleWrapper, create_coupling, is_invertible_module (MemCNN's API) over memcnn's C++
memory-saving autograd function."""

import warnings

import torch
import torch.nn as nn

from memcnn import _C
from memcnn._bridge import check_tensors, handle, pack, unpack
from memcnn.models.additive import AdditiveCoupling
from memcnn.models.affine import AffineCoupling


class InvertibleModuleWrapper(nn.Module):
    """Runs the invertible module `fn` (forward and inverse) so that in training its input is freed
    after forward and rebuilt from the output in backward.

    Memory is saved in training mode with grad enabled and something to differentiate; in eval(),
    under torch.no_grad(), or with disable=True the wrapper is a plain call and frees nothing.

    Args:
        fn (torch.nn.Module): the invertible module: it has forward and inverse.
        keep_input (bool): keep the input of forward (no saving that way).
        keep_input_inverse (bool): keep the input of inverse.
        num_bwd_passes (int): how many backward passes may run through the graph (retain_graph=True).
        disable (bool): plain call of fn, no memory saving.
        preserve_rng_state (bool): replay random numbers (dropout) when rebuilding and recomputing.
        fused_backward (bool): memcnn's: couplings rebuild and differentiate in one pass, running Fm
            and Gm once each in backward; False: MemCNN's inverse-then-recompute.

    Raises:
        ValueError: when num_bwd_passes is not an integer >= 1.
    """

    def __init__(self, fn, keep_input=False, keep_input_inverse=False, num_bwd_passes=1,
                 disable=False, preserve_rng_state=False, fused_backward=True):
        super(InvertibleModuleWrapper, self).__init__()
        if isinstance(num_bwd_passes, bool) or not isinstance(num_bwd_passes, int) or num_bwd_passes < 1:
            raise ValueError("InvertibleModuleWrapper: num_bwd_passes must be an integer >= 1, got {!r}"
                             .format(num_bwd_passes))
        self.disable = disable
        self.keep_input = keep_input
        self.keep_input_inverse = keep_input_inverse
        self.num_bwd_passes = num_bwd_passes
        self.preserve_rng_state = preserve_rng_state
        self.fused_backward = fused_backward
        self._fn = fn

    def _run(self, xs, inverse):
        check_tensors(xs, "InvertibleModuleWrapper." + ("inverse" if inverse else "forward"))
        # A memory plan being profiled (memcnn.plan_memory) sees this block's forward, whatever its
        # options; otherwise the report does nothing.
        reported = _C.report_block_forward_begin(self, xs, self.training)
        outputs = self._run_unreported(xs, inverse)
        if reported:
            _C.report_block_forward_end(self, pack(outputs))
        return outputs

    def _run_unreported(self, xs, inverse):
        if self.disable:
            return self._fn.inverse(*xs) if inverse else self._fn(*xs)
        return unpack(_C.run_wrapped(handle(self._fn, len(xs)), list(xs), inverse, self.training,
                                     bool(self.keep_input), bool(self.keep_input_inverse), int(self.num_bwd_passes),
                                     False, bool(self.preserve_rng_state), bool(self.fused_backward)))

    def forward(self, *xin):
        """y = fn(*xin); one tensor is returned as is, several as a tuple."""
        y = self._run(xin, inverse=False)
        return y[0] if isinstance(y, tuple) and len(y) == 1 else y

    def inverse(self, *yin):
        """x = fn.inverse(*yin); one tensor is returned as is, several as a tuple."""
        x = self._run(yin, inverse=True)
        return x[0] if isinstance(x, tuple) and len(x) == 1 else x


class ReversibleBlock(InvertibleModuleWrapper):
    """Deprecated (MemCNN): InvertibleModuleWrapper(create_coupling(...)); warns on creation.

    Args: those of :func:`create_coupling` and the wrapper's keep_input and keep_input_inverse.
    """

    def __init__(self, Fm, Gm=None, coupling='additive', keep_input=False, keep_input_inverse=False,
                 implementation_fwd=-1, implementation_bwd=-1, adapter=None):
        warnings.warn("This class has been deprecated. Use the more flexible InvertibleModuleWrapper class",
                      DeprecationWarning)
        fn = create_coupling(Fm=Fm, Gm=Gm, coupling=coupling, implementation_fwd=implementation_fwd,
                             implementation_bwd=implementation_bwd, adapter=adapter)
        super(ReversibleBlock, self).__init__(fn, keep_input=keep_input, keep_input_inverse=keep_input_inverse)


def create_coupling(Fm, Gm=None, coupling='additive', implementation_fwd=-1, implementation_bwd=-1, adapter=None):
    """Builds an AdditiveCoupling or an AffineCoupling (MemCNN's factory).

    Args:
        Fm (torch.nn.Module): F.
        Gm (torch.nn.Module, optional): G; None: a deep copy of Fm.
        coupling (str): 'additive' or 'affine'.
        implementation_fwd (int): MemCNN's implementation number (-1; 0 and 1 deprecated).
        implementation_bwd (int): as implementation_fwd.
        adapter (type, optional): the affine coupling's adapter (ignored for 'additive').

    Returns:
        torch.nn.Module: the coupling.

    Raises:
        NotImplementedError: for another coupling name.
    """
    if coupling == 'additive':
        return AdditiveCoupling(Fm, Gm, implementation_fwd=implementation_fwd, implementation_bwd=implementation_bwd)
    if coupling == 'affine':
        return AffineCoupling(Fm, Gm, adapter=adapter, implementation_fwd=implementation_fwd,
                              implementation_bwd=implementation_bwd)
    raise NotImplementedError('Unknown coupling method: %s' % coupling)


def _valid_shapes(shape):
    def ints(s):
        return isinstance(s, (tuple, list)) and len(s) > 0 and all(
            isinstance(e, int) and not isinstance(e, bool) for e in s)
    if ints(shape):
        return True
    return isinstance(shape, (tuple, list)) and len(shape) > 0 and all(ints(s) for s in shape)


def is_invertible_module(module_in, test_input_shape, test_input_dtype=torch.float32, atol=1e-6, random_seed=42):
    """True when inverse(forward(x)) ~ x and forward(inverse(y)) ~ y on random inputs of the given
    shape(s) (uniform in [0, 1), seeded with random_seed). Buffers (BatchNorm statistics) and the
    random generators are left as they were. Warns, as MemCNN does, when inputs and outputs share tensors."""
    if isinstance(module_in, InvertibleModuleWrapper):
        module_in = module_in._fn
    if not callable(getattr(module_in, "inverse", None)):
        return False
    if not _valid_shapes(test_input_shape):
        raise ValueError("test_input_shape should be of type Tuple[int, ...] or Tuple[Tuple[int, ...], ...], "
                         "but {!r} found".format(test_input_shape))
    if not isinstance(test_input_shape[0], (tuple, list)):
        test_input_shape = (test_input_shape,)
    shapes = [list(s) for s in test_input_shape]
    if not _C.is_invertible(handle(module_in, len(shapes)), shapes, torch.empty(0, dtype=test_input_dtype),
                            float(atol), int(random_seed)):
        return False

    # MemCNN's warnings about shared tensors: one more pass, leaving no trace either.
    buffers = [(b, b.clone()) for b in module_in.buffers()]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(random_seed)
        device = next(iter(list(module_in.parameters()) + list(module_in.buffers())), torch.empty(0)).device
        inputs = tuple(torch.rand(s, dtype=test_input_dtype, device=device) for s in shapes)
        outputs = pack(module_in(*inputs))
        rebuilt = pack(module_in.inverse(*outputs))
        for b, saved in buffers:
            b.copy_(saved)
    for ins, msg in ((inputs, "forward"), (rebuilt, "inverse")):
        if len(set(outputs)) != len(outputs):
            warnings.warn("Some outputs (*y) share the same tensor, are you sure this is what you want? ({})".format(msg))
        if any(any(o is i for i in ins) for o in outputs):
            warnings.warn("Some inputs (*x) and outputs (*y) share the same tensor, this is typically not a good "
                          "function to use with memcnn.InvertibleModuleWrapper as it might increase memory usage. "
                          "E.g. an identity function. ({})".format(msg))
    return True


def get_device_states(*args):
    """The CUDA devices of the tensor arguments and their generator states (MemCNN's helper)."""
    devices = sorted(set(a.get_device() for a in args if isinstance(a, torch.Tensor) and a.is_cuda))
    states = []
    for device in devices:
        with torch.cuda.device(device):
            states.append(torch.cuda.get_rng_state())
    return devices, states


def set_device_states(devices, states):
    """Restores the CUDA generator states that :func:`get_device_states` returned (MemCNN's helper)."""
    for device, state in zip(devices, states):
        with torch.cuda.device(device):
            torch.cuda.set_rng_state(state)
