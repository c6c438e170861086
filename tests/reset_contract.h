#pragma once
// The reset() contract as a table-driven test, shared by the core's tests/test_reset.cpp and the
// models' models/tests/test_reset.cpp: a module built with options A, given options B and
// reset(), must have exactly what a module freshly built with B has (sub-modules, parameters and
// buffers, by name and shape, in parameters(), buffers() and the state dict), and compute what it
// computes: the fresh module's state loaded into the reset one gives the same outputs and, through
// memory-saving wrappers where there are any, the same gradients.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace memcnn_test {

struct ResetCase {
  std::string name;                                           // the test's name: letters, digits, _
  std::function<std::shared_ptr<torch::nn::Module>()> build;  // with options A
  std::function<void(torch::nn::Module&)> set_options;        // B, on a module built with A
  std::function<void(torch::nn::Module&)> reset;              // the module's reset()
  std::function<std::shared_ptr<torch::nn::Module>()> build_fresh;  // with options B
  // Runs the module (set to options B) on `input`; the outputs are compared, and differentiated.
  std::function<std::vector<torch::Tensor>(torch::nn::Module&, const torch::Tensor&)> run;
  std::vector<int64_t> input_shape;
};

inline std::ostream& operator<<(std::ostream& stream, const ResetCase& c) { return stream << c.name; }

template <typename Impl>
std::function<void(torch::nn::Module&)> reset_of() {
  return [](torch::nn::Module& module) { dynamic_cast<Impl&>(module).reset(); };
}

template <typename Impl, typename = void>
struct forwards_one_tensor : std::false_type {};
template <typename Impl>
struct forwards_one_tensor<Impl, std::void_t<decltype(std::declval<Impl&>().forward(std::declval<torch::Tensor>()))>>
    : std::true_type {};

// A case for a module whose Impl has `Options options`; make(options) builds one (a holder). Its
// run is forward of one tensor (returning a tensor or a list) where Impl has one; else set it.
template <typename Impl, typename Options, typename Make>
ResetCase built_case(std::string name, Options a, Options b, Make make, std::vector<int64_t> input_shape) {
  ResetCase c;
  c.name = std::move(name);
  c.build = [a, make] { return make(a).ptr(); };
  c.set_options = [b](torch::nn::Module& module) { dynamic_cast<Impl&>(module).options = b; };
  c.build_fresh = [b, make] { return make(b).ptr(); };
  c.reset = reset_of<Impl>();
  if constexpr (forwards_one_tensor<Impl>::value) {
    c.run = [](torch::nn::Module& module, const torch::Tensor& x) -> std::vector<torch::Tensor> {
      auto y = dynamic_cast<Impl&>(module).forward(x);
      if constexpr (std::is_same_v<decltype(y), torch::Tensor>) {
        return {y};
      } else {
        return y;
      }
    };
  }
  c.input_shape = std::move(input_shape);
  return c;
}

// The same for a module holder constructed from its options alone.
template <typename Holder, typename Options>
ResetCase options_case(std::string name, Options a, Options b, std::vector<int64_t> input_shape) {
  return built_case<typename Holder::Impl>(
      std::move(name), std::move(a), std::move(b), [](const Options& o) { return Holder(o); }, std::move(input_shape));
}

inline std::string test_name(const ::testing::TestParamInfo<ResetCase>& info) { return info.param.name; }

// "name [shape]" of every tensor: what must match, in order.
inline std::vector<std::string> described(const torch::OrderedDict<std::string, torch::Tensor>& tensors) {
  std::vector<std::string> out;
  for (const auto& item : tensors) {
    std::ostringstream s;
    s << item.key() << " " << item.value().sizes();
    out.push_back(s.str());
  }
  return out;
}

inline std::vector<std::string> described(const torch::nn::Module& module) {
  std::vector<std::string> out;
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    out.push_back(item.key() + " " + item.value()->name());
  }
  return out;
}

inline std::string serialized(const torch::nn::Module& module) {
  torch::serialize::OutputArchive archive;
  module.save(archive);
  std::ostringstream stream;
  archive.save_to(stream);
  return stream.str();
}

// Loads `from`'s state into `into` (throws when `into` has a parameter or buffer that `from`
// lacks, so a load each way finds a stale or missing entry on either side).
inline void load_state(torch::nn::Module& into, const torch::nn::Module& from) {
  std::istringstream stream(serialized(from));
  torch::serialize::InputArchive archive;
  archive.load_from(stream);
  into.load(archive);
}

struct RunResult {
  std::vector<torch::Tensor> outputs;
  std::vector<std::pair<std::string, torch::Tensor>> gradients;  // the input's first
};

inline RunResult run_and_differentiate(const ResetCase& c, torch::nn::Module& module, const torch::Tensor& input) {
  module.zero_grad();
  auto x = input.clone().requires_grad_();
  RunResult result;
  result.outputs = c.run(module, x);
  torch::Tensor total;
  for (std::size_t i = 0; i < result.outputs.size(); ++i) {
    const auto weight = torch::linspace(-1, 1, result.outputs[i].numel()).reshape(result.outputs[i].sizes());
    const auto term = (result.outputs[i] * weight.to(result.outputs[i].dtype())).sum();
    total = total.defined() ? total + term : term;
  }
  total.backward();
  result.gradients.emplace_back("input", x.grad());
  for (const auto& p : module.named_parameters()) result.gradients.emplace_back(p.key(), p.value().grad());
  for (auto& y : result.outputs) y = y.detach();
  return result;
}

inline void expect_close(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6)) << what << ": max difference " << (a - b).abs().max().item<double>();
}

inline void expect_same_run(const ResetCase& c, torch::nn::Module& reset, torch::nn::Module& fresh,
                            const torch::Tensor& input, const std::string& mode) {
  const auto a = run_and_differentiate(c, reset, input);
  const auto b = run_and_differentiate(c, fresh, input);
  ASSERT_EQ(a.outputs.size(), b.outputs.size()) << mode;
  for (std::size_t i = 0; i < a.outputs.size(); ++i) expect_close(a.outputs[i], b.outputs[i], mode + " output");
  ASSERT_EQ(a.gradients.size(), b.gradients.size()) << mode;
  for (std::size_t i = 0; i < a.gradients.size(); ++i) {
    EXPECT_EQ(a.gradients[i].first, b.gradients[i].first) << mode;
    expect_close(a.gradients[i].second, b.gradients[i].second, mode + " gradient of " + a.gradients[i].first);
  }
}

// Builds with A, sets B, resets, and compares with a fresh build with B; twice, so that a reset
// with unchanged options is covered too.
inline void check_reset_contract(const ResetCase& c) {
  torch::manual_seed(0);
  auto module = c.build();
  module->eval();
  c.set_options(*module);
  ASSERT_NO_THROW(c.reset(*module)) << c.name << ": reset() after new options";
  auto fresh = c.build_fresh();
  for (int round = 0; round < 2; ++round) {
    const std::string when = round == 0 ? "after reset() with new options" : "after a second reset()";
    EXPECT_EQ(described(module->named_parameters()), described(fresh->named_parameters())) << when;
    EXPECT_EQ(described(module->named_buffers()), described(fresh->named_buffers())) << when;
    EXPECT_EQ(described(*module), described(*fresh)) << when << ": the sub-modules";
    EXPECT_EQ(module->parameters().size(), fresh->parameters().size()) << when;
    EXPECT_EQ(module->buffers().size(), fresh->buffers().size()) << when;
    EXPECT_FALSE(module->is_training()) << when << ": reset() keeps the module's training mode";
    for (const auto& sub : module->modules(/*include_self=*/false)) {
      EXPECT_FALSE(sub->is_training()) << when << ": " << sub->name() << " took the module's mode";
    }
    // The state dict, both ways: a name either side lacks fails the load.
    ASSERT_NO_THROW(load_state(*module, *fresh)) << when << ": the fresh module's state into the reset one";
    auto other = c.build_fresh();
    ASSERT_NO_THROW(load_state(*other, *module)) << when << ": the reset module's state into a fresh one";
    // Same state, same function: in eval, and in training (memory saving where there are wrappers).
    torch::manual_seed(1);
    const auto input = torch::randn(c.input_shape);
    fresh->eval();
    expect_same_run(c, *module, *fresh, input, when + ", eval");
    module->train();
    fresh->train();
    expect_same_run(c, *module, *fresh, input, when + ", training");
    module->eval();
    fresh->eval();
    if (round == 0) {
      ASSERT_NO_THROW(c.reset(*module));
    }
  }
}

}  // namespace memcnn_test
