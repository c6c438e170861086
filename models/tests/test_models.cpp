// The RevNet experiment models: MemCNN's parameter counts, shapes, memory-saving structure,
// and that a few SGD steps on a small generated problem lower the loss.

#include <memcnn/models/resnet.h>

#include <memcnn/memory.h>
#include <memcnn/wrapper.h>

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace {

using memcnn::models::count_parameters;
using memcnn::models::make_model;
using memcnn::models::model_names;

TEST(Models, ParameterCountsEqualMemcnnTable) {
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"resnet32", 466906}, {"resnet110", 1730714}, {"resnet164", 1704154},
      {"revnet38", 573994}, {"revnet110", 1854890}, {"revnet164", 1983786}};
  for (const auto& [name, count] : expected) {
    EXPECT_EQ(count_parameters(*make_model(name)), count) << name;
  }
}

TEST(Models, UnknownNameListsTheValidOnes) {
  try {
    make_model("resnet18");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("revnet164"), std::string::npos) << e.what();
  }
}

TEST(Models, AnyInputSizeAndChannelCount) {
  for (const auto& name : model_names()) {
    auto model = make_model(name, /*num_classes=*/7, /*in_channels=*/1);
    model->eval();
    torch::NoGradGuard no_grad;
    EXPECT_EQ(model->forward(torch::rand({2, 1, 28, 28})).sizes(), torch::IntArrayRef({2, 7})) << name;
    auto cifar = make_model(name, 100);
    cifar->eval();
    EXPECT_EQ(cifar->forward(torch::rand({3, 3, 32, 32})).sizes(), torch::IntArrayRef({3, 100})) << name;
  }
}

TEST(Models, RevNetsWrapExactlyTheShapeKeepingBlocks) {
  // 3 stages of n blocks, the first block of stages 2 and 3 (and of stage 1 for bottlenecks,
  // which widen) is a plain projection block.
  EXPECT_EQ(make_model("revnet38")->wrappers().size(), 3u * 3 - 2);
  EXPECT_EQ(make_model("revnet110")->wrappers().size(), 3u * 9 - 2);
  EXPECT_EQ(make_model("revnet164")->wrappers().size(), 3u * 9 - 3);
  EXPECT_TRUE(make_model("resnet110")->wrappers().empty());
}

TEST(Models, RevNetActivationMemoryBelowResNet) {
  memcnn::enable_cpu_memory_tracking();
  auto peak_of_step = [](const std::string& name) {
    torch::manual_seed(0);
    auto model = make_model(name);
    auto x = torch::rand({8, 3, 32, 32});
    model->forward(x).sum().backward();  // allocates the gradients once
    memcnn::MemoryProbe probe;
    model->forward(x).sum().backward();
    return probe.peak_above_start();
  };
  const auto resnet = peak_of_step("resnet110");
  const auto revnet = peak_of_step("revnet110");
  std::cout << "[figure] peak step bytes above start, batch 8: resnet110 " << resnet << ", revnet110 " << revnet << "\n";
  EXPECT_LT(revnet * 3, resnet);
}

TEST(Models, CheckpointedTransitionsKeepGradientsAndSaveMemory) {
  memcnn::enable_cpu_memory_tracking();
  auto run = [](bool checkpointed, int64_t* peak) {
    torch::manual_seed(0);
    auto options = memcnn::models::model_options("revnet110");
    options.checkpoint_transitions(checkpointed);
    memcnn::models::ResNet model(options);
    model->to(torch::kFloat64);
    torch::manual_seed(1);
    auto x = torch::rand({4, 3, 16, 16}, torch::kFloat64);
    model->forward(x).pow(2).sum().backward();  // allocates the gradients
    for (auto& p : model->parameters()) p.grad().zero_();
    memcnn::MemoryProbe probe;
    model->forward(x).pow(2).sum().backward();
    *peak = probe.peak_above_start();
    std::vector<torch::Tensor> grads;
    for (auto& p : model->parameters()) grads.push_back(p.grad().clone());
    return grads;
  };
  int64_t plain_peak = 0, checkpointed_peak = 0;
  const auto plain = run(false, &plain_peak);
  const auto checkpointed = run(true, &checkpointed_peak);
  ASSERT_EQ(plain.size(), checkpointed.size());
  for (std::size_t i = 0; i < plain.size(); ++i) {
    const double scale = std::max(plain[i].abs().max().item<double>(), 1e-300);
    EXPECT_LT((plain[i] - checkpointed[i]).abs().max().item<double>() / scale, 1e-10) << "parameter " << i;
  }
  std::cout << "[figure] revnet110 float64 batch 4 (16x16) step peak above start: " << plain_peak
            << " bytes; with checkpointed transitions " << checkpointed_peak << "\n";
  EXPECT_LT(checkpointed_peak, plain_peak);
}

namespace exact {

struct Step {
  std::vector<torch::Tensor> grads;  // parameters, then the input
};

Step gradients_of(const memcnn::models::ResNetOptions& options, int64_t seed) {
  torch::manual_seed(seed);
  memcnn::models::ResNet model(options);
  torch::manual_seed(seed + 100);
  const auto x = torch::randn({4, 3, 16, 16}).requires_grad_();
  const auto labels = torch::randint(10, {4}, torch::kLong);
  torch::nn::functional::cross_entropy(model->forward(x), labels).backward();
  Step step;
  for (const auto& p : model->parameters()) step.grads.push_back(p.grad());
  step.grads.push_back(x.grad());
  return step;
}

double global_relative_error(const Step& a, const Step& b) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.grads.size(); ++i) {
    diff += (a.grads[i].to(torch::kFloat64) - b.grads[i].to(torch::kFloat64)).pow(2).sum().item<double>();
    norm += b.grads[i].to(torch::kFloat64).pow(2).sum().item<double>();
  }
  return std::sqrt(diff / norm);
}

}  // namespace exact

TEST(Models, ExactRevNetGradientsBitwiseEqualPlain) {
  for (const std::string name : {"revnet38", "revnet164"}) {  // basic blocks; bottlenecks (projection first)
    auto options = memcnn::models::model_options(name).exact(true);
    auto plain_options = options;
    plain_options.wrapper(memcnn::InvertibleModuleWrapperOptions().disable(true));
    const auto fallbacks = memcnn::exact_rebuild_fallbacks();
    const auto saving = exact::gradients_of(options, 0);
    const auto plain = exact::gradients_of(plain_options, 0);
    EXPECT_EQ(memcnn::exact_rebuild_fallbacks(), fallbacks) << name << ": an exact step fell back";
    ASSERT_EQ(saving.grads.size(), plain.grads.size());
    for (std::size_t i = 0; i < saving.grads.size(); ++i) {
      EXPECT_TRUE(memcnn::detail::bitwise_equal(saving.grads[i], plain.grads[i])) << name << " gradient " << i;
    }
    // What the rounding itself costs: against the ordinary model without memory saving. These
    // gradients react to any change of rounding at the 1e-5 level by about 1e-2 (float32 itself is
    // 5e-4 to 7e-3 from float64; memcnn-bench's accuracy section), so this bound only catches a
    // broken straight-through gradient (an error of order 1).
    auto ordinary = memcnn::models::model_options(name);
    ordinary.wrapper(memcnn::InvertibleModuleWrapperOptions().disable(true));
    const double cost = exact::global_relative_error(saving, exact::gradients_of(ordinary, 0));
    std::cout << "[figure] " << name << " exact vs ordinary float32 gradients, global relative L2: " << cost << "\n";
    EXPECT_LT(cost, 0.1) << name;
  }
}

TEST(Models, ExactAndOrdinaryRevNetsShareParameterNames) {
  auto ordinary = make_model("revnet110");
  memcnn::models::ResNet exact_model(memcnn::models::model_options("revnet110").exact(true));
  const auto a = ordinary->named_parameters(), b = exact_model->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].key(), b[i].key());
  EXPECT_THROW(memcnn::models::ResNet(memcnn::models::model_options("revnet38").exact(true).fraction_bits(60)),
               c10::Error);
}

TEST(Models, AnchorsKeepEveryKthInputFromTheStageEnd) {
  memcnn::models::ResNet model(memcnn::models::model_options("revnet110").anchor_every(3));
  std::vector<bool> kept;
  for (const auto& w : model->wrappers()) kept.push_back(w->options.keep_input());
  // Stage 1: 9 couplings, stages 2 and 3: 8 (after a projection block); the 3rd, 6th, ... from
  // each stage's end keep their input.
  const std::vector<bool> expected = {true,  false, false, true,  false, false, true,  false, false,
                                      false, true,  false, false, true,  false, false, false, true,
                                      false, false, true,  false, false};
  ASSERT_EQ(kept.size(), 25u);
  for (std::size_t i = 0; i < 9; ++i) EXPECT_EQ(kept[i], expected[i]) << "stage 1 coupling " << i;
  for (std::size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(kept[9 + i], (8 - i) % 3 == 0) << "stage 2 coupling " << i;
    EXPECT_EQ(kept[17 + i], (8 - i) % 3 == 0) << "stage 3 coupling " << i;
  }
  // Anchored gradients equal the plain computation's (float64).
  for (const int64_t every : {0, 2}) {
    auto options = memcnn::models::model_options("revnet38").anchor_every(every);
    torch::manual_seed(0);
    memcnn::models::ResNet anchored(options);
    anchored->to(torch::kFloat64);
    auto plain = std::dynamic_pointer_cast<memcnn::models::ResNetImpl>(anchored->clone());
    for (auto& w : plain->wrappers()) w->options.disable(true);
    const auto x = torch::randn({2, 3, 16, 16}, torch::kFloat64);
    anchored->forward(x).pow(2).sum().backward();
    plain->forward(x).pow(2).sum().backward();
    const auto a = anchored->named_parameters(), b = plain->named_parameters();
    // Relative to the largest gradient: some (the bias of a BatchNorm whose output another
    // BatchNorm normalises) are zero but for rounding.
    double scale = 0;
    for (const auto& p : b) scale = std::max(scale, p.value().grad().abs().max().item<double>());
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_LT((a[i].value().grad() - b[i].value().grad()).abs().max().item<double>() / scale, 1e-10)
          << "anchor_every " << every << " parameter " << a[i].key();
    }
  }
}

// A small problem the models can learn quickly: the class is the brightest quadrant.
std::pair<torch::Tensor, torch::Tensor> quadrant_problem(int64_t n) {
  auto labels = torch::randint(4, {n}, torch::kLong);
  auto images = torch::rand({n, 3, 16, 16}) * 0.5;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = labels[i].item<int64_t>();
    images[i].narrow(1, (q / 2) * 8, 8).narrow(2, (q % 2) * 8, 8).add_(0.5);
  }
  return {images, labels};
}

// A model by name; printed (and named in GoogleTest and ctest) without quotes.
struct ModelCase {
  std::string name;
};

void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.name; }

std::vector<ModelCase> model_cases() {
  std::vector<ModelCase> cases;
  for (const auto& name : model_names()) cases.push_back({name});
  return cases;
}

class ModelTraining : public testing::TestWithParam<ModelCase> {};

TEST_P(ModelTraining, FewStepsLowerTheLoss) {
  const auto& name = GetParam().name;
  torch::manual_seed(0);
  auto model = make_model(name, 4);
  const auto [images, labels] = quadrant_problem(32);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  auto loss_now = [&] {
    return torch::nn::functional::cross_entropy(model->forward(images), labels);
  };
  const double first = loss_now().item<double>();
  for (int step = 0; step < 12; ++step) {
    optimizer.zero_grad();
    loss_now().backward();
    optimizer.step();
  }
  const double last = loss_now().item<double>();
  std::cout << "[figure] " << name << ": loss " << first << " -> " << last << "\n";
  EXPECT_LT(last, first * 0.8) << name << ": loss " << first << " -> " << last;
}

INSTANTIATE_TEST_SUITE_P(AllModels, ModelTraining, testing::ValuesIn(model_cases()),
                         [](const testing::TestParamInfo<ModelCase>& info) { return info.param.name; });

}  // namespace
