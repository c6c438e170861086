#pragma once
/// @file
/// Reconstruction drift: how far inverse(forward(x)) lands from x. Deep chains of invertible
/// blocks can amplify rounding errors until inputs rebuilt in backward no longer match what
/// forward saw (and gradients silently degrade); memcnn::measure_drift measures it, per member of
/// a chain.

#include "memcnn/invertible_module.h"

#include <cstddef>
#include <string>
#include <vector>

namespace memcnn {

/// The drift at one member of a chain.
struct MemberDrift {
  std::size_t index = 0;  ///< position in the chain (0 for a single module)
  std::string name;       ///< the member's pretty_print
  /// The member's input rebuilt from the chain's output, through the inverses of this member
  /// and of all after it: the drift backward would see at this depth (max |error|).
  double max_abs_error = 0;
  double relative_error = 0;  ///< max |error| / max |input|, the cumulative drift
  /// The member alone: its inverse applied to its own (exact) output (max |error|).
  double local_max_abs_error = 0;
  double local_relative_error = 0;  ///< max |error| / max |input| of the member alone
};

/// What measure_drift found, member by member.
struct DriftReport {
  std::vector<MemberDrift> members;  ///< in chain order
  /// At the chain's input (the cumulative figure of member 0); 0 without members.
  double max_abs_error() const;
  /// The relative error at the chain's input (of member 0); 0 without members.
  double relative_error() const;
  std::string to_string() const;  ///< one line per member
};

/// Runs forward, then the inverses back to the input, without a graph, and compares. An
/// InvertibleSequential (also inside an InvertibleModuleWrapper) is measured per member; any
/// other module as one. Uses the module's mode (training: batch statistics) and leaves no trace:
/// buffers and the default generators of the CPU and of every CUDA device are restored
/// afterwards, also when the module throws. The generators are process-wide: another thread
/// drawing random numbers meanwhile sees them replaced (not thread-safe).
DriftReport measure_drift(InvertibleModule& module, const std::vector<torch::Tensor>& inputs);
/// measure_drift of a single-tensor module.
DriftReport measure_drift(InvertibleModule& module, const torch::Tensor& input);

/// measure_drift of the module a holder holds (through as_invertible()).
template <typename ModuleImpl>
DriftReport measure_drift(const torch::nn::ModuleHolder<ModuleImpl>& module, const torch::Tensor& input) {
  return measure_drift(*as_invertible(module.ptr()), input);
}

}  // namespace memcnn
