// memcnn-bench --sections iunet. Both ways use the same network and weights (IUNet's
// set_memory_saving switches every wrapper); each timed repetition steps one way and then the
// other, so their ratio shares the machine's state.

#include "bench_iunet.h"
#include "report.h"

#include <memcnn/memory.h>
#include <memcnn/models/iunet.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace memcnn {
namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

template <typename Model>
void zero_gradients(Model& model) {
  for (auto& p : model->parameters()) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

// One forward and backward; the loss weighs the output so no gradient is trivially constant.
template <typename Model, typename Loss>
double timed_step(Model& model, const torch::Tensor& input, Loss&& loss) {
  zero_gradients(model);
  wait_for(input.device());
  const auto start = Clock::now();
  loss(model->forward(input)).backward();
  wait_for(input.device());
  return std::chrono::duration<double>(Clock::now() - start).count();
}

template <typename Model, typename Loss>
int64_t step_bytes(Model& model, const torch::Tensor& input, Loss&& loss) {
  zero_gradients(model);
  MemoryProbe probe(input.device());
  loss(model->forward(input)).backward();
  return probe.peak_above_start();
}

}  // namespace

std::string iunet_section(const IUNetBenchOptions& o) {
  std::ostringstream markdown;
  const int64_t size = o.quick ? 8 : o.size;
  const auto depths = o.quick ? std::vector<int64_t>{1, 2} : o.layers;
  // Batch 2: with one sample, LibTorch 1.13 runs small 3-D convolutions without oneDNN (slow_conv3d).
  const auto input = torch::randn({2, 8, size, size, size}, torch::TensorOptions().device(o.device));
  const auto weights = torch::rand(input.sizes(), input.options());
  auto loss = [&](const torch::Tensor& y) { return (y * y * weights).sum(); };

  markdown << "## iUNet 3-D: memory saving against conventional backpropagation\n\n"
           << "`memcnn::models::IUNet`, 3 levels, channels [8, 32, 128], stride 2, an additive coupling (conv 3x3x3 - "
              "GroupNorm - LeakyReLU) per layer with an orthogonal channel mixing before it, learnable Cayley "
              "resampling (Haar init); input [2, 8, "
           << size << ", " << size << ", " << size << "], float32, device " << o.device
           << ". Memory: the allocator's peak above the model and its gradients during one training step, in MiB "
              "(2^20 bytes). Time: median of "
           << o.repetitions << " steps, the two ways alternating.\n\n";
  std::vector<std::vector<std::string>> rows;
  int64_t saving_at_5 = 0, saving_last = 0;
  for (const auto layers : depths) {
    torch::manual_seed(0);
    models::IUNet net(models::IUNetOptions({8, 32, 128}, {layers, layers, layers}, 3));
    net->to(o.device);
    int64_t parameters = 0;
    for (const auto& p : net->parameters()) parameters += p.numel();
    int64_t bytes[2];
    std::vector<double> seconds[2];
    for (int way = 0; way < 2; ++way) {  // 0: conventional, 1: memory saving
      net->set_memory_saving(way == 1);
      timed_step(net, input, loss);  // allocates the gradients
      bytes[way] = step_bytes(net, input, loss);
    }
    for (int64_t r = 0; r < o.repetitions; ++r) {
      for (int way = 0; way < 2; ++way) {
        net->set_memory_saving(way == 1);
        seconds[way].push_back(timed_step(net, input, loss));
      }
    }
    if (layers == 5) saving_at_5 = bytes[1];
    saving_last = bytes[1];
    const double t0 = median(seconds[0]), t1 = median(seconds[1]);
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
    auto segmentation_loss = [&](const torch::Tensor& logits) {
      return torch::binary_cross_entropy_with_logits(logits, mask);
    };
    int64_t bytes[2];
    double seconds[2];
    for (int way = 0; way < 2; ++way) {
      model->iunet->set_memory_saving(way == 1);
      seconds[way] = timed_step(model, image, segmentation_loss);  // also allocates the gradients
      bytes[way] = step_bytes(model, image, segmentation_loss);
    }
    markdown << "### One training step on a whole volume\n\n"
             << "The brain-extraction model (`memcnn-train iunet3d brain-extraction`: a 3x3x3 convolution to 8 "
                "channels, the iUNet with channels [8, 32, 128] and layers [0, 2, 2], BatchNorm, a 1x1x1 convolution "
                "to a logit) on a [" << volume[2] << ", " << volume[3] << ", " << volume[4]
             << "] volume, batch 1, float32:\n\n";
    table(markdown, {"", "activation MiB", "s/step (one step)"},
          {{"conventional", fixed(to_mib(bytes[0]), 1), fixed(seconds[0], 1)},
           {"memory saving", fixed(to_mib(bytes[1]), 1), fixed(seconds[1], 1)}});
    std::cout << "[memcnn-bench] iunet whole volume: conventional " << format_mib(bytes[0]) << ", memory saving "
              << format_mib(bytes[1]) << std::endl;
  }
  return markdown.str();
}

}  // namespace bench
}  // namespace memcnn
