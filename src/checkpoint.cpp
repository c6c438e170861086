// Checkpointing: an autograd function whose forward runs without a graph and keeps the inputs,
// and whose backward runs the function again with a graph and differentiates it.

#include "memcnn/checkpoint.h"

#include "memcnn/autocast.h"
#include "memcnn/invertible_module.h"
#include "memcnn/rng.h"

#include "block_observer.h"
#include "recompute.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <optional>
#include <unordered_set>

namespace memcnn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What one checkpointed call keeps between forward and backward (besides its inputs, which
// the context saves so that an in-place change of them is reported instead of differentiated).
struct CheckpointCall : torch::CustomClassHolder {
  CheckpointFunction fn;
  CheckpointOptions options;
  torch::nn::Module* stateful = nullptr;
  int64_t passes_left = 0;
  std::vector<bool> input_requires_grad;
  std::vector<torch::Tensor> parameters;  // as passed to apply(), to differentiate against
  std::vector<c10::Device> cuda_devices;
  std::unique_ptr<RngState> rng_at_forward;
  compat::AutocastState autocast;  // forward's; the recompute runs under it
  detail::ParameterVersions parameter_versions;  // at the end of forward

  void release() {
    fn = nullptr;
    parameters.clear();
    rng_at_forward.reset();
    parameter_versions = detail::ParameterVersions();
  }
};

class CheckpointNode : public torch::autograd::Function<CheckpointNode> {
 public:
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<CheckpointCall> call,
                               torch::TensorList inputs, torch::TensorList parameters) {
    call->parameters = parameters.vec();
    call->autocast = compat::AutocastState::current();
    for (const auto& x : inputs) call->input_requires_grad.push_back(x.defined() && x.requires_grad());
    if (call->options.preserve_rng_state()) {
      call->cuda_devices = cuda_devices_of(inputs.vec());
      call->rng_at_forward = std::make_unique<RngState>(RngState::capture(call->cuda_devices));
    }
    std::vector<torch::Tensor> outputs;
    {
      // A throwing function leaves the buffers as they were before the call.
      std::optional<detail::BufferSnapshot> before;
      if (call->stateful != nullptr) before.emplace(*call->stateful);
      std::optional<detail::RestoreBuffersOnExit> restore_on_failure;
      if (before) restore_on_failure.emplace(*before);
      AutocastCacheOff no_cache;  // this run has no graph
      try {
        outputs = call->fn(inputs.vec());
      } catch (...) {
        if (call->rng_at_forward) call->rng_at_forward->restore();
        throw;
      }
      if (restore_on_failure) restore_on_failure->dismiss();
    }
    call->parameter_versions = detail::ParameterVersions(call->parameters);
    ctx->save_for_backward(inputs.vec());
    ctx->saved_data["call"] = c10::IValue::make_capsule(call);
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto call = c10::static_intrusive_pointer_cast<CheckpointCall>(ctx->saved_data["call"].toCapsule());
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "memcnn::checkpoint does not support double backward (create_graph=true); call the "
                "function without checkpoint where you need to differentiate twice");
    TORCH_CHECK(call->passes_left > 0,
                "memcnn::checkpoint: backward ran through this checkpoint more often than "
                "num_bwd_passes=", call->options.num_bwd_passes(), " allows. Pass CheckpointOptions()"
                ".num_bwd_passes(", call->options.num_bwd_passes() + 1, ") (or more) to backpropagate "
                "through the same graph several times");
    call->parameter_versions.check_unchanged(
        call->stateful, [] { return std::string("the checkpointed function"); }, "memcnn::checkpoint");
    variable_list grads;
    {
      // The recompute updates the buffers again; afterwards they are as this backward found them,
      // so the updates of later calls (the same module used again in this forward) stay. (Not
      // forward's own snapshot: restoring that rolled those back.) Put back only after
      // differentiating, which reads what the recompute saw; also when the recompute throws.
      std::optional<detail::BufferSnapshot> found;
      std::optional<detail::RestoreBuffersOnExit> restore_buffers;
      if (call->stateful != nullptr) {
        found.emplace(*call->stateful);
        restore_buffers.emplace(*found);
      }
      grads = recompute(*call, ctx->get_saved_variables(), grad_outputs);
    }
    if (--call->passes_left == 0) call->release();
    grads.insert(grads.begin(), torch::Tensor());  // for the CheckpointCall argument
    return grads;
  }

 private:
  // Gradients for every input, then every parameter (undefined where none flows).
  static variable_list recompute(CheckpointCall& call, const variable_list& saved, const variable_list& grad_outputs) {
    // Forward's random state for the recompute; the surrounding one back afterwards, also when
    // the recompute throws.
    RngStateGuard surrounding_rng(call.rng_at_forward != nullptr, call.cuda_devices);
    if (call.rng_at_forward) call.rng_at_forward->restore();
    ForwardAutocastScope autocast(call.autocast);
    auto grads = detail::recompute_and_differentiate(call.fn, saved, call.input_requires_grad, call.parameters,
                                                     grad_outputs, "memcnn::checkpoint");
    variable_list result = std::move(grads.inputs);
    result.insert(result.end(), grads.parameters.begin(), grads.parameters.end());
    return result;
  }
};

// Parameters of `stateful` that fn uses but that are not listed would silently get no gradient.
void check_parameters_listed(const torch::nn::Module& stateful, const std::vector<torch::Tensor>& parameters) {
  std::unordered_set<const void*> listed;
  for (const auto& p : parameters) {
    if (p.defined()) listed.insert(p.unsafeGetTensorImpl());
  }
  for (const auto& named : stateful.named_parameters()) {
    TORCH_CHECK(!named.value().requires_grad() || listed.count(named.value().unsafeGetTensorImpl()) > 0,
                "memcnn::checkpoint: parameter '", named.key(), "' of the stateful module is not in "
                "`parameters`, so it would get no gradient; pass module->parameters()");
  }
}

bool anything_requires_grad(const std::vector<torch::Tensor>& inputs, const std::vector<torch::Tensor>& parameters) {
  for (const auto* list : {&inputs, &parameters}) {
    for (const auto& t : *list) {
      if (t.defined() && t.requires_grad()) return true;
    }
  }
  return false;
}

}  // namespace

std::vector<torch::Tensor> checkpoint(const CheckpointFunction& fn, const std::vector<torch::Tensor>& inputs,
                                      const std::vector<torch::Tensor>& parameters, torch::nn::Module* stateful,
                                      CheckpointOptions options) {
  TORCH_CHECK_VALUE(fn, "memcnn::checkpoint: the function is empty");
  TORCH_CHECK_VALUE(options.num_bwd_passes() >= 1, "memcnn::checkpoint: num_bwd_passes must be at least 1, got ",
              options.num_bwd_passes());
  // Backward would never run, so there is nothing to save memory for.
  if (options.disable() || !torch::GradMode::is_enabled() || !anything_requires_grad(inputs, parameters)) {
    return fn(inputs);
  }
  if (stateful != nullptr) check_parameters_listed(*stateful, parameters);
  auto call = c10::make_intrusive<CheckpointCall>();
  call->fn = fn;
  call->options = options;
  call->stateful = stateful;
  call->passes_left = options.num_bwd_passes();
  return CheckpointNode::apply(call, torch::TensorList(inputs), torch::TensorList(parameters));
}

torch::Tensor checkpoint(const std::function<torch::Tensor(const torch::Tensor&)>& fn, const torch::Tensor& input,
                         const std::vector<torch::Tensor>& parameters, torch::nn::Module* stateful,
                         CheckpointOptions options) {
  TORCH_CHECK(fn, "memcnn::checkpoint: the function is empty");
  auto as_list = [fn](const std::vector<torch::Tensor>& xs) { return std::vector<torch::Tensor>{fn(xs.front())}; };
  return checkpoint(as_list, std::vector<torch::Tensor>{input}, parameters, stateful, options).front();
}

TensorSequentialImpl::TensorSequentialImpl(const torch::nn::Sequential& sequential) {
  TORCH_CHECK(!sequential.is_empty(), "TensorSequential: the Sequential is a null holder (Sequential(nullptr))");
  const auto names = sequential->named_children();
  std::size_t i = 0;
  for (const auto& module : *sequential) push_back(names[i++].key(), module);
}

std::shared_ptr<torch::nn::Module> TensorSequentialImpl::clone(const torch::optional<torch::Device>& device) const {
  auto copy = std::make_shared<TensorSequentialImpl>();
  const auto names = named_children();
  std::size_t i = 0;
  for (const auto& module : *this) copy->push_back(names[i++].key(), module.clone(device));
  detail::set_own_training_mode(*copy, is_training());
  return copy;
}

torch::nn::AnyModule CheckpointedImpl::from_sequential(const torch::nn::Sequential& sequential) {
  TORCH_CHECK(!sequential.is_empty(), "Checkpointed: the Sequential is a null holder (Sequential(nullptr))");
  TORCH_CHECK(!sequential->is_empty(), "Checkpointed: the Sequential has no modules");
  return torch::nn::AnyModule(TensorSequential(sequential));
}

CheckpointedImpl::CheckpointedImpl(const torch::nn::Sequential& sequential, CheckpointOptions options_)
    : CheckpointedImpl(from_sequential(sequential), options_, 0) {}

CheckpointedImpl::CheckpointedImpl(torch::nn::AnyModule module, CheckpointOptions options_, int)
    : options(options_), module_(std::move(module)) {
  reset();
}

void CheckpointedImpl::reset() {
  TORCH_CHECK_VALUE(!module_.is_empty(), "Checkpointed: the module is empty");
  TORCH_CHECK_VALUE(options.num_bwd_passes() >= 1, "Checkpointed: num_bwd_passes must be at least 1, got ",
                    options.num_bwd_passes());
  detail::register_or_replace(*this, "module", module_.ptr());
}

torch::Tensor CheckpointedImpl::forward(const torch::Tensor& x) {
  if (!is_training() || !torch::GradMode::is_enabled()) return module_.forward(x);
  return detail::observed_forward(*this, {x}, [&]() -> std::vector<torch::Tensor> {
    if (options.disable()) return {module_.forward(x)};
    // The copy shares the module, and keeps it alive until backward.
    auto fn = [module = module_](const torch::Tensor& input) mutable { return module.forward(input); };
    auto* inner = module_.ptr().get();
    return {checkpoint(fn, x, inner->parameters(), inner, options)};
  }).front();
}

std::shared_ptr<torch::nn::Module> CheckpointedImpl::clone(const torch::optional<torch::Device>& device) const {
  auto copy = std::make_shared<CheckpointedImpl>(module_.clone(device), options);
  detail::set_own_training_mode(*copy, is_training());
  return copy;
}

void CheckpointedImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::Checkpointed(";
  if (options.disable()) stream << "disable=1, ";
  stream << "preserve_rng_state=" << options.preserve_rng_state()
         << ", num_bwd_passes=" << options.num_bwd_passes() << ")";
}

}  // namespace memcnn
