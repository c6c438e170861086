// Fashion-MNIST edges to images: the Sobel edge map against a loop, paired and unpaired batches,
// the evaluator, Debian's dataset-fashion-mnist (skipped when missing) and bad input.

#include <memcnn/data/image_translation.h>
#include <memcnn/data/fashion_mnist.h>

#include "helpers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <set>

namespace memcnn::data::test {
namespace {

torch::Tensor random_images(int64_t n, int64_t h, int64_t w, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randint(0, 256, {n, 1, h, w}, generator, torch::kLong).to(torch::kUInt8);
}

TEST(ImageTranslation, SobelEdgesMatchALoop) {
  const auto images = random_images(3, 6, 7, 1);
  images[2].fill_(77);  // constant: no edge
  const auto edges = sobel_edges(images);
  ASSERT_EQ(edges.sizes(), images.sizes());
  ASSERT_EQ(edges.scalar_type(), torch::kUInt8);
  const auto p = images.accessor<uint8_t, 4>();
  for (int64_t n = 0; n < 3; ++n) {
    std::vector<double> magnitude;
    auto pixel = [&](int64_t y, int64_t x) { return y < 0 || x < 0 || y >= 6 || x >= 7 ? 0.0 : double(p[n][0][y][x]); };
    for (int64_t y = 0; y < 6; ++y)
      for (int64_t x = 0; x < 7; ++x) {
        const double gx = pixel(y - 1, x + 1) + 2 * pixel(y, x + 1) + pixel(y + 1, x + 1) - pixel(y - 1, x - 1) -
                          2 * pixel(y, x - 1) - pixel(y + 1, x - 1);
        const double gy = pixel(y + 1, x - 1) + 2 * pixel(y + 1, x) + pixel(y + 1, x + 1) - pixel(y - 1, x - 1) -
                          2 * pixel(y - 1, x) - pixel(y - 1, x + 1);
        magnitude.push_back(std::sqrt(gx * gx + gy * gy));
      }
    const double largest = *std::max_element(magnitude.begin(), magnitude.end());
    for (int64_t y = 0; y < 6; ++y)
      for (int64_t x = 0; x < 7; ++x) {
        // A constant image still has edges at its border (zero beyond it); 77 everywhere inside.
        const double expected = std::round(magnitude[static_cast<size_t>(y * 7 + x)] * 255 / largest);
        ASSERT_EQ(edges[n][0][y][x].item<int>(), expected) << n << " " << y << " " << x;
      }
  }
  EXPECT_EQ(edges[2][0][3][3].item<int>(), 0);
  EXPECT_EQ(sobel_edges(torch::zeros({1, 1, 4, 4}, torch::kUInt8)).max().item<int>(), 0);
  expect_error_mentioning([] { sobel_edges(torch::zeros({2, 3, 4, 4})); }, {"[N, 1, H, W]"});
  expect_error_mentioning([] { sobel_edges(torch::zeros({2, 1, 1, 4})); }, {"too small"});
}

TEST(ImageTranslation, PairedAndUnpairedBatches) {
  const auto b = random_images(10, 4, 4, 2);
  const TranslationPairs pairs{sobel_edges(b), b, "test"};
  TranslationBatches paired(pairs, TranslationLoaderOptions().batch_size(3).seed(5));
  EXPECT_EQ(paired.batches_per_epoch(), 3);
  std::set<int64_t> seen;
  for (int64_t i = 0; i < 3; ++i) {
    const auto batch = paired.batch(i);
    EXPECT_TRUE(torch::equal(batch.a_indices, batch.b_indices));
    EXPECT_TRUE(torch::equal(batch.a, bytes_to_unit(pairs.a.index_select(0, batch.a_indices))));
    EXPECT_TRUE(torch::equal(batch.b, bytes_to_unit(pairs.b.index_select(0, batch.b_indices))));
    for (int64_t k = 0; k < 3; ++k) seen.insert(batch.a_indices[k].item<int64_t>());
  }
  EXPECT_EQ(seen.size(), 9u);  // one epoch: no sample twice
  EXPECT_TRUE(torch::equal(paired.batch(4).a, paired.batch(4).a));
  EXPECT_FALSE(torch::equal(paired.batch(0).a_indices, paired.batch(3).a_indices));  // a new epoch, a new order

  TranslationBatches unpaired(pairs, TranslationLoaderOptions().batch_size(5).paired(false).seed(5));
  bool differ = false;
  for (int64_t i = 0; i < 4; ++i) {
    const auto batch = unpaired.batch(i);
    differ = differ || !torch::equal(batch.a_indices, batch.b_indices);
    EXPECT_TRUE(torch::equal(batch.b, bytes_to_unit(pairs.b.index_select(0, batch.b_indices))));
  }
  EXPECT_TRUE(differ);
  TranslationBatches reseeded(pairs, TranslationLoaderOptions().batch_size(5).paired(false).seed(6));
  EXPECT_FALSE(torch::equal(reseeded.batch(0).b_indices, unpaired.batch(0).b_indices));
  TranslationBatches ordered(pairs, TranslationLoaderOptions().batch_size(5).shuffle(false));
  EXPECT_TRUE(torch::equal(ordered.batch(1).a_indices, torch::arange(5, 10)));

  expect_error_mentioning([&] { TranslationBatches(pairs, TranslationLoaderOptions().batch_size(11)); },
                          {"batch_size 11", "1..10"});
  expect_error_mentioning([&] { TranslationBatches({pairs.a, pairs.b.narrow(0, 0, 9), ""}, {}); },
                          {"differs from domain B's"});
}

TEST(ImageTranslation, Evaluator) {
  const auto target = random_images(4, 9, 9, 3);
  const auto perfect = evaluate_translation(bytes_to_unit(target), target);
  EXPECT_EQ(perfect.images, 4);
  EXPECT_EQ(perfect.l1, 0.0);
  EXPECT_EQ(perfect.psnr, std::numeric_limits<double>::infinity());
  EXPECT_EQ(perfect.ssim, 1.0);
  const auto other = random_images(4, 9, 9, 4);
  const auto figures = evaluate_translation(bytes_to_unit(other), target);
  EXPECT_NEAR(figures.l1, (other.to(torch::kDouble) - target.to(torch::kDouble)).abs().mean().item<double>(), 1e-9);
  EXPECT_NEAR(figures.psnr, psnr(other, target), 1e-9);
  EXPECT_NEAR(figures.ssim, ssim_map(other, target, 2).mean().item<double>(), 1e-12);
  // Outside [-1, 1] is clamped like a stored byte.
  EXPECT_EQ(evaluate_translation(torch::full({4, 1, 9, 9}, 3.0), target).l1,
            evaluate_translation(torch::full({4, 1, 9, 9}, 1.0), target).l1);
  expect_error_mentioning([&] { evaluate_translation(bytes_to_unit(other).narrow(0, 0, 3), target); }, {"shape"});
  expect_error_mentioning([&] { evaluate_translation(other, target); }, {"floating-point"});
}

TEST(ImageTranslation, MissingDatasetNamesThePackage) {
  TempDir dir;
  expect_error_mentioning([&] { load_fashion_edges(dir.path(), false); },
                          {"t10k-images-idx3-ubyte.gz", "dataset-fashion-mnist", dir.path()});
}

TEST(ImageTranslation, FashionMnistEdges) {
  if (!std::filesystem::exists(default_fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const auto train = load_fashion_edges("", true);
  const auto test = load_fashion_edges("", false);
  EXPECT_EQ(train.a.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(test.a.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(test.b.sizes(), test.a.sizes());
  EXPECT_TRUE(torch::equal(test.a.narrow(0, 17, 3), sobel_edges(test.b.narrow(0, 17, 3))));
  // Every garment has edges, each map scaled to a largest value of 255.
  EXPECT_TRUE(torch::equal(test.a.amax({1, 2, 3}), torch::full({10000}, 255, torch::kUInt8)));
  // A floor for the generators: the mean training image as every test prediction.
  const auto mean = bytes_to_unit(train.b).mean(0, true).expand_as(test.b);
  const auto floor = evaluate_translation(mean, test.b);
  std::cout << "mean training image against the 10,000 test images: L1 " << floor.l1 << ", PSNR " << floor.psnr
            << " dB, SSIM " << floor.ssim << "\n";
  EXPECT_GT(floor.psnr, 5);
  EXPECT_LT(floor.psnr, 20);
}

}  // namespace
}  // namespace memcnn::data::test
