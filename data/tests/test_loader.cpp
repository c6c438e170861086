// The batch loader: determinism, augmentation geometry, normalisation, partial batches and
// prefetching.

#include <memcnn/data/loader.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <memory>
#include <set>
#include <thread>
#include <tuple>

namespace memcnn::data::test {
namespace {

// n random images [n, c, h, w]; label i = i so the sample behind every output is known.
Dataset random_dataset(int64_t n, int64_t c = 3, int64_t h = 8, int64_t w = 8) {
  at::Generator generator = at::detail::createCPUGenerator(1234);
  Dataset data;
  data.images = at::randint(0, 256, {n, c, h, w}, generator, at::kByte);
  data.labels = at::arange(n, at::kLong);
  data.num_classes = n;
  data.name = "random";
  return data;
}

void expect_same(const Batch& a, const Batch& b) {
  EXPECT_TRUE(at::equal(a.images, b.images));
  EXPECT_TRUE(at::equal(a.labels, b.labels));
}

TEST(MeanImage, PerPixelMeanOverSamples) {
  const Dataset data = random_dataset(50);
  const at::Tensor mean = mean_image(data);
  EXPECT_EQ(mean.scalar_type(), at::kFloat);
  EXPECT_EQ(mean.sizes(), (at::IntArrayRef{3, 8, 8}));
  const at::Tensor expected = data.images.to(at::kDouble).div(255).mean(0).to(at::kFloat);
  EXPECT_TRUE(at::allclose(mean, expected, 1e-6, 1e-7));
}

TEST(BatchLoader, MeanSubtractionWithoutAugmentation) {
  const Dataset data = random_dataset(10);
  const at::Tensor mean = mean_image(data);
  BatchLoader loader(data, mean, LoaderOptions().batch_size(4).augment(false).shuffle(false));
  const Batch batch = loader.batch(1);
  const at::Tensor expected = data.images.slice(0, 4, 8).to(at::kFloat).div(255) - mean;
  EXPECT_TRUE(at::equal(batch.images, expected));
  EXPECT_TRUE(at::equal(batch.labels, at::arange(4, 8, at::kLong)));
  EXPECT_EQ(batch.images.scalar_type(), at::kFloat);
}

// MemCNN's own trainer's inputs: bytes 0..255 minus a mean in bytes (memcnn-train --inputs memcnn).
TEST(BatchLoader, ByteRangeGivesBytesMinusTheMean) {
  const Dataset data = random_dataset(10);
  const at::Tensor mean = mean_image(data) * 255;
  BatchLoader loader(data, mean, LoaderOptions().batch_size(4).augment(false).shuffle(false).byte_range(true));
  const at::Tensor expected = data.images.slice(0, 4, 8).to(at::kFloat) - mean;
  EXPECT_TRUE(at::equal(loader.batch(1).images, expected));
  // Augmented: the same crops and flips as in unit range, scaled.
  const auto options = LoaderOptions().batch_size(4).seed(3);
  const at::Tensor unit = BatchLoader(data, mean / 255, options).batch(2).images;
  const at::Tensor bytes = BatchLoader(data, mean, LoaderOptions(options).byte_range(true)).batch(2).images;
  EXPECT_TRUE(at::allclose(bytes, unit * 255, 1e-4, 1e-3));
}

TEST(BatchLoader, SameIterationSameBatchAcrossLoadersAndAccessOrders) {
  const Dataset data = random_dataset(37);
  const at::Tensor mean = mean_image(data);
  const auto options = LoaderOptions().batch_size(8).seed(42);
  BatchLoader first(data, mean, options);
  BatchLoader second(data, mean, options);
  BatchLoader random_access(data, mean, LoaderOptions(options).workers(0));
  std::vector<Batch> sequential;
  for (int64_t i = 0; i < 12; ++i) sequential.push_back(first.batch(i));  // spans 3 epochs
  for (int64_t i = 0; i < 12; ++i) expect_same(sequential[i], second.batch(i));
  for (int64_t i : {9, 2, 11, 0, 5, 5}) expect_same(sequential[i], random_access.batch(i));
}

TEST(BatchLoader, ResumedLoaderMatchesUninterrupted) {
  const Dataset data = random_dataset(30);
  const at::Tensor mean = mean_image(data);
  const auto options = LoaderOptions().batch_size(6).seed(7);
  BatchLoader uninterrupted(data, mean, options);
  std::vector<Batch> all;
  for (int64_t i = 0; i < 15; ++i) all.push_back(uninterrupted.batch(i));
  BatchLoader resumed(data, mean, options);
  for (int64_t i = 8; i < 15; ++i) expect_same(all[i], resumed.batch(i));
}

TEST(BatchLoader, EpochsAndSeedsDiffer) {
  const Dataset data = random_dataset(40);
  const at::Tensor mean = mean_image(data);
  BatchLoader loader(data, mean, LoaderOptions().batch_size(10).seed(1));
  BatchLoader other_seed(data, mean, LoaderOptions().batch_size(10).seed(2));
  ASSERT_EQ(loader.batches_per_epoch(), 4);
  EXPECT_FALSE(at::equal(loader.batch(0).labels, loader.batch(4).labels));
  EXPECT_FALSE(at::equal(loader.batch(0).labels, other_seed.batch(0).labels));
  // Without shuffling the order repeats, but the augmentation still changes per epoch.
  BatchLoader ordered(data, mean, LoaderOptions().batch_size(10).shuffle(false));
  EXPECT_TRUE(at::equal(ordered.batch(0).labels, ordered.batch(4).labels));
  EXPECT_FALSE(at::equal(ordered.batch(0).images, ordered.batch(4).images));
}

TEST(BatchLoader, EachEpochIsAPermutation) {
  const Dataset data = random_dataset(23);
  BatchLoader loader(data, mean_image(data), LoaderOptions().batch_size(5).drop_last(false).seed(3));
  ASSERT_EQ(loader.batches_per_epoch(), 5);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<at::Tensor> labels;
    for (int64_t b = 0; b < 5; ++b) labels.push_back(loader.batch(epoch * 5 + b).labels);
    EXPECT_TRUE(at::equal(std::get<0>(at::sort(at::cat(labels))), at::arange(23, at::kLong)));
  }
}

TEST(BatchLoader, LastPartialBatchUnlessDropLast) {
  const Dataset data = random_dataset(10);
  const at::Tensor mean = mean_image(data);
  BatchLoader keep(data, mean, LoaderOptions().batch_size(4).drop_last(false).shuffle(false).augment(false));
  EXPECT_EQ(keep.size(), 10);
  EXPECT_EQ(keep.batches_per_epoch(), 3);
  EXPECT_TRUE(at::equal(keep.batch(2).labels, at::tensor({8, 9}, at::kLong)));
  EXPECT_EQ(keep.batch(2).images.size(0), 2);
  EXPECT_TRUE(at::equal(keep.batch(3).labels, at::arange(4, at::kLong)));  // next epoch
  BatchLoader drop(data, mean, LoaderOptions().batch_size(4).shuffle(false));
  EXPECT_EQ(drop.batches_per_epoch(), 2);
  EXPECT_TRUE(at::equal(drop.batch(2).labels, at::arange(4, at::kLong)));
}

// All 5 x 5 offsets x 2 flips of a zero-padded crop of `image` [1, h, w], by direct indexing.
std::vector<std::tuple<int, int, bool, at::Tensor>> reference_crops(const at::Tensor& image) {
  const int64_t h = image.size(1), w = image.size(2);
  const at::Tensor padded = at::constant_pad_nd(image, {2, 2, 2, 2}, 0);
  std::vector<std::tuple<int, int, bool, at::Tensor>> crops;
  for (int dy = 0; dy <= 4; ++dy)
    for (int dx = 0; dx <= 4; ++dx)
      for (bool flip : {false, true}) {
        at::Tensor crop = padded.slice(1, dy, dy + h).slice(2, dx, dx + w);
        crops.emplace_back(dy, dx, flip, flip ? crop.flip({2}) : crop);
      }
  return crops;
}

TEST(BatchLoader, ShardsOfAGlobalBatchMakeUpTheWholeBatch) {
  const Dataset data = random_dataset(45);
  const auto mean = mean_image(data);
  for (const bool drop_last : {true, false}) {
    // With every augmentation, erasing included: each depends on the global position only.
    const auto options = LoaderOptions().batch_size(12).workers(0).seed(5).drop_last(drop_last).erase_probability(0.5);
    BatchLoader whole(data, mean, options);
    std::vector<std::unique_ptr<BatchLoader>> shards;
    for (int64_t s = 0; s < 3; ++s)
      shards.push_back(std::make_unique<BatchLoader>(data, mean, LoaderOptions(options).shard(s).shards(3)));
    for (const int64_t iteration : {0, 1, 3, 4, 7}) {  // 3 (without drop_last) is an epoch's last, partial batch
      std::vector<at::Tensor> images, labels;
      for (auto& shard : shards) {
        const auto part = shard->batch(iteration);
        images.push_back(part.images);
        labels.push_back(part.labels);
      }
      expect_same(whole.batch(iteration), Batch{at::cat(images), at::cat(labels)});
    }
  }
  const auto error = [&](LoaderOptions options) {
    try {
      BatchLoader loader(data, mean, options);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error(LoaderOptions().batch_size(10).shards(3)).find("does not divide into 3 equal shards"), std::string::npos);
  EXPECT_NE(error(LoaderOptions().batch_size(12).shard(3).shards(3)).find("shard 3 of 3 does not exist"), std::string::npos);
}

// The crop offsets (in reference_crops' terms) and flip of every sample in the first 5 batches
// of 40 copies of a 4x5 image with distinct values 1..20 (0 marks padding).
std::vector<std::tuple<int, int, bool>> augmentations_drawn(int64_t crop_padding) {
  Dataset data;
  const at::Tensor image = at::arange(1, 21, at::kByte).reshape({1, 4, 5});
  data.images = image.unsqueeze(0).expand({40, 1, 4, 5}).contiguous();
  data.labels = at::zeros({40}, at::kLong);
  data.num_classes = 1;
  BatchLoader loader(data, at::zeros({1, 4, 5}, at::kFloat), LoaderOptions().batch_size(40).seed(5).crop_padding(crop_padding));
  const auto crops = reference_crops(image.to(at::kFloat).div(255));
  std::vector<std::tuple<int, int, bool>> drawn;
  for (int64_t i = 0; i < 5; ++i) {
    const Batch batch = loader.batch(i);
    for (int64_t k = 0; k < 40; ++k) {
      const auto match = std::find_if(crops.begin(), crops.end(),
                                      [&](const auto& crop) { return at::equal(batch.images[k], std::get<3>(crop)); });
      if (match == crops.end()) {
        ADD_FAILURE() << "sample " << k << " of batch " << i << " is no padded crop:\n" << batch.images[k];
        return drawn;
      }
      drawn.emplace_back(std::get<0>(*match), std::get<1>(*match), std::get<2>(*match));
    }
  }
  return drawn;
}

TEST(BatchLoader, CropAndFlipOfHandMadeImage) {
  // Every sample of the hand-made image's batches is one of reference_crops' padded crops.
  const auto drawn = augmentations_drawn(2);
  ASSERT_EQ(drawn.size(), 200u);
  const std::set<std::tuple<int, int, bool>> seen(drawn.begin(), drawn.end());
  EXPECT_GE(seen.size(), 40u) << "offsets and flips should cover (nearly) all 50 combinations";
  // Identity (offset 2, 2, no flip) is among them, and the unshifted image is intact.
  EXPECT_TRUE(seen.count({2, 2, false}));
}

TEST(BatchLoader, CropPaddingBoundsTheShiftAndZeroFlipsOnly) {
  const auto padded_by_2 = augmentations_drawn(2), padded_by_1 = augmentations_drawn(1),
             flips_only = augmentations_drawn(0);
  ASSERT_EQ(flips_only.size(), 200u);
  ASSERT_EQ(padded_by_1.size(), 200u);
  ASSERT_EQ(padded_by_2.size(), 200u);
  std::set<std::tuple<int, int, bool>> seen_1;
  int flipped = 0;
  for (size_t k = 0; k < flips_only.size(); ++k) {
    const auto [dy, dx, flip] = flips_only[k];
    EXPECT_EQ(dy, 2);  // reference_crops' offset 2 is no shift
    EXPECT_EQ(dx, 2);
    // The padding changes the shifts only: the same samples are flipped whatever it is.
    EXPECT_EQ(flip, std::get<2>(padded_by_2[k])) << "sample " << k;
    EXPECT_EQ(flip, std::get<2>(padded_by_1[k])) << "sample " << k;
    flipped += flip ? 1 : 0;
    const auto [dy_1, dx_1, flip_1] = padded_by_1[k];
    EXPECT_TRUE(dy_1 >= 1 && dy_1 <= 3 && dx_1 >= 1 && dx_1 <= 3) << "a shift beyond 1 at sample " << k;
    seen_1.insert(padded_by_1[k]);
  }
  EXPECT_GT(flipped, 60);  // about half of 200
  EXPECT_LT(flipped, 140);
  EXPECT_EQ(seen_1.size(), 18u) << "padding 1 should reach all 3 x 3 shifts, with and without a flip";
}

// The batches of 512 white 28x28 images (1 after normalisation against a zero mean image), flips
// only, with erasing at `probability`.
std::vector<at::Tensor> erased_batches(double probability, int64_t crop_padding = 0) {
  Dataset data;
  data.images = at::full({512, 2, 28, 28}, 255, at::kByte);
  data.labels = at::zeros({512}, at::kLong);
  data.num_classes = 1;
  BatchLoader loader(data, at::zeros({2, 28, 28}, at::kFloat),
                     LoaderOptions().batch_size(128).seed(3).crop_padding(crop_padding).erase_probability(probability));
  std::vector<at::Tensor> images;
  for (int64_t i = 0; i < 4; ++i) images.push_back(loader.batch(i).images);
  return images;
}

TEST(BatchLoader, RandomErasingSetsOneRectangleOfTheDrawnShapeToTheMean) {
  int64_t erased = 0;
  std::set<std::pair<int64_t, int64_t>> shapes;
  for (const auto& batch : erased_batches(1.0)) {
    for (int64_t k = 0; k < batch.size(0); ++k) {
      const at::Tensor zero = batch[k].eq(0);
      EXPECT_TRUE(at::equal(zero[0], zero[1])) << "both channels are erased alike";
      EXPECT_TRUE(batch[k].masked_select(zero.logical_not()).eq(1).all().item<bool>()) << "the rest stays white";
      const int64_t area = zero[0].sum().item<int64_t>();
      if (area == 0) continue;  // no try fitted
      ++erased;
      const auto rows = at::nonzero(zero[0].any(1)).flatten(), cols = at::nonzero(zero[0].any(0)).flatten();
      const int64_t h = rows.numel(), w = cols.numel();
      EXPECT_EQ(h * w, area) << "sample " << k << ": the erased pixels form one rectangle";
      EXPECT_EQ(rows[-1].item<int64_t>() - rows[0].item<int64_t>() + 1, h);
      EXPECT_EQ(cols[-1].item<int64_t>() - cols[0].item<int64_t>() + 1, w);
      EXPECT_LT(h, 28);
      EXPECT_LT(w, 28);
      // 2-33% of 784 pixels and ratio 0.3-3.3, widened by the rounding of each side.
      EXPECT_GE((h + 0.5) * (w + 0.5), 0.02 * 784);
      EXPECT_LE((h - 0.5) * (w - 0.5), 0.33 * 784);
      EXPECT_GE((h + 0.5) / (w - 0.5), 0.3);
      EXPECT_LE((h - 0.5) / (w + 0.5), 3.3);
      shapes.insert({h, w});
    }
  }
  EXPECT_GT(erased, 500) << "nearly every sample of 512 gets a rectangle at probability 1";
  EXPECT_GT(shapes.size(), 50u) << "sizes and ratios vary";
}

TEST(BatchLoader, RandomErasingIsDeterministicAtItsProbabilityAndLeavesCropsAndFlipsAlone) {
  const auto half = erased_batches(0.5, 2), again = erased_batches(0.5, 2), none = erased_batches(0.0, 2);
  int64_t erased = 0;
  for (size_t i = 0; i < half.size(); ++i) {
    EXPECT_TRUE(at::equal(half[i], again[i])) << "batch " << i;
    for (int64_t k = 0; k < half[i].size(0); ++k) {
      // Crops of the white image leave zero padding; erasing only adds zeros to that.
      const at::Tensor kept = half[i][k].ne(0);
      EXPECT_TRUE(at::equal(kept.logical_and(none[i][k].ne(0)), kept)) << "sample " << k;
      erased += at::equal(half[i][k], none[i][k]) ? 0 : 1;
    }
  }
  EXPECT_GT(erased, 200);  // about half of 512
  EXPECT_LT(erased, 312);
  // Probability 0 is the loader without the option: the same batches bit for bit.
  Dataset data;
  data.images = at::full({512, 2, 28, 28}, 255, at::kByte);
  data.labels = at::zeros({512}, at::kLong);
  data.num_classes = 1;
  BatchLoader plain(data, at::zeros({2, 28, 28}, at::kFloat), LoaderOptions().batch_size(128).seed(3));
  EXPECT_TRUE(at::equal(plain.batch(2).images, none[2]));
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

TEST(BatchLoader, PrefetchedEqualsOnDemandAndIsCheaper) {
  const Dataset data = random_dataset(4000, 3, 32, 32);
  const at::Tensor mean = mean_image(data);
  const auto options = LoaderOptions().batch_size(1000).seed(9).prefetch(3);
  BatchLoader prefetching(data, mean, options);
  BatchLoader on_demand(data, mean, LoaderOptions(options).workers(0));
  // CPU time of this thread, not wall time: on a loaded machine a woken worker may preempt the
  // caller, which says nothing about the work the caller itself does.
  const auto thread_seconds = [] {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
  };
  std::vector<double> prefetched_seconds, on_demand_seconds;
  for (int64_t i = 0; i < 21; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(40));  // a "training step": workers catch up
    double start = thread_seconds();
    const Batch fast = prefetching.batch(i);
    prefetched_seconds.push_back(thread_seconds() - start);
    start = thread_seconds();
    const Batch slow = on_demand.batch(i);
    on_demand_seconds.push_back(thread_seconds() - start);
    expect_same(fast, slow);
  }
  EXPECT_LT(median(prefetched_seconds), 0.25 * median(on_demand_seconds))
      << "median prefetched " << median(prefetched_seconds) << " s vs on demand " << median(on_demand_seconds)
      << " s";
}

TEST(BatchLoader, DestroyWhileWorkersAreBusy) {
  const Dataset data = random_dataset(2000, 3, 32, 32);
  const at::Tensor mean = mean_image(data);
  for (int round = 0; round < 5; ++round) {
    BatchLoader loader(data, mean, LoaderOptions().batch_size(200).workers(3).prefetch(8));
    loader.batch(round);
  }
}

TEST(BatchLoader, ConcurrentCallersGetCorrectBatches) {
  const Dataset data = random_dataset(64);
  const at::Tensor mean = mean_image(data);
  const auto options = LoaderOptions().batch_size(8).seed(11);
  BatchLoader shared(data, mean, options);
  BatchLoader reference(data, mean, LoaderOptions(options).workers(0));
  std::vector<Batch> results(32);
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&, t] {
      for (int64_t i = t; i < 32; i += 4) results[i] = shared.batch(i);
    });
  for (auto& caller : callers) caller.join();
  for (int64_t i = 0; i < 32; ++i) expect_same(results[i], reference.batch(i));
}

TEST(BatchLoader, LeavesGlobalGeneratorAlone) {
  const Dataset data = random_dataset(20);
  at::manual_seed(123);
  const at::Tensor expected = at::randn({5});
  at::manual_seed(123);
  {
    BatchLoader loader(data, mean_image(data), LoaderOptions().batch_size(5));
    for (int64_t i = 0; i < 10; ++i) loader.batch(i);
  }
  EXPECT_TRUE(at::equal(at::randn({5}), expected));
}

TEST(BatchLoader, RejectsBadOptions) {
  const Dataset data = random_dataset(10);
  const at::Tensor mean = mean_image(data);
  EXPECT_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(0)), std::invalid_argument);
  EXPECT_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(-3)), std::invalid_argument);
  EXPECT_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(11)), std::invalid_argument);
  EXPECT_NO_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(11).drop_last(false)));
  EXPECT_THROW(BatchLoader(data, mean, LoaderOptions().workers(-1).batch_size(2)), std::invalid_argument);
  EXPECT_THROW(BatchLoader(data, at::zeros({3, 4, 4}), LoaderOptions().batch_size(2)), std::invalid_argument);
  EXPECT_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(2).crop_padding(-1)), std::invalid_argument);
  EXPECT_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(2).crop_padding(8)), std::invalid_argument);
  EXPECT_NO_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(2).crop_padding(7)));
  try {
    BatchLoader(data, mean, LoaderOptions().batch_size(2).crop_padding(8));
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("crop_padding 8 must be in [0, 8)"), std::string::npos) << error.what();
  }
  EXPECT_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(2).erase_probability(-0.1)), std::invalid_argument);
  EXPECT_THROW(BatchLoader(data, mean, LoaderOptions().batch_size(2).erase_probability(std::nan(""))),
               std::invalid_argument);
  try {
    BatchLoader(data, mean, LoaderOptions().batch_size(2).erase_probability(1.5));
    ADD_FAILURE() << "erase_probability 1.5 accepted";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("erase_probability 1.5"), std::string::npos) << error.what();
  }
  try {
    BatchLoader(data, mean, LoaderOptions().batch_size(11));
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("batch_size 11"), std::string::npos) << error.what();
  }
  BatchLoader loader(data, mean, LoaderOptions().batch_size(2));
  EXPECT_THROW(loader.batch(-1), std::invalid_argument);
}

}  // namespace
}  // namespace memcnn::data::test
