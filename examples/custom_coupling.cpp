// Tutorial: a custom coupling. Two modules of your own (F and G) become an invertible block through
// memcnn::AdditiveCoupling or memcnn::AffineCoupling; memcnn::is_invertible_module checks it;
// memcnn::InvertibleModuleWrapper then frees the block's input after forward and rebuilds it from
// the output in backward. The program measures what that saves, in MiB, on a stack of blocks.
//
//   memcnn-example-custom-coupling

#include <memcnn/memcnn.h>

#include <torch/torch.h>

#include <iomanip>
#include <iostream>

namespace {

// [branch]
// F and G: any module whose forward maps a half of the channels to a tensor of the same shape
// (AffineCoupling's sigmoid adapter wants twice the channels: scale and shift). Deriving from
// Cloneable (with reset() building the layers) lets memcnn deep-copy the block: clone(), and
// AdditiveCoupling(F) alone, whose G is then an independent copy of F.
struct ConvBranchImpl : torch::nn::Cloneable<ConvBranchImpl> {
  ConvBranchImpl(int64_t channels, int64_t out_channels) : channels(channels), out_channels(out_channels) {
    reset();
  }
  void reset() override {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)));
    norm = register_module("norm", torch::nn::BatchNorm2d(channels));
    conv2 = register_module("conv2",
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, out_channels, 3).padding(1)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv2(torch::relu(norm(conv1(x)))); }

  int64_t channels, out_channels;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d norm{nullptr};
};
TORCH_MODULE(ConvBranch);
// [branch]

constexpr int64_t kChannels = 16;  // of the block's input; F and G see half of them
constexpr int64_t kHalf = kChannels / 2;
constexpr int64_t kDepth = 8;  // blocks in the stack whose memory is measured

// [stack]
// A stack of wrapped additive couplings. `memory_saving` false sets the wrappers' disable option:
// the same computation with a full autograd graph, for comparison.
torch::nn::Sequential coupling_stack(bool memory_saving) {
  torch::nn::Sequential stack;
  for (int64_t i = 0; i < kDepth; ++i) {
    stack->push_back(memcnn::InvertibleModuleWrapper(
        memcnn::AdditiveCoupling(ConvBranch(kHalf, kHalf), ConvBranch(kHalf, kHalf)),
        memcnn::InvertibleModuleWrapperOptions().disable(!memory_saving)));
  }
  return stack;
}

struct StepResult {
  int64_t peak_bytes;  // allocated during the step, above what was live before it
  torch::Tensor first_gradient;
};

// One training step (forward, loss, backward) measured by a memcnn::MemoryProbe: the allocator's
// peak while the probe lives, above the bytes live when it was made.
StepResult training_step(torch::nn::Sequential& stack, const torch::Tensor& input) {
  // The first wrapper frees its input after forward (a wrapper cannot tell the caller's tensor
  // from an activation): hand it a copy. Pass keep_input(true) to the first wrapper instead when
  // the caller's tensor must stay usable.
  torch::Tensor x = input.clone();
  memcnn::MemoryProbe probe;
  torch::Tensor loss = stack->forward(x).square().mean();
  loss.backward();
  return {probe.peak_above_start(), stack->parameters().front().grad().clone()};
}
// [stack]

}  // namespace

int main() try {
  // CPU memory is counted by a wrapper around LibTorch's allocator, installed before the tensors
  // to be measured exist.
  memcnn::enable_cpu_memory_tracking();
  torch::manual_seed(0);
  bool ok = true;

  // [check]
  // An additive coupling: y1 = x1 + F(x2), y2 = x2 + G(y1), split along the channels.
  memcnn::AdditiveCoupling additive(ConvBranch(kHalf, kHalf), ConvBranch(kHalf, kHalf));
  // An affine coupling: y1 = x1 * s(x2) + t(x2), with s and t from F's output. The sigmoid adapter
  // (s = sigmoid(h + 2), bounded) reads scale and shift from F's 2 * kHalf output channels.
  memcnn::AffineCoupling affine(ConvBranch(kHalf, 2 * kHalf), ConvBranch(kHalf, 2 * kHalf),
                                memcnn::AffineCouplingOptions().adapter(memcnn::AffineAdapter::sigmoid));

  // is_invertible_module runs forward and inverse on random inputs of this shape and compares;
  // it leaves the module as it found it (BatchNorm statistics, random generators).
  const bool additive_ok = memcnn::is_invertible_module(additive, {4, kChannels, 16, 16});
  const bool affine_ok = memcnn::is_invertible_module(affine, {4, kChannels, 16, 16});
  std::cout << std::boolalpha << "is_invertible_module(additive): " << additive_ok << "\n"
            << "is_invertible_module(affine): " << affine_ok << "\n";
  ok = ok && additive_ok && affine_ok;
  // [check]

  // [wrap]
  // The wrapper runs the coupling; in training with gradients on, its input is freed after
  // forward. Without grad mode it is a plain call, as here.
  memcnn::InvertibleModuleWrapper block(affine);
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::randn({4, kChannels, 16, 16});
    const torch::Tensor y = block->forward(x);
    const double error = (block->inverse(y) - x).abs().max().item<double>();
    // An affine coupling changes the volume: log|det J| per sample, the sum of log s.
    const torch::Tensor log_det = affine->log_det(x);
    std::cout << "max |inverse(forward(x)) - x| = " << std::scientific << std::setprecision(2) << error
              << (error < 1e-4 ? ": inverse matches" : ": inverse DIFFERS") << "\n"
              << "affine log|det J| per sample:" << std::fixed << std::setprecision(3);
    for (int64_t i = 0; i < log_det.size(0); ++i) std::cout << " " << log_det[i].item<double>();
    std::cout << "\n";
    ok = ok && error < 1e-4;
  }
  // [wrap]

  // [measure]
  // The same stack (same seed, same weights) with and without memory saving.
  const torch::Tensor input = torch::randn({8, kChannels, 32, 32});
  torch::manual_seed(1);
  auto plain = coupling_stack(/*memory_saving=*/false);
  torch::manual_seed(1);
  auto saving = coupling_stack(/*memory_saving=*/true);
  const StepResult without = training_step(plain, input);
  const StepResult with = training_step(saving, input);

  const double gradient_difference = (with.first_gradient - without.first_gradient).abs().max().item<double>() /
                                     without.first_gradient.abs().max().item<double>();
  std::cout << "training step of " << kDepth << " couplings on " << input.sizes() << ":\n"
            << "  peak without memory saving: " << memcnn::format_mib(without.peak_bytes, 2) << "\n"
            << "  peak with memory saving:    " << memcnn::format_mib(with.peak_bytes, 2) << "\n"
            << "  gradients: relative difference " << std::scientific << std::setprecision(1)
            << gradient_difference << "\n";
  const bool saves = with.peak_bytes < without.peak_bytes;
  if (saves) {
    std::cout << "memory saving saves " << memcnn::format_mib(without.peak_bytes - with.peak_bytes, 2) << " ("
              << std::fixed << std::setprecision(1)
              << static_cast<double>(without.peak_bytes) / static_cast<double>(with.peak_bytes) << "x less)\n";
  } else {
    std::cout << "memory saving saved NOTHING\n";
  }
  ok = ok && saves && gradient_difference < 1e-4;
  // [measure]

  std::cout << (ok ? "all checks passed" : "a check FAILED") << "\n";
  return ok ? 0 : 1;
} catch (const std::exception& error) {
  std::cerr << "memcnn-example-custom-coupling: " << error.what() << "\n";
  return 1;
}
