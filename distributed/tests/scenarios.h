#pragma once
// Models and data shared by the distributed tests and the rank program they start: every rank
// and the single-process reference build the same thing from the same seeds.

#include <memcnn/memcnn.h>
#include <memcnn/models/resnet.h>

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <memory>
#include <stdexcept>
#include <string>

namespace memcnn_dist_test {

constexpr int64_t kGlobalBatch = 8;

struct Model {
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
};

struct ConvBnReluImpl : torch::nn::Cloneable<ConvBnReluImpl> {
  explicit ConvBnReluImpl(int64_t channels) : channels(channels) { reset(); }
  void reset() override {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1).bias(false)));
    bn = register_module("bn", torch::nn::BatchNorm2d(channels));
  }
  torch::Tensor forward(const torch::Tensor& x) { return torch::relu(bn->forward(conv->forward(x))); }
  int64_t channels;
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvBnRelu);

// i-RevNet-like: a squeeze and couplings in one memory-saving InvertibleSequential, then a classifier.
struct ChainNetImpl : torch::nn::Module {
  ChainNetImpl() {
    memcnn::InvertibleSequential chain;
    chain->push_back(memcnn::InvertibleDownsampling());
    chain->push_back(memcnn::AdditiveCoupling(ConvBnRelu(6), ConvBnRelu(6)));
    chain->push_back(memcnn::InvertibleConv1x1(12));
    chain->push_back(memcnn::AdditiveCoupling(ConvBnRelu(6), ConvBnRelu(6)));
    body = register_module("body", memcnn::InvertibleModuleWrapper(chain));
    fc = register_module("fc", torch::nn::Linear(12, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc->forward(body->forward(x * 1.0).mean({2, 3})); }
  memcnn::InvertibleModuleWrapper body{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ChainNet);

// "resnet" (plain), "revnet" (memory-saving couplings), "revnet_checkpointed" (and checkpointed
// transitions), "chain" (one wrapped InvertibleSequential); small, on 3x16x16 inputs.
inline Model make_model(const std::string& name, torch::Dtype dtype) {
  torch::manual_seed(0);
  Model model;
  if (name == "chain") {
    ChainNet net;
    model.module = net.ptr();
    model.forward = [net](const torch::Tensor& x) mutable { return net->forward(x); };
  } else {
    auto options = memcnn::models::model_options(name == "resnet" ? "resnet32" : "revnet38");
    options.channels_per_layer({8, 8, 16, 32});
    options.layers(name == "resnet" ? std::vector<int64_t>{1, 1, 1} : std::vector<int64_t>{2, 2, 2});
    if (name == "revnet_checkpointed") options.checkpoint_transitions(true);
    else if (name != "resnet" && name != "revnet") throw std::invalid_argument("unknown test model " + name);
    memcnn::models::ResNet net(options);
    model.module = net.ptr();
    model.forward = [net](const torch::Tensor& x) mutable { return net->forward(x); };
  }
  model.module->to(dtype);
  model.module->train();
  return model;
}

// The global batch of a step (the same on every rank) and a rank's share of it.
inline std::pair<torch::Tensor, torch::Tensor> global_batch(int64_t step, torch::Dtype dtype) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(1000 + step);
  auto images = torch::randn({kGlobalBatch, 3, 16, 16}, generator, torch::TensorOptions(torch::kFloat64)).to(dtype);
  auto labels = torch::randint(0, 10, {kGlobalBatch}, generator, torch::TensorOptions(torch::kLong));
  return {images, labels};
}

inline std::pair<torch::Tensor, torch::Tensor> shard(const std::pair<torch::Tensor, torch::Tensor>& batch, int64_t part,
                                                     int64_t parts) {
  const int64_t n = batch.first.size(0) / parts;
  return {batch.first.narrow(0, part * n, n), batch.second.narrow(0, part * n, n)};
}

inline torch::Tensor loss_of(Model& model, const std::pair<torch::Tensor, torch::Tensor>& batch, bool bfloat16 = false) {
  std::optional<memcnn::Autocast> autocast;
  if (bfloat16) autocast.emplace(torch::kCPU, torch::kBFloat16);
  // The loss in the input's precision whatever autocast made of the logits.
  return torch::nn::functional::cross_entropy(model.forward(batch.first).to(batch.first.scalar_type()), batch.second);
}

inline std::vector<torch::Tensor> gradients_of(const Model& model) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : model.module->parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return grads;
}

// ---- A backward that throws midway ----

// The identity, whose backward throws when asked: the layers above it have delivered their
// gradients by then (DataParallel has started reducing them), the layers below never will.
struct FailInBackward : torch::autograd::Function<FailInBackward> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, bool fail) {
    ctx->saved_data["fail"] = fail;
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (ctx->saved_data["fail"].toBool()) throw std::runtime_error("FailInBackward: backward fails midway (on purpose)");
    return {grads[0], torch::Tensor()};
  }
};

// Three linear layers, the failure point between the first and the second (float64).
struct GatedMlpImpl : torch::nn::Module {
  GatedMlpImpl() {
    torch::manual_seed(0);
    first = register_module("first", torch::nn::Linear(6, 16));
    second = register_module("second", torch::nn::Linear(16, 16));
    third = register_module("third", torch::nn::Linear(16, 4));
    to(torch::kFloat64);
  }
  torch::Tensor forward(const torch::Tensor& x, bool fail_in_backward) {
    auto hidden = FailInBackward::apply(torch::tanh(first->forward(x)), fail_in_backward);
    return third->forward(torch::tanh(second->forward(hidden)));
  }
  torch::nn::Linear first{nullptr}, second{nullptr}, third{nullptr};
};
TORCH_MODULE(GatedMlp);

// Inputs and targets of a step's global batch, the same on every rank.
inline std::pair<torch::Tensor, torch::Tensor> mlp_batch(int64_t step) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(2000 + step);
  const auto options = torch::TensorOptions(torch::kFloat64);
  return {torch::randn({kGlobalBatch, 6}, generator, options), torch::randn({kGlobalBatch, 4}, generator, options)};
}

inline torch::Tensor mlp_loss(GatedMlp& model, const std::pair<torch::Tensor, torch::Tensor>& batch,
                              bool fail_in_backward = false) {
  return torch::mse_loss(model->forward(batch.first, fail_in_backward), batch.second);
}

inline std::vector<torch::Tensor> gradients_of(const torch::nn::Module& module) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : module.parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return grads;
}

}  // namespace memcnn_dist_test
