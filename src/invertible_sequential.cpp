#include "memcnn/invertible_sequential.h"

#include "memcnn/autocast.h"
#include "memcnn/rng.h"
#include "memcnn/wrapper.h"
#include "describe.h"
#include "recompute.h"

#include <torch/torch.h>


namespace memcnn {
namespace {

using detail::describe;

std::vector<torch::Tensor> detached(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> result;
  for (const auto& t : tensors) result.push_back(t.defined() ? t.detach() : t);
  return result;
}

bool differentiable(const torch::Tensor& t) { return t.defined() && (t.is_floating_point() || t.is_complex()); }

// The general backward of one member: rebuild its input without a graph, then recompute its
// call from leaves with a graph and differentiate. Returns the rebuilt input and its gradient.
std::pair<std::vector<torch::Tensor>, std::vector<torch::Tensor>> rebuild_and_differentiate_member(
    InvertibleModule& member, const std::vector<torch::Tensor>& outputs,
    const std::vector<torch::Tensor>& grad_outputs, bool inverse_direction, const std::vector<torch::Tensor>& zero_masks,
    detail::ParameterGradients& parameter_grads) {
  // The recompute must draw what the rebuild drew, which drew what forward drew (dropout), on
  // every generator the member can draw from.
  rng_sync_point(&member);
  const auto rng = RngState::capture(cuda_devices_of(outputs));
  std::vector<torch::Tensor> rebuilt;
  {
    torch::NoGradGuard no_grad;
    rebuilt = inverse_direction ? member.forward_multi(outputs) : member.inverse_multi(outputs);
    detail::zero_where(rebuilt, zero_masks);
  }
  rng.restore();
  auto run = [&](const std::vector<torch::Tensor>& leaves) {
    return inverse_direction ? member.inverse_multi(leaves) : member.forward_multi(leaves);
  };
  const auto parameters = unique_parameters(member);
  auto grads = detail::recompute_and_differentiate(run, rebuilt, {}, parameters, grad_outputs, "InvertibleSequential");
  parameter_grads.add(parameters, grads.parameters);
  return {detached(rebuilt), std::move(grads.inputs)};
}

// What a member contributes to log_det: the member itself, or what a wrapper wraps.
LogDetModule* log_det_of(InvertibleModule& member) {
  if (auto* wrapper = dynamic_cast<InvertibleModuleWrapperImpl*>(&member)) return log_det_of(*wrapper->fn());
  return dynamic_cast<LogDetModule*>(&member);
}

}  // namespace

void InvertibleSequentialImpl::push_back(std::shared_ptr<InvertibleModule> module) {
  TORCH_CHECK(module != nullptr, "InvertibleSequential::push_back: the module is null");
  register_module(std::to_string(members_.size()), std::static_pointer_cast<torch::nn::Module>(module));
  members_.push_back(std::move(module));
}

const std::shared_ptr<InvertibleModule>& InvertibleSequentialImpl::operator[](std::size_t index) const {
  TORCH_CHECK(index < members_.size(), "InvertibleSequential: index ", index, " is out of range for a chain of ",
              members_.size(), " members");
  return members_[index];
}

torch::Tensor InvertibleSequentialImpl::forward(const torch::Tensor& x) {
  return detail::only_tensor(forward_multi({x}), "InvertibleSequential::forward");
}

torch::Tensor InvertibleSequentialImpl::inverse(const torch::Tensor& y) {
  return detail::only_tensor(inverse_multi({y}), "InvertibleSequential::inverse");
}

std::vector<torch::Tensor> InvertibleSequentialImpl::forward_multi(const std::vector<torch::Tensor>& inputs) {
  auto xs = inputs;
  for (auto& member : members_) {
    rng_sync_point(member.get());
    xs = member->forward_multi(xs);
  }
  return xs;
}

std::vector<torch::Tensor> InvertibleSequentialImpl::inverse_multi(const std::vector<torch::Tensor>& outputs) {
  auto ys = outputs;
  for (auto member = members_.rbegin(); member != members_.rend(); ++member) {
    rng_sync_point(member->get());
    ys = (*member)->inverse_multi(ys);
  }
  return ys;
}

bool InvertibleSequentialImpl::rebuilds_exactly() const {
  if (members_.empty()) return false;
  for (const auto& member : members_) {
    if (!member->rebuilds_exactly()) return false;
  }
  return true;
}

RebuildAndGradients InvertibleSequentialImpl::rebuild_and_differentiate(
    const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& grad_outputs,
    bool inverse_direction, const std::vector<torch::Tensor>& zero_masks) {
  torch::AutoGradMode grad_mode(true);
  auto state = detached(outputs);
  std::vector<torch::Tensor> grads;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    grads.push_back(grad_outputs[i].defined() || !outputs[i].defined() ? grad_outputs[i] : torch::zeros_like(outputs[i]));
  }
  detail::ParameterGradients parameter_grads;

  // Backwards from the chain's outputs: the last member of the call comes first. An inverse
  // call ran the members in reverse, so its last member is the first one.
  std::vector<InvertibleModule*> walk;
  for (auto& m : members_) walk.push_back(m.get());
  if (!inverse_direction) std::reverse(walk.begin(), walk.end());

  for (auto* member : walk) {
    // Only the member that rebuilds the chain's own input gets its zero masks.
    const auto& masks = member == walk.back() ? zero_masks : std::vector<torch::Tensor>{};
    if (auto* fused = dynamic_cast<FusedBackward*>(member)) {
      auto result = fused->rebuild_and_differentiate(state, grads, inverse_direction, masks);
      parameter_grads.add(unique_parameters(*member), result.parameter_grads);
      state = detached(result.inputs);
      grads = std::move(result.input_grads);
    } else {
      auto result = rebuild_and_differentiate_member(*member, state, grads, inverse_direction, masks, parameter_grads);
      state = std::move(result.first);
      grads = std::move(result.second);
    }
    for (std::size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined() && differentiable(state[i])) grads[i] = torch::zeros_like(state[i]);
    }
  }

  RebuildAndGradients result;
  result.inputs = std::move(state);
  result.input_grads = std::move(grads);
  result.parameter_grads = parameter_grads.in_order_of(unique_parameters(*this));
  return result;
}

torch::Tensor InvertibleSequentialImpl::log_det(const std::vector<torch::Tensor>& inputs) {
  TORCH_CHECK(!inputs.empty() && inputs.front().defined() && inputs.front().dim() >= 1,
              "InvertibleSequential::log_det needs at least one defined input with a batch dimension");
  auto total = torch::zeros({inputs.front().size(0)}, inputs.front().options());
  auto xs = inputs;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    auto* member = log_det_of(*members_[i]);
    TORCH_CHECK(member != nullptr, "InvertibleSequential::log_det: member ", i, " (",
                describe(*members_[i]), ") has no log-determinant; every member must implement "
                "memcnn::LogDetModule (couplings and the layers of layers.h do)");
    total = total + member->log_det(xs);
    xs = members_[i]->forward_multi(xs);
  }
  return total;
}

std::shared_ptr<torch::nn::Module> InvertibleSequentialImpl::clone(const torch::optional<torch::Device>& device) const {
  auto copy = std::make_shared<InvertibleSequentialImpl>();
  for (const auto& member : members_) {
    auto cloned = std::dynamic_pointer_cast<InvertibleModule>(member->clone(device));
    TORCH_CHECK(cloned != nullptr, "InvertibleSequential::clone: member ", copy->size(), " (", describe(*member),
                ") did not clone into an invertible module");
    copy->push_back(std::move(cloned));
  }
  detail::set_own_training_mode(*copy, is_training());
  return copy;
}

void InvertibleSequentialImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::InvertibleSequential(size=" << members_.size() << ")";
}

}  // namespace memcnn
