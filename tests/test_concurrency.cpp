// One module shared by several threads, as Python's threads share a model: forward, inverse and
// backward running at the same time in every thread give, in each, what a single thread gets.
// scripts/tsan.sh runs this suite under ThreadSanitizer, which also reports data races in
// memcnn's code that happen not to change a result here.

#include "test_util.h"

#include <memcnn/channel_mixing.h>
#include <memcnn/resampling.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <string>
#include <thread>

namespace {

using namespace memcnn_test;
using memcnn::OrthogonalMethod;
using memcnn::OrthogonalResamplingOptions;

constexpr int kThreads = 4;
constexpr int kStepsPerThread = 12;

struct SharedCase {
  const char* name;
  std::function<std::shared_ptr<memcnn::InvertibleModule>()> make;
  std::vector<int64_t> input_shape;
};

std::shared_ptr<memcnn::InvertibleModule> wrapped_resampling_chain() {
  const auto fixed = OrthogonalResamplingOptions(2, {2, 2}).learnable(false);
  memcnn::InvertibleSequential chain(memcnn::OrthogonalDownsampling(OrthogonalResamplingOptions(2, {2, 2})),
                                     memcnn::OrthogonalChannelMixing(8), memcnn::OrthogonalUpsampling(fixed));
  return memcnn::InvertibleModuleWrapper(chain.ptr()).ptr();
}

std::vector<SharedCase> shared_cases() {
  auto down = [](OrthogonalResamplingOptions o) {
    return [o] { return memcnn::OrthogonalDownsampling(o).ptr(); };
  };
  auto mixing = [](memcnn::OrthogonalChannelMixingOptions o) {
    return [o] { return memcnn::OrthogonalChannelMixing(o).ptr(); };
  };
  return {
      {"downsampling_cayley_2d", down(OrthogonalResamplingOptions(3, {2, 2})), {2, 3, 4, 6}},
      {"downsampling_exp_1d", down(OrthogonalResamplingOptions(3, {4}).method(OrthogonalMethod::exp)), {2, 3, 8}},
      {"downsampling_fixed_3d", down(OrthogonalResamplingOptions(2, {2, 2, 2}).learnable(false)), {2, 2, 4, 2, 4}},
      {"upsampling_cayley_3d",
       [] { return memcnn::OrthogonalUpsampling(OrthogonalResamplingOptions(2, {2, 1, 2})).ptr(); },
       {2, 8, 2, 3, 2}},
      {"channel_mixing", mixing(memcnn::OrthogonalChannelMixingOptions(6)), {2, 6, 3, 3}},
      {"channel_mixing_fixed", mixing(memcnn::OrthogonalChannelMixingOptions(6).learnable(false)), {2, 6, 5}},
      {"wrapped_chain", wrapped_resampling_chain, {2, 2, 4, 4}},
  };
}

// Moves the free parameters off zero, so that the matrices are no longer the initial ones.
void perturb(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) p.add_(0.3 * torch::randn_like(p));
}

// What one step computes: the output, the rebuilt input, the gradients of the input and of
// every parameter (returned, not accumulated, so that threads do not add to each other's).
std::vector<torch::Tensor> step(memcnn::InvertibleModule& module, const torch::Tensor& x0,
                                const torch::Tensor& weights) {
  auto x = x0.clone().requires_grad_();
  auto y = module.forward_multi({x * 1.0}).front();
  torch::Tensor rebuilt;
  {
    torch::NoGradGuard no_grad;
    rebuilt = module.inverse_multi({y.detach().clone()}).front();
  }
  std::vector<torch::Tensor> wrt{x};
  for (const auto& p : module.parameters()) wrt.push_back(p);
  auto grads = torch::autograd::grad({(y * y * weights).sum()}, wrt);
  std::vector<torch::Tensor> result{y.detach(), rebuilt};
  result.insert(result.end(), grads.begin(), grads.end());
  return result;
}

// The worst relative difference between two steps' results; infinity when they differ in shape
// or in which gradients are defined.
// Runs body(t, s) for kStepsPerThread steps on each of kThreads threads at once; what each thread
// threw, "" where nothing.
std::vector<std::string> run_in_threads(const std::function<void(int thread, int step)>& body) {
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int s = 0; s < kStepsPerThread; ++s) body(t, s);
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  return errors;
}

double worst_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].defined() != b[i].defined()) return std::numeric_limits<double>::infinity();
    if (!a[i].defined()) continue;
    if (a[i].sizes() != b[i].sizes()) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, relative_error(a[i], b[i]));
  }
  return worst;
}

class SharedModule : public ::testing::TestWithParam<SharedCase> {};

TEST_P(SharedModule, ThreadsSteppingAtOnceGetTheSingleThreadedResults) {
  const auto& c = GetParam();
  torch::manual_seed(0);
  auto module = c.make();
  module->to(torch::kFloat64);
  perturb(*module);
  std::vector<torch::Tensor> inputs, weights;
  std::vector<std::vector<torch::Tensor>> expected;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(torch::randn(c.input_shape, torch::kFloat64));
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = module->forward_multi({inputs.back().clone()}).front();
    }
    weights.push_back(torch::rand(y.sizes(), torch::kFloat64));
    expected.push_back(step(*module, inputs[t], weights[t]));
    ASSERT_LT(max_abs_diff(expected.back()[1], inputs[t]), 1e-12) << "the single-threaded inverse";
  }

  std::vector<double> worst(kThreads, 0.0);
  const auto errors = run_in_threads([&](int t, int) {
    worst[t] = std::max(worst[t], worst_difference(step(*module, inputs[t], weights[t]), expected[t]));
  });
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << "thread " << t;
    EXPECT_LT(worst[t], 1e-12) << "thread " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Layers, SharedModule, ::testing::ValuesIn(shared_cases()),
                         [](const ::testing::TestParamInfo<SharedCase>& info) { return std::string(info.param.name); });

// The Python bindings point a layer's `free` at the Python module's parameter, which may live on
// another device than the tensors the C++ layer made itself. The meta device (shapes only)
// stands in for a GPU: every thread computes the matrices there from the layer's other tensors at
// once, and none may move those tensors while the others read them (LibTorch 1.13 has no meta
// convolution, so the threads stop at the matrices).
TEST(SharedModuleWithReboundParameters, ThreadsComputingTheMatricesOnAnotherDevice) {
  const torch::Device meta(torch::kMeta);
  memcnn::OrthogonalDownsampling down(OrthogonalResamplingOptions(3, {2, 2}));
  memcnn::OrthogonalChannelMixing mixing(memcnn::OrthogonalChannelMixingOptions(12));
  down->free = down->free.detach().to(meta).requires_grad_();
  mixing->free = mixing->free.detach().to(meta).requires_grad_();
  const auto errors = run_in_threads([&](int, int) {
    const auto q = down->matrices();
    TORCH_CHECK(q.device() == meta && q.sizes() == c10::IntArrayRef({3, 4, 4}), "got ", q.sizes(), " on ", q.device());
    const auto m = mixing->matrix();
    TORCH_CHECK(m.device() == meta && m.sizes() == c10::IntArrayRef({12, 12}), "got ", m.sizes(), " on ", m.device());
  });
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
}

}  // namespace
