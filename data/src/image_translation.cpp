#include <memcnn/data/image_translation.h>

#include <memcnn/data/fashion_mnist.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <filesystem>
#include <vector>
#include <stdexcept>

namespace memcnn::data {

namespace {

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

void check_images(const char* function, const torch::Tensor& images) {
  TORCH_CHECK_VALUE(images.defined() && images.dim() == 4 && images.size(1) == 1, function,
                    ": expects single-channel images [N, 1, H, W], got ",
                    images.defined() ? images.sizes() : at::IntArrayRef{});
}

void require_fashion_file(const std::string& dir, const std::string& base) {
  const auto path = std::filesystem::path(dir) / base;
  const bool present =
      std::filesystem::is_regular_file(path.string() + ".gz") || std::filesystem::is_regular_file(path);
  TORCH_CHECK(present, "Fashion-MNIST: '", path.string(), ".gz' is missing: install Debian's dataset-fashion-mnist ",
              "(apt install dataset-fashion-mnist), or pass the folder that holds the IDX files (now '", dir, "')");
}

}  // namespace

torch::Tensor sobel_edges(const torch::Tensor& images) {
  check_images("sobel_edges", images);
  const int64_t h = images.size(2), w = images.size(3);
  TORCH_CHECK_VALUE(h >= 2 && w >= 2, "sobel_edges: images of ", h, "x", w, " pixels are too small; at least 2x2");
  // In chunks of 256 images (1.5 MiB per float64 temporary for 28x28), which stay in cache; all
  // 60,000 at once would allocate and fault in hundreds of MiB per temporary.
  constexpr int64_t kChunk = 256;
  std::vector<torch::Tensor> chunks;
  for (int64_t first = 0; first < images.size(0); first += kChunk) {
    const auto x = images.narrow(0, first, std::min(kChunk, images.size(0) - first))
                       .detach()
                       .to(torch::kCPU, torch::kFloat64);
    // Zero beyond the border; p(dy, dx) is the image shifted so that p(dy, dx)[y][x] = x[y+dy][x+dx].
    const auto padded = torch::constant_pad_nd(x, {1, 1, 1, 1}, 0.0);
    auto p = [&](int64_t dy, int64_t dx) { return padded.narrow(2, 1 + dy, h).narrow(3, 1 + dx, w); };
    const auto gx = (p(-1, 1) + 2 * p(0, 1) + p(1, 1)) - (p(-1, -1) + 2 * p(0, -1) + p(1, -1));
    const auto gy = (p(1, -1) + 2 * p(1, 0) + p(1, 1)) - (p(-1, -1) + 2 * p(-1, 0) + p(-1, 1));
    const auto magnitude = (gx * gx + gy * gy).sqrt_();
    const auto largest = magnitude.amax({1, 2, 3}, true);
    const auto scale = torch::where(largest > 0, 255.0 / largest, torch::zeros_like(largest));
    chunks.push_back(magnitude.mul_(scale).round_().clamp_(0, 255).to(torch::kUInt8));
  }
  return torch::cat(chunks);
}

TranslationPairs load_fashion_edges(const std::string& dir, bool train) {
  const std::string folder = dir.empty() ? default_fashion_mnist_dir() : dir;
  const std::string prefix = train ? "train" : "t10k";
  require_fashion_file(folder, prefix + "-images-idx3-ubyte");
  require_fashion_file(folder, prefix + "-labels-idx1-ubyte");
  const Dataset images = read_fashion_mnist(folder, train);
  return {sobel_edges(images.images), images.images, "fashion-edges"};
}

TranslationBatches::TranslationBatches(TranslationPairs pairs, TranslationLoaderOptions options)
    : pairs_(std::move(pairs)), options_(options) {
  check_images("TranslationBatches (domain A)", pairs_.a);
  check_images("TranslationBatches (domain B)", pairs_.b);
  if (pairs_.a.sizes() != pairs_.b.sizes())
    throw std::invalid_argument("TranslationBatches: domain A's shape " + c10::str(pairs_.a.sizes()) +
                                " differs from domain B's " + c10::str(pairs_.b.sizes()) +
                                "; give one B image per A image, of the same size");
  if (options_.batch_size() < 1 || options_.batch_size() > size())
    throw std::invalid_argument("TranslationBatches: batch_size " + std::to_string(options_.batch_size()) +
                                " must lie in 1.." + std::to_string(size()) + " (the number of samples)");
}

int64_t TranslationBatches::batches_per_epoch() const { return size() / options_.batch_size(); }

torch::Tensor TranslationBatches::order(int64_t epoch, uint64_t stream) const {
  if (!options_.shuffle()) return torch::arange(size(), torch::kLong);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(
      mix(options_.seed() ^ mix(static_cast<uint64_t>(epoch) ^ mix(stream))));
  return torch::randperm(size(), generator, torch::kLong);
}

TranslationBatch TranslationBatches::batch(int64_t iteration) const {
  TORCH_CHECK_VALUE(iteration >= 0, "TranslationBatches::batch: iteration must be >= 0, not ", iteration);
  const int64_t epoch = iteration / batches_per_epoch();
  const int64_t first = (iteration % batches_per_epoch()) * options_.batch_size();
  TranslationBatch batch;
  batch.a_indices = order(epoch, 0).narrow(0, first, options_.batch_size());
  batch.b_indices = options_.paired() ? batch.a_indices : order(epoch, 1).narrow(0, first, options_.batch_size());
  batch.a = bytes_to_unit(pairs_.a.index_select(0, batch.a_indices));
  batch.b = bytes_to_unit(pairs_.b.index_select(0, batch.b_indices));
  return batch;
}

TranslationFigures evaluate_translation(const torch::Tensor& prediction, const torch::Tensor& target) {
  check_images("evaluate_translation (prediction)", prediction);
  check_images("evaluate_translation (target)", target);
  TORCH_CHECK_VALUE(prediction.sizes() == target.sizes(), "evaluate_translation: the prediction's shape ",
                    prediction.sizes(), " differs from the target's ", target.sizes());
  TORCH_CHECK_VALUE(prediction.is_floating_point(), "evaluate_translation: the prediction must be a generator's ",
                    "floating-point output in [-1, 1], got ", prediction.scalar_type());
  const auto predicted = unit_to_bytes(prediction.to(torch::kCPU));
  TranslationFigures figures;
  figures.images = prediction.size(0);
  figures.l1 = mean_absolute_error(predicted, target);
  figures.psnr = psnr(predicted, target);
  figures.ssim = ssim(predicted, target, 2);
  return figures;
}

}  // namespace memcnn::data
