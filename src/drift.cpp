#include "memcnn/drift.h"

#include "memcnn/invertible_sequential.h"
#include "memcnn/rng.h"
#include "memcnn/wrapper.h"
#include "describe.h"
#include "recompute.h"

#include <torch/torch.h>

#include <algorithm>
#include <sstream>

namespace memcnn {
namespace {

using detail::describe;

struct Errors {
  double max_abs = 0, relative = 0;
};

Errors compare(const std::vector<torch::Tensor>& rebuilt, const std::vector<torch::Tensor>& expected) {
  TORCH_CHECK(rebuilt.size() == expected.size(), "measure_drift: the inverse returned ", rebuilt.size(),
              " tensors for ", expected.size(), " inputs");
  Errors errors;
  double scale = 0;
  for (std::size_t i = 0; i < rebuilt.size(); ++i) {
    if (!expected[i].defined() || !expected[i].is_floating_point()) continue;
    const double error = (rebuilt[i].to(torch::kFloat64) - expected[i].to(torch::kFloat64)).abs().max().item<double>();
    errors.max_abs = std::max(errors.max_abs, std::isnan(error) ? INFINITY : error);
    scale = std::max(scale, expected[i].abs().max().item<double>());
  }
  errors.relative = errors.max_abs / (scale > 0 ? scale : 1.0);
  return errors;
}

// The chain's members, or the module alone.
std::vector<InvertibleModule*> members_of(InvertibleModule& module) {
  if (auto* wrapper = dynamic_cast<InvertibleModuleWrapperImpl*>(&module)) return members_of(*wrapper->fn());
  std::vector<InvertibleModule*> members;
  if (auto* chain = dynamic_cast<InvertibleSequentialImpl*>(&module)) {
    for (std::size_t i = 0; i < chain->size(); ++i) members.push_back((*chain)[i].get());
  } else {
    members.push_back(&module);
  }
  return members;
}

}  // namespace

double DriftReport::max_abs_error() const { return members.empty() ? 0.0 : members.front().max_abs_error; }

double DriftReport::relative_error() const { return members.empty() ? 0.0 : members.front().relative_error; }

std::string DriftReport::to_string() const {
  std::ostringstream stream;
  for (const auto& m : members) {
    stream << m.index << " " << m.name << ": rebuilt from the output " << m.max_abs_error << " (relative "
           << m.relative_error << "), alone " << m.local_max_abs_error << " (relative " << m.local_relative_error
           << ")\n";
  }
  return stream.str();
}

DriftReport measure_drift(InvertibleModule& module, const std::vector<torch::Tensor>& inputs) {
  torch::NoGradGuard no_grad;
  // Leaves no trace, also when a member throws: every generator (the CPU's and each CUDA
  // device's, whichever the module draws from) and every buffer end as they began.
  RngStateGuard outer_rng(/*engaged=*/true, all_cuda_devices());
  const detail::BufferSnapshot buffers(module);
  detail::RestoreBuffersOnExit restore_buffers(buffers);

  const auto members = members_of(module);
  std::vector<std::vector<torch::Tensor>> member_inputs{inputs};
  for (auto* member : members) member_inputs.push_back(member->forward_multi(member_inputs.back()));

  DriftReport report;
  report.members.resize(members.size());
  auto rebuilt = member_inputs.back();
  for (std::size_t k = members.size(); k-- > 0;) {
    rebuilt = members[k]->inverse_multi(rebuilt);
    const auto cumulative = compare(rebuilt, member_inputs[k]);
    const auto local = compare(members[k]->inverse_multi(member_inputs[k + 1]), member_inputs[k]);
    report.members[k] = {k, describe(*members[k]), cumulative.max_abs, cumulative.relative, local.max_abs,
                         local.relative};
  }

  return report;
}

DriftReport measure_drift(InvertibleModule& module, const torch::Tensor& input) {
  return measure_drift(module, std::vector<torch::Tensor>{input});
}

}  // namespace memcnn
