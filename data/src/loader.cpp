#include <memcnn/data/loader.h>

#include <ATen/ops/empty.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace memcnn::data {
namespace {

// splitmix64's finaliser: a bijective mixer, so distinct counters give unrelated outputs.
uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

enum class Stream : uint64_t { permutation = 1, augmentation = 2, erasing = 3 };

// A counter-based generator: the value for (seed, stream, epoch, counter) needs no state, so
// any batch can be rebuilt on its own and the global torch generator is never touched.
uint64_t random_bits(uint64_t seed, Stream stream, uint64_t epoch, uint64_t counter) {
  uint64_t h = mix(seed + 0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(stream) + 1));
  h = mix(h ^ (epoch + 0x632BE59BD9B4E019ULL));
  return mix(h ^ (counter + 0x8CB92BA72F3D8DD7ULL));
}

// Uniform in [0, n) by multiply-shift (Lemire); the bias for n << 2^64 is negligible.
uint64_t below(uint64_t bits, uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
}

struct Augmentation {
  int64_t dy = 0, dx = 0;  // shift of the crop window, each in [-padding, padding]
  bool flip = false;
};

// Always draws the same bits for a sample, so a padding of 0 (flips only) flips exactly the
// samples that a padded run flips.
Augmentation augmentation_for(uint64_t seed, int64_t epoch, int64_t position, int64_t padding) {
  const uint64_t bits = random_bits(seed, Stream::augmentation, epoch, position);
  const auto offset = [padding](uint64_t sixteen_bits) {
    return static_cast<int64_t>((sixteen_bits * static_cast<uint64_t>(2 * padding + 1)) >> 16) - padding;
  };
  Augmentation a;
  a.dy = offset(bits & 0xFFFFULL);
  a.dx = offset((bits >> 16) & 0xFFFFULL);
  a.flip = ((bits >> 32) & 1ULL) != 0;
  return a;
}

// Uniform in [0, 1) from the top 53 bits.
double unit_interval(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

struct Erasure {
  int64_t top = 0, left = 0, height = 0, width = 0;  // height 0: nothing erased
};

constexpr double kEraseMinArea = 0.02, kEraseMaxArea = 0.33, kEraseMinRatio = 0.3, kEraseMaxRatio = 3.3;
constexpr int64_t kEraseTries = 10;

// LoaderOptions::erase_probability's rectangle for a sample; the counters of a sample's gate and
// tries are its own (position * (tries + 1) + k), so no two samples share a draw.
Erasure erasure_for(uint64_t seed, int64_t epoch, int64_t position, double probability, int64_t height, int64_t width) {
  const auto draw = [&](int64_t k) {
    return random_bits(seed, Stream::erasing, epoch, static_cast<uint64_t>(position * (kEraseTries + 1) + k));
  };
  if (probability <= 0 || unit_interval(draw(0)) >= probability) return {};
  const double image_area = static_cast<double>(height * width);
  for (int64_t k = 1; k <= kEraseTries; ++k) {
    const uint64_t shape = draw(k);
    const double area = image_area * (kEraseMinArea + (kEraseMaxArea - kEraseMinArea) * unit_interval(shape));
    const double log_ratio = std::log(kEraseMinRatio) +
                             (std::log(kEraseMaxRatio) - std::log(kEraseMinRatio)) * unit_interval(mix(shape));
    const auto h = static_cast<int64_t>(std::llround(std::sqrt(area * std::exp(log_ratio))));
    const auto w = static_cast<int64_t>(std::llround(std::sqrt(area / std::exp(log_ratio))));
    if (h < 1 || w < 1 || h >= height || w >= width) continue;
    const uint64_t place = mix(shape ^ 0xD1B54A32D192ED03ULL);
    Erasure e;
    e.height = h;
    e.width = w;
    e.top = static_cast<int64_t>(below(place, static_cast<uint64_t>(height - h + 1)));
    e.left = static_cast<int64_t>(below(mix(place), static_cast<uint64_t>(width - w + 1)));
    return e;
  }
  return {};
}

}  // namespace

at::Tensor mean_image(const Dataset& train) {
  const at::Tensor images = train.images.contiguous();
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte && images.size(0) > 0,
              "mean_image: expected non-empty uint8 images [N, C, H, W], got ", images.sizes(), " ",
              images.scalar_type());
  const int64_t n = images.size(0);
  const int64_t pixels = images.numel() / n;
  std::vector<uint64_t> sums(static_cast<size_t>(pixels), 0);
  const uint8_t* data = images.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = 0; p < pixels; ++p) sums[p] += data[i * pixels + p];
  at::Tensor mean = at::empty({images.size(1), images.size(2), images.size(3)}, at::kFloat);
  float* out = mean.data_ptr<float>();
  const double scale = 1.0 / (255.0 * static_cast<double>(n));
  for (int64_t p = 0; p < pixels; ++p) out[p] = static_cast<float>(static_cast<double>(sums[p]) * scale);
  return mean;
}

struct BatchLoader::Impl {
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  Dataset data;
  at::Tensor mean;
  LoaderOptions options;
  int64_t n = 0, channels = 0, height = 0, width = 0, batches = 0;
  std::array<float, 256> unit{};  // byte / 255, exactly as a float division gives it (byte_range: byte)

  std::mutex permutation_mutex;
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> permutations;

  std::mutex mutex;
  std::condition_variable work_cv, ready_cv;
  std::deque<int64_t> queue;
  std::set<int64_t> busy;
  std::map<int64_t, Slot> ready;
  int64_t window_start = 0;  // the last iteration requested; prefetch covers what follows
  bool stop = false;
  std::vector<std::thread> threads;

  Impl(Dataset dataset, at::Tensor mean_image, LoaderOptions opts);
  ~Impl();

  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t epoch);
  void write_sample(const uint8_t* in, const Augmentation& a, float* out) const;
  void erase(const Erasure& e, float* out) const;
  Batch prepare(int64_t iteration);
  Batch get(int64_t iteration);
  void worker();
  bool in_window(int64_t iteration) const;
  void drop_outside_window();
  void schedule(int64_t first, int64_t last);
};

namespace {

void validate(const Dataset& data, const at::Tensor& mean, const LoaderOptions& options) {
  if (!data.images.defined() || data.images.dim() != 4 || data.images.scalar_type() != at::kByte ||
      !data.images.device().is_cpu())
    throw std::invalid_argument("BatchLoader: dataset images must be a CPU uint8 tensor [N, C, H, W]");
  const int64_t n = data.images.size(0);
  if (n == 0) throw std::invalid_argument("BatchLoader: the dataset is empty");
  if (!data.labels.defined() || data.labels.dim() != 1 || data.labels.size(0) != n)
    throw std::invalid_argument("BatchLoader: dataset labels must be a tensor [N] matching the images");
  if (!mean.defined() || mean.sizes() != data.images.sizes().slice(1))
    throw std::invalid_argument("BatchLoader: the mean image must have shape [C, H, W] of the dataset images");
  if (options.batch_size() <= 0)
    throw std::invalid_argument("BatchLoader: batch_size must be positive, got " +
                                std::to_string(options.batch_size()));
  if (options.drop_last() && options.batch_size() > n)
    throw std::invalid_argument("BatchLoader: batch_size " + std::to_string(options.batch_size()) +
                                " exceeds the " + std::to_string(n) +
                                " samples of the dataset, so drop_last would leave no batch");
  if (options.shards() < 1 || options.shard() < 0 || options.shard() >= options.shards())
    throw std::invalid_argument("BatchLoader: shard " + std::to_string(options.shard()) + " of " +
                                std::to_string(options.shards()) + " does not exist: shards must be at least 1 and "
                                "shard in [0, shards)");
  if (options.drop_last() && options.batch_size() % options.shards() != 0)
    throw std::invalid_argument("BatchLoader: the global batch_size " + std::to_string(options.batch_size()) +
                                " does not divide into " + std::to_string(options.shards()) +
                                " equal shards; choose a batch size that is a multiple of the number of ranks");
  if (options.workers() < 0 || options.prefetch() < 0)
    throw std::invalid_argument("BatchLoader: workers and prefetch must not be negative");
  const int64_t smaller_side = std::min(data.images.size(2), data.images.size(3));
  if (options.crop_padding() < 0 || options.crop_padding() >= smaller_side)
    throw std::invalid_argument("BatchLoader: crop_padding " + std::to_string(options.crop_padding()) +
                                " must be in [0, " + std::to_string(smaller_side) +
                                "), the images' smaller side; 0 flips without cropping");
  if (!(options.erase_probability() >= 0 && options.erase_probability() <= 1)) {
    std::ostringstream message;
    message << "BatchLoader: erase_probability " << options.erase_probability()
            << " must be in [0, 1] (the share of training samples that get a rectangle erased)";
    throw std::invalid_argument(message.str());
  }
}

}  // namespace

BatchLoader::Impl::Impl(Dataset dataset, at::Tensor mean_image, LoaderOptions opts)
    : data(std::move(dataset)), options(opts) {
  validate(data, mean_image, options);
  data.images = data.images.contiguous();
  data.labels = data.labels.to(at::kLong).contiguous();
  mean = mean_image.to(at::kFloat).contiguous();
  n = data.images.size(0);
  channels = data.images.size(1);
  height = data.images.size(2);
  width = data.images.size(3);
  batches = options.drop_last() ? n / options.batch_size() : (n + options.batch_size() - 1) / options.batch_size();
  for (int v = 0; v < 256; ++v) unit[v] = options.byte_range() ? static_cast<float>(v) : static_cast<float>(v) / 255.0f;
  if (options.workers() > 0 && options.prefetch() > 0) {
    // Most runs start at iteration 0, so its batches are worth preparing straight away.
    schedule(0, options.prefetch() - 1);
    for (int i = 0; i < options.workers(); ++i) threads.emplace_back([this] { worker(); });
  }
}

BatchLoader::Impl::~Impl() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stop = true;
  }
  work_cv.notify_all();
  ready_cv.notify_all();
  for (auto& thread : threads) thread.join();
}

// Fisher-Yates driven by the counter-based generator; cached since every batch of an epoch
// needs it.
std::shared_ptr<const std::vector<int64_t>> BatchLoader::Impl::permutation(int64_t epoch) {
  std::lock_guard<std::mutex> lock(permutation_mutex);
  auto found = permutations.find(epoch);
  if (found != permutations.end()) return found->second;
  auto order = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) (*order)[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(
        below(random_bits(options.seed(), Stream::permutation, epoch, i), static_cast<uint64_t>(i + 1)));
    std::swap((*order)[i], (*order)[j]);
  }
  permutations[epoch] = order;
  if (permutations.size() > 3) permutations.erase(permutations.begin());
  return order;
}

// Crop of the zero-padded image at (dy, dx), mirrored if asked, then normalised.
void BatchLoader::Impl::write_sample(const uint8_t* in, const Augmentation& a, float* out) const {
  const float* mean_data = mean.data_ptr<float>();
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t y = 0; y < height; ++y) {
      const int64_t row_offset = (c * height + y) * width;
      const float* m = mean_data + row_offset;
      float* o = out + row_offset;
      const int64_t sy = y + a.dy;
      if (sy < 0 || sy >= height) {
        for (int64_t x = 0; x < width; ++x) o[x] = unit[0] - m[x];
        continue;
      }
      const uint8_t* row = in + (c * height + sy) * width;
      for (int64_t x = 0; x < width; ++x) {
        const int64_t sx = (a.flip ? width - 1 - x : x) + a.dx;
        const uint8_t v = (sx >= 0 && sx < width) ? row[sx] : 0;
        o[x] = unit[v] - m[x];
      }
    }
  }
}

// The rectangle in every channel set to 0, the mean image after normalisation.
void BatchLoader::Impl::erase(const Erasure& e, float* out) const {
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t y = e.top; y < e.top + e.height; ++y) {
      float* row = out + (c * height + y) * width + e.left;
      std::fill(row, row + e.width, 0.0f);
    }
  }
}

Batch BatchLoader::Impl::prepare(int64_t iteration) {
  const int64_t epoch = iteration / batches;
  // This shard's part of the global batch; augmentation depends on the global position, so the
  // union of the shards is exactly the global batch.
  const int64_t global_first = (iteration % batches) * options.batch_size();
  const int64_t global_count = std::min(options.batch_size(), n - global_first);
  const int64_t first = global_first + global_count * options.shard() / options.shards();
  const int64_t count = global_first + global_count * (options.shard() + 1) / options.shards() - first;
  const auto order = options.shuffle() ? permutation(epoch) : nullptr;
  const int64_t sample_size = channels * height * width;
  Batch batch;
  batch.images = at::empty({count, channels, height, width}, at::kFloat);
  batch.labels = at::empty({count}, at::kLong);
  float* images_out = batch.images.data_ptr<float>();
  int64_t* labels_out = batch.labels.data_ptr<int64_t>();
  const uint8_t* images_in = data.images.data_ptr<uint8_t>();
  const int64_t* labels_in = data.labels.data_ptr<int64_t>();
  for (int64_t k = 0; k < count; ++k) {
    const int64_t position = first + k;
    const int64_t index = order ? (*order)[position] : position;
    const Augmentation a = options.augment() ? augmentation_for(options.seed(), epoch, position, options.crop_padding())
                                           : Augmentation{};
    write_sample(images_in + index * sample_size, a, images_out + k * sample_size);
    if (options.augment()) {
      const Erasure e = erasure_for(options.seed(), epoch, position, options.erase_probability(), height, width);
      if (e.height > 0) erase(e, images_out + k * sample_size);
    }
    labels_out[k] = labels_in[index];
  }
  return batch;
}

bool BatchLoader::Impl::in_window(int64_t iteration) const {
  return iteration >= window_start && iteration <= window_start + options.prefetch();
}

void BatchLoader::Impl::drop_outside_window() {
  for (auto it = ready.begin(); it != ready.end();) it = in_window(it->first) ? std::next(it) : ready.erase(it);
  queue.erase(std::remove_if(queue.begin(), queue.end(), [this](int64_t i) { return !in_window(i); }), queue.end());
}

void BatchLoader::Impl::schedule(int64_t first, int64_t last) {
  for (int64_t i = first; i <= last; ++i)
    if (!ready.count(i) && !busy.count(i) && std::find(queue.begin(), queue.end(), i) == queue.end())
      queue.push_back(i);
}

void BatchLoader::Impl::worker() {
  std::unique_lock<std::mutex> lock(mutex);
  while (true) {
    work_cv.wait(lock, [this] { return stop || !queue.empty(); });
    if (stop) return;
    const int64_t iteration = queue.front();
    queue.pop_front();
    busy.insert(iteration);
    lock.unlock();
    Slot slot;
    try {
      slot.batch = prepare(iteration);
    } catch (...) {
      slot.error = std::current_exception();
    }
    lock.lock();
    busy.erase(iteration);
    if (in_window(iteration)) ready[iteration] = std::move(slot);
    ready_cv.notify_all();
  }
}

Batch BatchLoader::Impl::get(int64_t iteration) {
  if (threads.empty()) return prepare(iteration);
  std::optional<Slot> slot;
  {
    std::unique_lock<std::mutex> lock(mutex);
    window_start = iteration;
    drop_outside_window();
    // Another caller may move the window meanwhile; then the batch is simply built here.
    ready_cv.wait(lock, [&] { return stop || ready.count(iteration) || !busy.count(iteration); });
    auto found = ready.find(iteration);
    if (found != ready.end()) {
      slot = std::move(found->second);
      ready.erase(found);
    } else {
      queue.erase(std::remove(queue.begin(), queue.end(), iteration), queue.end());
    }
    schedule(iteration + 1, iteration + options.prefetch());
  }
  work_cv.notify_all();
  if (!slot) return prepare(iteration);
  if (slot->error) std::rethrow_exception(slot->error);
  return std::move(slot->batch);
}

BatchLoader::BatchLoader(Dataset dataset, torch::Tensor mean_image, LoaderOptions options)
    : impl_(std::make_unique<Impl>(std::move(dataset), std::move(mean_image), options)) {}

BatchLoader::~BatchLoader() = default;

int64_t BatchLoader::batches_per_epoch() const { return impl_->batches; }
int64_t BatchLoader::size() const { return impl_->n; }
const LoaderOptions& BatchLoader::options() const { return impl_->options; }

Batch BatchLoader::batch(int64_t iteration) {
  if (iteration < 0) throw std::invalid_argument("BatchLoader::batch: iteration must not be negative");
  return impl_->get(iteration);
}

}  // namespace memcnn::data
