// A fully invertible network in the style of i-RevNet, trained on Fashion-MNIST:
//   squeeze (1x28x28 -> 4x14x14), 1x1 invertible convolution, couplings,
//   squeeze (-> 16x7x7), 1x1 invertible convolution, couplings,
// all one InvertibleSequential inside one memory-saving wrapper (one autograd node, one
// rebuild pass in backward), then a small non-invertible head. It reports the activation
// memory of a training step at two depths, which stays flat, and trains briefly.

#include <memcnn/memcnn.h>
#include <memcnn/data/dataset.h>
#include <memcnn/data/loader.h>
#include <memcnn/models/resnet.h>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <iomanip>
#include <iostream>
#include <thread>

using namespace memcnn;

namespace {

// Conv-BN-ReLU-Conv on half the channels: F and G of the couplings.
torch::nn::AnyModule half_block(int64_t channels) {
  return torch::nn::AnyModule(models::BlockSub(models::BlockSubOptions(models::BlockKind::basic, channels, channels)));
}

struct IRevNetImpl : torch::nn::Module {
  IRevNetImpl(int64_t couplings_per_stage, int64_t classes) {
    InvertibleSequential body;
    int64_t channels = 1;
    for (int stage = 0; stage < 2; ++stage) {
      body->push_back(InvertibleDownsampling());
      channels *= 4;
      body->push_back(InvertibleConv1x1(channels));
      for (int64_t b = 0; b < couplings_per_stage; ++b) {
        body->push_back(AdditiveCoupling(half_block(channels / 2), half_block(channels / 2)));
      }
    }
    invertible = register_module("invertible", InvertibleModuleWrapper(body));
    norm = register_module("norm", torch::nn::BatchNorm2d(channels));
    fc = register_module("fc", torch::nn::Linear(channels, classes));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = norm->forward(invertible->forward(x)).relu_();
    return fc->forward(torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1));
  }
  InvertibleModuleWrapper invertible{nullptr};
  torch::nn::BatchNorm2d norm{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(IRevNet);

int64_t step_activation_bytes(IRevNet& model, const data::Batch& batch) {
  auto loss = [&] { return torch::nn::functional::cross_entropy(model->forward(batch.images), batch.labels); };
  loss().backward();  // allocates the gradients
  for (auto& p : model->parameters()) p.grad().zero_();
  MemoryProbe probe;
  loss().backward();
  return probe.peak_above_start();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"An i-RevNet-style fully invertible network on Fashion-MNIST"};
  int64_t iterations = 600, batch_size = 100, depth = 4;
  std::string data_dir;
  app.add_option("--iterations", iterations, "training iterations")->check(CLI::NonNegativeNumber);
  app.add_option("--batch-size", batch_size, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--depth", depth, "couplings per stage of the trained network")->check(CLI::PositiveNumber);
  app.add_option("--data-dir", data_dir, "Fashion-MNIST folder (default: Debian's)");
  CLI11_PARSE(app, argc, argv);
  try {
    enable_cpu_memory_tracking();
    torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    auto train_set = data::load_dataset("fashion-mnist", data_dir, true);
    auto test_set = data::load_dataset("fashion-mnist", data_dir, false);
    const auto mean = data::mean_image(train_set);
    data::BatchLoader train_loader(std::move(train_set), mean, data::LoaderOptions().batch_size(batch_size));
    data::BatchLoader test_loader(std::move(test_set), mean,
                                  data::LoaderOptions().batch_size(500).augment(false).shuffle(false).drop_last(false));

    // Activation memory against depth, same batch.
    const auto probe_batch = train_loader.batch(0);
    std::vector<int64_t> bytes;
    for (const int64_t d : {depth, 4 * depth}) {
      torch::manual_seed(0);
      IRevNet model(d, 10);
      bytes.push_back(step_activation_bytes(model, probe_batch));
      std::cout << "[irevnet] " << d << " couplings per stage: activation memory of a training step "
                << memcnn::format_mib(bytes.back(), 2) << std::endl;
    }
    const double growth = static_cast<double>(bytes[1]) / bytes[0];
    std::cout << "[irevnet] 4x the depth: " << std::setprecision(3) << growth << "x the activation memory ("
              << (growth < 1.1 ? "flat" : "NOT flat") << ")" << std::endl;

    torch::manual_seed(0);
    IRevNet model(depth, 10);
    torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(2e-4));
    for (int64_t it = 0; it < iterations; ++it) {
      const auto batch = train_loader.batch(it);
      optimizer.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(batch.images), batch.labels);
      loss.backward();
      optimizer.step();
      if ((it + 1) % 100 == 0) std::cout << "[irevnet] it " << it + 1 << " loss " << loss.item<double>() << std::endl;
    }
    if (iterations > 0) {
      torch::NoGradGuard no_grad;
      model->eval();
      int64_t correct = 0, seen = 0;
      for (int64_t b = 0; b < test_loader.batches_per_epoch(); ++b) {
        const auto batch = test_loader.batch(b);
        correct += model->forward(batch.images).argmax(1).eq(batch.labels).sum().item<int64_t>();
        seen += batch.labels.size(0);
      }
      std::cout << "[irevnet] test accuracy after " << iterations << " iterations: " << std::setprecision(2)
                << 100.0 * correct / seen << "%" << std::endl;
    }
    return growth < 1.1 ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "irevnet-example: " << e.what() << std::endl;
    return 1;
  }
}
