#pragma once
/// @file
/// memcnn: memory-efficient invertible neural networks on LibTorch. The umbrella header: the core
/// library's modules and tools (state_dict.h and files.h are included on their own).

/// @namespace memcnn
/// Memory-efficient invertible neural networks on LibTorch.
///
/// A stack of invertible blocks need not keep its activations for backward: each block's input
/// can be rebuilt from its output. The core pieces:
/// - memcnn::InvertibleModule, the contract of an invertible block (`forward_multi`,
///   `inverse_multi`), and memcnn::as_invertible for any module with `forward` and `inverse`;
/// - memcnn::InvertibleModuleWrapper (InvertibleModuleWrapperImpl), which frees a block's input in
///   forward and rebuilds it in backward, so activation memory stays flat in depth;
/// - couplings that make any modules F and G invertible: memcnn::AdditiveCoupling (bit-exact with
///   `exact`, fixed_point.h) and memcnn::AffineCoupling; memcnn::InvertibleSequential chains blocks;
/// - invertible layers with log-determinants (layers.h, channel_mixing.h, resampling.h,
///   channel_split.h) for flows and iUNets;
/// - memcnn::Checkpointed and memcnn::checkpoint, gradient checkpointing for blocks that are not
///   invertible; memcnn::fit_memory_plan, which picks keep, recompute or rebuild per block under a
///   memory budget;
/// - memcnn::Autocast (mixed precision), memcnn::MemoryProbe (allocator bytes, reported in MiB =
///   2^20 bytes), memcnn::measure_drift, memcnn::is_invertible_module, and torch.save files read
///   and written without Python (state_dict.h).

#include "memcnn/autocast.h"
#include "memcnn/channel_mixing.h"
#include "memcnn/channel_split.h"
#include "memcnn/checkpoint.h"
#include "memcnn/coupling.h"
#include "memcnn/drift.h"
#include "memcnn/fixed_point.h"
#include "memcnn/invertible_module.h"
#include "memcnn/invertible_sequential.h"
#include "memcnn/is_invertible.h"
#include "memcnn/layers.h"
#include "memcnn/log.h"
#include "memcnn/memory.h"
#include "memcnn/memory_plan.h"
#include "memcnn/orthogonal.h"
#include "memcnn/resampling.h"
#include "memcnn/rng.h"
#include "memcnn/wrapper.h"
