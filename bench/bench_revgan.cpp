// memcnn-bench --sections revgan. Per core depth, three generators step in turn (report.h's
// measure_in_turn: a warm-up step each, so gradients exist before any timed step, then one step of
// each in turn, repeated), so their time ratios share the machine's state:
//   - RevGAN with memory saving (RevGANGenerator, the core's couplings in memory-saving wrappers),
//   - the same generator and weights without it (set_memory_saving(false): a full autograd graph),
//   - the conventional pair of the same recipe (ConvGANPair: encoder, ResNet core, decoder, one
//     generator per direction).
// A step is forward, L1 loss against the target, backward (no optimizer: an update allocates
// nothing that depends on depth); gradients are zeroed in place, so a step's peak counts
// activations and temporaries only.

#include "bench_revgan.h"
#include "report.h"

#include <memcnn/memory.h>
#include <memcnn/models/resnet.h>
#include <memcnn/models/revgan.h>

#include <torch/torch.h>

#include <functional>
#include <iostream>
#include <map>
#include <sstream>

namespace memcnn {
namespace bench {
namespace {

const char* const kGenerators[] = {"RevGAN, memory saving", "RevGAN, no memory saving", "conventional pair"};
constexpr std::size_t kSaving = 0, kPlain = 1, kConventional = 2;

// One generator step of `directions` directions: L1(A to B, b) [+ L1(B to A, a)], one backward.
void step(models::Translator& generator, const torch::Tensor& a, const torch::Tensor& b, int64_t directions) {
  zero_gradients_in_place(generator->parameters());
  auto loss = torch::l1_loss(generator->a_to_b(a), b);
  if (directions == 2) loss = loss + torch::l1_loss(generator->b_to_a(b), a);
  loss.backward();
}

struct DepthResult {
  int64_t revgan_parameters = 0, pair_parameters = 0;
  std::vector<TurnMeasurement> measured;  // kSaving, kPlain, kConventional
};

DepthResult measure_depth(const models::RevGANOptions& options, const torch::Tensor& a, const torch::Tensor& b,
                          int64_t directions, int64_t repetitions) {
  torch::manual_seed(0);
  models::RevGANGenerator revgan(options);
  torch::manual_seed(0);
  models::ConvGANPair pair(options);
  revgan->to(a.device());
  pair->to(a.device());
  models::Translator reversible(revgan), conventional(pair);
  std::vector<std::function<void()>> steps;
  for (const bool saving : {true, false}) {
    steps.push_back([&, saving] {
      revgan->set_memory_saving(saving);
      step(reversible, a, b, directions);
    });
  }
  steps.push_back([&] { step(conventional, a, b, directions); });
  DepthResult result;
  result.revgan_parameters = models::count_parameters(*revgan);
  result.pair_parameters = models::count_parameters(*pair);
  result.measured = measure_in_turn(steps, a.device(), repetitions);
  return result;
}

double ratio(int64_t numerator, int64_t denominator) {
  return static_cast<double>(numerator) / static_cast<double>(denominator);
}

// The rows of the memory figure: each generator's memory at the last depth against the first.
std::vector<std::vector<std::string>> figures(const std::map<int64_t, DepthResult>& by_depth) {
  const auto& first = by_depth.begin()->second;
  const auto& last = by_depth.rbegin()->second;
  const std::string versus =
      "depth " + std::to_string(by_depth.rbegin()->first) + " / depth " + std::to_string(by_depth.begin()->first);
  auto grows = [&](std::size_t generator) {
    int64_t previous = -1;
    for (const auto& [depth, result] : by_depth) {
      if (result.measured[generator].peak_bytes <= previous) return false;
      previous = result.measured[generator].peak_bytes;
    }
    return true;
  };
  const double saving = ratio(last.measured[kSaving].peak_bytes, first.measured[kSaving].peak_bytes);
  std::vector<std::vector<std::string>> rows;
  rows.push_back({std::string(kGenerators[kSaving]) + ": activation memory, " + versus, fixed(saving, 2), "<= 1.10",
                  saving <= 1.1 ? "yes" : "no"});
  for (const auto generator : {kPlain, kConventional}) {
    rows.push_back({std::string(kGenerators[generator]) + ": activation memory, " + versus,
                    fixed(ratio(last.measured[generator].peak_bytes, first.measured[generator].peak_bytes), 2),
                    "grows with every depth", grows(generator) ? "yes" : "no"});
  }
  return rows;
}

}  // namespace

std::string revgan_section(const RevGANBenchOptions& o) {
  const int64_t size = o.quick ? 8 : o.size;
  const int64_t ngf = o.quick ? 4 : o.ngf;
  const auto depths = o.quick ? std::vector<int64_t>{1, 2} : o.depths;
  const int64_t repetitions = o.quick ? 1 : o.repetitions;
  TORCH_CHECK_VALUE(o.directions == 1 || o.directions == 2, "revgan section: directions must be 1 (A to B) or 2 "
                    "(both), got ", o.directions);
  TORCH_CHECK_VALUE(!depths.empty(), "revgan section: give at least one core depth (--revgan-depths)");
  models::RevGANOptions options(3);
  options.channels_a(1).channels_b(1).ngf(ngf);
  torch::manual_seed(0);
  const auto tensor_options = torch::TensorOptions().device(o.device);
  const auto a = torch::randn({1, 1, size, size, size}, tensor_options);
  const auto b = torch::tanh(torch::randn({1, 1, size, size, size}, tensor_options));
  const std::string what = o.directions == 1
                               ? "A to B (RevGAN's forward; the pair's generator A to B), L1 loss, backward"
                               : "A to B and B to A (RevGAN's forward and inverse through the same core; the pair's "
                                 "two generators), an L1 loss each, one backward";
  std::cout << "RevGAN 3-D generator, patch " << size << "^3, ngf " << ngf << ", batch 1, step: " << what << "\n";

  std::map<int64_t, DepthResult> by_depth;
  std::vector<std::vector<std::string>> rows;
  for (const auto depth : depths) {
    options.depth(depth);
    const auto result = measure_depth(options, a, b, o.directions, repetitions);
    by_depth[depth] = result;
    const auto& conventional = result.measured[kConventional];
    for (std::size_t g = 0; g < result.measured.size(); ++g) {
      const auto& m = result.measured[g];
      rows.push_back({std::to_string(depth), kGenerators[g],
                      std::to_string(g == kConventional ? result.pair_parameters : result.revgan_parameters),
                      fixed(to_mib(m.peak_bytes), 1), fixed(ratio(m.peak_bytes, conventional.peak_bytes), 2),
                      fixed(m.median_seconds, 2), fixed(m.median_seconds / conventional.median_seconds, 2)});
    }
    std::cout << "[memcnn-bench] revgan depth " << depth << ": memory saving "
              << format_mib(result.measured[kSaving].peak_bytes) << ", no saving "
              << format_mib(result.measured[kPlain].peak_bytes) << ", conventional " << format_mib(conventional.peak_bytes)
              << ", time ratio saving / conventional "
              << fixed(result.measured[kSaving].median_seconds / conventional.median_seconds, 2) << std::endl;
  }

  std::ostringstream markdown;
  markdown << "## RevGAN 3-D: the generator's training step, memory saving against none and the conventional pair\n\n"
           << "`memcnn::models::RevGANGenerator(RevGANOptions(3))` (the MIDL 2019 architecture: replication pad 2, "
              "conv 5^3 to ngf, one stride-2 conv to 2 ngf; a core of additive couplings whose F and G are "
              "InstanceNorm, conv 3^3, InstanceNorm, ReLU, conv 3^3 on ngf channels each; a stride-2 transposed conv, "
              "conv 5^3, tanh), ngf "
           << ngf << ", one channel per domain, patch [1, 1, " << size << ", " << size << ", " << size
           << "], float32, device " << o.device << ". Step: " << what
           << "; no optimizer update. \"no memory saving\": the same generator and weights after "
              "`set_memory_saving(false)`. \"conventional pair\": `ConvGANPair`, the same encoder and decoder around "
              "a ResNet core (x + F(x), F at the full 2 ngf channels), one generator per direction";
  markdown << (o.directions == 1 ? " (the step runs its A-to-B generator; its parameters count both, as a "
                                   "CycleGAN or pix2pix model holds both)"
                                 : " (the step runs both)")
           << ". Parameters: RevGAN's both encoders, core and both decoders; the pair's two generators. Memory: the "
              "allocator's peak above the bytes live at the step's start (model, gradients, data), MiB (2^20 bytes). "
              "Time: median of "
           << repetitions << " step(s) each, the three generators of a depth in turn after a warm-up step each.\n\n";
  table(markdown, {"depth", "generator", "parameters", "activation MiB", "MiB / conventional", "step s (median)",
                   "time / conventional"},
        rows);
  if (by_depth.size() >= 2) {  // the figures compare depths
    std::cout << "RevGAN figures\n";
    markdown << "### Figures\n\n";
    table(markdown, {"figure", "measured", "target", "holds"}, figures(by_depth));
  }
  return markdown.str();
}

}  // namespace bench
}  // namespace memcnn
