// Loading named tensors into a module by name, as Python's Module.load_state_dict does, with the
// C++-to-Python name map in between. (Reading and writing the files: torch_file.cpp.)

#include "memcnn/state_dict.h"

#include <torch/torch.h>

#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace memcnn {
namespace {

// Python's order: each module's parameters, then its buffers, then its children's, depth first.
std::vector<std::pair<std::string, torch::Tensor>> named_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) tensors.emplace_back(prefix + p.key(), p.value());
    for (const auto& b : item.value()->named_buffers(/*recurse=*/false)) tensors.emplace_back(prefix + b.key(), b.value());
  }
  return tensors;
}

std::string file_name(const KeyMap& key_map, const std::string& cpp_name) {
  return key_map ? key_map(cpp_name) : cpp_name;
}

std::string shape(c10::IntArrayRef sizes) {
  std::ostringstream text;
  text << sizes;
  return text.str();
}

void list(std::ostringstream& out, const char* title, const std::vector<std::string>& names) {
  if (names.empty()) return;
  constexpr size_t kShown = 12;
  out << "\n  " << title << " (" << names.size() << "):";
  for (size_t i = 0; i < names.size() && i < kShown; ++i) out << " " << names[i] << (i + 1 < names.size() ? "," : "");
  if (names.size() > kShown) out << " ... and " << names.size() - kShown << " more";
}

}  // namespace

std::string LoadStateDictResult::describe() const {
  std::ostringstream out;
  list(out, "missing keys", missing);
  list(out, "unexpected keys", unexpected);
  list(out, "keys with another shape", mismatched);
  return out.str();
}

StateDict module_state_dict(const torch::nn::Module& module, const KeyMap& key_map) {
  StateDict tensors;
  for (const auto& [name, tensor] : named_tensors(module)) {
    const std::string key = file_name(key_map, name);
    if (!tensor.defined() || key.empty()) continue;
    TORCH_CHECK(!tensors.contains(key), "module_state_dict: two tensors are named '", key,
                "' (the key map sends two names to one)");
    tensors.insert(key, tensor.detach());
  }
  return tensors;
}

LoadStateDictResult load_state_dict(torch::nn::Module& module, const StateDict& tensors,
                                    const LoadStateDictOptions& options) {
  LoadStateDictResult result;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // module's, file's
  std::unordered_set<std::string> used;
  for (const auto& [name, target] : named_tensors(module)) {
    const std::string key = file_name(options.key_map(), name);
    if (!target.defined() || key.empty()) continue;
    const torch::Tensor* source = tensors.find(key);
    if (!source) {
      result.missing.push_back(key);
      continue;
    }
    used.insert(key);
    if (source->sizes() != target.sizes()) {
      result.mismatched.push_back(key + " " + shape(source->sizes()) + " in the file, " + shape(target.sizes()) +
                                  " in the module");
      continue;
    }
    copies.emplace_back(target, *source);
  }
  for (const auto& item : tensors)
    if (!used.count(item.key())) result.unexpected.push_back(item.key());
  TORCH_CHECK(!options.strict() || result.complete(), "load_state_dict: ", options.source(),
              " does not match the module:", result.describe(),
              "\n(names are the file's; a model trained in Python needs the key map of its C++ twin, such as "
              "memcnn::models::python_key_map(name); LoadStateDictOptions().strict(false) loads what matches)");
  torch::NoGradGuard no_grad;
  for (auto& [target, source] : copies) target.copy_(source);
  result.loaded = static_cast<int64_t>(copies.size());
  return result;
}

LoadStateDictResult load_state_dict(torch::nn::Module& module, const std::string& path, LoadStateDictOptions options) {
  if (options.source() == LoadStateDictOptions().source()) options.source("'" + path + "'");
  return load_state_dict(module, read_state_dict(path), options);
}

}  // namespace memcnn
