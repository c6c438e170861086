#pragma once
// Internal: a module as its pretty_print shows it, for error messages and warnings.

#include <torch/nn/module.h>

#include <sstream>
#include <string>

namespace memcnn {
namespace detail {

inline std::string describe(const torch::nn::Module& module) {
  std::ostringstream stream;
  module.pretty_print(stream);
  return stream.str();
}

}  // namespace detail
}  // namespace memcnn
