# -*- coding: utf-8 -*-
"""memcnn: memory-efficient invertible neural networks, MemCNN's Python API over memcnn's C++ core.

Same names, arguments and defaults as MemCNN 1.5.2 (InvertibleModuleWrapper, AdditiveCoupling,
AffineCoupling, AffineAdapterNaive, AffineAdapterSigmoid, create_coupling, is_invertible_module);
the memory-saving autograd function, the couplings' fused backward, BatchNorm statistics restore and
RNG replay run in C++ (memcnn._C). Extras: fused_backward, InvertibleSequential, checkpoint,
memory statistics, the invertible layers of memcnn.layers."""

__version__ = '1.5.2+cpp.0.1.0'

import torch  # noqa: F401  (loads LibTorch before the extension)

from memcnn import _C  # noqa: F401

# CPU memory statistics need memcnn's counting allocator, which C++ programs install at the start
# of main(). A Python program has no such place of its own, and switching tracking on at the first
# query would make that query report nothing of what was allocated before it; importing memcnn
# comes before most programs build their model and data, so the package switches it on here, once
# per process. The cost: a 64-byte header and two atomic updates per CPU tensor allocation.
_C.enable_cpu_memory_tracking()

from memcnn.models.revop import (ReversibleBlock, InvertibleModuleWrapper, create_coupling,  # noqa: E402
                                 is_invertible_module)
from memcnn.models.additive import AdditiveCoupling  # noqa: E402
from memcnn.models.affine import AffineCoupling, AffineAdapterNaive, AffineAdapterSigmoid  # noqa: E402
from memcnn.extras import (InvertibleSequential, checkpoint, enable_cpu_memory_tracking, memory_stats,  # noqa: E402
                           reset_peak_memory, MemoryProbe, cpu_memory_tracking_enabled, is_freed, set_log_level,
                           quantize_to_grid, exact_rebuild_fallbacks)
from memcnn import layers  # noqa: E402,F401
from memcnn.layers import (InvertibleDownsampling, InvertibleUpsampling, ChannelPermutation,  # noqa: E402
                           InvertibleConv1x1, ActNorm)
from memcnn.layers import (OrthogonalDownsampling, OrthogonalUpsampling, OrthogonalChannelMixing,  # noqa: E402
                           ChannelSplit, ChannelConcat, orthogonality_error)
from memcnn.iunet import IUNet, iunet_coupling_block, iunet_coupling_blocks  # noqa: E402
from memcnn.models.vit import ViT, RevViT  # noqa: E402
from memcnn.models.revgan import RevGANGenerator, ConvGANGenerator, ConvGANPair, PatchGAN  # noqa: E402
from memcnn.memory_plan import (plannable_blocks, profile_memory, plan_memory, plan_for_profile,  # noqa: E402
                                minimum_budget_mib, apply_memory_plan, save_memory_plan, load_memory_plan,
                                MemoryPlan, MemoryProfile)


def _install_storage_of_freed_inputs():
    """MemCNN frees an input with x.storage().resize_(0), and its users (and tests) check for a freed
    input with x.storage().size() == 0. memcnn detaches a freed input from its storage instead, so that
    computing with it raises an error rather than reading freed memory (with MemCNN, x + 1 then
    crashes the process). To keep that check working, storage() of a tensor memcnn holds freed returns
    an empty storage; every other tensor is untouched, and computing with a freed input still raises."""
    original = torch.Tensor.storage
    if getattr(original, "_memcnn", False):
        return

    def storage(self):
        if _C.is_freed(self):
            return torch.TypedStorage(device=self.device, dtype=self.dtype)
        return original(self)

    storage.__doc__ = original.__doc__
    storage._memcnn = True
    torch.Tensor.storage = storage


_install_storage_of_freed_inputs()

__all__ = [
    'AdditiveCoupling',
    'AffineCoupling',
    'AffineAdapterNaive',
    'AffineAdapterSigmoid',
    'InvertibleModuleWrapper',
    'ReversibleBlock',
    'create_coupling',
    'is_invertible_module',
    'InvertibleSequential',
    'checkpoint',
    'enable_cpu_memory_tracking',
    'memory_stats',
    'reset_peak_memory',
    'MemoryProbe',
    'cpu_memory_tracking_enabled',
    'is_freed',
    'quantize_to_grid',
    'exact_rebuild_fallbacks',
    'set_log_level',
    'InvertibleDownsampling',
    'InvertibleUpsampling',
    'ChannelPermutation',
    'InvertibleConv1x1',
    'ActNorm',
    'OrthogonalDownsampling',
    'OrthogonalUpsampling',
    'OrthogonalChannelMixing',
    'ChannelSplit',
    'ChannelConcat',
    'orthogonality_error',
    'IUNet',
    'iunet_coupling_block',
    'iunet_coupling_blocks',
    'ViT',
    'RevViT',
    'RevGANGenerator',
    'ConvGANGenerator',
    'ConvGANPair',
    'PatchGAN',
    'plannable_blocks',
    'profile_memory',
    'plan_memory',
    'plan_for_profile',
    'minimum_budget_mib',
    'apply_memory_plan',
    'save_memory_plan',
    'load_memory_plan',
    'MemoryPlan',
    'MemoryProfile',
]
