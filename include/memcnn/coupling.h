#pragma once
// Couplings turn any shape-preserving modules F and G into an invertible block (RevNet,
// NICE/RealNVP), as MemCNN's AdditiveCoupling and AffineCoupling do:
//   x = [x1, x2] split in halves along split_dim
//   additive: y1 = x1 + F(x2),          y2 = x2 + G(y1)
//   affine:   y1 = x1 * s_F(x2) + t_F,  y2 = x2 * s_G(y1) + t_G   (s, t from an adapter)
// With several input tensors every tensor is split; F and G then take and return
// std::vector<torch::Tensor> (the halves x2 of all inputs), one tensor per input.

#include "memcnn/invertible_module.h"

#include <torch/arg.h>
#include <torch/nn/modules/container/any.h>

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace memcnn {

struct AdditiveCouplingOptions {
  // The dimension split into the two halves (1: channels of NCHW).
  TORCH_ARG(int64_t, split_dim) = 1;
};

// How an affine coupling turns the output h of F (or G) into scale and shift.
enum class AffineAdapter {
  naive,    // MemCNN's AffineAdapterNaive: s = exp(h), t = h; F keeps the shape of its input
  sigmoid,  // MemCNN's AffineAdapterSigmoid: F doubles split_dim; s = sigmoid(h[odd] + 2), t = h[even]
};

struct AffineCouplingOptions {
  TORCH_ARG(int64_t, split_dim) = 1;
  TORCH_ARG(AffineAdapter, adapter) = AffineAdapter::naive;
};

namespace detail {

template <typename T>
torch::nn::AnyModule to_any_module(T&& module) {
  return torch::nn::AnyModule(std::forward<T>(module));
}

// What both couplings share: the registered F and G, splitting, merging and calling them.
class CouplingBase : public InvertibleModule {
 public:
  torch::nn::AnyModule& F() { return F_; }
  torch::nn::AnyModule& G() { return G_; }
  int64_t split_dim() const { return split_dim_; }

 protected:
  CouplingBase(torch::nn::AnyModule F, torch::nn::AnyModule G, int64_t split_dim, const char* name);
  // F and G after cloning (for clone()), on a device if given.
  std::pair<torch::nn::AnyModule, torch::nn::AnyModule> cloned_parts(
      const torch::optional<torch::Device>& device) const;

  struct Halves {
    std::vector<torch::Tensor> first, second;
  };
  Halves split(const std::vector<torch::Tensor>& tensors) const;
  std::vector<torch::Tensor> merge(const std::vector<torch::Tensor>& first,
                                   const std::vector<torch::Tensor>& second) const;
  // Calls F or G on the halves; `expected` gives the shape each result must have.
  std::vector<torch::Tensor> call(torch::nn::AnyModule& module, const char* module_name,
                                  const std::vector<torch::Tensor>& halves,
                                  const std::vector<torch::Tensor>& shaped_like,
                                  int64_t split_dim_factor) const;

  const char* name_;

 private:
  torch::nn::AnyModule F_, G_;
  int64_t split_dim_;
};

template <typename T>
using not_options_t = std::enable_if_t<!std::is_same_v<std::decay_t<T>, AdditiveCouplingOptions> &&
                                       !std::is_same_v<std::decay_t<T>, AffineCouplingOptions>>;

// G defaults to an independent deep copy of F.
torch::nn::AnyModule clone_for_G(const torch::nn::AnyModule& F, const char* coupling_name);

}  // namespace detail

class AdditiveCouplingImpl : public torch::nn::Cloneable<AdditiveCouplingImpl>,
                             public detail::CouplingBase {
 public:
  template <typename FModule, typename = detail::not_options_t<FModule>>
  explicit AdditiveCouplingImpl(FModule&& F, AdditiveCouplingOptions options = {})
      : AdditiveCouplingImpl(detail::to_any_module(std::forward<FModule>(F)), options, 0) {}

  template <typename FModule, typename GModule, typename = detail::not_options_t<GModule>>
  AdditiveCouplingImpl(FModule&& F, GModule&& G, AdditiveCouplingOptions options = {})
      : CouplingBase(detail::to_any_module(std::forward<FModule>(F)),
                     detail::to_any_module(std::forward<GModule>(G)), options.split_dim(),
                     "AdditiveCoupling"),
        options(options) {}

  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor inverse(const torch::Tensor& y);
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& x) override;
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& y) override;

  void reset() override {}
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;
  void pretty_print(std::ostream& stream) const override;

  AdditiveCouplingOptions options;

 private:
  AdditiveCouplingImpl(torch::nn::AnyModule F, AdditiveCouplingOptions options, int)
      : AdditiveCouplingImpl(F, detail::clone_for_G(F, "AdditiveCoupling"), options) {}
};
TORCH_MODULE(AdditiveCoupling);

class AffineCouplingImpl : public torch::nn::Cloneable<AffineCouplingImpl>,
                           public detail::CouplingBase {
 public:
  template <typename FModule, typename = detail::not_options_t<FModule>>
  explicit AffineCouplingImpl(FModule&& F, AffineCouplingOptions options = {})
      : AffineCouplingImpl(detail::to_any_module(std::forward<FModule>(F)), options, 0) {}

  template <typename FModule, typename GModule, typename = detail::not_options_t<GModule>>
  AffineCouplingImpl(FModule&& F, GModule&& G, AffineCouplingOptions options = {})
      : CouplingBase(detail::to_any_module(std::forward<FModule>(F)),
                     detail::to_any_module(std::forward<GModule>(G)), options.split_dim(),
                     "AffineCoupling"),
        options(options) {}

  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor inverse(const torch::Tensor& y);
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& x) override;
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>& y) override;

  void reset() override {}
  std::shared_ptr<torch::nn::Module> clone(
      const torch::optional<torch::Device>& device = torch::nullopt) const override;
  void pretty_print(std::ostream& stream) const override;

  AffineCouplingOptions options;

 private:
  AffineCouplingImpl(torch::nn::AnyModule F, AffineCouplingOptions options, int)
      : AffineCouplingImpl(F, detail::clone_for_G(F, "AffineCoupling"), options) {}
  struct ScaleShift {
    std::vector<torch::Tensor> scale, shift;
  };
  ScaleShift scale_shift(torch::nn::AnyModule& module, const char* module_name,
                         const std::vector<torch::Tensor>& input,
                         const std::vector<torch::Tensor>& shaped_like);
};
TORCH_MODULE(AffineCoupling);

}  // namespace memcnn
