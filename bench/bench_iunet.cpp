// memcnn-bench --sections iunet. Both ways use the same network and weights (IUNet's
// set_memory_saving switches every wrapper) and are timed by report.h's measure_in_turn: a
// warm-up step each (the shared gradients exist before any timed step), then steps one way and
// the other in turn, so their ratio shares the machine's state; medians.

#include "bench_iunet.h"
#include "report.h"

#include <memcnn/memory.h>
#include <memcnn/models/iunet.h>

#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace memcnn {
namespace bench {
namespace {

// One forward and backward, gradients zeroed in place (after the warm-up they stay allocated, so a
// step's peak counts activations and temporaries only).
template <typename Model, typename Loss>
void step(Model& model, const torch::Tensor& input, const Loss& loss) {
  zero_gradients_in_place(model->parameters());
  loss(model->forward(input)).backward();
}

// The two ways of one network, side by side: [0] conventional, [1] memory saving.
template <typename Model, typename Loss>
std::vector<TurnMeasurement> measure_both_ways(Model& model, models::IUNet& iunet, const torch::Tensor& input,
                                               const Loss& loss, int64_t repetitions) {
  std::vector<std::function<void()>> ways;
  for (const bool saving : {false, true}) {
    ways.push_back([&, saving] {
      iunet->set_memory_saving(saving);
      step(model, input, loss);
    });
  }
  return measure_in_turn(ways, input.device(), repetitions);
}

}  // namespace

std::string iunet_section(const IUNetBenchOptions& o) {
  std::ostringstream markdown;
  const int64_t size = o.quick ? 8 : o.size;
  const auto depths = o.quick ? std::vector<int64_t>{1, 2} : o.layers;
  const int64_t repetitions = o.quick ? 1 : o.repetitions;
  // Batch 2: with one sample, LibTorch 1.13 runs small 3-D convolutions without oneDNN (slow_conv3d).
  const auto input = torch::randn({2, 8, size, size, size}, torch::TensorOptions().device(o.device));
  const auto weights = torch::rand(input.sizes(), input.options());
  // The loss weighs the output so no gradient is trivially constant.
  auto loss = [&](const torch::Tensor& y) { return (y * y * weights).sum(); };

  markdown << "## iUNet 3-D: memory saving against conventional backpropagation\n\n"
           << "`memcnn::models::IUNet`, 3 levels, channels [8, 32, 128], stride 2, an additive coupling (conv 3x3x3 - "
              "GroupNorm - LeakyReLU) per layer with an orthogonal channel mixing before it, learnable Cayley "
              "resampling (Haar init); input [2, 8, "
           << size << ", " << size << ", " << size << "], float32, device " << o.device
           << ". Memory: the allocator's peak above the model and its gradients during one training step, in MiB "
              "(2^20 bytes). Time: median of "
           << repetitions << " steps each, the two ways alternating, after a warm-up step each.\n\n";
  std::vector<std::vector<std::string>> rows;
  int64_t saving_at_5 = 0, saving_last = 0;
  for (const auto layers : depths) {
    torch::manual_seed(0);
    models::IUNet net(models::IUNetOptions({8, 32, 128}, {layers, layers, layers}, 3));
    net->to(o.device);
    int64_t parameters = 0;
    for (const auto& p : net->parameters()) parameters += p.numel();
    const auto ways = measure_both_ways(net, net, input, loss, repetitions);
    const int64_t bytes[2] = {ways[0].peak_bytes, ways[1].peak_bytes};
    if (layers == 5) saving_at_5 = bytes[1];
    saving_last = bytes[1];
    const double t0 = ways[0].median_seconds, t1 = ways[1].median_seconds;
    rows.push_back({std::to_string(layers), std::to_string(parameters), fixed(to_mib(bytes[0]), 1),
                    fixed(to_mib(bytes[1]), 1), fixed(100.0 * static_cast<double>(bytes[1]) / static_cast<double>(bytes[0]), 1) + "%",
                    fixed(t0, 3), fixed(t1, 3), fixed(t1 / t0, 2)});
    std::cout << "[memcnn-bench] iunet layers per level " << layers << ": conventional " << format_mib(bytes[0])
              << ", memory saving " << format_mib(bytes[1]) << ", time ratio " << fixed(t1 / t0, 2) << std::endl;
  }
  table(markdown, {"layers per level", "parameters", "conventional MiB", "memory saving MiB", "saving / conventional",
                   "conventional s/step", "saving s/step", "time ratio"},
        rows);
  if (saving_at_5 > 0 && depths.back() > 5) {
    markdown << "Memory saving at " << depths.back() << " layers per level: "
             << fixed(static_cast<double>(saving_last) / static_cast<double>(saving_at_5), 2)
             << "x its memory at 5 layers per level.\n\n";
  }

  if (o.whole_volume) {
    // The brain-extraction model of memcnn-train (experiments.json: iunet3d) on a whole volume.
    const std::vector<int64_t> volume = o.quick ? std::vector<int64_t>{1, 1, 18, 21, 18} : std::vector<int64_t>{1, 1, 181, 217, 181};
    models::IUNetOptions shape({8, 32, 128}, {0, 2, 2}, 3);
    shape.block(models::iunet_coupling_blocks(models::IUNetNorm::batch));
    torch::manual_seed(0);
    models::IUNetSegmentation model(models::IUNetSegmentationOptions(1, 1, shape));
    model->to(o.device);
    const auto image = torch::randn(volume, input.options());
    const auto mask = torch::rand(volume, input.options()).gt(0.5).to(torch::kFloat32);
    const int64_t volume_repetitions = o.quick ? 1 : o.volume_repetitions;
    auto segmentation_loss = [&](const torch::Tensor& logits) {
      return torch::binary_cross_entropy_with_logits(logits, mask);
    };
    const auto ways = measure_both_ways(model, model->iunet, image, segmentation_loss, volume_repetitions);
    const double t0 = ways[0].median_seconds, t1 = ways[1].median_seconds;
    markdown << "### One training step on a whole volume\n\n"
             << "The brain-extraction model (`memcnn-train iunet3d brain-extraction`: a 3x3x3 convolution to 8 "
                "channels, the iUNet with channels [8, 32, 128] and layers [0, 2, 2], BatchNorm, a 1x1x1 convolution "
                "to a logit) on a [" << volume[2] << ", " << volume[3] << ", " << volume[4]
             << "] volume, batch 1, float32. Time: median of " << volume_repetitions
             << " steps each, the two ways alternating, after a warm-up step each.\n\n";
    table(markdown, {"", "activation MiB", "s/step (median)", "time ratio"},
          {{"conventional", fixed(to_mib(ways[0].peak_bytes), 1), fixed(t0, 2), ""},
           {"memory saving", fixed(to_mib(ways[1].peak_bytes), 1), fixed(t1, 2), fixed(t1 / t0, 2)}});
    std::cout << "[memcnn-bench] iunet whole volume: conventional " << format_mib(ways[0].peak_bytes)
              << ", memory saving " << format_mib(ways[1].peak_bytes) << ", time ratio " << fixed(t1 / t0, 2)
              << std::endl;
  }
  return markdown.str();
}

}  // namespace bench
}  // namespace memcnn
