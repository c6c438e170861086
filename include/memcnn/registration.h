#pragma once
/// @file
/// Registering a module's parts from reset() (implementation details, in memcnn::detail). The
/// contract (README): options are the single source of truth; change them and call reset(), and
/// the module has what a module freshly built with them has. LibTorch registers a name once and
/// has no way to drop a parameter or buffer, so on a built module a plain reset() either throws
/// ("already defined") or keeps the parts the new options no longer have in parameters(),
/// buffers() and the state dict.

#include <torch/nn/module.h>
#include <torch/ordered_dict.h>
#include <torch/types.h>

#include <exception>
#include <memory>
#include <string>

namespace memcnn {
namespace detail {

// Opened in reset() of a module built from its options, once they are validated (a reset() that
// throws after this point leaves the module part built): empties the module of its parameters,
// buffers and sub-modules, keeping its name and training mode, so that reset() registers exactly
// what the options call for. A parameter or buffer defined through it under a name the module
// had before stays the same tensor, given the new value (and no gradient), so members and
// optimizers holding it see the new value. When reset() returns, the sub-modules it registered
// take the module's training mode, as a clone's do.
class Rebuild {
 public:
  explicit Rebuild(torch::nn::Module& module)
      : module_(module),
        previous_parameters_(module.named_parameters(/*recurse=*/false)),
        previous_buffers_(module.named_buffers(/*recurse=*/false)),
        exceptions_on_entry_(std::uncaught_exceptions()) {
    // Module is copyable (Cloneable::clone assigns whole modules): an empty module of the same
    // name and mode, assigned to the base, empties all three registries. LibTorch 1.13 and 2.x
    // alike; there is no other way to drop a buffer.
    torch::nn::Module empty(module.name());
    empty.train(module.is_training());
    module = empty;
  }
  Rebuild(const Rebuild&) = delete;
  Rebuild& operator=(const Rebuild&) = delete;
  ~Rebuild() {
    if (std::uncaught_exceptions() == exceptions_on_entry_) module_.train(module_.is_training());
  }

  torch::Tensor parameter(const std::string& name, const torch::Tensor& value) {
    if (auto* previous = previous_parameters_.find(name)) {
      previous->set_data(value);
      previous->mutable_grad() = torch::Tensor();
      return module_.register_parameter(name, *previous);
    }
    return module_.register_parameter(name, value);
  }

  torch::Tensor buffer(const std::string& name, const torch::Tensor& value) {
    if (auto* previous = previous_buffers_.find(name)) {
      previous->set_data(value);
      return module_.register_buffer(name, *previous);
    }
    return module_.register_buffer(name, value);
  }

 private:
  torch::nn::Module& module_;
  torch::OrderedDict<std::string, torch::Tensor> previous_parameters_, previous_buffers_;
  int exceptions_on_entry_;
};

// Registers `child` under `name`, or puts it in the place of the one registered there: for
// modules around user modules (wrappers, checkpoints), whose reset() registers the same ones again.
inline void register_or_replace(torch::nn::Module& parent, const std::string& name,
                                const std::shared_ptr<torch::nn::Module>& child) {
  if (parent.named_children().contains(name)) {
    parent.replace_module(name, child);
  } else {
    parent.register_module(name, child);
  }
}

}  // namespace detail
}  // namespace memcnn
