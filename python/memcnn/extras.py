"""memcnn's extras beyond MemCNN's API: InvertibleSequential, checkpoint, memory statistics."""

import torch
import torch.nn as nn

from memcnn import _C
from memcnn._bridge import check_tensors, handle, unpack


class InvertibleSequential(nn.Sequential):
    """A chain of invertible modules, itself invertible (inverse runs the members backwards).
    Wrapped in an InvertibleModuleWrapper the whole chain is one autograd node: forward keeps no
    activation of any member, backward rebuilds and differentiates the members one at a time
    (couplings with their fused backward). Members keep the number of tensors they are given."""

    def _memcnn_handle(self, n_tensors):
        if len(self) == 0:
            raise ValueError("InvertibleSequential: the chain is empty")
        return _C.sequential([handle(m, n_tensors) for m in self], self.training)

    def forward(self, *x):
        """Runs the members in order.

        Args:
            *x (torch.Tensor): the input tensors of the first member.

        Returns:
            torch.Tensor or tuple: the last member's output (one tensor alone, several as a tuple).

        Raises:
            TypeError: when an argument is not a tensor or a member has no inverse.
            ValueError: when there is no input or the chain is empty.
        """
        check_tensors(x, "InvertibleSequential.forward")
        return unpack(_C.run(self._memcnn_handle(len(x)), list(x), False))

    def inverse(self, *y):
        """Runs the members' inverses in reverse order: inverse(forward(x)) == x.

        Args:
            *y (torch.Tensor): outputs of forward.

        Returns:
            torch.Tensor or tuple: the input (one tensor alone, several as a tuple).
        """
        check_tensors(y, "InvertibleSequential.inverse")
        return unpack(_C.run(self._memcnn_handle(len(y)), list(y), True))


def checkpoint(fn, *inputs, parameters=None, preserve_rng_state=True, num_bwd_passes=1):
    """Gradient checkpointing by memcnn's C++ core for modules that are not invertible: forward
    keeps only `inputs`, backward runs fn again with a graph. `fn`: a torch.nn.Module (its parameters
    get gradients and its buffers, such as BatchNorm statistics, end as after one call) or any callable
    (pass the tensors it uses that need gradients as `parameters`). Returns what fn returns."""
    check_tensors(inputs, "checkpoint")
    stateful = fn if isinstance(fn, nn.Module) else None
    if parameters is None:
        parameters = list(fn.parameters()) if stateful is not None else []
    parameters = list(parameters)
    if isinstance(num_bwd_passes, bool) or not isinstance(num_bwd_passes, int) or num_bwd_passes < 1:
        raise ValueError("checkpoint: num_bwd_passes must be an integer >= 1, got {!r}".format(num_bwd_passes))
    return unpack(_C.checkpoint(fn, list(inputs), parameters, stateful, bool(preserve_rng_state), num_bwd_passes))


def _device(device):
    return str(torch.device(device))


def enable_cpu_memory_tracking():
    """Installs memcnn's counting CPU allocator; tensors allocated from then on are counted. Importing
    memcnn has already done it (see memcnn/__init__.py); calling it again does nothing."""
    _C.enable_cpu_memory_tracking()


def cpu_memory_tracking_enabled():
    """Returns True when memcnn's counting CPU allocator is installed (importing memcnn installs it)."""
    return _C.cpu_memory_tracking_enabled()


def memory_stats(device="cpu"):
    """Bytes held by tensors on the device now and at the peak since reset_peak_memory(), from the
    allocator (CPU: memcnn's counting allocator, which counts tensors allocated since memcnn was
    imported; CUDA: the caching allocator)."""
    current, peak = _C.memory_stats(_device(device))
    return {"current_bytes": current, "peak_bytes": peak}


def reset_peak_memory(device="cpu"):
    """Restarts the peak memory_stats() reports; open MemoryProbes keep theirs."""
    _C.reset_peak_memory(_device(device))


class MemoryProbe:
    """Bytes allocated on the device above those live when the probe was made: peak_above_start()
    and current_above_start(). Probes nest: each keeps its own peak, which inner probes and
    reset_peak_memory() leave alone. Used as a context manager, its figures stop at the end of the
    `with` block."""

    def __init__(self, device="cpu"):
        self._probe = _C.MemoryProbe(_device(device))
        self._final = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._final = (self._probe.peak_above_start(), self._probe.current_above_start())
        self._probe = None  # closes the C++ probe
        return False

    def peak_above_start(self):
        """Returns the peak bytes allocated on the device above those live at the probe's creation
        (up to now, or up to the end of its ``with`` block)."""
        return self._final[0] if self._final is not None else self._probe.peak_above_start()

    def current_above_start(self):
        """Returns the bytes allocated on the device now above those live at the probe's creation
        (or at the end of its ``with`` block), negative when less is held than then."""
        return self._final[1] if self._final is not None else self._probe.current_above_start()


def quantize_to_grid(x, fraction_bits=16):
    """round(x * 2**fraction_bits) / 2**fraction_bits with a straight-through gradient: puts the input
    of a chain of exact couplings (AdditiveCoupling(exact=True)) on their fixed-point grid."""
    return _C.quantize_to_grid(x, fraction_bits)


def exact_rebuild_fallbacks():
    """How many memory-saving calls of exact couplings kept their input because a value left the
    fixed-point grid's exact range (or an input was off the grid); process-wide."""
    return _C.exact_rebuild_fallbacks()


def is_freed(tensor):
    """True while a memory-saving wrapper holds this tensor freed (between forward and backward)."""
    return _C.is_freed(tensor)


def set_log_level(level):
    """'debug' logs why an input was kept rather than freed; 'info', 'warning' (default)."""
    _C.set_log_level(level)
