// Tutorial: checkpointing blocks that are not invertible. A block that cannot be inverted (it
// changes the number of channels, or loses information through ReLU) cannot rebuild its input
// from its output; gradient checkpointing keeps that input instead and drops everything computed
// inside the block, then recomputes the block in backward. memcnn::Checkpointed does this for a
// module, memcnn::checkpoint for any function. The program measures a training step's peak
// memory with and without, and checks that gradients and BatchNorm statistics come out the same.
//
//   memcnn-example-checkpointing

#include <memcnn/checkpoint.h>
#include <memcnn/memory.h>

#include <torch/torch.h>

#include <iomanip>
#include <iostream>
#include <vector>

namespace {

constexpr int64_t kChannels = 16, kBlocks = 6;

// [block]
// Conv-BN-ReLU twice: not invertible. Built as a torch::nn::Sequential, whose modules Checkpointed
// runs as one segment.
torch::nn::Sequential conv_block() {
  return torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(kChannels, kChannels, 3).padding(1)),
                               torch::nn::BatchNorm2d(kChannels), torch::nn::ReLU(),
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(kChannels, kChannels, 3).padding(1)),
                               torch::nn::BatchNorm2d(kChannels), torch::nn::ReLU());
}

// kBlocks blocks, each a checkpointed segment or not. Checkpointed takes the Sequential's modules
// themselves (not copies): the two networks built from the same seed start with the same weights.
// (A Sequential cannot hold a Sequential, whose forward is a template; memcnn::TensorSequential,
// the same modules behind a forward of one tensor, can.)
torch::nn::Sequential network(bool checkpointed) {
  torch::nn::Sequential net;
  for (int64_t i = 0; i < kBlocks; ++i) {
    if (checkpointed) {
      net->push_back(memcnn::Checkpointed(conv_block()));
    } else {
      net->push_back(memcnn::TensorSequential(conv_block()));
    }
  }
  return net;
}
// [block]

// [step]
struct Step {
  int64_t peak_bytes;
  std::vector<torch::Tensor> gradients, buffers;
};

// One training step measured by a MemoryProbe (allocator bytes above those live at its start).
Step training_step(torch::nn::Sequential& net, const torch::Tensor& x) {
  memcnn::MemoryProbe probe;
  net->forward(x).square().mean().backward();
  Step step{probe.peak_above_start(), {}, {}};
  for (const auto& p : net->parameters()) step.gradients.push_back(p.grad());
  for (const auto& b : net->buffers()) step.buffers.push_back(b.clone());
  return step;
}
// [step]

double largest_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double largest = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    largest = std::max(largest, (a[i].to(torch::kFloat64) - b[i].to(torch::kFloat64)).abs().max().item<double>());
  }
  return largest;
}

}  // namespace

int main() try {
  memcnn::enable_cpu_memory_tracking();  // before the tensors to be counted exist
  const torch::Tensor x = torch::randn({16, kChannels, 32, 32});
  bool ok = true;

  // [compare]
  torch::manual_seed(0);
  auto plain = network(/*checkpointed=*/false);
  torch::manual_seed(0);
  auto checkpointed = network(/*checkpointed=*/true);
  const Step without = training_step(plain, x);
  const Step with = training_step(checkpointed, x);

  // Backward ran each block twice (recomputing it), yet the BatchNorm running statistics are
  // those of one forward: Checkpointed puts the buffers back before the recompute.
  const double gradient_difference = largest_difference(with.gradients, without.gradients);
  const double buffer_difference = largest_difference(with.buffers, without.buffers);
  std::cout << "training step of " << kBlocks << " Conv-BN-ReLU blocks on " << x.sizes() << ":\n"
            << "  peak without checkpointing: " << memcnn::format_mib(without.peak_bytes, 2) << "\n"
            << "  peak with checkpointing:    " << memcnn::format_mib(with.peak_bytes, 2) << "\n"
            << std::scientific << std::setprecision(1) << "  gradients: largest difference " << gradient_difference
            << "\n  BatchNorm running statistics: largest difference " << buffer_difference << "\n";
  const bool saves = with.peak_bytes < without.peak_bytes;
  std::cout << (saves ? "checkpointing saves " + memcnn::format_mib(without.peak_bytes - with.peak_bytes, 2)
                      : std::string("checkpointing saved NOTHING"))
            << "\n";
  const bool same = gradient_difference < 1e-5 && buffer_difference < 1e-6;
  std::cout << (same ? "gradients and statistics match" : "gradients or statistics DIFFER") << "\n";
  ok = ok && saves && same;
  // [compare]

  // [function]
  // memcnn::checkpoint wraps a function instead of a module: here a gated linear unit,
  // out = a(x) * sigmoid(b(x)). Only x is kept for backward. Every tensor the function uses that
  // needs a gradient besides its inputs is passed in `parameters`; one left out gets none.
  torch::nn::Linear a(64, 64), b(64, 64);
  auto gated = [&](const torch::Tensor& input) { return a(input) * torch::sigmoid(b(input)); };
  std::vector<torch::Tensor> parameters = a->parameters();
  for (const auto& p : b->parameters()) parameters.push_back(p);

  const torch::Tensor input = torch::randn({128, 64}, torch::requires_grad());
  memcnn::checkpoint(gated, input, parameters).sum().backward();
  const torch::Tensor checkpointed_grad = input.grad().clone();
  input.grad().zero_();
  gated(input).sum().backward();  // the plain computation
  const double function_difference = (checkpointed_grad - input.grad()).abs().max().item<double>();
  std::cout << "memcnn::checkpoint on a function: input gradients differ by " << function_difference
            << (function_difference < 1e-5 ? " (match)" : " (DIFFERS)") << "\n";
  ok = ok && function_difference < 1e-5;
  // [function]

  std::cout << (ok ? "all checks passed" : "a check FAILED") << "\n";
  return ok ? 0 : 1;
} catch (const std::exception& error) {
  std::cerr << "memcnn-example-checkpointing: " << error.what() << "\n";
  return 1;
}
