#pragma once
// Shared fixtures: the Conv-BN-ReLU operation of MemCNN's README, a multi-tensor variant,
// stacks of wrapped couplings, and error measures.

#include <memcnn/memcnn.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace memcnn_test {

// Relu o BatchNorm2d o Conv2d with the channel count kept. bn_scale sets BatchNorm's initial
// weight (small values keep affine couplings' exp(t) tame in deep stacks).
struct ConvBnReluImpl : torch::nn::Cloneable<ConvBnReluImpl> {
  explicit ConvBnReluImpl(int64_t channels, double bn_scale = 1.0, double dropout = 0.0)
      : channels(channels), bn_scale(bn_scale), dropout(dropout) {
    reset();
  }
  void reset() override {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1).bias(false)));
    bn = register_module("bn", torch::nn::BatchNorm2d(channels));
    torch::NoGradGuard no_grad;
    bn->weight.fill_(bn_scale);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::relu(bn->forward(conv->forward(x)));
    return dropout > 0 ? torch::dropout(h, dropout, is_training()) : h;
  }
  int64_t channels;
  double bn_scale, dropout;
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvBnRelu);

// Applies its own ConvBnRelu to each of several tensors.
struct MultiConvBnReluImpl : torch::nn::Cloneable<MultiConvBnReluImpl> {
  MultiConvBnReluImpl(int64_t channels, int64_t count, double bn_scale = 1.0)
      : channels(channels), count(count), bn_scale(bn_scale) {
    reset();
  }
  void reset() override {
    ops = register_module("ops", torch::nn::ModuleList());
    for (int64_t i = 0; i < count; ++i) ops->push_back(ConvBnRelu(channels, bn_scale));
  }
  std::vector<torch::Tensor> forward(std::vector<torch::Tensor> xs) {
    std::vector<torch::Tensor> out;
    for (std::size_t i = 0; i < xs.size(); ++i) out.push_back(ops[i]->as<ConvBnReluImpl>()->forward(xs[i]));
    return out;
  }
  int64_t channels, count;
  double bn_scale;
  torch::nn::ModuleList ops{nullptr};
};
TORCH_MODULE(MultiConvBnRelu);

enum class Coupling { additive, affine };

inline std::string name_of(Coupling c) { return c == Coupling::additive ? "additive" : "affine"; }

// A coupling of two Conv-BN-ReLU halves for `channels` channels (per tensor).
inline std::shared_ptr<memcnn::InvertibleModule> make_coupling(Coupling kind, int64_t channels,
                                                               int64_t tensors = 1) {
  const double bn_scale = kind == Coupling::affine ? 0.1 : 1.0;
  auto half = [&]() -> torch::nn::AnyModule {
    if (tensors == 1) return torch::nn::AnyModule(ConvBnRelu(channels / 2, bn_scale));
    return torch::nn::AnyModule(MultiConvBnRelu(channels / 2, tensors, bn_scale));
  };
  if (kind == Coupling::additive) return memcnn::AdditiveCoupling(half(), half()).ptr();
  return memcnn::AffineCoupling(half(), half()).ptr();
}

// Wrapped couplings in a chain; run() passes tensors through all of them.
struct Stack {
  torch::nn::ModuleList blocks;
  bool inverse_direction = false;

  std::vector<memcnn::InvertibleModuleWrapper> wrappers() const {
    std::vector<memcnn::InvertibleModuleWrapper> result;
    for (const auto& m : *blocks) result.emplace_back(std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(m));
    return result;
  }
  std::vector<torch::Tensor> run(std::vector<torch::Tensor> xs) const {
    for (auto& w : wrappers()) xs = inverse_direction ? w->inverse_multi(xs) : w->forward_multi(xs);
    return xs;
  }
  Stack clone() const {
    return Stack{torch::nn::ModuleList(std::dynamic_pointer_cast<torch::nn::ModuleListImpl>(blocks->clone())),
                 inverse_direction};
  }
  void set_disable(bool disable) {
    for (auto& w : wrappers()) w->options.disable(disable);
  }
};

inline Stack make_stack(Coupling kind, int depth, int64_t channels, int64_t tensors = 1,
                        memcnn::InvertibleModuleWrapperOptions options = {}) {
  Stack stack{torch::nn::ModuleList()};
  for (int i = 0; i < depth; ++i) {
    stack.blocks->push_back(memcnn::InvertibleModuleWrapper(make_coupling(kind, channels, tensors), options));
  }
  return stack;
}

// Bytes the tensor's storage holds (0 while a wrapper holds it freed).
inline size_t bytes_of(const torch::Tensor& t) { return t.has_storage() ? t.storage().nbytes() : 0; }

// max |a - b| / max |b|
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

// max |a - b|
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// The call raises a c10::Error whose message contains `text`.
template <typename Call>
void expect_error_contains(Call&& call, const std::string& text) {
  try {
    call();
    ADD_FAILURE() << "expected an error containing \"" << text << "\"";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

// In a test body: skips the test where LibTorch sees no CUDA device.
#define MEMCNN_SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

// The plain float32 computation on CUDA, for the length of a test: cuDNN and cuBLAS would
// otherwise use TF32 (10-bit mantissas) on Ampere and later, and the comparison with the
// plain computation would measure TF32's rounding instead of memcnn.
class ExactFloat32OnCuda {
 public:
  ExactFloat32OnCuda()
      : cudnn_(at::globalContext().allowTF32CuDNN()), cublas_(at::globalContext().allowTF32CuBLAS()) {
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  }
  ~ExactFloat32OnCuda() {
    at::globalContext().setAllowTF32CuDNN(cudnn_);
    at::globalContext().setAllowTF32CuBLAS(cublas_);
  }
  ExactFloat32OnCuda(const ExactFloat32OnCuda&) = delete;
  ExactFloat32OnCuda& operator=(const ExactFloat32OnCuda&) = delete;

 private:
  bool cudnn_, cublas_;
};

// Runs `body` and returns the message of the c10::Error or std::exception it throws ("" if none).
template <typename Body>
std::string error_message(Body&& body) {
  try {
    body();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace memcnn_test
