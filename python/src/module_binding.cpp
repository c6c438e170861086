#include "module_binding.h"

#include <memcnn/models/vit.h>

#include <torch/torch.h>

namespace memcnn {
namespace python {
namespace {

// LibTorch registers a parameter once and has no call to replace it; its dictionary is protected.
struct RegisteredParameters : torch::nn::Module {
  static torch::OrderedDict<std::string, torch::Tensor>& of(torch::nn::Module& m) {
    return m.*(&RegisteredParameters::parameters_);
  }
};

template <typename Layer>
bool weight_and_bias(torch::nn::Module& m, std::vector<std::pair<std::string, torch::Tensor*>>& members) {
  auto* layer = dynamic_cast<Layer*>(&m);
  if (layer == nullptr) return false;
  members = {{"weight", &layer->weight}, {"bias", &layer->bias}};
  return true;
}

// The members through which each module the bound networks are made of reads its registered
// tensors.
std::vector<std::pair<std::string, torch::Tensor*>> tensor_members(torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor*>> members;
  if (weight_and_bias<torch::nn::LinearImpl>(m, members) || weight_and_bias<torch::nn::LayerNormImpl>(m, members) ||
      weight_and_bias<torch::nn::Conv2dImpl>(m, members) || weight_and_bias<torch::nn::Conv3dImpl>(m, members) ||
      weight_and_bias<torch::nn::ConvTranspose2dImpl>(m, members) ||
      weight_and_bias<torch::nn::ConvTranspose3dImpl>(m, members)) {
    return members;
  }
  if (auto* e = dynamic_cast<memcnn::models::PatchEmbeddingImpl*>(&m)) {
    return {{"class_token", &e->class_token}, {"position_embedding", &e->position_embedding}};
  }
  return {};
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> named_parameter_list(const torch::nn::Module& network) {
  std::vector<std::pair<std::string, torch::Tensor>> parameters;
  for (const auto& p : network.named_parameters()) parameters.emplace_back(p.key(), p.value());
  return parameters;
}

void bind_module_parameters(torch::nn::Module& network, const std::map<std::string, torch::Tensor>& tensors,
                            bool training, const char* what) {
  for (const auto& item : network.named_modules("", /*include_self=*/true)) {
    auto& module = *item.value();
    auto& registered = RegisteredParameters::of(module);
    const auto members = tensor_members(module);
    for (auto& parameter : registered) {
      // A convolution without bias registers an undefined one; named_parameters() leaves it out.
      if (!parameter.value().defined()) continue;
      const std::string name = item.key().empty() ? parameter.key() : item.key() + "." + parameter.key();
      const auto found = tensors.find(name);
      TORCH_CHECK(found != tensors.end(), "the ", what, "'s parameter '", name, "' is missing from the module's ",
                  "parameters (its state_dict must keep the names the model was built with)");
      if (parameter.value().unsafeGetTensorImpl() == found->second.unsafeGetTensorImpl()) continue;
      bool held = false;
      for (const auto& [member_name, member] : members) {
        if (member_name == parameter.key()) {
          *member = found->second;
          held = true;
        }
      }
      TORCH_CHECK(held, "memcnn: no member known to hold the parameter '", name, "' of ", module.name());
      parameter.value() = found->second;
    }
  }
  network.train(training);
}

}  // namespace python
}  // namespace memcnn
