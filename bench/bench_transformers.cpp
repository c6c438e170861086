// memcnn-bench --sections transformers: ViT against RevViT (memory saving per block, in one
// autograd node, with exact couplings, and without memory saving) at several depths, at one
// width, batch and token count; then memcnn-train's Fashion-MNIST models in float32 and under
// bfloat16 autocast. The models of a table step side by side (one step of each in turn,
// repeated), so their time ratios share the machine's state.

#include "bench_transformers.h"
#include "report.h"

#include <memcnn/autocast.h>
#include <memcnn/memory.h>
#include <memcnn/models/resnet.h>
#include <memcnn/models/vit.h>
#include <memcnn/wrapper.h>

#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

namespace memcnn {
namespace bench {
namespace {

using models::Classifier;

struct Variant {
  std::string name;
  std::function<Classifier(const models::ViTOptions&)> build;
};

std::vector<Variant> variants() {
  auto revvit = [](bool saving, bool single_node, bool exact) {
    return [=](const models::ViTOptions& shape) {
      models::RevViTOptions options(shape);
      options.single_node(single_node).exact(exact).wrapper().disable(!saving);
      return Classifier(models::RevViT(options));
    };
  };
  return {{"ViT", [](const models::ViTOptions& shape) { return Classifier(models::ViT(shape)); }},
          {"RevViT", revvit(true, false, false)},
          {"RevViT, one node", revvit(true, true, false)},
          {"RevViT, exact", revvit(true, false, true)},
          {"RevViT, no memory saving", revvit(false, false, false)}};
}

struct Result {
  int64_t parameters = 0;
  int64_t activation_bytes = 0;
  double median_seconds = 0;
};

// A model stepped in turn with others, its forward under `autocast` where set.
struct Contender {
  Classifier model;
  std::optional<c10::ScalarType> autocast;
  std::unique_ptr<torch::optim::SGD> optimizer;
};

// One SGD step: gradients zeroed in place (they stay allocated, so the peak counts activations);
// forward and loss under the contender's autocast, backward outside it, as memcnn-train does.
void step(Contender& c, const torch::Tensor& images, const torch::Tensor& labels) {
  zero_gradients_in_place(c.model->parameters());
  torch::Tensor loss;
  {
    std::optional<Autocast> precision;
    if (c.autocast) precision.emplace(images.device().type(), *c.autocast);
    loss = torch::nn::functional::cross_entropy(c.model->forward(images), labels);
  }
  loss.backward();
  c.optimizer->step();
}

// Steps the contenders in turn (report.h's measure_in_turn: one warm-up step each allocates
// gradients and momentum): parameters, activation memory and median step time of each.
std::vector<Result> measure_contenders(std::vector<Contender>& contenders, const torch::Tensor& images,
                                    const torch::Tensor& labels, int64_t repetitions) {
  const auto device = images.device();
  std::vector<Result> results(contenders.size());
  for (std::size_t i = 0; i < contenders.size(); ++i) {
    auto& c = contenders[i];
    c.model->to(device);
    c.model->train();
    c.optimizer =
        std::make_unique<torch::optim::SGD>(c.model->parameters(), torch::optim::SGDOptions(1e-3).momentum(0.9));
    results[i].parameters = models::count_parameters(*c.model);
  }
  std::vector<std::function<void()>> steps;
  for (auto& c : contenders) steps.push_back([&c, &images, &labels] { step(c, images, labels); });
  const auto timed = bench::measure_in_turn(steps, device, repetitions);
  for (std::size_t i = 0; i < contenders.size(); ++i) {
    results[i].activation_bytes = timed[i].peak_bytes;
    results[i].median_seconds = timed[i].median_seconds;
  }
  return results;
}

std::vector<Result> measure_depth(const models::ViTOptions& shape, const std::vector<Variant>& list,
                                  const torch::Tensor& images, const torch::Tensor& labels, int64_t repetitions) {
  std::vector<Contender> contenders;
  for (const auto& variant : list) {
    torch::manual_seed(0);
    contenders.push_back({variant.build(shape), std::nullopt, nullptr});
  }
  return measure_contenders(contenders, images, labels, repetitions);
}

// memcnn-train's Fashion-MNIST models (vit_tiny, revvit_tiny on 28x28 grey images) in float32
// and under bfloat16 autocast: what the recipe's "autocast" buys on this machine.
void precision_table(const TransformerBenchOptions& options, std::ostringstream& markdown) {
  const int64_t batch = options.quick ? 2 : options.precision_batch;
  const int64_t repetitions = options.quick ? 1 : options.repetitions;
  torch::manual_seed(0);
  const auto images = torch::randn({batch, 1, 28, 28}).to(options.device);
  const auto labels = torch::randint(10, {batch}, torch::kLong).to(options.device);
  std::cout << "Transformers: vit_tiny and revvit_tiny, float32 and bfloat16 autocast, batch " << batch << "\n";
  const std::vector<std::string> names{"vit_tiny", "revvit_tiny"};
  std::vector<Contender> contenders;
  for (const auto& name : names) {
    for (const bool lowered : {false, true}) {
      torch::manual_seed(0);
      contenders.push_back({models::make_transformer(name, 10, 1, 28),
                            lowered ? std::optional<c10::ScalarType>(torch::kBFloat16) : std::nullopt, nullptr});
    }
  }
  const auto results = measure_contenders(contenders, images, labels, repetitions);
  std::vector<std::vector<std::string>> rows;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    const auto& in_float32 = results[i - i % 2];
    rows.push_back({names[i / 2], contenders[i].autocast ? "bfloat16 autocast" : "float32",
                    fixed(to_mib(r.activation_bytes), 1), fixed(r.median_seconds, 3),
                    i % 2 == 0 ? "" : fixed(in_float32.median_seconds / r.median_seconds, 2)});
  }
  markdown << "### Mixed precision: memcnn-train's Fashion-MNIST models, batch " << batch
           << " (28x28, one channel)\n\n";
  table(markdown, {"model", "precision", "activation MiB", "step s (median)", "float32 time / this"}, rows);
  markdown << "The same SGD step, forward and loss under bfloat16 autocast or not, the four in turn, " << repetitions
           << " times; median time. On a CPU, bfloat16 is faster only with native support (AVX512_BF16 or AMX); "
              "elsewhere it is emulated and slower.\n\n";
}

}  // namespace

std::string transformers_section(const TransformerBenchOptions& options) {
  const int64_t batch = options.quick ? 2 : options.batch;
  const int64_t dim = options.quick ? 32 : options.dim;
  const int64_t image = options.quick ? 8 : 32;
  const auto depths = options.quick ? std::vector<int64_t>{2, 4} : options.depths;
  const int64_t repetitions = options.quick ? 1 : options.repetitions;
  const int64_t heads = std::max<int64_t>(1, dim / 64);
  const auto base = models::ViTOptions()
                        .image_size(image)
                        .patch_size(4)
                        .in_channels(3)
                        .num_classes(10)
                        .dim(dim)
                        .heads(heads)
                        .mlp_dim(4 * dim)
                        .pooling(models::TokenPooling::mean)
                        .drop_path(0.1);
  const int64_t tokens = (image / 4) * (image / 4);
  torch::manual_seed(0);
  const auto images = torch::randn({batch, 3, image, image}).to(options.device);
  const auto labels = torch::randint(10, {batch}, torch::kLong).to(options.device);
  std::cout << "Transformers: ViT vs RevViT, width " << dim << ", " << heads << " heads, MLP " << 4 * dim << ", batch "
            << batch << ", " << tokens << " tokens\n";

  const auto list = variants();
  std::map<int64_t, std::vector<Result>> by_depth;
  std::vector<std::vector<std::string>> rows;
  for (const auto depth : depths) {
    auto shape = base;
    shape.depth(depth);
    const auto results = measure_depth(shape, list, images, labels, repetitions);
    by_depth[depth] = results;
    const auto& vit = results[0];
    for (std::size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      rows.push_back({std::to_string(depth), list[i].name, std::to_string(r.parameters), fixed(to_mib(r.activation_bytes), 1),
                      i == 0 ? "" : fixed(static_cast<double>(vit.activation_bytes) / r.activation_bytes, 2),
                      fixed(r.median_seconds, 3), i == 0 ? "" : fixed(r.median_seconds / vit.median_seconds, 2)});
    }
  }
  std::ostringstream markdown;
  markdown << "## Transformers: ViT against RevViT, width " << dim << " (" << heads << " heads, MLP " << 4 * dim
           << "), batch " << batch << ", " << tokens << " tokens (" << image << "x" << image
           << " images, patch 4, mean pooling), stochastic depth 0.1\n\n";
  table(markdown, {"depth", "model", "parameters", "activation MiB", "ViT memory / this", "step s (median)", "time vs ViT"},
        rows);
  markdown << "One SGD step (forward, cross entropy, backward, update) per model, the models of a depth in turn, "
           << repetitions << " times; median time. \"RevViT\": one memory-saving wrapper per block (the default); "
              "\"one node\": all blocks in one InvertibleSequential under one wrapper (which holds every block's "
              "parameter gradients until its backward ends, so its memory grows with the parameters); \"exact\": fixed-point couplings "
              "(gradients equal those without memory saving bit for bit); \"no memory saving\": the same RevViT with "
              "its wrappers disabled. RevViT merges its streams by concatenation (its head sees 2 x width).\n\n";

  // The figures, where the depths were measured.
  auto ratio_row = [&](const std::string& what, const std::string& target, std::optional<double> value) {
    return std::vector<std::string>{what, value ? fixed(*value, 2) : "not measured", target};
  };
  auto has = [&](int64_t d) { return by_depth.count(d) > 0; };
  std::vector<std::vector<std::string>> figures;
  figures.push_back(ratio_row(
      "RevViT activation memory, depth 48 / depth 12", "<= 1.1",
      has(48) && has(12) ? std::optional<double>(static_cast<double>(by_depth[48][1].activation_bytes) /
                                                 by_depth[12][1].activation_bytes)
                         : std::nullopt));
  figures.push_back(ratio_row(
      "ViT / RevViT activation memory, depth 24", ">= 15.5",
      has(24) ? std::optional<double>(static_cast<double>(by_depth[24][0].activation_bytes) /
                                      by_depth[24][1].activation_bytes)
              : std::nullopt));
  figures.push_back(ratio_row(
      "RevViT / ViT step time, depth 12", "<= 1.4",
      has(12) ? std::optional<double>(by_depth[12][1].median_seconds / by_depth[12][0].median_seconds) : std::nullopt));
  std::cout << "Transformer figures\n";
  markdown << "### Figures\n\n";
  table(markdown, {"figure", "measured", "target"}, figures);
  precision_table(options, markdown);
  return markdown.str();
}

}  // namespace bench
}  // namespace memcnn
