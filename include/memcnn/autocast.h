#pragma once
/// @file
/// Mixed precision (autocast) in the memory-saving backward. Backward runs modules again, to
/// rebuild inputs or to recompute a graph; they must run under the autocast settings forward
/// had, or a block computed in bfloat16 or float16 is rebuilt in float32 and its gradients are
/// wrong. The gradients themselves are taken under the settings backward began with, as the
/// plain computation's backward takes them. memcnn::Autocast is the user's guard; the other
/// guards and memcnn::differentiate serve custom FusedBackward blocks and the library itself.
/// All settings are per thread.

#include "memcnn/compat.h"

#include <torch/types.h>

#include <optional>
#include <string>
#include <vector>

namespace memcnn {
namespace detail {

// This thread's autocast settings switched to `target` for the scope, the previous ones back
// at exit: what every guard below does, with its own target.
class AutocastSwitch {
 public:
  explicit AutocastSwitch(const compat::AutocastState& target);
  ~AutocastSwitch();
  AutocastSwitch(const AutocastSwitch&) = delete;
  AutocastSwitch& operator=(const AutocastSwitch&) = delete;
  const compat::AutocastState& previous() const { return previous_; }

 private:
  compat::AutocastState previous_;
};

}  // namespace detail

/// Mixed precision for a scope, as Python's torch.autocast (LibTorch's C++ API has no guard):
/// on `device`, operations that autocast lowers (convolutions, matrix products) run in `dtype`.
/// The settings are restored at exit, and the cast cache is cleared when the outermost guard
/// exits. CPU takes bfloat16; CUDA float16 or bfloat16 (float16 training needs loss scaling).
class Autocast {
 public:
  /// Turns autocast on for `device` in `dtype` on this thread. c10::Error for a device other
  /// than CPU and CUDA, or a dtype the device's autocast does not take.
  explicit Autocast(c10::DeviceType device, c10::ScalarType dtype = c10::ScalarType::BFloat16);
  /// Restores the settings; the outermost guard also clears the cast cache.
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  detail::AutocastSwitch switch_;
};

/// Autocast off for a scope (both devices), settings restored at exit: for a layer whose inverse
/// is a different computation (a matrix and its inverse), so that in low precision the two
/// would disagree by its rounding (about 1e-2 in bfloat16) and the memory-saving backward would
/// carry that into the rebuilt input. Such a layer computes in its parameters' precision.
class AutocastDisabled {
 public:
  /// Turns autocast off for CPU and CUDA on this thread until the guard is destroyed.
  AutocastDisabled();

 private:
  detail::AutocastSwitch switch_;
};

/// Autocast caches the low-precision copies of parameters it makes; a copy made without grad
/// mode carries no graph, and a later call with grad mode that finds it in the cache would give
/// the parameter no gradient. Modules run without a graph (the memory-saving forward, the
/// rebuild) under this guard, which turns the cache off and back on.
class AutocastCacheOff {
 public:
  /// Turns this thread's cast cache off, remembering whether it was on.
  AutocastCacheOff();
  /// Turns the cast cache back on if it was on.
  ~AutocastCacheOff();
  AutocastCacheOff(const AutocastCacheOff&) = delete;
  AutocastCacheOff& operator=(const AutocastCacheOff&) = delete;

 private:
  bool was_enabled_;
};

/// For its lifetime, this thread runs under `at_forward`'s autocast settings, with the cast cache
/// off; differentiate() switches back to the settings the scope began with while it runs.
/// Scopes nest.
class ForwardAutocastScope {
 public:
  /// Switches to `at_forward` (the settings a wrapped call's forward ran under).
  explicit ForwardAutocastScope(const compat::AutocastState& at_forward);
  /// Restores the settings the scope began with.
  ~ForwardAutocastScope();
  ForwardAutocastScope(const ForwardAutocastScope&) = delete;
  ForwardAutocastScope& operator=(const ForwardAutocastScope&) = delete;

 private:
  detail::AutocastSwitch to_forward_;  // its previous(): the settings backward began with
  const compat::AutocastState* outer_at_backward_;
  AutocastCacheOff no_cache_;
};

/// `torch::autograd::grad(roots, wrt, grad_roots)` keeping no graph and allowing unused `wrt`
/// (undefined gradients), under the autocast settings of the innermost ForwardAutocastScope's
/// start (the current settings outside any). FusedBackward implementations take their
/// gradients with it.
std::vector<torch::Tensor> differentiate(const std::vector<torch::Tensor>& roots, const std::vector<torch::Tensor>& wrt,
                                         const std::vector<torch::Tensor>& grad_roots);

/// What a CPU offers bfloat16 autocast. oneDNN runs bfloat16 convolutions fast only with AVX-512
/// (BW, VL, DQ: emulated) or native bfloat16 instructions (AVX512_BF16, AMX); without them it
/// falls back to reference kernels, measured 27x slower than float32 on an AVX2-only AMD EPYC.
struct CpuBfloat16Support {
  bool onednn = false;          ///< LibTorch was built with oneDNN (MKLDNN)
  bool avx512_core = false;     ///< AVX512BW + AVX512VL + AVX512DQ: oneDNN's bfloat16 path
  bool native_bfloat16 = false; ///< AVX512_BF16 or AMX_BF16
};
/// This machine (/proc/cpuinfo's flags and LibTorch's oneDNN).
CpuBfloat16Support cpu_bfloat16_support();
/// From a flags line as /proc/cpuinfo prints it (tests, other machines).
CpuBfloat16Support cpu_bfloat16_support(const std::string& cpu_flags, bool onednn);
/// What to expect of CPU bfloat16 autocast when it is not what the figures assume: nothing on a
/// CPU with native bfloat16, otherwise a sentence to print before training.
std::optional<std::string> cpu_bfloat16_warning(const CpuBfloat16Support& support);

}  // namespace memcnn
