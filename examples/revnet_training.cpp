// Tutorial: training a RevNet with the library's own parts, without memcnn-train: a RevNet from
// memcnn::models, Fashion-MNIST read by memcnn::data (Debian's dataset-fashion-mnist package), a
// deterministic batch loader, and an ordinary LibTorch training loop.
//
//   memcnn-example-revnet-training [ITERATIONS] [DATA_DIR]
//
// ITERATIONS defaults to 30; DATA_DIR to /usr/share/datasets/fashion-mnist.

#include <memcnn/data/dataset.h>
#include <memcnn/data/loader.h>
#include <memcnn/models/resnet.h>

#include <torch/torch.h>

#include <iomanip>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

namespace {

double mean(const std::vector<double>& values, std::size_t begin, std::size_t end) {
  return std::accumulate(values.begin() + static_cast<std::ptrdiff_t>(begin),
                         values.begin() + static_cast<std::ptrdiff_t>(end), 0.0) /
         static_cast<double>(end - begin);
}

}  // namespace

int main(int argc, char** argv) try {
  const int64_t iterations = argc > 1 ? std::stoll(argv[1]) : 30;
  const std::string data_dir = argc > 2 ? argv[2] : "";  // empty: Debian's folder
  if (iterations < 10) throw std::invalid_argument("ITERATIONS must be at least 10, got " + std::to_string(iterations));
  torch::manual_seed(0);

  // [data]
  // Fashion-MNIST: uint8 images [60000, 1, 28, 28] and labels. The loader normalises them
  // (image / 255 minus the mean image of the training set), augments them (random crops of the
  // zero-padded image, horizontal flips) and prepares batches ahead on worker threads. batch(i)
  // depends only on the data, the seed and i, so a resumed run sees the same batches.
  memcnn::data::Dataset train_set = memcnn::data::load_dataset("fashion-mnist", data_dir, /*train=*/true);
  const torch::Tensor mean_image = memcnn::data::mean_image(train_set);
  const int64_t classes = train_set.num_classes, in_channels = train_set.images.size(1);
  memcnn::data::BatchLoader loader(std::move(train_set), mean_image,
                                   memcnn::data::LoaderOptions().batch_size(32).seed(0));
  // [data]

  // [model]
  // MemCNN's RevNet-38 is model_options("revnet38"): three stages of three blocks, 32 to 112
  // channels wide. Here two blocks per stage and half the width, so that the tutorial trains in
  // seconds. With
  // reversible(true) every stride-1 block is an additive coupling inside the memory-saving
  // wrapper; the blocks that change the shape stay plain residual blocks.
  memcnn::models::ResNetOptions options = memcnn::models::model_options("revnet38", classes, in_channels);
  options.layers({2, 2, 2}).channels_per_layer({16, 16, 32, 64});
  memcnn::models::ResNet model(options);
  std::cout << "RevNet: " << memcnn::models::count_parameters(*model) << " parameters, "
            << model->wrappers().size() << " memory-saving blocks\n";
  // [model]

  // [train]
  // SGD with momentum, as MemCNN's experiments train RevNets (with a shorter schedule).
  torch::optim::SGD optimizer(model->parameters(),
                              torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(2e-4));
  model->train();
  std::vector<double> losses;
  for (int64_t iteration = 0; iteration < iterations; ++iteration) {
    const memcnn::data::Batch batch = loader.batch(iteration);
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    losses.push_back(loss.item<double>());
    if (iteration % 10 == 0 || iteration + 1 == iterations) {
      std::cout << "iteration " << std::setw(3) << iteration << "  loss " << std::fixed << std::setprecision(4)
                << losses.back() << "\n";
    }
  }
  // [train]

  // [check]
  // Single losses are noisy: compare the mean of the first five with that of the last five.
  const double first = mean(losses, 0, 5), last = mean(losses, losses.size() - 5, losses.size());
  const bool decreased = last < first;
  std::cout << "mean loss of the first 5 iterations " << first << ", of the last 5 " << last << ": "
            << (decreased ? "loss decreased" : "loss did NOT decrease") << "\n";
  return decreased ? 0 : 1;
  // [check]
} catch (const std::exception& error) {
  std::cerr << "memcnn-example-revnet-training: " << error.what() << "\n";
  return 1;
}
