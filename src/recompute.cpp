#include "recompute.h"

#include "memcnn/autocast.h"
#include "memcnn/log.h"

#include <torch/torch.h>

namespace memcnn {
namespace detail {

std::vector<torch::Tensor> as_leaves(const std::vector<torch::Tensor>& values, const std::vector<bool>& requires_grad) {
  std::vector<torch::Tensor> leaves;
  leaves.reserve(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto& v = values[i];
    if (!v.defined()) {
      leaves.push_back(v);
      continue;
    }
    const bool wanted = requires_grad.empty() ? (v.is_floating_point() || v.is_complex()) : requires_grad[i];
    leaves.push_back(v.detach().requires_grad_(wanted));
  }
  return leaves;
}

CallGradients differentiate_call(const std::vector<torch::Tensor>& outputs,
                                 const std::vector<torch::Tensor>& grad_outputs,
                                 const std::vector<torch::Tensor>& leaves,
                                 const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> roots, root_grads, wrt;
  for (std::size_t i = 0; i < outputs.size() && i < grad_outputs.size(); ++i) {
    if (grad_outputs[i].defined() && outputs[i].defined() && outputs[i].requires_grad()) {
      roots.push_back(outputs[i]);
      root_grads.push_back(grad_outputs[i]);
    }
  }
  // Per leaf, then per parameter: its index in wrt, or -1 when it takes no gradient.
  std::vector<int64_t> slot;
  auto add = [&](const torch::Tensor& t) {
    const bool wanted = t.defined() && t.requires_grad();
    slot.push_back(wanted ? static_cast<int64_t>(wrt.size()) : -1);
    if (wanted) wrt.push_back(t);
  };
  for (const auto& leaf : leaves) add(leaf);
  for (const auto& p : parameters) add(p);

  std::vector<torch::Tensor> grads;
  if (!roots.empty() && !wrt.empty()) grads = differentiate(roots, wrt, root_grads);
  auto grad_at = [&](std::size_t k) { return slot[k] >= 0 && !grads.empty() ? grads[slot[k]] : torch::Tensor(); };
  CallGradients result;
  for (std::size_t k = 0; k < leaves.size(); ++k) result.inputs.push_back(grad_at(k));
  for (std::size_t k = 0; k < parameters.size(); ++k) result.parameters.push_back(grad_at(leaves.size() + k));
  return result;
}

CallGradients recompute_and_differentiate(
    const std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>& run,
    const std::vector<torch::Tensor>& inputs, const std::vector<bool>& input_requires_grad,
    const std::vector<torch::Tensor>& parameters, const std::vector<torch::Tensor>& grad_outputs, const char* who) {
  torch::AutoGradMode grad_mode(true);  // the engine runs backward with grad mode off
  const auto leaves = as_leaves(inputs, input_requires_grad);
  const auto outputs = run(leaves);
  TORCH_CHECK(outputs.size() == grad_outputs.size(), who, ": the recomputed call returned ", outputs.size(),
              " tensors, but forward returned ", grad_outputs.size(), "; the call must be deterministic in its structure");
  return differentiate_call(outputs, grad_outputs, leaves, parameters);
}

void ParameterGradients::add(const torch::Tensor& parameter, const torch::Tensor& grad) {
  if (!grad.defined()) return;
  auto& slot = grads_[parameter.unsafeGetTensorImpl()];
  slot = slot.defined() ? slot + grad : grad;
}

void ParameterGradients::add(const std::vector<torch::Tensor>& parameters, const std::vector<torch::Tensor>& grads) {
  TORCH_CHECK(parameters.size() == grads.size(), "memcnn internal: ", grads.size(), " gradients for ",
              parameters.size(), " parameters");
  for (std::size_t i = 0; i < parameters.size(); ++i) add(parameters[i], grads[i]);
}

std::vector<torch::Tensor> ParameterGradients::in_order_of(const std::vector<torch::Tensor>& parameters) const {
  std::vector<torch::Tensor> result;
  result.reserve(parameters.size());
  for (const auto& p : parameters) {
    const auto found = grads_.find(p.unsafeGetTensorImpl());
    result.push_back(found == grads_.end() ? torch::Tensor() : found->second);
  }
  return result;
}

BufferSnapshot::BufferSnapshot(const torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (const auto& buffer : module.buffers()) {
    if (buffer.defined()) saved_.emplace_back(buffer, buffer.clone());
  }
}

void BufferSnapshot::restore() const {
  torch::NoGradGuard no_grad;
  // variable_data() shares the storage under a version counter of its own.
  for (const auto& entry : saved_) entry.first.variable_data().copy_(entry.second);
}

RestoreBuffersOnExit::~RestoreBuffersOnExit() {
  if (snapshot_ == nullptr) return;
  try {
    snapshot_->restore();
  } catch (const std::exception& error) {
    // Unwinding already: a second exception would terminate the program.
    log(LogLevel::Warning, std::string("memcnn: could not restore buffers after a failed call: ") + error.what());
  }
}

ParameterVersions::ParameterVersions(std::vector<torch::Tensor> parameters) : parameters_(std::move(parameters)) {
  versions_.reserve(parameters_.size());
  for (const auto& p : parameters_) versions_.push_back(p.defined() ? p._version() : 0);
}

namespace {

std::string name_of(const torch::Tensor& parameter, std::size_t index, const torch::nn::Module* owner) {
  if (owner != nullptr) {
    for (const auto& named : owner->named_parameters()) {
      if (named.value().unsafeGetTensorImpl() == parameter.unsafeGetTensorImpl()) return "'" + named.key() + "'";
    }
  }
  return "number " + std::to_string(index) + " of the list passed in";
}

}  // namespace

void ParameterVersions::check_unchanged(const torch::nn::Module* owner, const std::function<std::string()>& block,
                                        const char* who) const {
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const auto& p = parameters_[i];
    if (!p.defined() || p._version() == versions_[i]) continue;
    TORCH_CHECK(false, "one of the variables needed for gradient computation has been modified by an inplace "
                "operation: parameter ", name_of(p, i, owner), " (shape ", p.sizes(), ", ", p.scalar_type(), ") of ",
                block(), " is at version ", p._version(), "; expected version ", versions_[i], " instead. ", who,
                " runs it again in backward with its parameters as they are then, so its gradients would be "
                "computed with the changed values. Change parameters only after every backward pass through it "
                "has run (optimizer.step() after backward; clamp or average weights after the step), or run "
                "forward again after changing them");
  }
}

}  // namespace detail
}  // namespace memcnn
