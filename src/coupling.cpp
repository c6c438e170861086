#include "memcnn/coupling.h"

#include "memcnn/rng.h"

#include <torch/torch.h>

#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace detail {

torch::Tensor only_tensor(const std::vector<torch::Tensor>& tensors, const char* who) {
  TORCH_CHECK(tensors.size() == 1, who, ": this module takes exactly one tensor, but got ",
              tensors.size(), "; use forward_multi/inverse_multi with a multi-tensor module");
  return tensors.front();
}

torch::nn::AnyModule clone_for_G(const torch::nn::AnyModule& F, const char* coupling_name) {
  TORCH_CHECK(!F.is_empty(), coupling_name, ": F is an empty module");
  try {
    return F.clone();
  } catch (const c10::Error& error) {
    TORCH_CHECK(false, coupling_name,
                ": G defaults to a deep copy of F, but F could not be cloned (derive its Impl from "
                "torch::nn::Cloneable<Impl> and build submodules in reset(), or pass G explicitly). "
                "Cause: ",
                error.what_without_backtrace());
  }
}

CouplingBase::CouplingBase(torch::nn::AnyModule F, torch::nn::AnyModule G, int64_t split_dim,
                           const char* name)
    : name_(name), F_(std::move(F)), G_(std::move(G)), split_dim_(split_dim) {
  TORCH_CHECK(!F_.is_empty() && !G_.is_empty(), name_, ": F and G must be non-empty modules");
  TORCH_CHECK(F_.ptr() != G_.ptr(), name_,
              ": F and G are the same module object; pass two modules, or only F to get G as a copy");
  register_module("F", F_.ptr());
  register_module("G", G_.ptr());
}

std::pair<torch::nn::AnyModule, torch::nn::AnyModule> CouplingBase::cloned_parts(
    const torch::optional<torch::Device>& device) const {
  return {F_.clone(device), G_.clone(device)};
}

CouplingBase::Halves CouplingBase::split(const std::vector<torch::Tensor>& tensors) const {
  TORCH_CHECK(!tensors.empty(), name_, ": needs at least one input tensor");
  Halves halves;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& tensor = tensors[i];
    TORCH_CHECK(tensor.defined(), name_, ": input ", i, " is an undefined tensor");
    TORCH_CHECK(split_dim_ >= -tensor.dim() && split_dim_ < tensor.dim(), name_, ": split_dim ",
                split_dim_, " is out of range for input ", i, " of shape ", tensor.sizes(),
                "; set split_dim in the options to an existing dimension");
    const int64_t size = tensor.size(split_dim_);
    TORCH_CHECK(size % 2 == 0, name_, ": dimension ", split_dim_, " of input ", i, " (shape ",
                tensor.sizes(), ") has odd size ", size,
                ", which cannot be split into two equal halves; use an even number of channels "
                "or another split_dim");
    halves.first.push_back(tensor.narrow(split_dim_, 0, size / 2));
    halves.second.push_back(tensor.narrow(split_dim_, size / 2, size / 2));
  }
  return halves;
}

std::vector<torch::Tensor> CouplingBase::merge(const std::vector<torch::Tensor>& first,
                                               const std::vector<torch::Tensor>& second) const {
  std::vector<torch::Tensor> merged;
  merged.reserve(first.size());
  for (std::size_t i = 0; i < first.size(); ++i) {
    merged.push_back(torch::cat({first[i], second[i]}, split_dim_));
  }
  return merged;
}

std::vector<torch::Tensor> CouplingBase::call(torch::nn::AnyModule& module, const char* module_name,
                                              const std::vector<torch::Tensor>& halves,
                                              const std::vector<torch::Tensor>& shaped_like,
                                              int64_t split_dim_factor) const {
  rng_sync_point(module.ptr().get());
  std::vector<torch::Tensor> results;
  try {
    if (halves.size() == 1) {
      results.push_back(module.forward(halves.front()));
    } else {
      results = module.forward<std::vector<torch::Tensor>>(halves);
    }
  } catch (const c10::Error& error) {
    const std::string what = error.what_without_backtrace();
    if (what.find("Expected argument") == std::string::npos) throw;
    TORCH_CHECK(false, name_, ": ", module_name, " has the wrong forward signature for ",
                halves.size(), " input tensor(s): it must take ",
                halves.size() == 1 ? "a torch::Tensor" : "a std::vector<torch::Tensor>",
                " and return the same kind. Cause: ", what);
  }
  TORCH_CHECK(results.size() == shaped_like.size(), name_, ": ", module_name, " returned ",
              results.size(), " tensors for ", shaped_like.size(), " inputs");
  for (std::size_t i = 0; i < results.size(); ++i) {
    auto expected = shaped_like[i].sizes().vec();
    expected[split_dim_ < 0 ? split_dim_ + expected.size() : split_dim_] *= split_dim_factor;
    TORCH_CHECK(results[i].sizes() == torch::IntArrayRef(expected), name_, ": ", module_name,
                " returned a tensor of shape ", results[i].sizes(), " for output ", i,
                ", but the coupling needs shape ", torch::IntArrayRef(expected),
                split_dim_factor == 1
                    ? " (the shape of the other half); F and G must preserve the shape of their input"
                    : " (the sigmoid adapter needs split_dim doubled: scales and shifts interleaved)");
  }
  return results;
}

}  // namespace detail

namespace {

std::vector<torch::Tensor> add(const std::vector<torch::Tensor>& a,
                               const std::vector<torch::Tensor>& b) {
  std::vector<torch::Tensor> out;
  for (std::size_t i = 0; i < a.size(); ++i) out.push_back(a[i] + b[i]);
  return out;
}

std::vector<torch::Tensor> subtract(const std::vector<torch::Tensor>& a,
                                    const std::vector<torch::Tensor>& b) {
  std::vector<torch::Tensor> out;
  for (std::size_t i = 0; i < a.size(); ++i) out.push_back(a[i] - b[i]);
  return out;
}

}  // namespace

// ---- AdditiveCoupling ----

torch::Tensor AdditiveCouplingImpl::forward(const torch::Tensor& x) {
  return forward_multi({x}).front();
}

torch::Tensor AdditiveCouplingImpl::inverse(const torch::Tensor& y) {
  return inverse_multi({y}).front();
}

std::vector<torch::Tensor> AdditiveCouplingImpl::forward_multi(const std::vector<torch::Tensor>& x) {
  const auto halves = split(x);
  const auto y1 = add(halves.first, call(F(), "F", halves.second, halves.first, 1));
  const auto y2 = add(halves.second, call(G(), "G", y1, halves.second, 1));
  return merge(y1, y2);
}

std::vector<torch::Tensor> AdditiveCouplingImpl::inverse_multi(const std::vector<torch::Tensor>& y) {
  const auto halves = split(y);
  const auto x2 = subtract(halves.second, call(G(), "G", halves.first, halves.second, 1));
  const auto x1 = subtract(halves.first, call(F(), "F", x2, halves.first, 1));
  return merge(x1, x2);
}

std::shared_ptr<torch::nn::Module> AdditiveCouplingImpl::clone(
    const torch::optional<torch::Device>& device) const {
  auto parts = cloned_parts(device);
  return std::make_shared<AdditiveCouplingImpl>(parts.first, parts.second, options);
}

void AdditiveCouplingImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::AdditiveCoupling(split_dim=" << options.split_dim() << ")";
}

// ---- AffineCoupling ----

AffineCouplingImpl::ScaleShift AffineCouplingImpl::scale_shift(
    torch::nn::AnyModule& module, const char* module_name, const std::vector<torch::Tensor>& input,
    const std::vector<torch::Tensor>& shaped_like) {
  const bool sigmoid = options.adapter() == AffineAdapter::sigmoid;
  const auto h = call(module, module_name, input, shaped_like, sigmoid ? 2 : 1);
  ScaleShift result;
  for (const auto& t : h) {
    if (sigmoid) {
      const int64_t n = t.size(split_dim());
      result.scale.push_back(torch::sigmoid(t.slice(split_dim(), 1, n, 2) + 2.0));
      result.shift.push_back(t.slice(split_dim(), 0, n, 2));
    } else {
      result.scale.push_back(torch::exp(t));
      result.shift.push_back(t);
    }
  }
  return result;
}

torch::Tensor AffineCouplingImpl::forward(const torch::Tensor& x) { return forward_multi({x}).front(); }

torch::Tensor AffineCouplingImpl::inverse(const torch::Tensor& y) { return inverse_multi({y}).front(); }

std::vector<torch::Tensor> AffineCouplingImpl::forward_multi(const std::vector<torch::Tensor>& x) {
  const auto halves = split(x);
  const auto f = scale_shift(F(), "F", halves.second, halves.first);
  std::vector<torch::Tensor> y1, y2;
  for (std::size_t i = 0; i < x.size(); ++i) y1.push_back(halves.first[i] * f.scale[i] + f.shift[i]);
  const auto g = scale_shift(G(), "G", y1, halves.second);
  for (std::size_t i = 0; i < x.size(); ++i) y2.push_back(halves.second[i] * g.scale[i] + g.shift[i]);
  return merge(y1, y2);
}

std::vector<torch::Tensor> AffineCouplingImpl::inverse_multi(const std::vector<torch::Tensor>& y) {
  const auto halves = split(y);
  const auto g = scale_shift(G(), "G", halves.first, halves.second);
  std::vector<torch::Tensor> x1, x2;
  for (std::size_t i = 0; i < y.size(); ++i) x2.push_back((halves.second[i] - g.shift[i]) / g.scale[i]);
  const auto f = scale_shift(F(), "F", x2, halves.first);
  for (std::size_t i = 0; i < y.size(); ++i) x1.push_back((halves.first[i] - f.shift[i]) / f.scale[i]);
  return merge(x1, x2);
}

std::shared_ptr<torch::nn::Module> AffineCouplingImpl::clone(
    const torch::optional<torch::Device>& device) const {
  auto parts = cloned_parts(device);
  return std::make_shared<AffineCouplingImpl>(parts.first, parts.second, options);
}

void AffineCouplingImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::AffineCoupling(split_dim=" << options.split_dim() << ", adapter="
         << (options.adapter() == AffineAdapter::sigmoid ? "sigmoid" : "naive") << ")";
}

}  // namespace memcnn
