#include "memcnn/train/python_weights.h"

#include <torch/torch.h>

#include <sstream>
#include <type_traits>
#include <unordered_map>

namespace memcnn {
namespace train {
namespace {

c10::IValue entry(const c10::impl::GenericDict& dict, const c10::IValue& key, const std::string& what,
                  const std::string& source) {
  const auto found = dict.find(key);
  TORCH_CHECK(found != dict.end(), source, " is not an optimizer's state_dict: it has no ", what);
  return found->value();
}

torch::Tensor tensor_entry(const c10::impl::GenericDict& state, const char* name, const torch::Tensor& parameter,
                           int64_t index, const std::string& source) {
  const c10::IValue value = entry(state, std::string(name), std::string("'") + name + "' for parameter " +
                                                                 std::to_string(index), source);
  TORCH_CHECK(value.isTensor(), source, ": '", name, "' of parameter ", index, " is not a tensor");
  const torch::Tensor tensor = value.toTensor();
  TORCH_CHECK(tensor.sizes() == parameter.sizes(), source, ": '", name, "' of parameter ", index, " has shape ",
              tensor.sizes(), ", the parameter ", parameter.sizes(),
              " (the weights and the optimizer state come from different models?)");
  return tensor.to(parameter.options()).clone();
}

// The step count of Adam's state: a tensor in PyTorch >= 1.12, a number before.
int64_t step_entry(const c10::impl::GenericDict& state, int64_t index, const std::string& source) {
  const c10::IValue value = entry(state, std::string("step"), "'step' for parameter " + std::to_string(index), source);
  if (value.isInt()) return value.toInt();
  if (value.isDouble()) return static_cast<int64_t>(value.toDouble());
  TORCH_CHECK(value.isTensor() && value.toTensor().numel() == 1, source, ": 'step' of parameter ", index,
              " is neither a number nor a one-element tensor");
  return static_cast<int64_t>(value.toTensor().item<double>());
}

// The key of a parameter's entry in Optimizer::state(): the TensorImpl's address printed as text in
// LibTorch 1.13 (c10::guts::to_string), the address itself in later versions; which one follows
// from the map's key type, so the code is the same for both.
template <typename Key>
Key optimizer_state_key(const torch::Tensor& parameter) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << static_cast<const void*>(parameter.unsafeGetTensorImpl());
    return text.str();
  } else {
    return parameter.unsafeGetTensorImpl();
  }
}

std::string describe_groups(c10::ArrayRef<c10::IValue> groups) {
  std::ostringstream text;
  for (size_t g = 0; g < groups.size(); ++g) {
    text << (g ? "; " : "") << "group " << g << ":";
    for (const auto& item : groups[g].toGenericDict()) {
      if (item.key().isString() && item.key().toStringRef() == "params") continue;
      text << " " << (item.key().isString() ? item.key().toStringRef() : "?") << "=" << item.value();
    }
  }
  return text.str();
}

}  // namespace

std::vector<torch::Tensor> python_parameter_order(const torch::nn::Module& module, const StateDict& weights,
                                                  const KeyMap& key_map, const std::string& source) {
  std::unordered_map<std::string, torch::Tensor> by_file_name;
  for (const auto& item : module.named_parameters()) {
    const std::string name = key_map ? key_map(item.key()) : item.key();
    if (!name.empty()) by_file_name.emplace(name, item.value());
  }
  std::vector<torch::Tensor> ordered;
  for (const auto& item : weights) {
    const auto found = by_file_name.find(item.key());
    if (found != by_file_name.end()) ordered.push_back(found->second);
  }
  TORCH_CHECK(ordered.size() == by_file_name.size(), source, " holds ", ordered.size(), " of the model's ",
              by_file_name.size(), " parameters; the optimizer state needs the weights it was saved with");
  return ordered;
}

std::string load_python_optimizer_state(torch::optim::Optimizer& optimizer, const c10::IValue& state,
                                        const std::vector<torch::Tensor>& parameters, const std::string& source) {
  TORCH_CHECK(state.isGenericDict(), source, " is not an optimizer's state_dict (it holds a ", state.tagKind(), ")");
  const auto dict = state.toGenericDict();
  const c10::IValue per_parameter = entry(dict, std::string("state"), "'state'", source);
  const c10::IValue groups = entry(dict, std::string("param_groups"), "'param_groups'", source);
  TORCH_CHECK(per_parameter.isGenericDict() && groups.isList(), source,
              " is not an optimizer's state_dict ('state' must be a dict, 'param_groups' a list)");
  int64_t numbered = 0;
  for (const c10::IValue& group : groups.toListRef()) {
    TORCH_CHECK(group.isGenericDict(), source, ": a parameter group is not a dict");
    const c10::IValue params = entry(group.toGenericDict(), std::string("params"), "'params' in a group", source);
    TORCH_CHECK(params.isList(), source, ": a group's 'params' is not a list");
    numbered += static_cast<int64_t>(params.toListRef().size());
  }
  TORCH_CHECK(numbered == static_cast<int64_t>(parameters.size()), source, " is the state of an optimizer over ",
              numbered, " parameters; this model has ", parameters.size());

  const bool sgd = dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr;
  const bool adam = dynamic_cast<torch::optim::Adam*>(&optimizer) != nullptr ||
                    dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
  TORCH_CHECK(sgd || adam, "loading a Python optimizer state: only SGD and Adam/AdamW states are supported");
  auto& states = optimizer.state();
  using Key = typename std::decay_t<decltype(states)>::key_type;
  std::vector<std::pair<Key, std::unique_ptr<torch::optim::OptimizerParamState>>> loaded;
  for (const auto& item : per_parameter.toGenericDict()) {
    TORCH_CHECK(item.key().isInt() && item.value().isGenericDict(), source,
                ": 'state' must map parameter numbers to dicts");
    const int64_t index = item.key().toInt();
    TORCH_CHECK(index >= 0 && index < numbered, source, ": 'state' names parameter ", index, " of ", numbered);
    const torch::Tensor& parameter = parameters[static_cast<size_t>(index)];
    const auto fields = item.value().toGenericDict();
    const Key key = optimizer_state_key<Key>(parameter);
    if (sgd) {
      const bool has_momentum = fields.contains(std::string("momentum_buffer"));
      TORCH_CHECK(has_momentum || fields.size() == 0, source,
                  " holds the state of another optimizer than SGD (the recipe's)");
      const c10::IValue buffer = has_momentum ? fields.at(std::string("momentum_buffer")) : c10::IValue();
      if (buffer.isNone()) continue;  // a parameter SGD has not stepped (or momentum 0)
      auto param_state = std::make_unique<torch::optim::SGDParamState>();
      param_state->momentum_buffer(tensor_entry(fields, "momentum_buffer", parameter, index, source));
      loaded.emplace_back(key, std::move(param_state));
    } else {
      TORCH_CHECK(fields.contains(std::string("exp_avg")), source,
                  " holds the state of another optimizer than Adam/AdamW (the recipe's)");
      if (dynamic_cast<torch::optim::AdamW*>(&optimizer)) {
        auto param_state = std::make_unique<torch::optim::AdamWParamState>();
        param_state->step(step_entry(fields, index, source));
        param_state->exp_avg(tensor_entry(fields, "exp_avg", parameter, index, source));
        param_state->exp_avg_sq(tensor_entry(fields, "exp_avg_sq", parameter, index, source));
        loaded.emplace_back(key, std::move(param_state));
      } else {
        auto param_state = std::make_unique<torch::optim::AdamParamState>();
        param_state->step(step_entry(fields, index, source));
        param_state->exp_avg(tensor_entry(fields, "exp_avg", parameter, index, source));
        param_state->exp_avg_sq(tensor_entry(fields, "exp_avg_sq", parameter, index, source));
        loaded.emplace_back(key, std::move(param_state));
      }
    }
  }
  // Only now, when all of it fits: an error above leaves the optimizer as it was.
  states.clear();
  for (auto& [key, param_state] : loaded) states[key] = std::move(param_state);
  return describe_groups(groups.toListRef());
}

void export_python_weights(torch::nn::Module& model, const KeyMap& key_map, const std::string& model_name,
                           int64_t iteration, const std::string& path, std::ostream& out) {
  model.to(torch::kCPU);
  const StateDict tensors = module_state_dict(model, key_map);
  write_state_dict(tensors, path);
  out << "[memcnn-train] wrote " << tensors.size() << " tensors of " << model_name << " at iteration " << iteration
      << " to " << path << " (Python: model.load_state_dict(torch.load(path)))" << std::endl;
}

}  // namespace train
}  // namespace memcnn
