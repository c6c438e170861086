#pragma once
// Reconstruction drift: how far inverse(forward(x)) lands from x. Deep chains of invertible
// blocks can amplify rounding errors until inputs rebuilt in backward no longer match what
// forward saw (and gradients silently degrade); this measures it, per member of a chain.

#include "memcnn/invertible_module.h"

#include <cstddef>
#include <string>
#include <vector>

namespace memcnn {

struct MemberDrift {
  std::size_t index = 0;  // position in the chain (0 for a single module)
  std::string name;       // the member's pretty_print
  // The member's input rebuilt from the chain's output, through the inverses of this member
  // and of all after it: the drift backward would see at this depth.
  double max_abs_error = 0;
  double relative_error = 0;  // max |error| / max |input|
  // The member alone: its inverse applied to its own (exact) output.
  double local_max_abs_error = 0;
  double local_relative_error = 0;
};

struct DriftReport {
  std::vector<MemberDrift> members;  // in chain order
  // At the chain's input (the cumulative figure of member 0).
  double max_abs_error() const;
  double relative_error() const;
  std::string to_string() const;  // one line per member
};

// Runs forward, then the inverses back to the input, without a graph, and compares. An
// InvertibleSequential (also inside an InvertibleModuleWrapper) is measured per member; any
// other module as one. Uses the module's mode (training: batch statistics) and leaves no trace:
// buffers and the default generators of the CPU and of every CUDA device are restored
// afterwards, also when the module throws. The generators are process-wide: another thread
// drawing random numbers meanwhile sees them replaced (not thread-safe).
DriftReport measure_drift(InvertibleModule& module, const std::vector<torch::Tensor>& inputs);
DriftReport measure_drift(InvertibleModule& module, const torch::Tensor& input);

template <typename ModuleImpl>
DriftReport measure_drift(const torch::nn::ModuleHolder<ModuleImpl>& module, const torch::Tensor& input) {
  return measure_drift(*as_invertible(module.ptr()), input);
}

}  // namespace memcnn
