// The wrapper as a LibTorch module, and the cases where freeing the input would be unsafe.

#include "test_util.h"

#include <cstdio>

using namespace memcnn_test;

namespace {

memcnn::InvertibleModuleWrapper make_wrapper(Coupling kind = Coupling::additive, int64_t channels = 8,
                                             memcnn::InvertibleModuleWrapperOptions options = {}) {
  return memcnn::InvertibleModuleWrapper(make_coupling(kind, channels), options);
}

// Runs body(wrapper, x) with memory saving and with the wrapper disabled, from the same
// weights and input; returns the relative errors of the input gradient and parameter gradients.
template <typename Body>
double gradient_error_against_plain(Body body, torch::Tensor input, int64_t channels = 8) {
  torch::manual_seed(3);
  auto saving = make_wrapper(Coupling::additive, channels);
  saving->to(torch::kFloat64);
  auto plain = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(saving->clone());
  plain->options.disable(true);
  auto x1 = input.clone().requires_grad_();
  auto x2 = input.clone().requires_grad_();
  body(*saving, x1).backward();
  body(*plain, x2).backward();
  double worst = relative_error(x1.grad(), x2.grad());
  const auto p1 = saving->parameters();
  const auto p2 = plain->parameters();
  for (std::size_t i = 0; i < p1.size(); ++i) worst = std::max(worst, relative_error(p1[i].grad(), p2[i].grad()));
  return worst;
}

struct LogCapture {
  LogCapture() {
    memcnn::set_log_level(memcnn::LogLevel::Debug);
    memcnn::set_log_handler([this](memcnn::LogLevel, const std::string& m) { text += m + "\n"; });
  }
  ~LogCapture() {
    memcnn::set_log_handler(nullptr);
    memcnn::set_log_level(memcnn::LogLevel::Warning);
  }
  std::string text;
};

TEST(Wrapper, RegistersTheWrappedModule) {
  auto wrapper = make_wrapper();
  const auto names = wrapper->named_parameters().keys();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front().rfind("fn.F.", 0), 0u) << names.front();
  wrapper->to(torch::kFloat64);
  for (const auto& p : wrapper->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat64);
  wrapper->eval();
  for (const auto& child : wrapper->modules()) EXPECT_FALSE(child->is_training());
}

TEST(Wrapper, CloneIsIndependentAndEqual) {
  auto wrapper = make_wrapper(Coupling::affine);
  auto copy = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(wrapper->clone());
  ASSERT_NE(copy, nullptr);
  const auto a = wrapper->parameters();
  const auto b = copy->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i]));
    EXPECT_NE(a[i].data_ptr(), b[i].data_ptr());
  }
  wrapper->eval();
  copy->eval();
  auto x = torch::rand({2, 8, 4, 4});
  EXPECT_TRUE(torch::allclose(wrapper->forward(x), copy->forward(x)));
}

TEST(Wrapper, SaveAndLoadRoundTrip) {
  auto wrapper = make_wrapper();
  auto other = make_wrapper();
  const std::string path = testing::TempDir() + "memcnn_wrapper.pt";
  torch::save(wrapper, path);
  torch::load(other, path);
  std::remove(path.c_str());
  const auto a = wrapper->parameters();
  const auto b = other->parameters();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i]));
}

TEST(Wrapper, WorksInsideSequential) {
  torch::nn::Sequential net(make_wrapper(), make_wrapper());
  auto x = torch::rand({2, 8, 4, 4}).requires_grad_();
  auto y = net->forward(x);
  EXPECT_EQ(bytes_of(x), 0u);
  y.sum().backward();
  EXPECT_TRUE(x.grad().defined());
}

TEST(Wrapper, EvalAndNoGradArePlainCalls) {
  auto wrapper = make_wrapper();
  auto x = torch::rand({2, 8, 4, 4}).requires_grad_();
  {
    torch::NoGradGuard no_grad;
    wrapper->forward(x);
  }
  EXPECT_GT(bytes_of(x), 0u);
  wrapper->eval();
  auto y = wrapper->forward(x);
  EXPECT_GT(bytes_of(x), 0u);
  EXPECT_TRUE(y.requires_grad()) << "eval with grad enabled still builds a plain graph";
}

TEST(Wrapper, KeepInputAndDisableKeepBytes) {
  for (auto options : {memcnn::InvertibleModuleWrapperOptions().keep_input(true),
                       memcnn::InvertibleModuleWrapperOptions().disable(true)}) {
    auto wrapper = make_wrapper(Coupling::additive, 8, options);
    auto x = torch::rand({2, 8, 4, 4}).requires_grad_();
    wrapper->forward(x).sum().backward();
    EXPECT_GT(bytes_of(x), 0u);
    EXPECT_TRUE(x.grad().defined());
  }
  auto wrapper = make_wrapper(Coupling::additive, 8, memcnn::InvertibleModuleWrapperOptions().keep_input_inverse(true));
  auto y = torch::rand({2, 8, 4, 4}).requires_grad_();
  wrapper->inverse(y);
  EXPECT_GT(bytes_of(y), 0u) << "keep_input_inverse keeps the input of inverse";
  auto x = torch::rand({2, 8, 4, 4}).requires_grad_();
  wrapper->forward(x);
  EXPECT_EQ(bytes_of(x), 0u) << "but not the input of forward";
}

TEST(Wrapper, NothingToDifferentiateMeansNothingFreed) {
  auto wrapper = make_wrapper();
  for (auto& p : wrapper->parameters()) p.requires_grad_(false);
  auto x = torch::rand({2, 8, 4, 4});
  wrapper->forward(x);
  EXPECT_GT(bytes_of(x), 0u) << "backward never runs, so the input could never be rebuilt";
}

TEST(Wrapper, ReluOutputIsKeptAndGradientsStayExact) {
  LogCapture log;
  const auto z = torch::randn({2, 8, 4, 4}, torch::kFloat64);
  const double error = gradient_error_against_plain(
      [](memcnn::InvertibleModuleWrapperImpl& w, const torch::Tensor& x) {
        return w.forward(torch::relu(x)).pow(2).sum();  // relu saved its output for backward
      },
      z);
  EXPECT_LT(error, 1e-10);
  EXPECT_NE(log.text.find("shares its storage"), std::string::npos) << log.text;
}

TEST(Wrapper, ExactZerosAreRestoredAfterTheRebuild) {
  // An inverse off by 1e-12, as rounding makes any inverse a little off: without the wrapper
  // remembering where the zeros were, they would come back as 1e-12 and flip the mask of the
  // leaky ReLU that saved the input.
  struct NearlyExactImpl : torch::nn::Cloneable<NearlyExactImpl> {
    NearlyExactImpl() { reset(); }
    void reset() override { w = register_parameter("w", torch::full({1}, 2.0, torch::kFloat64)); }
    torch::Tensor forward(const torch::Tensor& x) { return x * w; }
    torch::Tensor inverse(const torch::Tensor& y) { return y / w + 1e-12; }
    torch::Tensor w;
  };
  auto run = [](bool disable) {
    memcnn::InvertibleModuleWrapper wrapper(std::make_shared<NearlyExactImpl>(),
                                            memcnn::InvertibleModuleWrapperOptions().disable(disable));
    torch::manual_seed(4);
    auto z = torch::randn({4, 6}, torch::kFloat64).requires_grad_();
    auto h = z.clamp_min(0) * 1.0;  // exact zeros, in a storage of its own
    auto before = torch::leaky_relu(h, 0.1);  // its backward masks on h > 0
    auto loss = wrapper->forward(h).pow(2).sum() + before.sum();
    EXPECT_EQ(memcnn::is_freed(h), !disable);
    loss.backward();
    EXPECT_TRUE(torch::equal(h.eq(0), z.le(0))) << "zeros rebuilt exactly";
    return std::make_pair(z.grad(), wrapper->parameters()[0].grad());
  };
  const auto plain = run(true);
  const auto saving = run(false);
  EXPECT_LT(relative_error(saving.first, plain.first), 1e-10);
  EXPECT_LT(relative_error(saving.second, plain.second), 1e-10);
}

TEST(Wrapper, CouplingInputWithZerosUsesTheFusedBackwardExactly) {
  for (bool fused : {true, false}) {
    torch::manual_seed(3);
    auto saving = make_wrapper(Coupling::additive, 8, memcnn::InvertibleModuleWrapperOptions().fused_backward(fused));
    saving->to(torch::kFloat64);
    auto plain = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(saving->clone());
    plain->options.disable(true);
    const auto z = torch::randn({2, 8, 4, 4}, torch::kFloat64);
    auto run = [&](memcnn::InvertibleModuleWrapperImpl& w, torch::Tensor x) {
      auto h = x.clamp_min(0) * 1.0;  // exact zeros, in a storage of its own: freed
      auto before = torch::leaky_relu(h, 0.1);
      auto y = w.forward(h);
      EXPECT_EQ(memcnn::is_freed(h), !w.options.disable());
      (y.pow(2).sum() + before.sum()).backward();
      EXPECT_TRUE(torch::equal(h.eq(0), z.le(0)));
    };
    auto x1 = z.clone().requires_grad_();
    auto x2 = z.clone().requires_grad_();
    run(*saving, x1);
    run(*plain, x2);
    EXPECT_LT(relative_error(x1.grad(), x2.grad()), 1e-10) << (fused ? "fused" : "recompute");
    const auto p1 = saving->parameters();
    const auto p2 = plain->parameters();
    for (std::size_t i = 0; i < p1.size(); ++i) {
      EXPECT_LT(relative_error(p1[i].grad(), p2[i].grad()), 1e-10) << (fused ? "fused" : "recompute") << " parameter " << i;
    }
  }
}

TEST(Wrapper, ZeroMasksReachTheFirstMemberOfAChain) {
  // An invertible leaky ReLU whose inverse is off by 1e-12: differentiated at a rebuilt 1e-12
  // instead of 0 its slope would be 1 instead of 0.5, unless the zeros are restored first.
  struct LeakyImpl : torch::nn::Cloneable<LeakyImpl> {
    LeakyImpl() { reset(); }
    void reset() override { w = register_parameter("w", torch::full({1}, 1.5, torch::kFloat64)); }
    torch::Tensor forward(const torch::Tensor& x) { return torch::where(x > 0, x, 0.5 * x) * w; }
    torch::Tensor inverse(const torch::Tensor& y) {
      auto x = y / w;
      return torch::where(x > 0, x, 2.0 * x) + 1e-12;
    }
    torch::Tensor w;
  };
  auto run = [](bool disable) {
    // One member: zeros *inside* a chain (a member's output) are not remembered, only the
    // chain's input's (see docs/concepts.md).
    memcnn::InvertibleSequential chain(std::make_shared<LeakyImpl>());
    memcnn::InvertibleModuleWrapper wrapper(chain, memcnn::InvertibleModuleWrapperOptions().disable(disable));
    torch::manual_seed(6);
    auto z = torch::randn({4, 6}, torch::kFloat64).requires_grad_();
    const auto drop = (torch::rand({4, 6}) < 0.5).to(torch::kFloat64);
    auto h = z - z.detach() * drop;  // exact zeros where dropped, with gradient 1 there
    const auto weights = torch::randn({4, 6}, torch::kFloat64);
    (wrapper->forward(h) * weights).sum().backward();
    std::vector<torch::Tensor> grads{z.grad()};
    for (const auto& p : wrapper->parameters()) grads.push_back(p.grad());
    return grads;
  };
  const auto plain = run(true);
  const auto saving = run(false);
  for (std::size_t i = 0; i < plain.size(); ++i) EXPECT_LT(relative_error(saving[i], plain[i]), 1e-9) << "gradient " << i;
}

TEST(Wrapper, ViewInputIsKept) {
  LogCapture log;
  const auto big = torch::randn({2, 16, 4, 4}, torch::kFloat64);
  const double error = gradient_error_against_plain(
      [](memcnn::InvertibleModuleWrapperImpl& w, const torch::Tensor& x) {
        auto view = x.narrow(1, 4, 8);
        auto y = w.forward(view);
        EXPECT_GT(bytes_of(view), 0u);
        return (y * y).sum();
      },
      big);
  EXPECT_LT(error, 1e-10);
  EXPECT_NE(log.text.find("view"), std::string::npos) << log.text;
}

TEST(Wrapper, NonContiguousInputOwningItsStorageIsFreedAndRebuilt) {
  const auto base = torch::randn({2, 8, 4, 4}, torch::kFloat64);
  const double error = gradient_error_against_plain(
      [](memcnn::InvertibleModuleWrapperImpl& w, const torch::Tensor& x) {
        // owns its storage, with channels-last strides
        auto transposed = (x * 1.0).contiguous(torch::MemoryFormat::ChannelsLast);
        EXPECT_FALSE(transposed.is_contiguous());
        auto before = transposed.sin();  // sin's backward reads the rebuilt input
        auto y = w.forward(transposed);
        if (!w.options.disable()) {
          EXPECT_EQ(bytes_of(transposed), 0u);
        }
        return (y * y).sum() + before.sum();
      },
      base);
  EXPECT_LT(error, 1e-10);
}

TEST(Wrapper, UsingAFreedInputInForwardIsAnErrorNotACrash) {
  auto wrapper = make_wrapper();
  auto x = torch::rand({2, 8, 4, 4}).requires_grad_();
  auto y = wrapper->forward(x);
  EXPECT_TRUE(memcnn::is_freed(x));
  EXPECT_NE(error_message([&] { (x + 1).sum(); }).find("doesn't have storage"), std::string::npos);
  EXPECT_NE(error_message([&] { wrapper->forward(x); }).find("freed by another memory-saving wrapper"),
            std::string::npos);
  y.sum().backward();
  EXPECT_FALSE(memcnn::is_freed(x));
  EXPECT_TRUE((x + 1).defined());
}

TEST(Wrapper, InputAlsoFeedingOtherOps) {
  const auto input = torch::randn({2, 8, 4, 4}, torch::kFloat64);
  const double error = gradient_error_against_plain(
      [](memcnn::InvertibleModuleWrapperImpl& w, const torch::Tensor& x) {
        auto h = x * 2.0 + 1.0;
        auto before = h * h;  // saves h before the wrapper frees it
        auto y = w.forward(h);
        return before.sum() + (y * y).sum();
      },
      input);
  EXPECT_LT(error, 1e-10);
}

TEST(Wrapper, SeveralBackwardPassesWithinTheLimit) {
  torch::manual_seed(0);
  auto wrapper = make_wrapper(Coupling::additive, 8, memcnn::InvertibleModuleWrapperOptions().num_bwd_passes(2));
  wrapper->to(torch::kFloat64);
  auto x = torch::rand({2, 8, 4, 4}, torch::kFloat64).requires_grad_();
  auto loss = wrapper->forward(x).pow(2).sum();
  loss.backward({}, /*retain_graph=*/true);
  const auto first = x.grad().clone();
  loss.backward();
  EXPECT_LT(relative_error(x.grad(), 2 * first), 1e-12);
}

TEST(Wrapper, AutogradGradIsSupported) {
  const auto input = torch::randn({2, 8, 4, 4}, torch::kFloat64);
  torch::manual_seed(3);
  auto wrapper = make_wrapper();
  wrapper->to(torch::kFloat64);
  auto plain = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(wrapper->clone());
  plain->options.disable(true);
  auto x1 = input.clone().requires_grad_();
  auto x2 = input.clone().requires_grad_();
  auto g1 = torch::autograd::grad({wrapper->forward(x1).pow(2).sum()}, {x1})[0];
  auto g2 = torch::autograd::grad({plain->forward(x2).pow(2).sum()}, {x2})[0];
  EXPECT_LT(relative_error(g1, g2), 1e-10);
  for (const auto& p : wrapper->parameters()) EXPECT_FALSE(p.grad().defined()) << "grad() must not accumulate";
}

void expect_dropout_replayed(torch::Device device) {
  for (bool fused : {true, false}) {
  auto run = [fused, device](bool preserve, bool disable) {
    torch::manual_seed(11);
    memcnn::AdditiveCoupling coupling(ConvBnRelu(4, 1.0, 0.3), ConvBnRelu(4, 1.0, 0.3));
    coupling->to(device, torch::kFloat64);
    memcnn::InvertibleModuleWrapper wrapper(coupling,
        memcnn::InvertibleModuleWrapperOptions().preserve_rng_state(preserve).disable(disable).fused_backward(fused));
    const auto options = torch::TensorOptions().dtype(torch::kFloat64).device(device);
    torch::manual_seed(5);
    auto x = torch::rand({2, 8, 4, 4}, options).requires_grad_();
    wrapper->forward(x).pow(2).sum().backward();
    const auto after = torch::rand({1}, options);  // the stream after the step
    return std::make_pair(x.grad(), after);
  };
  const auto plain = run(false, true);
  const auto replayed = run(true, false);
  const auto not_replayed = run(false, false);
  EXPECT_LT(relative_error(replayed.first, plain.first), 1e-10);
  EXPECT_GT(relative_error(not_replayed.first, plain.first), 1e-3) << "without replay the masks differ";
  EXPECT_TRUE(torch::equal(replayed.second, plain.second)) << "backward must leave the random stream as forward left it";
  }
}

TEST(Wrapper, DropoutIsReplayedWithPreserveRngState) { expect_dropout_replayed(torch::kCPU); }

TEST(Wrapper, DropoutIsReplayedWithPreserveRngStateOnCuda) {
  MEMCNN_SKIP_WITHOUT_CUDA();
  expect_dropout_replayed(torch::Device(torch::kCUDA, 0));
}

TEST(Wrapper, WrapsAnyModuleWithForwardAndInverse) {
  struct ScaleImpl : torch::nn::Cloneable<ScaleImpl> {
    ScaleImpl() { reset(); }
    void reset() override { s = register_parameter("s", torch::full({1}, 1.5)); }
    torch::Tensor forward(const torch::Tensor& x) { return x * s; }
    torch::Tensor inverse(const torch::Tensor& y) { return y / s; }
    torch::Tensor s;
  };
  memcnn::InvertibleModuleWrapper wrapper(std::make_shared<ScaleImpl>());
  EXPECT_TRUE(memcnn::is_invertible_module(wrapper, {3, 4}));
  auto x = torch::rand({3, 4}).requires_grad_();
  const auto original = x.detach().clone();
  wrapper->forward(x).sum().backward();
  EXPECT_TRUE(torch::allclose(x, original));
  EXPECT_TRUE(torch::allclose(x.grad(), torch::full({3, 4}, 1.5)));
}

}  // namespace
