// Tutorial: RevViT, the reversible vision transformer, against the plain ViT. Both come from
// memcnn::models (vit.h) with the same shape options. RevViT runs two streams of tokens through
// additive couplings (F = attention, G = MLP) inside memory-saving wrappers, so the activations
// of its blocks are rebuilt in backward instead of stored. The program measures the peak memory
// of a training step of each at two depths, and checks RevViT's gradients against the same
// network computed without memory saving.
//
//   memcnn-example-revvit

#include <memcnn/memory.h>
#include <memcnn/models/vit.h>

#include <torch/torch.h>

#include <iomanip>
#include <iostream>
#include <vector>

namespace {

// [options]
// A small transformer for 32x32 images: patches of 4x4 give 64 tokens (and a class token), 64
// features per token, 4 heads.
memcnn::models::ViTOptions transformer(int64_t depth) {
  return memcnn::models::ViTOptions().image_size(32).in_channels(3).num_classes(10).patch_size(4).dim(64).depth(
      depth).heads(4).mlp_dim(128);
}
// [options]

// [step]
// Peak bytes of one training step (forward, cross-entropy, backward) of any classifier.
int64_t step_bytes(memcnn::models::Classifier& model, const torch::Tensor& images, const torch::Tensor& labels) {
  memcnn::MemoryProbe probe;
  torch::nn::functional::cross_entropy(model->forward(images), labels).backward();
  return probe.peak_above_start();
}
// [step]

}  // namespace

int main() try {
  memcnn::enable_cpu_memory_tracking();
  const torch::Tensor images = torch::randn({16, 3, 32, 32});
  const torch::Tensor labels = torch::randint(10, {16});
  bool ok = true;

  // [compare]
  // ViT's activation memory grows with every block; RevViT's stays nearly where it is.
  std::vector<int64_t> vit_bytes, revvit_bytes;
  for (const int64_t depth : {2, 8}) {
    torch::manual_seed(0);
    memcnn::models::Classifier vit = memcnn::models::ViT(transformer(depth));
    torch::manual_seed(0);
    memcnn::models::Classifier revvit = memcnn::models::RevViT(transformer(depth));
    vit_bytes.push_back(step_bytes(vit, images, labels));
    revvit_bytes.push_back(step_bytes(revvit, images, labels));
    std::cout << "depth " << depth << ": ViT " << memcnn::format_mib(vit_bytes.back(), 2) << ", RevViT "
              << memcnn::format_mib(revvit_bytes.back(), 2) << "\n";
  }
  const int64_t vit_growth = vit_bytes[1] - vit_bytes[0], revvit_growth = revvit_bytes[1] - revvit_bytes[0];
  std::cout << "6 more blocks cost ViT " << memcnn::format_mib(vit_growth, 2) << ", RevViT "
            << memcnn::format_mib(revvit_growth, 2) << "\n";
  const bool flatter = revvit_bytes[1] < vit_bytes[1] && revvit_growth < vit_growth / 2;
  std::cout << (flatter ? "RevViT saves " + memcnn::format_mib(vit_bytes[1] - revvit_bytes[1], 2) + " at depth 8"
                        : std::string("RevViT saved NOTHING"))
            << "\n";
  ok = ok && flatter;
  // [compare]

  // [gradients]
  // The wrapper option disable(true) computes the same RevViT with a full autograd graph. Built
  // from the same seed, both have the same weights; their gradients agree to float32 rounding
  // (RevViTOptions().exact(true) makes them agree bit for bit).
  torch::manual_seed(1);
  memcnn::models::RevViT saving(transformer(4));
  torch::manual_seed(1);
  memcnn::models::RevViT plain(memcnn::models::RevViTOptions(transformer(4)).wrapper(
      memcnn::InvertibleModuleWrapperOptions().preserve_rng_state(true).disable(true)));
  for (auto* model : {&saving, &plain}) {
    torch::nn::functional::cross_entropy((*model)->forward(images), labels).backward();
  }
  double largest = 0, scale = 0;
  const auto saving_parameters = saving->parameters(), plain_parameters = plain->parameters();
  for (std::size_t i = 0; i < saving_parameters.size(); ++i) {
    largest = std::max(largest, (saving_parameters[i].grad() - plain_parameters[i].grad()).abs().max().item<double>());
    scale = std::max(scale, plain_parameters[i].grad().abs().max().item<double>());
  }
  std::cout << "RevViT gradients with and without memory saving: relative difference " << std::scientific
            << std::setprecision(1) << largest / scale
            << (largest / scale < 1e-4 ? " (gradients match)" : " (gradients DIFFER)") << "\n";
  ok = ok && largest / scale < 1e-4;
  // [gradients]

  std::cout << (ok ? "all checks passed" : "a check FAILED") << "\n";
  return ok ? 0 : 1;
} catch (const std::exception& error) {
  std::cerr << "memcnn-example-revvit: " << error.what() << "\n";
  return 1;
}
