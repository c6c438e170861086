// Optimizer states saved by Python (torch.save(optimizer.state_dict())) continued in C++, and
// Python's numbering of parameters recovered from the weights file.

#include <memcnn/train/python_weights.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

namespace {

const std::filesystem::path kFiles = std::filesystem::path(MEMCNN_SOURCE_DIR) / "tests" / "data" / "torch_files";

// make_torch_files.py's values: (i * 7 + seed) % 23 - 11 over the flat index, / 4.
torch::Tensor expected(c10::IntArrayRef shape, int64_t seed) {
  const int64_t n = c10::multiply_integers(shape);
  return ((torch::remainder(torch::arange(n, torch::kDouble) * 7 + seed, 23) - 11) / 4).to(torch::kFloat).reshape(shape);
}

struct TwoImpl : torch::nn::Module {
  TwoImpl() {
    b = register_parameter("b", expected({3}, 2));  // registered first here, second in Python
    a = register_parameter("a", expected({2, 2}, 1));
  }
  torch::Tensor a, b;
};
TORCH_MODULE(Two);

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(PythonWeights, ParameterOrderFollowsTheWeightsFile) {
  Two module;
  memcnn::StateDict weights;
  weights.insert("a", module->a.detach());
  weights.insert("running", torch::zeros({1}));  // a buffer in Python's file: not numbered
  weights.insert("b", module->b.detach());
  const auto order = memcnn::train::python_parameter_order(*module, weights, {}, "w.pt");
  ASSERT_EQ(order.size(), 2u);
  EXPECT_TRUE(order[0].is_same(module->a));
  EXPECT_TRUE(order[1].is_same(module->b));
  memcnn::StateDict partial;
  partial.insert("a", module->a.detach());
  EXPECT_NE(error_of([&] { memcnn::train::python_parameter_order(*module, partial, {}, "w.pt"); })
                .find("w.pt holds 1 of the model's 2 parameters"),
            std::string::npos);
}

TEST(PythonWeights, SgdContinuesFromPythonsMomentum) {
  Two module;
  const std::vector<torch::Tensor> order{module->a, module->b};
  torch::optim::SGD sgd(module->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(2e-4));
  const c10::IValue state = memcnn::read_torch_file((kFiles / "optimizer_sgd_torch113.pt").string());
  const std::string groups = memcnn::train::load_python_optimizer_state(sgd, state, order, "opt.pt");
  EXPECT_NE(groups.find("lr=0.1"), std::string::npos) << groups;
  // The file's momentum buffers are the first step's gradients: 2 (+ decay) for a, 2b (+ decay) for b.
  const auto a0 = module->a.detach().clone(), b0 = module->b.detach().clone();
  const auto a_buffer = 2 + 2e-4 * a0, b_buffer = 2 * b0 + 2e-4 * b0;
  sgd.zero_grad();
  (module->a.sum() * 2 + (module->b * module->b).sum()).backward();
  sgd.step();
  // SGD with momentum: buffer = 0.9 buffer + (grad + decay p); p -= lr buffer.
  const auto a_next = a0 - 0.1 * (0.9 * a_buffer + 2 + 2e-4 * a0);
  const auto b_next = b0 - 0.1 * (0.9 * b_buffer + 2 * b0 + 2e-4 * b0);
  EXPECT_TRUE(torch::allclose(module->a, a_next, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(module->b, b_next, 1e-6, 1e-6));
}

TEST(PythonWeights, MisfitStatesAreRefusedAndLeaveTheOptimizerAsItWas) {
  Two module;
  const c10::IValue state = memcnn::read_torch_file((kFiles / "optimizer_sgd_torch113.pt").string());
  torch::optim::SGD sgd(module->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  // Swapped numbering: shapes disagree.
  const std::string swapped = error_of([&] {
    memcnn::train::load_python_optimizer_state(sgd, state, {module->b, module->a}, "opt.pt");
  });
  EXPECT_NE(swapped.find("opt.pt: 'momentum_buffer' of parameter 0 has shape [2, 2], the parameter [3]"),
            std::string::npos) << swapped;
  EXPECT_TRUE(sgd.state().empty());
  EXPECT_NE(error_of([&] { memcnn::train::load_python_optimizer_state(sgd, state, {module->a}, "opt.pt"); })
                .find("an optimizer over 2 parameters; this model has 1"),
            std::string::npos);
  torch::optim::AdamW adamw(module->parameters());
  EXPECT_NE(error_of([&] { memcnn::train::load_python_optimizer_state(adamw, state, {module->a, module->b}, "opt.pt"); })
                .find("another optimizer than Adam/AdamW"),
            std::string::npos);
  const c10::IValue weights = memcnn::read_torch_file((kFiles / "state_dict_torch113.pt").string());
  EXPECT_NE(error_of([&] { memcnn::train::load_python_optimizer_state(sgd, weights, {module->a, module->b}, "w.pt"); })
                .find("w.pt is not an optimizer's state_dict: it has no 'state'"),
            std::string::npos);
}

TEST(PythonWeights, AdamStateRoundTripsThroughAFile) {
  // An AdamW state as PyTorch 1.13 writes it (step a tensor), written here and read back.
  Two module;
  c10::impl::GenericDict per_parameter(c10::IntType::get(), c10::AnyType::get());
  for (int64_t i = 0; i < 2; ++i) {
    const auto& p = i == 0 ? module->a : module->b;
    c10::impl::GenericDict fields(c10::StringType::get(), c10::AnyType::get());
    fields.insert("step", torch::tensor(7.0));
    fields.insert("exp_avg", torch::full_like(p, 0.5 + i));
    fields.insert("exp_avg_sq", torch::full_like(p, 0.25));
    per_parameter.insert(i, fields);
  }
  c10::impl::GenericDict group(c10::StringType::get(), c10::AnyType::get());
  group.insert("lr", 1e-3);
  group.insert("params", c10::List<int64_t>({0, 1}));
  c10::impl::GenericDict state(c10::StringType::get(), c10::AnyType::get());
  state.insert("state", per_parameter);
  state.insert("param_groups", c10::impl::GenericList(c10::AnyType::get()));
  state.at("param_groups").toList().push_back(group);
  const auto path = std::filesystem::temp_directory_path() / ("memcnn_adam_" + std::to_string(::getpid()) + ".pt");
  memcnn::write_torch_file(state, path.string());
  torch::optim::AdamW adamw(module->parameters());
  memcnn::train::load_python_optimizer_state(adamw, memcnn::read_torch_file(path.string()), {module->a, module->b},
                                             "adam.pt");
  std::filesystem::remove(path);
  ASSERT_EQ(adamw.state().size(), 2u);
  for (const auto& [key, param_state] : adamw.state()) {
    const auto& adam_state = static_cast<const torch::optim::AdamWParamState&>(*param_state);
    EXPECT_EQ(adam_state.step(), 7);
    EXPECT_TRUE(torch::allclose(adam_state.exp_avg_sq(), torch::full_like(adam_state.exp_avg(), 0.25)));
  }
}

}  // namespace
