// Checkpointing: gradients, BatchNorm statistics and dropout as in the plain computation, with
// less activation memory.

#include "test_util.h"

using namespace memcnn_test;

namespace {

// Conv-BN-ReLU layers in a Sequential, each checkpointed or not.
torch::nn::Sequential make_stack(int depth, int64_t channels, bool checkpointed, double dropout = 0.0,
                                 memcnn::CheckpointOptions options = {}) {
  torch::nn::Sequential stack;
  for (int i = 0; i < depth; ++i) {
    ConvBnRelu layer(channels, 1.0, dropout);
    if (checkpointed) {
      stack->push_back(memcnn::Checkpointed(layer, options));
    } else {
      stack->push_back(layer);
    }
  }
  return stack;
}

// The same weights without checkpointing: the plain stack's layers are the clones' contents.
torch::nn::Sequential plain_copy_of(const torch::nn::Sequential& checkpointed) {
  torch::nn::Sequential plain;
  for (const auto& layer : checkpointed->children()) {
    auto wrapped = std::dynamic_pointer_cast<memcnn::CheckpointedImpl>(layer);
    plain->push_back(torch::nn::AnyModule(std::dynamic_pointer_cast<ConvBnReluImpl>(wrapped->module().ptr()->clone())));
  }
  return plain;
}

void expect_same_gradients(const torch::nn::Module& a, const torch::nn::Module& b, double tolerance) {
  const auto pa = a.parameters(), pb = b.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    ASSERT_TRUE(pa[i].grad().defined()) << "parameter " << i << " has no gradient";
    EXPECT_LT(relative_error(pa[i].grad(), pb[i].grad()), tolerance) << "parameter " << i;
  }
}

void expect_same_buffers(const torch::nn::Module& a, const torch::nn::Module& b, double tolerance) {
  const auto ba = a.buffers(), bb = b.buffers();
  ASSERT_EQ(ba.size(), bb.size());
  for (std::size_t i = 0; i < ba.size(); ++i) {
    if (ba[i].is_floating_point()) {
      EXPECT_LT(relative_error(ba[i], bb[i]), tolerance) << "running statistic " << i;
    } else {
      EXPECT_TRUE(torch::equal(ba[i], bb[i])) << "num_batches_tracked " << i << ": " << ba[i].item<int64_t>()
                                              << " vs " << bb[i].item<int64_t>();
    }
  }
}

struct DtypeCase {
  torch::Dtype dtype;
};

std::string describe(const DtypeCase& c) { return c.dtype == torch::kFloat64 ? "f64" : "f32"; }

// What GoogleTest (and so ctest's test names) print for a case.
void PrintTo(const DtypeCase& c, std::ostream* os) { *os << describe(c); }

class CheckpointGradients : public testing::TestWithParam<DtypeCase> {};

TEST_P(CheckpointGradients, ConvBnReluStackEqualsPlain) {
  const auto dtype = GetParam().dtype;
  const double tolerance = dtype == torch::kFloat64 ? 1e-10 : 1e-4;
  torch::manual_seed(0);
  auto checkpointed = make_stack(6, 8, true);
  checkpointed->to(dtype);
  auto plain = plain_copy_of(checkpointed);
  const auto x = torch::rand({4, 8, 6, 6}, dtype);
  const auto weight = torch::randn({4, 8, 6, 6}, dtype);
  auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
  auto y1 = checkpointed->forward(x1);
  (y1 * weight).sum().backward();
  auto y2 = plain->forward(x2);
  (y2 * weight).sum().backward();
  EXPECT_LT(relative_error(y1, y2), tolerance);
  EXPECT_LT(relative_error(x1.grad(), x2.grad()), tolerance);
  expect_same_gradients(*checkpointed, *plain, tolerance);
  expect_same_buffers(*checkpointed, *plain, tolerance);
  std::cout << "[figure] checkpointed Conv-BN-ReLU x6 " << dtype << ": input gradient relative error "
            << relative_error(x1.grad(), x2.grad()) << "\n";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CheckpointGradients,
                         testing::Values(DtypeCase{torch::kFloat64}, DtypeCase{torch::kFloat32}),
                         [](const testing::TestParamInfo<DtypeCase>& info) { return describe(info.param); });

// Two inputs, three outputs (one depending on both inputs), parameters from a module.
struct TwoInThreeOutImpl : torch::nn::Cloneable<TwoInThreeOutImpl> {
  TwoInThreeOutImpl() { reset(); }
  void reset() override {
    a = register_module("a", ConvBnRelu(4));
    b = register_module("b", torch::nn::Linear(6, 6));
  }
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& xs) {
    auto u = a->forward(xs[0]);
    auto v = torch::tanh(b->forward(xs[1]));
    return {u, v * 2, u.mean({1, 2, 3}).unsqueeze(1) * v};
  }
  ConvBnRelu a{nullptr};
  torch::nn::Linear b{nullptr};
};
TORCH_MODULE(TwoInThreeOut);

TEST(Checkpoint, SeveralInputsAndOutputsEqualPlain) {
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tolerance = dtype == torch::kFloat64 ? 1e-10 : 1e-4;
    torch::manual_seed(1);
    TwoInThreeOut module;
    module->to(dtype);
    auto plain = std::dynamic_pointer_cast<TwoInThreeOutImpl>(module->clone());
    const std::vector<torch::Tensor> xs{torch::rand({3, 4, 5, 5}, dtype), torch::rand({3, 6}, dtype)};
    const auto w = torch::randn({3, 6}, dtype);
    auto loss = [&](const std::vector<torch::Tensor>& ys) { return ys[0].pow(2).sum() + (ys[1] * w).sum() + ys[2].sum(); };

    std::vector<torch::Tensor> in1{xs[0].clone().requires_grad_(), xs[1].clone().requires_grad_()};
    std::vector<torch::Tensor> in2{xs[0].clone().requires_grad_(), xs[1].clone().requires_grad_()};
    auto fn = [&](const std::vector<torch::Tensor>& inputs) { return module->forward(inputs); };
    auto ys = memcnn::checkpoint(fn, in1, module->parameters(), module.ptr().get());
    loss(ys).backward();
    loss(plain->forward(in2)).backward();
    for (int i = 0; i < 2; ++i) EXPECT_LT(relative_error(in1[i].grad(), in2[i].grad()), tolerance) << "input " << i;
    expect_same_gradients(*module, *plain, tolerance);
    expect_same_buffers(*module, *plain, tolerance);
  }
}

// One stateful module used twice in a forward, checkpointed or plain at each use: BatchNorm's
// running statistics after the step and the gradients must be those of the plain computation.
// (Backward runs the later use first: restoring each call's own after-forward statistics would
// roll back the later uses' updates; bumping their version would fail a plain use's backward,
// which saved them.)
class StatefulModuleUsedTwice : public testing::TestWithParam<std::pair<bool, bool>> {};

TEST_P(StatefulModuleUsedTwice, BuffersAndGradientsEqualPlain) {
  const auto [first_checkpointed, second_checkpointed] = GetParam();
  torch::manual_seed(0);
  ConvBnRelu op(8);
  op->to(torch::kFloat64);
  auto plain = std::dynamic_pointer_cast<ConvBnReluImpl>(op->clone());
  const auto x = torch::rand({4, 8, 6, 6}, torch::kFloat64);
  const auto weight = torch::randn({4, 8, 6, 6}, torch::kFloat64);
  auto use = [&](const torch::Tensor& input, bool checkpointed) {
    auto fn = [&op](const torch::Tensor& u) { return op->forward(u); };
    return checkpointed ? memcnn::checkpoint(fn, input, op->parameters(), op.ptr().get()) : fn(input);
  };
  auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
  (use(use(x1, first_checkpointed), second_checkpointed) * weight).sum().backward();
  (plain->forward(plain->forward(x2)) * weight).sum().backward();
  expect_same_buffers(*op, *plain, 1e-12);
  expect_same_gradients(*op, *plain, 1e-10);
  EXPECT_LT(relative_error(x1.grad(), x2.grad()), 1e-10);
}

INSTANTIATE_TEST_SUITE_P(Checkpoint, StatefulModuleUsedTwice,
                         testing::Values(std::make_pair(true, true), std::make_pair(true, false),
                                         std::make_pair(false, true)),
                         [](const testing::TestParamInfo<std::pair<bool, bool>>& info) {
                           return std::string(info.param.first ? "checkpointed" : "plain") + "_then_" +
                                  (info.param.second ? "checkpointed" : "plain");
                         });

TEST(Checkpointed, ModuleUsedTwiceLeavesBuffersAsPlain) {
  torch::manual_seed(0);
  ConvBnRelu op(8);
  op->to(torch::kFloat64);
  auto plain = std::dynamic_pointer_cast<ConvBnReluImpl>(op->clone());
  memcnn::Checkpointed checkpointed(op);
  const auto x = torch::rand({4, 8, 6, 6}, torch::kFloat64).requires_grad_();
  for (int step = 0; step < 2; ++step) {
    checkpointed->forward(checkpointed->forward(x)).sum().backward();
    plain->forward(plain->forward(x)).sum().backward();
  }
  expect_same_buffers(*op, *plain, 1e-12);
  expect_same_gradients(*op, *plain, 1e-10);
}

// ActNorm sets its parameters from its first training batch: the recompute in backward must not
// do it again (the parameters would change under the graph, and a second backward pass would
// find them modified).
TEST(Checkpoint, DataDependentInitializationIsNotRedoneInBackward) {
  torch::manual_seed(0);
  memcnn::ActNorm norm(memcnn::ActNormOptions(4));
  norm->to(torch::kFloat64);
  auto plain = std::dynamic_pointer_cast<memcnn::ActNormImpl>(norm->clone());
  const auto x = torch::randn({3, 4, 5, 5}, torch::kFloat64) * 3 + 1;
  auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
  auto fn = [&norm](const torch::Tensor& u) { return norm->forward(u); };
  auto loss = memcnn::checkpoint(fn, x1, norm->parameters(), norm.ptr().get(),
                                 memcnn::CheckpointOptions().num_bwd_passes(2))
                  .pow(3)
                  .sum();
  loss.backward({}, /*retain_graph=*/true);
  loss.backward();
  auto plain_loss = plain->forward(x2).pow(3).sum();
  plain_loss.backward({}, /*retain_graph=*/true);
  plain_loss.backward();
  expect_same_gradients(*norm, *plain, 1e-10);
  EXPECT_LT(relative_error(x1.grad(), x2.grad()), 1e-10);
}

TEST(Checkpoint, SingleTensorOverloadAndUnlistedParametersError) {
  torch::manual_seed(2);
  torch::nn::Linear linear(3, 3);
  auto x = torch::rand({2, 3}).requires_grad_();
  auto y = memcnn::checkpoint([&](const torch::Tensor& t) { return linear->forward(t); }, x, linear->parameters());
  y.sum().backward();
  EXPECT_TRUE(linear->weight.grad().defined());
  EXPECT_TRUE(x.grad().defined());
  const auto message = error_message([&] {
    memcnn::checkpoint([&](const torch::Tensor& t) { return linear->forward(t); }, x, {}, linear.ptr().get());
  });
  EXPECT_NE(message.find("is not in `parameters`"), std::string::npos) << message;
}

void expect_dropout_replayed(torch::Device device) {
  torch::manual_seed(3);
  auto checkpointed = make_stack(3, 4, true, /*dropout=*/0.5);
  checkpointed->to(device, torch::kFloat64);
  auto plain = plain_copy_of(checkpointed);
  const auto options = torch::TensorOptions().dtype(torch::kFloat64).device(device);
  const auto x = torch::rand({2, 4, 5, 5}, options);
  auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
  torch::manual_seed(10);
  checkpointed->forward(x1).pow(2).sum().backward();
  const auto after_checkpointed = torch::rand({1}, options);
  torch::manual_seed(10);
  plain->forward(x2).pow(2).sum().backward();
  const auto after_plain = torch::rand({1}, options);
  EXPECT_LT(relative_error(x1.grad(), x2.grad()), 1e-10);
  expect_same_gradients(*checkpointed, *plain, 1e-10);
  EXPECT_TRUE(torch::equal(after_checkpointed, after_plain)) << "backward changed the surrounding random stream";
}

TEST(Checkpoint, DropoutWithPreservedRngStateEqualsPlain) { expect_dropout_replayed(torch::kCPU); }

TEST(Checkpoint, DropoutWithPreservedRngStateEqualsPlainOnCuda) {
  MEMCNN_SKIP_WITHOUT_CUDA();
  expect_dropout_replayed(torch::Device(torch::kCUDA, 0));
}

TEST(Checkpoint, EvalAndNoGradArePlainCalls) {
  auto stack = make_stack(2, 4, true);
  const auto x = torch::rand({1, 4, 3, 3}).requires_grad_();
  stack->eval();
  EXPECT_EQ(std::string(stack->forward(x).grad_fn()->name()).find("CheckpointNode"), std::string::npos);
  stack->train();
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(stack->forward(x).requires_grad());
  }
  auto y = stack->forward(x);
  EXPECT_NE(std::string(y.grad_fn()->name()).find("CheckpointNode"), std::string::npos) << y.grad_fn()->name();
}

TEST(Checkpoint, BackwardPassesAndDoubleBackwardErrors) {
  torch::manual_seed(4);
  torch::nn::Linear linear(3, 3);
  auto fn = [&](const torch::Tensor& t) { return torch::tanh(linear->forward(t)); };
  auto x = torch::rand({2, 3}).requires_grad_();
  auto y = memcnn::checkpoint(fn, x, linear->parameters());
  y.sum().backward({}, /*retain_graph=*/true);
  auto message = error_message([&] { y.sum().backward(); });
  EXPECT_NE(message.find("num_bwd_passes(2)"), std::string::npos) << message;

  auto y2 = memcnn::checkpoint(fn, x, linear->parameters(), nullptr, memcnn::CheckpointOptions().num_bwd_passes(2));
  y2.sum().backward({}, true);
  y2.sum().backward();

  auto y3 = memcnn::checkpoint(fn, x, linear->parameters());
  message = error_message([&] { torch::autograd::grad({y3.sum()}, {x}, {}, true, /*create_graph=*/true); });
  EXPECT_NE(message.find("double backward"), std::string::npos) << message;
}

int64_t training_step_peak(bool checkpointed) {
  torch::manual_seed(0);
  auto stack = make_stack(16, 16, checkpointed);
  auto step = [&] {
    auto x = torch::rand({4, 16, 32, 32}).requires_grad_();
    stack->forward(x).sum().backward();
  };
  step();  // allocates the parameters' gradients
  memcnn::MemoryProbe probe;
  step();
  return probe.peak_above_start();
}

TEST(Checkpoint, TrainingStepPeakIsLowerThanPlain) {
  memcnn::enable_cpu_memory_tracking();
  const auto plain = training_step_peak(false);
  const auto checkpointed = training_step_peak(true);
  std::cout << "[figure] peak bytes of one training step, 16 Conv-BN-ReLU layers (batch 4, 16x32x32): plain "
            << plain << ", each layer checkpointed " << checkpointed << " (ratio " << double(checkpointed) / plain
            << ")\n";
  // Plain keeps two activations per layer (BatchNorm's input, ReLU's output), checkpointing one.
  EXPECT_LT(double(checkpointed), 0.75 * plain);
}

TEST(Checkpointed, CloneAndSaveKeepTheModule) {
  torch::manual_seed(5);
  memcnn::Checkpointed module(ConvBnRelu(4));
  auto copy = std::dynamic_pointer_cast<memcnn::CheckpointedImpl>(module->clone());
  ASSERT_NE(copy, nullptr);
  const auto a = module->named_parameters(), b = copy->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& entry : a) {
    EXPECT_TRUE(torch::equal(entry.value(), b[entry.key()]));
    EXPECT_NE(entry.value().data_ptr(), b[entry.key()].data_ptr()) << "clone must be deep";
  }
  std::stringstream stream;
  torch::save(module, stream);
  memcnn::Checkpointed loaded(ConvBnRelu(4));
  torch::load(loaded, stream);
  for (const auto& entry : loaded->named_parameters()) EXPECT_TRUE(torch::equal(entry.value(), a[entry.key()]));
}

// Conv-BN-ReLU x depth as a plain torch::nn::Sequential of LibTorch's own modules.
torch::nn::Sequential conv_bn_relu_sequential(int depth, int64_t channels) {
  torch::nn::Sequential sequential;
  for (int i = 0; i < depth; ++i) {
    sequential->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1).bias(false)));
    sequential->push_back(torch::nn::BatchNorm2d(channels));
    sequential->push_back(torch::nn::ReLU());
  }
  return sequential;
}

torch::nn::Sequential deep_copy(const torch::nn::Sequential& sequential) {
  return torch::nn::Sequential(std::dynamic_pointer_cast<torch::nn::SequentialImpl>(sequential->clone()));
}

TEST(Checkpointed, SequentialEqualsPlainSequentialInFloat64) {
  torch::manual_seed(6);
  auto plain = conv_bn_relu_sequential(4, 6);
  plain->to(torch::kFloat64);
  auto inner = deep_copy(plain);
  memcnn::Checkpointed checkpointed(inner);

  // The Sequential's modules themselves, under the Sequential's names.
  const auto inner_parameters = inner->named_parameters();
  const auto wrapped_parameters = checkpointed->named_parameters();
  ASSERT_EQ(wrapped_parameters.size(), inner_parameters.size());
  for (const auto& entry : inner_parameters) {
    const auto* wrapped = wrapped_parameters.find("module." + entry.key());
    ASSERT_NE(wrapped, nullptr) << "module." << entry.key();
    EXPECT_EQ(wrapped->data_ptr(), entry.value().data_ptr()) << entry.key();
  }

  const auto x = torch::rand({3, 6, 7, 7}, torch::kFloat64);
  const auto weight = torch::randn({3, 6, 7, 7}, torch::kFloat64);
  auto x1 = x.clone().requires_grad_(), x2 = x.clone().requires_grad_();
  auto y1 = checkpointed->forward(x1);
  EXPECT_NE(std::string(y1.grad_fn()->name()).find("CheckpointNode"), std::string::npos) << y1.grad_fn()->name();
  (y1 * weight).sum().backward();
  auto y2 = plain->forward(x2);
  (y2 * weight).sum().backward();
  EXPECT_LT(relative_error(y1, y2), 1e-12);
  EXPECT_LT(relative_error(x1.grad(), x2.grad()), 1e-12);
  expect_same_gradients(*inner, *plain, 1e-12);
  // Running statistics (and num_batches_tracked == 1) as after one plain forward, although
  // backward ran the Sequential a second time.
  expect_same_buffers(*inner, *plain, 1e-12);
  for (const auto& entry : inner->named_buffers()) {
    if (entry.key().find("num_batches_tracked") != std::string::npos) {
      EXPECT_EQ(entry.value().item<int64_t>(), 1) << entry.key();
    }
  }
}

TEST(Checkpointed, SequentialCloneSaveAndBadInput) {
  torch::manual_seed(7);
  memcnn::Checkpointed module(conv_bn_relu_sequential(2, 3));
  module->eval();
  auto copy = std::dynamic_pointer_cast<memcnn::CheckpointedImpl>(module->clone());
  ASSERT_NE(copy, nullptr);
  ASSERT_NE(copy->module().get<memcnn::TensorSequentialImpl>().size(), 0u);
  EXPECT_FALSE(copy->is_training());
  const auto a = module->named_parameters(), b = copy->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& entry : a) {
    ASSERT_NE(b.find(entry.key()), nullptr) << entry.key();
    EXPECT_TRUE(torch::equal(entry.value(), b[entry.key()]));
    EXPECT_NE(entry.value().data_ptr(), b[entry.key()].data_ptr()) << "clone must be deep";
  }
  const auto x = torch::rand({2, 3, 4, 4});
  EXPECT_TRUE(torch::equal(module->forward(x), copy->forward(x)));

  std::stringstream stream;
  torch::save(module, stream);
  memcnn::Checkpointed loaded(conv_bn_relu_sequential(2, 3));
  torch::load(loaded, stream);
  for (const auto& entry : loaded->named_parameters()) EXPECT_TRUE(torch::equal(entry.value(), a[entry.key()]));

  auto message = error_message([] { memcnn::Checkpointed empty{torch::nn::Sequential()}; });
  EXPECT_NE(message.find("the Sequential has no modules"), std::string::npos) << message;
  message = error_message([] { memcnn::Checkpointed null{torch::nn::Sequential(nullptr)}; });
  EXPECT_NE(message.find("null holder"), std::string::npos) << message;
}

// The header's promise: a TensorSequential goes where memcnn takes an AnyModule, e.g. F of a
// coupling, whose G is then a deep copy.
TEST(TensorSequential, ServesAsCouplingHalf) {
  torch::manual_seed(9);
  memcnn::AdditiveCoupling coupling(memcnn::TensorSequential(conv_bn_relu_sequential(2, 3)));
  coupling->eval();
  const auto x = torch::rand({2, 6, 5, 5}, torch::kFloat64);
  coupling->to(torch::kFloat64);
  EXPECT_LT(relative_error(coupling->inverse(coupling->forward(x)), x), 1e-12);
  const auto parameters = coupling->named_parameters();
  ASSERT_NE(parameters.find("F.0.weight"), nullptr);
  ASSERT_NE(parameters.find("G.0.weight"), nullptr);
  EXPECT_NE(parameters["F.0.weight"].data_ptr(), parameters["G.0.weight"].data_ptr());
}

// Bytes the graph keeps between forward and backward (the output included), and the peak of
// a whole training step, for 12 Conv-BN-ReLU layers: plain, one checkpointed Sequential, or
// four checkpointed Sequentials of three layers.
struct SequentialMemory {
  int64_t kept_after_forward = 0;
  int64_t step_peak = 0;
};

SequentialMemory sequential_memory(int segments) {
  torch::manual_seed(8);
  constexpr int depth = 12;
  torch::nn::Sequential model;
  if (segments == 0) {
    model = conv_bn_relu_sequential(depth, 8);
  } else {
    for (int i = 0; i < segments; ++i) {
      model->push_back(memcnn::Checkpointed(conv_bn_relu_sequential(depth / segments, 8)));
    }
  }
  auto x = torch::rand({4, 8, 32, 32}).requires_grad_();
  model->forward(x).sum().backward();  // allocates the parameters' gradients
  SequentialMemory result;
  {
    memcnn::MemoryProbe probe;
    auto y = model->forward(x);
    result.kept_after_forward = probe.current_above_start();
    y.sum().backward();
    result.step_peak = probe.peak_above_start();
  }
  return result;
}

TEST(Checkpointed, SequentialSavesMemory) {
  memcnn::enable_cpu_memory_tracking();
  const int64_t activation = 4 * 8 * 32 * 32 * static_cast<int64_t>(sizeof(float));
  const auto plain = sequential_memory(0);
  const auto one = sequential_memory(1);
  const auto four = sequential_memory(4);
  std::cout << "[figure] 12 Conv-BN-ReLU layers (batch 4, 8x32x32; one activation " << activation
            << " bytes): kept after forward / step peak: plain " << plain.kept_after_forward << " / " << plain.step_peak
            << ", one checkpointed Sequential " << one.kept_after_forward << " / " << one.step_peak
            << ", four checkpointed Sequentials " << four.kept_after_forward << " / " << four.step_peak << "\n";
  // Plain keeps two activations per layer (BatchNorm's input, ReLU's output); one checkpointed
  // Sequential only its output (its input is the caller's); four, their outputs.
  EXPECT_GT(plain.kept_after_forward, 20 * activation);
  EXPECT_LT(one.kept_after_forward, 2 * activation);
  EXPECT_LT(four.kept_after_forward, 5 * activation);
  // One segment rebuilds everything in backward; four rebuild a quarter at a time.
  EXPECT_LT(double(four.step_peak), 0.6 * plain.step_peak);
}

}  // namespace
