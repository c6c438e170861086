// InvertibleSequential: a chain that is invertible, trains through one wrapper with the
// gradients of the plain chain, and keeps the memory of a training step flat in depth.

#include "test_util.h"

using namespace memcnn_test;

namespace {

// Conv-BN-ReLU couplings with a small BatchNorm scale: values grow less along the chain, so
// float32 rebuilds stay well inside the tolerance.
std::shared_ptr<memcnn::InvertibleModule> tame_coupling(Coupling kind, int64_t channels) {
  const double bn_scale = kind == Coupling::affine ? 0.1 : 0.3;
  if (kind == Coupling::additive) {
    return memcnn::AdditiveCoupling(ConvBnRelu(channels / 2, bn_scale), ConvBnRelu(channels / 2, bn_scale)).ptr();
  }
  return memcnn::AffineCoupling(ConvBnRelu(channels / 2, bn_scale), ConvBnRelu(channels / 2, bn_scale)).ptr();
}

// 10 couplings and invertible layers, [N, 8, 8, 8] -> [N, 8, 8, 8] through a squeeze to 32 channels.
memcnn::InvertibleSequential make_chain(Coupling kind) {
  memcnn::InvertibleSequential chain;
  for (int i = 0; i < 5; ++i) chain->push_back(tame_coupling(kind, 8));
  chain->push_back(memcnn::ActNorm(8));
  chain->push_back(memcnn::InvertibleConv1x1(memcnn::InvertibleConv1x1Options(8).lu(true)));
  chain->push_back(memcnn::ChannelPermutation(memcnn::ChannelPermutationOptions(8).seed(3)));
  chain->push_back(memcnn::InvertibleDownsampling());
  for (int i = 0; i < 5; ++i) chain->push_back(tame_coupling(kind, 32));
  chain->push_back(memcnn::InvertibleConv1x1(32));
  chain->push_back(memcnn::InvertibleUpsampling());
  return chain;
}

TEST(InvertibleSequential, IsInvertibleAndIndexable) {
  torch::manual_seed(0);
  auto chain = make_chain(Coupling::affine);
  EXPECT_EQ(chain->size(), 16u);
  EXPECT_NE(std::dynamic_pointer_cast<memcnn::ActNormImpl>((*chain)[5]), nullptr);
  chain->to(torch::kFloat64);
  EXPECT_TRUE(memcnn::is_invertible_module(chain, {2, 8, 8, 8}, torch::kFloat64, 1e-10));
  const auto message = error_message([&] { (*chain)[16]; });
  EXPECT_NE(message.find("out of range"), std::string::npos) << message;
}

struct Case {
  Coupling coupling;
  torch::Dtype dtype;
  bool inverse_direction;
  bool fused;
};

std::string describe(const Case& c) {
  return name_of(c.coupling) + (c.dtype == torch::kFloat64 ? "_f64" : "_f32") +
         (c.inverse_direction ? "_inv" : "_fwd") + (c.fused ? "_fused" : "_recompute");
}

std::string case_name(const testing::TestParamInfo<Case>& info) { return describe(info.param); }

// What GoogleTest (and so ctest's test names) print for a case: its name, not its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << describe(c); }

class ChainGradients : public testing::TestWithParam<Case> {};

TEST_P(ChainGradients, OneWrapperEqualsPlain) {
  const auto c = GetParam();
  const double tolerance = c.dtype == torch::kFloat64 ? 1e-10 : 1e-4;
  torch::manual_seed(1);
  auto chain = make_chain(c.coupling);
  chain->to(c.dtype);
  const auto x = torch::rand({4, 8, 8, 8}, c.dtype);
  {
    torch::NoGradGuard no_grad;
    chain->forward(x);  // ActNorm's data-dependent initialisation, before the copies part
  }
  auto saving = memcnn::InvertibleModuleWrapper(chain, memcnn::InvertibleModuleWrapperOptions().fused_backward(c.fused));
  auto plain = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(saving->clone());
  plain->options.disable(true);

  const auto weight = torch::randn({4, 8, 8, 8}, c.dtype);
  auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
  auto y1 = c.inverse_direction ? saving->inverse(x1) : saving->forward(x1);
  EXPECT_EQ(bytes_of(x1), 0u) << "the chain's input was not freed";
  (y1 * weight).sum().backward();
  auto y2 = c.inverse_direction ? plain->inverse(x2) : plain->forward(x2);
  (y2 * weight).sum().backward();

  EXPECT_LT(relative_error(y1, y2), tolerance);
  EXPECT_LT(relative_error(x1, x), tolerance) << "input not rebuilt";
  double worst = relative_error(x1.grad(), x2.grad());
  EXPECT_LT(worst, tolerance) << "input gradient";
  const auto p1 = saving->parameters(), p2 = plain->parameters();
  ASSERT_EQ(p1.size(), p2.size());
  for (std::size_t i = 0; i < p1.size(); ++i) {
    ASSERT_TRUE(p1[i].grad().defined()) << "parameter " << i << " has no gradient";
    const double error = relative_error(p1[i].grad(), p2[i].grad());
    EXPECT_LT(error, tolerance) << "parameter gradient " << i;
    worst = std::max(worst, error);
  }
  const auto b1 = saving->buffers(), b2 = plain->buffers();
  for (std::size_t i = 0; i < b1.size(); ++i) {
    EXPECT_LT(relative_error(b1[i].to(torch::kFloat64), b2[i].to(torch::kFloat64)), tolerance) << "buffer " << i;
  }
  std::cout << "[figure] chain of 10 couplings + 6 layers, " << describe(c) << ": worst relative gradient error "
            << worst << "\n";
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (auto coupling : {Coupling::additive, Coupling::affine}) {
    for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
      for (bool inverse : {false, true}) {
        for (bool fused : {true, false}) cases.push_back({coupling, dtype, inverse, fused});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Chains, ChainGradients, testing::ValuesIn(all_cases()), case_name);

// Peak bytes above the step's start of one forward + backward of a wrapped chain of couplings.
int64_t training_step_peak(int depth, bool saving) {
  torch::manual_seed(0);
  memcnn::InvertibleSequential chain;
  for (int i = 0; i < depth; ++i) chain->push_back(make_coupling(Coupling::additive, 16));
  auto wrapper = memcnn::InvertibleModuleWrapper(chain, memcnn::InvertibleModuleWrapperOptions().disable(!saving));
  auto step = [&] {
    auto x = torch::rand({4, 16, 32, 32}).requires_grad_();
    wrapper->forward(x).sum().backward();
  };
  step();  // allocates the parameters' gradients
  memcnn::MemoryProbe probe;
  step();
  return probe.peak_above_start();
}

TEST(InvertibleSequential, TrainingStepPeakIsFlatInDepth) {
  memcnn::enable_cpu_memory_tracking();
  const auto saving4 = training_step_peak(4, true);
  const auto saving32 = training_step_peak(32, true);
  const auto plain4 = training_step_peak(4, false);
  const auto plain32 = training_step_peak(32, false);
  std::cout << "[figure] peak bytes of one training step, one wrapper around a chain of additive couplings "
            << "(batch 4, 16x32x32): depth 4: " << saving4 << ", depth 32: " << saving32 << " (ratio "
            << double(saving32) / saving4 << "); plain depth 4: " << plain4 << ", depth 32: " << plain32
            << " (ratio " << double(plain32) / plain4 << ")\n";
  EXPECT_LT(std::abs(double(saving32) / saving4 - 1.0), 0.10);
  EXPECT_GT(double(plain32) / plain4, 4.0);
}

TEST(InvertibleSequential, LogDetSumsTheMembers) {
  torch::manual_seed(2);
  auto chain = make_chain(Coupling::affine);
  chain->to(torch::kFloat64);
  chain->eval();
  const auto x = torch::rand({3, 8, 8, 8}, torch::kFloat64);
  auto expected = torch::zeros({3}, torch::kFloat64);
  auto h = x;
  for (std::size_t i = 0; i < chain->size(); ++i) {
    expected = expected + dynamic_cast<memcnn::LogDetModule&>(*(*chain)[i]).log_det({h});
    h = (*chain)[i]->forward_multi({h}).front();
  }
  EXPECT_LT(relative_error(chain->log_det(x), expected), 1e-12);
  EXPECT_GT(expected.abs().max().item<double>(), 0.0);

  memcnn::InvertibleSequential with_plain_module(make_coupling(Coupling::additive, 8),
                                                 memcnn::InvertibleModuleWrapper(memcnn::InvertibleDownsampling()));
  EXPECT_EQ(with_plain_module->log_det(torch::rand({2, 8, 4, 4})).sizes(), torch::IntArrayRef({2}));
}

TEST(InvertibleSequential, CloneAndSaveKeepMembers) {
  torch::manual_seed(3);
  auto chain = make_chain(Coupling::additive);
  auto copy = std::dynamic_pointer_cast<memcnn::InvertibleSequentialImpl>(chain->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_EQ(copy->size(), chain->size());
  const auto x = torch::rand({2, 8, 8, 8});
  chain->eval();
  copy->eval();
  EXPECT_TRUE(torch::allclose(chain->forward(x), copy->forward(x)));
  std::stringstream stream;
  torch::save(chain, stream);
  torch::manual_seed(4);
  auto loaded = make_chain(Coupling::additive);
  torch::load(loaded, stream);
  loaded->eval();
  EXPECT_TRUE(torch::allclose(chain->forward(x), loaded->forward(x)));
}

}  // namespace

namespace {

struct WarningCount {
  WarningCount() {
    memcnn::set_log_handler([this](memcnn::LogLevel level, const std::string& m) {
      if (level != memcnn::LogLevel::Warning) return;
      if (count++ == 0) first = m;
    });
  }
  ~WarningCount() { memcnn::set_log_handler(nullptr); }
  int count = 0;
  std::string first;
};

// Warnings from one training step of 100 wrapped additive Conv-BN-ReLU couplings in float32.
int drift_warnings(double tolerance, std::string* first) {
  torch::manual_seed(6);
  auto stack = make_stack(Coupling::additive, 100, 8, 1,
                          memcnn::InvertibleModuleWrapperOptions().drift_tolerance(tolerance));
  WarningCount warnings;
  auto x = torch::rand({4, 8, 8, 8}).requires_grad_();
  stack.run({x}).front().sum().backward();
  if (first != nullptr) *first = warnings.first;
  return warnings.count;
}

TEST(Drift, HundredDeepAdditiveChainInFloat32) {
  torch::manual_seed(6);
  memcnn::InvertibleSequential chain;
  for (int i = 0; i < 100; ++i) chain->push_back(make_coupling(Coupling::additive, 8));
  const auto x = torch::rand({4, 8, 8, 8});
  const auto buffers_before = chain->buffers().front().clone();
  const auto report = memcnn::measure_drift(*chain, x);
  ASSERT_EQ(report.members.size(), 100u);
  EXPECT_TRUE(torch::equal(chain->buffers().front(), buffers_before)) << "measure_drift must leave no trace";
  double worst_local = 0;
  for (const auto& m : report.members) worst_local = std::max(worst_local, m.local_relative_error);
  torch::Tensor y;
  {
    torch::NoGradGuard no_grad;
    y = chain->forward(x);
  }
  std::cout << "[figure] 100-deep additive Conv-BN-ReLU chain, float32: input rebuilt from the output with max abs "
            << "error " << report.max_abs_error() << " (relative " << report.relative_error() << "); depth 50: relative "
            << report.members[50].relative_error << "; worst single block (relative) " << worst_local
            << "; output max |y| " << y.abs().max().item<double>() << "\n";
  EXPECT_GT(report.relative_error(), 0.0);
  EXPECT_GE(report.members[0].relative_error, report.members[99].relative_error * 0.5);

  std::string first;
  const int with_small = drift_warnings(1e-12, &first);
  const int with_large = drift_warnings(1e-2, nullptr);
  std::cout << "[figure] drift warnings in one training step of 100 wrapped blocks: tolerance 1e-12: " << with_small
            << ", tolerance 1e-2: " << with_large << "\n";
  EXPECT_GT(with_small, 0);
  EXPECT_NE(first.find("memcnn::AdditiveCoupling"), std::string::npos) << first;
  EXPECT_EQ(with_large, 0);
}

}  // namespace
