#include "memcnn/wrapper.h"

#include "block_observer.h"
#include "invertible_function.h"

#include <torch/torch.h>

namespace memcnn {

InvertibleModuleWrapperImpl::InvertibleModuleWrapperImpl(std::shared_ptr<InvertibleModule> fn,
                                                         InvertibleModuleWrapperOptions options_)
    : options(options_), fn_(std::move(fn)) {
  reset();
}

void InvertibleModuleWrapperImpl::reset() {
  TORCH_CHECK_VALUE(fn_ != nullptr, "InvertibleModuleWrapper: the wrapped module is null");
  TORCH_CHECK_VALUE(options.num_bwd_passes() >= 1, "InvertibleModuleWrapper: num_bwd_passes must be at least 1, got ",
                    options.num_bwd_passes());
  TORCH_CHECK_VALUE(options.drift_tolerance() >= 0, "InvertibleModuleWrapper: drift_tolerance must be 0 (off) or "
                    "positive, got ", options.drift_tolerance());
  detail::register_or_replace(*this, "fn", std::static_pointer_cast<torch::nn::Module>(fn_));
}

torch::Tensor InvertibleModuleWrapperImpl::forward(const torch::Tensor& x) {
  return detail::only_tensor(run({x}, false), "InvertibleModuleWrapper::forward");
}

torch::Tensor InvertibleModuleWrapperImpl::inverse(const torch::Tensor& y) {
  return detail::only_tensor(run({y}, true), "InvertibleModuleWrapper::inverse");
}

std::vector<torch::Tensor> InvertibleModuleWrapperImpl::forward_multi(const std::vector<torch::Tensor>& inputs) {
  return run(inputs, false);
}

std::vector<torch::Tensor> InvertibleModuleWrapperImpl::inverse_multi(const std::vector<torch::Tensor>& outputs) {
  return run(outputs, true);
}

bool InvertibleModuleWrapperImpl::saves_memory(const std::vector<torch::Tensor>& inputs) const {
  if (options.disable() || !is_training() || !torch::GradMode::is_enabled()) return false;
  // Without anything to differentiate, backward never runs and could not rebuild the inputs.
  for (const auto& x : inputs) {
    if (x.defined() && x.requires_grad()) return true;
  }
  for (const auto& p : fn_->parameters()) {
    if (p.requires_grad()) return true;
  }
  return false;
}

std::vector<torch::Tensor> InvertibleModuleWrapperImpl::run(const std::vector<torch::Tensor>& inputs,
                                                            bool inverse_direction) {
  return detail::observed_forward(*this, inputs, [&] { return run_unobserved(inputs, inverse_direction); });
}

std::vector<torch::Tensor> InvertibleModuleWrapperImpl::run_unobserved(const std::vector<torch::Tensor>& inputs,
                                                                       bool inverse_direction) {
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    TORCH_CHECK(!is_freed(inputs[i]), "InvertibleModuleWrapper: input ", i,
                " has no storage: it was freed by another memory-saving wrapper, so it cannot be "
                "used again in forward. Construct the wrapper that consumed it first with "
                "keep_input(true) (or keep_input_inverse(true) for its inverse)");
  }
  if (!saves_memory(inputs)) {
    return inverse_direction ? fn_->inverse_multi(inputs) : fn_->forward_multi(inputs);
  }
  detail::SavingOptions saving;
  saving.inverse_direction = inverse_direction;
  saving.keep_input = inverse_direction ? options.keep_input_inverse() : options.keep_input();
  saving.num_bwd_passes = options.num_bwd_passes();
  saving.preserve_rng_state = options.preserve_rng_state();
  saving.fused_backward = options.fused_backward();
  saving.drift_tolerance = options.drift_tolerance();
  return detail::apply_memory_saving(fn_, inputs, saving);
}

std::shared_ptr<torch::nn::Module> InvertibleModuleWrapperImpl::clone(
    const torch::optional<torch::Device>& device) const {
  auto copy = std::dynamic_pointer_cast<InvertibleModule>(fn_->clone(device));
  TORCH_CHECK(copy != nullptr, "InvertibleModuleWrapper::clone: the wrapped module's clone() did not "
              "return an invertible module");
  auto wrapper = std::make_shared<InvertibleModuleWrapperImpl>(std::move(copy), options);
  detail::set_own_training_mode(*wrapper, is_training());
  return wrapper;
}

void InvertibleModuleWrapperImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::InvertibleModuleWrapper(keep_input=" << options.keep_input()
         << ", keep_input_inverse=" << options.keep_input_inverse()
         << ", num_bwd_passes=" << options.num_bwd_passes() << ", disable=" << options.disable()
         << ", preserve_rng_state=" << options.preserve_rng_state()
         << ", fused_backward=" << options.fused_backward();
  if (options.drift_tolerance() > 0) stream << ", drift_tolerance=" << options.drift_tolerance();
  stream << ")";
}

}  // namespace memcnn
