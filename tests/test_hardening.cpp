// The core under misuse: in-place operations on what a memory-saving block needs in backward,
// exceptions midway through forward and backward, host-device synchronisations in the hot path,
// and random-state replay.

#include "test_util.h"

#include "device_checks.h"
#include "host_reads.h"
#include "invertible_function.h"

#include <memcnn/channel_mixing.h>
#include <memcnn/resampling.h>

#include <functional>

namespace {

using namespace memcnn_test;

constexpr int64_t kChannels = 4;

torch::Tensor input_like_readme(torch::Dtype dtype = torch::kFloat64) {
  return torch::rand({2, kChannels, 6, 6}, dtype).requires_grad_();
}

// ---- 1. In-place operations on tensors a block needs in backward -------------------------------

using InPlace = std::function<void(torch::Tensor&)>;

struct InPlaceCase {
  Coupling coupling;
  bool fused;
  const char* op;
};

InPlace in_place_op(const std::string& name) {
  if (name == "mul") return [](torch::Tensor& y) { y.mul_(2); };
  if (name == "relu") return [](torch::Tensor& y) { y.relu_(); };
  return [](torch::Tensor& y) { y.add_(1); };
}

std::string describe(const InPlaceCase& c) {
  return name_of(c.coupling) + (c.fused ? "_fused_" : "_recompute_") + c.op;
}

void PrintTo(const InPlaceCase& c, std::ostream* os) { *os << describe(c); }

struct Gradients {
  torch::Tensor input;
  std::vector<torch::Tensor> parameters;
};

// y = block(x * 1); op(y); (y^2).sum().backward(), as a user would write it.
Gradients train_step(torch::nn::Module& block, const std::function<torch::Tensor(const torch::Tensor&)>& call,
                     const torch::Tensor& x, const InPlace& op) {
  block.zero_grad();
  auto leaf = x.detach().clone().requires_grad_();
  auto y = call(leaf * 1.0);
  if (op) op(y);
  (y * y).sum().backward();
  Gradients g{leaf.grad().clone(), {}};
  for (const auto& p : block.parameters()) g.parameters.push_back(p.grad().defined() ? p.grad().clone() : p.grad());
  return g;
}

double worst_difference(const Gradients& a, const Gradients& b) {
  double worst = (a.input - b.input).abs().max().item<double>();
  for (std::size_t i = 0; i < a.parameters.size(); ++i) {
    worst = std::max(worst, (a.parameters[i] - b.parameters[i]).abs().max().item<double>());
  }
  return worst;
}

memcnn::InvertibleModuleWrapper wrapped(const std::shared_ptr<memcnn::InvertibleModule>& fn,
                                        memcnn::InvertibleModuleWrapperOptions options) {
  auto w = memcnn::InvertibleModuleWrapper(fn, options);
  w->to(torch::kFloat64);
  return w;
}

class InPlaceOnOutput : public testing::TestWithParam<InPlaceCase> {};

TEST_P(InPlaceOnOutput, RaisesWhereTheBlockRebuildsFromItAndEqualsPlainWhereNot) {
  const auto c = GetParam();
  torch::manual_seed(0);
  const auto options = memcnn::InvertibleModuleWrapperOptions().fused_backward(c.fused);
  auto saving = wrapped(make_coupling(c.coupling, kChannels), options);
  auto plain = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(saving->clone());
  plain->options.disable(true);
  const auto x = input_like_readme();
  const auto op = in_place_op(c.op);
  auto call = [&](memcnn::InvertibleModuleWrapperImpl& w) {
    return [&w](const torch::Tensor& t) { return w.forward(t); };
  };

  const auto message = error_message([&] { train_step(*saving, call(*saving), x, op); });
  EXPECT_NE(message.find("modified by an inplace operation"), std::string::npos) << message;
  EXPECT_NE(message.find("output 0"), std::string::npos) << message;
  EXPECT_NE(message.find("keep_input(true)"), std::string::npos) << message;
  EXPECT_THROW(train_step(*saving, call(*saving), x, op), c10::Error);

  // Kept input: backward recomputes from it and never reads the modified output.
  saving->options.keep_input(true);
  const auto kept = train_step(*saving, call(*saving), x, op);
  const auto reference = train_step(*plain, call(*plain), x, op);
  EXPECT_LT(worst_difference(kept, reference), 1e-12);
  // Without an in-place operation nothing changes.
  saving->options.keep_input(false);
  EXPECT_LT(worst_difference(train_step(*saving, call(*saving), x, nullptr),
                             train_step(*plain, call(*plain), x, nullptr)),
            1e-12);
}

std::vector<InPlaceCase> in_place_cases() {
  std::vector<InPlaceCase> cases;
  for (auto coupling : {Coupling::additive, Coupling::affine}) {
    for (bool fused : {true, false}) {
      for (const char* op : {"mul", "relu", "add"}) cases.push_back({coupling, fused, op});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Wrapper, InPlaceOnOutput, testing::ValuesIn(in_place_cases()),
                         [](const testing::TestParamInfo<InPlaceCase>& info) { return describe(info.param); });

TEST(InPlace, ExactCouplingOutputModifiedRaises) {
  torch::manual_seed(0);
  auto coupling = memcnn::AdditiveCoupling(ConvBnRelu(2), ConvBnRelu(2), memcnn::AdditiveCouplingOptions().exact(true));
  auto saving = memcnn::InvertibleModuleWrapper(coupling);
  const auto x = memcnn::quantize_to_grid(torch::rand({2, kChannels, 6, 6}), memcnn::kDefaultFractionBits);
  auto call = [&](const torch::Tensor& t) { return saving->forward(t); };
  const auto message = error_message([&] { train_step(*saving, call, x, in_place_op("relu")); });
  EXPECT_NE(message.find("modified by an inplace operation"), std::string::npos) << message;
}

TEST(InPlace, SequentialChainOutputModifiedRaises) {
  torch::manual_seed(0);
  memcnn::InvertibleSequential chain;
  for (int i = 0; i < 3; ++i) chain->push_back(make_coupling(Coupling::additive, kChannels));
  for (bool fused : {true, false}) {
    auto saving = wrapped(chain.ptr(), memcnn::InvertibleModuleWrapperOptions().fused_backward(fused));
    auto call = [&](const torch::Tensor& t) { return saving->forward(t); };
    EXPECT_THROW(train_step(*saving, call, input_like_readme(), in_place_op("mul")), c10::Error) << fused;
  }
}

TEST(InPlace, KeptInputModifiedAfterForwardRaises) {
  torch::manual_seed(0);
  auto saving = wrapped(make_coupling(Coupling::additive, kChannels), memcnn::InvertibleModuleWrapperOptions().keep_input(true));
  auto x = input_like_readme();
  auto input = x * 1.0;
  auto y = saving->forward(input);
  input.mul_(3);
  const auto message = error_message([&] { (y * y).sum().backward(); });
  EXPECT_NE(message.find("modified by an inplace operation"), std::string::npos) << message;
  EXPECT_NE(message.find("input 0"), std::string::npos) << message;
}

TEST(InPlace, ChainOfWrappersWithInPlaceBetweenRaises) {
  torch::manual_seed(0);
  auto first = wrapped(make_coupling(Coupling::additive, kChannels), {});
  auto second = wrapped(make_coupling(Coupling::additive, kChannels), {});
  auto x = input_like_readme();
  auto h = first->forward(x * 1.0);
  h.relu_();  // as a torch::nn::ReLU(inplace) between two reversible blocks would
  auto y = second->forward(h);
  EXPECT_THROW((y * y).sum().backward(), c10::Error);
}

TEST(InPlace, CheckpointOutputModifiedEqualsPlainAndInputModifiedRaises) {
  torch::manual_seed(0);
  ConvBnRelu op(kChannels);
  op->to(torch::kFloat64);
  const auto x = input_like_readme();
  // Convolution and BatchNorm: nothing saves the output, so plain autograd allows modifying it.
  auto conv_bn = [&](const torch::Tensor& u) { return op->bn->forward(op->conv->forward(u)); };
  auto checkpointed = [&](const torch::Tensor& t) {
    return memcnn::checkpoint(conv_bn, t, op->parameters(), op.ptr().get());
  };
  auto direct = conv_bn;
  for (const char* name : {"mul", "relu", "add"}) {
    const auto a = train_step(*op, checkpointed, x, in_place_op(name));
    const auto b = train_step(*op, direct, x, in_place_op(name));
    EXPECT_LT(worst_difference(a, b), 1e-12) << name;
  }
  auto input = x * 1.0;
  auto y = checkpointed(input);
  input.add_(1);
  const auto message = error_message([&] { y.sum().backward(); });
  EXPECT_NE(message.find("modified by an inplace operation"), std::string::npos) << message;
}

// ---- 1b. Parameters changed in place between forward and backward ------------------------------
//
// Backward runs a memory-saving block (or a checkpointed function) again with its parameters; one
// changed in place since forward would give gradients of other weights. Plain autograd raises
// (convolution saves its weight), and so must memcnn, wherever it runs a call again.

// A module with memory saving that can also run plain (the reference), and num_bwd_passes 2.
struct SavingBlock {
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&, bool saving)> run;
  torch::Tensor changed;      // the parameter the test changes: G's (or the only) convolution weight
  std::string changed_name;   // how the error must name it
};

SavingBlock wrapper_block(const std::shared_ptr<memcnn::InvertibleModule>& fn,
                          memcnn::InvertibleModuleWrapperOptions options) {
  auto w = wrapped(fn, options.num_bwd_passes(2));
  const auto named = fn->named_parameters();
  std::string name;
  for (const auto& p : named) {
    if (p.key().size() >= 11 && p.key().compare(p.key().size() - 11, 11, "conv.weight") == 0) name = p.key();
  }
  auto run = [w](const torch::Tensor& x, bool saving) mutable {
    w->options.disable(!saving);
    return w->forward(x);
  };
  return {w.ptr(), run, *named.find(name), "'" + name + "'"};
}

memcnn::InvertibleSequential chain_of_couplings(int length) {
  memcnn::InvertibleSequential chain;
  for (int i = 0; i < length; ++i) chain->push_back(make_coupling(Coupling::additive, kChannels));
  return chain;
}

SavingBlock checkpoint_block(bool stateful) {
  ConvBnRelu op(kChannels);
  op->to(torch::kFloat64);
  const auto options = memcnn::CheckpointOptions().num_bwd_passes(2);
  auto run = [op, stateful, options](const torch::Tensor& x, bool saving) {
    auto fn = [op](const torch::Tensor& u) mutable { return op->forward(u); };
    return saving ? memcnn::checkpoint(fn, x, op->parameters(), stateful ? op.ptr().get() : nullptr, options) : fn(x);
  };
  return {op.ptr(), run, op->conv->weight,
          stateful ? "'conv.weight'" : "number 0 of the list passed in"};
}

SavingBlock checkpointed_module_block() {
  ConvBnRelu op(kChannels);
  memcnn::Checkpointed checkpointed(op, memcnn::CheckpointOptions().num_bwd_passes(2));
  checkpointed->to(torch::kFloat64);
  auto run = [checkpointed, op](const torch::Tensor& x, bool saving) mutable {
    return saving ? checkpointed->forward(x) : op->forward(x);
  };
  return {checkpointed.ptr(), run, op->conv->weight, "'conv.weight'"};
}

SavingBlock make_saving_block(const std::string& kind) {
  torch::manual_seed(0);
  using Options = memcnn::InvertibleModuleWrapperOptions;
  if (kind == "additive_fused") return wrapper_block(make_coupling(Coupling::additive, kChannels), Options());
  if (kind == "affine_fused") return wrapper_block(make_coupling(Coupling::affine, kChannels), Options());
  if (kind == "affine_recompute") {
    return wrapper_block(make_coupling(Coupling::affine, kChannels), Options().fused_backward(false));
  }
  if (kind == "additive_keep_input") {
    return wrapper_block(make_coupling(Coupling::additive, kChannels), Options().keep_input(true));
  }
  if (kind == "sequential_fused") return wrapper_block(chain_of_couplings(3).ptr(), Options());
  if (kind == "sequential_recompute") return wrapper_block(chain_of_couplings(3).ptr(), Options().fused_backward(false));
  if (kind == "checkpoint") return checkpoint_block(/*stateful=*/true);
  if (kind == "checkpoint_without_module") return checkpoint_block(/*stateful=*/false);
  return checkpointed_module_block();
}

const std::vector<std::string> kSavingBlocks = {"additive_fused",       "affine_fused",     "affine_recompute",
                                                "additive_keep_input",  "sequential_fused", "sequential_recompute",
                                                "checkpoint",           "checkpoint_without_module",
                                                "checkpointed_module"};

// What a user does to a parameter between forward and the (next) backward.
using ParameterChange = std::function<void(SavingBlock&, torch::Tensor& loss)>;

ParameterChange parameter_change(const std::string& name) {
  if (name == "step_between_two_backward_passes") {
    return [](SavingBlock& block, torch::Tensor& loss) {
      loss.backward({}, /*retain_graph=*/true);
      // Adam: LibTorch 1.13's SGD writes through .data(), which no version counter sees, so
      // neither plain autograd nor memcnn can tell (Python's SGD, which bumps it, is tested in
      // python/tests/test_inplace.py).
      torch::optim::Adam(block.module->parameters(), torch::optim::AdamOptions(0.01)).step();
    };
  }
  if (name == "clamp_under_no_grad") {
    return [](SavingBlock& block, torch::Tensor&) {
      torch::NoGradGuard no_grad;
      block.changed.clamp_(-0.05, 0.05);
    };
  }
  return [](SavingBlock& block, torch::Tensor&) {  // averaging with other weights, as in SWA or EMA
    torch::NoGradGuard no_grad;
    block.changed.mul_(0.5).add_(torch::ones_like(block.changed), 0.5);
  };
}

struct ParameterChangeCase {
  std::string block, change;
};

void PrintTo(const ParameterChangeCase& c, std::ostream* os) { *os << c.block << "_" << c.change; }

class ParameterChangedBetweenForwardAndBackward : public testing::TestWithParam<ParameterChangeCase> {};

TEST_P(ParameterChangedBetweenForwardAndBackward, RaisesNamingTheParameterAsPlainAutogradDoes) {
  const auto c = GetParam();
  for (bool saving : {true, false}) {
    auto block = make_saving_block(c.block);
    auto loss = block.run(input_like_readme() * 1.0, saving).pow(2).sum();
    parameter_change(c.change)(block, loss);
    const auto message = error_message([&] { loss.backward(); });
    EXPECT_NE(message.find("modified by an inplace operation"), std::string::npos) << saving << ": " << message;
    if (!saving) continue;  // plain autograd names no parameter
    // A step changes every parameter, and the first is named; the others change one.
    const bool step = c.change == "step_between_two_backward_passes";
    const std::string named = step && block.changed_name[0] == '\'' ? "'" : step ? "number " : block.changed_name;
    EXPECT_NE(message.find("parameter " + named), std::string::npos) << message;
    EXPECT_NE(message.find("Change parameters only after every backward pass"), std::string::npos) << message;
  }
}

std::vector<ParameterChangeCase> parameter_change_cases() {
  std::vector<ParameterChangeCase> cases;
  for (const auto& block : kSavingBlocks) {
    for (const char* change : {"step_between_two_backward_passes", "clamp_under_no_grad", "averaging"}) {
      cases.push_back({block, change});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(
    Core, ParameterChangedBetweenForwardAndBackward, testing::ValuesIn(parameter_change_cases()),
    [](const testing::TestParamInfo<ParameterChangeCase>& info) { return info.param.block + "_" + info.param.change; });

// The input's and the parameters' gradients of one training step (gradients accumulate over
// `passes` backward passes through the same graph).
Gradients gradients_of_step(SavingBlock& block, const torch::Tensor& x, bool saving, int passes) {
  block.module->zero_grad();
  auto leaf = x.detach().clone().requires_grad_();
  auto loss = block.run(leaf * 1.0, saving).pow(2).sum();
  for (int pass = 0; pass < passes; ++pass) loss.backward({}, /*retain_graph=*/pass + 1 < passes);
  Gradients g{leaf.grad().clone(), {}};
  for (const auto& p : block.module->parameters()) g.parameters.push_back(p.grad().clone());
  return g;
}

class UnchangedParameters : public testing::TestWithParam<std::string> {};

double worst_relative_difference(const Gradients& a, const Gradients& b) {
  double worst = relative_error(a.input, b.input);
  for (std::size_t i = 0; i < a.parameters.size(); ++i) {
    worst = std::max(worst, relative_error(a.parameters[i], b.parameters[i]));
  }
  return worst;
}

TEST_P(UnchangedParameters, TwoBackwardPassesAndAStepAfterBackwardEqualPlainInFloat64) {
  auto block = make_saving_block(GetParam());
  const auto x = input_like_readme();
  EXPECT_LT(worst_relative_difference(gradients_of_step(block, x, true, 2), gradients_of_step(block, x, false, 2)),
            1e-10);
  // A step after backward, then a new forward: the versions forward records are the new ones.
  torch::optim::Adam optimizer(block.module->parameters(), torch::optim::AdamOptions(0.01));
  for (int step = 0; step < 2; ++step) {
    const auto saving = gradients_of_step(block, x, true, 1);
    EXPECT_LT(worst_relative_difference(saving, gradients_of_step(block, x, false, 1)), 1e-10) << "step " << step;
    optimizer.step();
  }
}

INSTANTIATE_TEST_SUITE_P(Core, UnchangedParameters, testing::ValuesIn(kSavingBlocks),
                         [](const testing::TestParamInfo<std::string>& info) { return info.param; });

// ---- 2. Exceptions midway -------------------------------------------------------------------

std::vector<torch::Tensor> clones(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> result;
  for (const auto& t : tensors) result.push_back(t.detach().clone());
  return result;
}

void expect_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_GT(bytes_of(a[i]), 0u) << what << " " << i << " lost its storage";
    EXPECT_TRUE(torch::equal(a[i], b[i])) << what << " " << i;
  }
}

struct HookReset {
  ~HookReset() { memcnn::detail::set_free_preparation_hook_for_testing(nullptr); }
};

TEST(FailedForward, InjectedFailureAtTheKthInputLeavesEveryInputAndBufferIntact) {
  constexpr int64_t kTensors = 3;
  for (int64_t k = 0; k < kTensors; ++k) {
    torch::manual_seed(0);
    auto saving = memcnn::InvertibleModuleWrapper(make_coupling(Coupling::additive, kChannels, kTensors),
                                                  memcnn::InvertibleModuleWrapperOptions().preserve_rng_state(true));
    std::vector<torch::Tensor> inputs;
    for (int64_t i = 0; i < kTensors; ++i) inputs.push_back(torch::rand({2, kChannels, 6, 6}).requires_grad_() * 1.0);
    const auto inputs_before = clones(inputs);
    const auto buffers_before = clones(saving->buffers());
    HookReset reset;
    memcnn::detail::set_free_preparation_hook_for_testing([k](std::size_t i) {
      TORCH_CHECK(static_cast<int64_t>(i) != k, "injected failure at input ", i);
    });
    const auto message = error_message([&] { saving->forward_multi(inputs); });
    EXPECT_NE(message.find("injected failure at input " + std::to_string(k)), std::string::npos) << message;
    expect_equal(inputs, inputs_before, "input");
    expect_equal(saving->buffers(), buffers_before, "buffer");
  }
}

TEST(FailedForward, RandomStateIsRestoredWithPreserveRngState) {
  torch::manual_seed(0);
  auto saving = memcnn::InvertibleModuleWrapper(
      memcnn::AdditiveCoupling(ConvBnRelu(kChannels / 2, 1.0, 0.5), ConvBnRelu(kChannels / 2, 1.0, 0.5)),
      memcnn::InvertibleModuleWrapperOptions().preserve_rng_state(true));
  auto x = torch::rand({2, kChannels, 6, 6}).requires_grad_() * 1.0;
  torch::manual_seed(7);
  const auto expected_draw = torch::rand({4});
  torch::manual_seed(7);
  HookReset reset;
  memcnn::detail::set_free_preparation_hook_for_testing([](std::size_t) { TORCH_CHECK(false, "injected failure"); });
  EXPECT_THROW(saving->forward(x), c10::Error);
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected_draw)) << "the failed forward's dropout draws stayed drawn";
}

// Runs its BatchNorm, then throws when asked: a forward that fails after changing buffers.
struct FailingAfterBatchNormImpl : torch::nn::Cloneable<FailingAfterBatchNormImpl> {
  FailingAfterBatchNormImpl() { reset(); }
  void reset() override { bn = register_module("bn", torch::nn::BatchNorm2d(kChannels / 2)); }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = bn->forward(x);
    TORCH_CHECK(!fail, "G failed on purpose");
    return h;
  }
  torch::nn::BatchNorm2d bn{nullptr};
  bool fail = false;
};
TORCH_MODULE(FailingAfterBatchNorm);

TEST(FailedForward, SubModuleThrowingMidwayLeavesBuffersAsBefore) {
  torch::manual_seed(0);
  FailingAfterBatchNorm g;
  g->fail = true;
  auto saving = memcnn::InvertibleModuleWrapper(memcnn::AdditiveCoupling(ConvBnRelu(kChannels / 2), g));
  auto x = torch::rand({2, kChannels, 6, 6}).requires_grad_() * 1.0;
  const auto x_before = x.detach().clone();
  const auto buffers_before = clones(saving->buffers());
  EXPECT_THROW(saving->forward(x), c10::Error);
  expect_equal({x}, {x_before}, "input");
  expect_equal(saving->buffers(), buffers_before, "buffer");
}

TEST(FailedBackward, ExactRebuildWithOtherBitsRaisesAndRestoresBuffers) {
  torch::manual_seed(0);
  // Dropout without preserve_rng_state: the rebuild draws other numbers than forward.
  auto coupling = memcnn::AdditiveCoupling(ConvBnRelu(2, 1.0, 0.5), ConvBnRelu(2, 1.0, 0.5),
                                           memcnn::AdditiveCouplingOptions().exact(true));
  auto saving = memcnn::InvertibleModuleWrapper(coupling);
  auto x = memcnn::quantize_to_grid(torch::rand({2, kChannels, 6, 6}), memcnn::kDefaultFractionBits).requires_grad_();
  auto input = x * 1.0;
  auto y = saving->forward(input);
  ASSERT_TRUE(memcnn::is_freed(input));
  const auto buffers_after_forward = clones(saving->buffers());
  const auto message = error_message([&] { y.sum().backward(); });
  EXPECT_NE(message.find("other bits"), std::string::npos) << message;
  EXPECT_TRUE(memcnn::is_freed(input)) << "a rebuild with wrong bits was written back";
  expect_equal(saving->buffers(), buffers_after_forward, "buffer");
}

// ---- 3. Host-device synchronisations --------------------------------------------------------

struct SyncCase {
  const char* name;
  std::function<std::shared_ptr<memcnn::InvertibleModule>()> make;
  bool exact;
};

std::vector<SyncCase> sync_cases() {
  auto exact = [] {
    return memcnn::AdditiveCoupling(ConvBnRelu(2), ConvBnRelu(2), memcnn::AdditiveCouplingOptions().exact(true)).ptr();
  };
  auto chain = [] {
    memcnn::InvertibleSequential c;
    for (int i = 0; i < 3; ++i) c->push_back(make_coupling(Coupling::affine, kChannels));
    return c.ptr();
  };
  // Down to [N, 4 * kChannels, H/2, W/2], mixed, and up again (Cayley, the default method; LibTorch's
  // matrix_exp reads the matrices' norms on the host).
  auto resampling = [](bool learnable) {
    return [learnable] {
      const auto options = memcnn::OrthogonalResamplingOptions(kChannels, {2, 2}).learnable(learnable);
      const auto mixing = memcnn::OrthogonalChannelMixingOptions(4 * kChannels).learnable(learnable);
      const auto chain = memcnn::InvertibleSequential(memcnn::OrthogonalDownsampling(options),
                                                      memcnn::OrthogonalChannelMixing(mixing),
                                                      memcnn::OrthogonalUpsampling(options));
      return chain.ptr();
    };
  };
  return {{"additive", [] { return make_coupling(Coupling::additive, kChannels); }, false},
          {"affine", [] { return make_coupling(Coupling::affine, kChannels); }, false},
          {"chain", chain, false},
          {"exact", exact, true},
          {"channel mixing", [] { return memcnn::OrthogonalChannelMixing(kChannels).ptr(); }, false},
          {"resampling", resampling(true), false},
          {"fixed resampling", resampling(false), false}};
}

struct StepSyncs {
  int forward_reads = 0, backward_reads = 0, copies = 0;
};

// Forward and backward of three wrapped blocks, counting host reads in each and copies between
// host and device in both. `deferred`: CPU tensors are treated as a CUDA device's (the path
// CUDA takes).
StepSyncs syncs_of_step(const SyncCase& c, bool fused, bool deferred, torch::Device device = torch::kCPU) {
  torch::manual_seed(0);
  std::vector<memcnn::InvertibleModuleWrapper> blocks;
  for (int i = 0; i < 3; ++i) {
    blocks.emplace_back(c.make(), memcnn::InvertibleModuleWrapperOptions().fused_backward(fused));
    blocks.back()->to(device);
  }
  auto x = memcnn::quantize_to_grid(torch::rand({2, kChannels, 6, 6}, device), memcnn::kDefaultFractionBits);
  x.relu_();  // exact zeros: the ordinary blocks keep their positions
  x.requires_grad_();
  std::optional<memcnn::detail::DeferHostReadsForTesting> defer;
  if (deferred) defer.emplace();
  StepSyncs syncs;
  CrossDeviceCopyCounter copies;
  HostReadCounter reads;
  auto h = x * 1.0;
  for (auto& b : blocks) h = b->forward(h);
  syncs.forward_reads = reads.take();
  h.sum().backward();
  syncs.backward_reads = reads.take();
  syncs.copies = copies.take();
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0);
  return syncs;
}

TEST(HostSyncs, CountersSeeAnItemAndACopyBetweenDevices) {
  HostReadCounter reads;
  CrossDeviceCopyCounter copies;
  (void)torch::ones({2}).sum().item<double>();
  (void)torch::ones({2}).to(torch::kMeta);  // a device without hardware: only shapes are computed
  EXPECT_EQ(reads.take(), 1);
  EXPECT_EQ(copies.take(), 1);
}

TEST(HostSyncs, NoneInAWrappedTrainingStep) {
  for (const auto& c : sync_cases()) {
    for (bool fused : {true, false}) {
      for (bool deferred : {false, true}) {
        const auto syncs = syncs_of_step(c, fused, deferred);
        const std::string what = std::string(c.name) + (fused ? " fused" : " recompute") +
                                 (deferred ? " (as on CUDA)" : " (CPU)");
        EXPECT_EQ(syncs.forward_reads, 0) << what << ": forward";
        // An exact block's checksums, on a device, are read once the whole backward is done.
        EXPECT_EQ(syncs.backward_reads, c.exact && deferred ? 1 : 0) << what << ": backward";
      }
    }
  }
}

TEST(HostSyncs, NoneInAWrappedTrainingStepOnCuda) {
  MEMCNN_SKIP_WITHOUT_CUDA();
  ExactFloat32OnCuda exact_float32;
  for (const auto& c : sync_cases()) {
    for (bool fused : {true, false}) {
      const auto syncs = syncs_of_step(c, fused, /*deferred=*/false, torch::kCUDA);
      const std::string what = std::string(c.name) + (fused ? " fused" : " recompute");
      EXPECT_EQ(syncs.forward_reads, 0) << what << ": forward";
      EXPECT_EQ(syncs.backward_reads, c.exact ? 1 : 0) << what << ": backward";
      EXPECT_EQ(syncs.copies, 0) << what << ": copies between host and device";
    }
  }
}

TEST(HostSyncs, DeferredExactCheckStillCatchesARebuildWithOtherBits) {
  torch::manual_seed(0);
  auto coupling = memcnn::AdditiveCoupling(ConvBnRelu(2, 1.0, 0.5), ConvBnRelu(2, 1.0, 0.5),
                                           memcnn::AdditiveCouplingOptions().exact(true));
  auto saving = memcnn::InvertibleModuleWrapper(coupling);
  auto x = memcnn::quantize_to_grid(torch::rand({2, kChannels, 6, 6}), memcnn::kDefaultFractionBits).requires_grad_();
  memcnn::detail::DeferHostReadsForTesting defer;
  auto y = saving->forward(x * 1.0);
  const auto message = error_message([&] { y.sum().backward(); });
  EXPECT_NE(message.find("other bits"), std::string::npos) << message;
  // The next backward pass is not affected by the failed one's checks.
  auto z = saving->forward(x * 1.0);
  saving->options.preserve_rng_state(true);
  auto w = saving->forward(x * 1.0);
  EXPECT_NO_THROW(w.sum().backward());
  (void)z;
}

TEST(HostSyncs, ExactCheckOnCudaCatchesARebuildWithOtherBitsAfterBackward) {
  MEMCNN_SKIP_WITHOUT_CUDA();
  torch::manual_seed(0);
  auto coupling = memcnn::AdditiveCoupling(ConvBnRelu(2, 1.0, 0.5), ConvBnRelu(2, 1.0, 0.5),
                                           memcnn::AdditiveCouplingOptions().exact(true));
  auto saving = memcnn::InvertibleModuleWrapper(coupling);
  saving->to(torch::kCUDA);
  auto x = memcnn::quantize_to_grid(torch::rand({2, kChannels, 6, 6}, torch::kCUDA), memcnn::kDefaultFractionBits)
               .requires_grad_();
  auto y = saving->forward(x * 1.0);
  const auto message = error_message([&] { y.sum().backward(); });
  EXPECT_NE(message.find("other bits"), std::string::npos) << message;
}

TEST(HostSyncs, DeferredExactCheckCatchesAStepBeyondTheGridsRange) {
  torch::manual_seed(0);
  auto coupling = memcnn::AdditiveCoupling(ConvBnRelu(2), ConvBnRelu(2),
                                           memcnn::AdditiveCouplingOptions().exact(true).fraction_bits(20));
  auto saving = memcnn::InvertibleModuleWrapper(coupling);
  // 2^(24-20) = 16: values near 100 cannot be added exactly on a grid of 2^-20.
  auto x = memcnn::quantize_to_grid(torch::rand({2, kChannels, 6, 6}) * 100, 20).requires_grad_();
  {
    memcnn::detail::DeferHostReadsForTesting defer;
    auto y = saving->forward(x * 1.0);
    EXPECT_THROW(y.sum().backward(), c10::Error);
  }
  // On the CPU the same call keeps its input and trains on.
  const auto fallbacks = memcnn::exact_rebuild_fallbacks();
  auto y = saving->forward(x * 1.0);
  EXPECT_NO_THROW(y.sum().backward());
  EXPECT_GT(memcnn::exact_rebuild_fallbacks(), fallbacks);
}

// ---- 4. Random-state replay -----------------------------------------------------------------

TEST(RngReplay, SequentialWithDropoutEqualsPlainWithPreserveRngState) {
  for (bool fused : {true, false}) {
    torch::manual_seed(0);
    memcnn::InvertibleSequential chain;
    for (int i = 0; i < 3; ++i) {
      chain->push_back(memcnn::AdditiveCoupling(ConvBnRelu(kChannels / 2, 1.0, 0.3), ConvBnRelu(kChannels / 2, 1.0, 0.3)));
    }
    auto saving = wrapped(chain.ptr(), memcnn::InvertibleModuleWrapperOptions().preserve_rng_state(true).fused_backward(fused));
    auto plain = std::dynamic_pointer_cast<memcnn::InvertibleModuleWrapperImpl>(saving->clone());
    plain->options.disable(true);
    const auto x = input_like_readme();
    auto step = [&](memcnn::InvertibleModuleWrapperImpl& w) {
      torch::manual_seed(42);
      auto g = train_step(w, [&w](const torch::Tensor& t) { return w.forward(t); }, x, nullptr);
      return std::make_pair(g, torch::rand({3}));  // the stream after the step
    };
    const auto a = step(*saving);
    const auto b = step(*plain);
    EXPECT_LT(worst_difference(a.first, b.first), 1e-10) << fused;
    EXPECT_TRUE(torch::equal(a.second, b.second)) << "the replay moved the surrounding random stream, fused=" << fused;
  }
}

// An invertible block whose inverse throws: measure_drift fails midway.
struct FailingInverseImpl : torch::nn::Cloneable<FailingInverseImpl>, memcnn::InvertibleModule {
  void reset() override { bn = register_module("bn", torch::nn::BatchNorm2d(kChannels)); }
  FailingInverseImpl() { reset(); }
  std::vector<torch::Tensor> forward_multi(const std::vector<torch::Tensor>& xs) override {
    (void)torch::rand({1});
    return {bn->forward(xs.front()) * 0 + xs.front()};
  }
  std::vector<torch::Tensor> inverse_multi(const std::vector<torch::Tensor>&) override {
    TORCH_CHECK(false, "inverse failed on purpose");
  }
  torch::nn::BatchNorm2d bn{nullptr};
};

TEST(RngReplay, MeasureDriftLeavesGeneratorsAndBuffersAsBeforeWhenItThrows) {
  torch::manual_seed(0);
  memcnn::InvertibleSequential chain;
  chain->push_back(make_coupling(Coupling::additive, kChannels));
  chain->push_back(std::make_shared<FailingInverseImpl>());
  const auto buffers_before = clones(chain->buffers());
  torch::manual_seed(5);
  const auto input = torch::rand({2, kChannels, 6, 6});
  const auto expected = torch::rand({4});  // the stream right after the input
  torch::manual_seed(5);
  (void)torch::rand({2, kChannels, 6, 6});
  EXPECT_THROW(memcnn::measure_drift(*chain, input), c10::Error);
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected)) << "measure_drift moved the random stream";
  expect_equal(chain->buffers(), buffers_before, "buffer");
}

}  // namespace
