// PSNR, SSIM and L1 against references written here as plain loops over voxels (SSIM's window
// built in 2-D/3-D at once, not separably), closed forms, and the byte <-> [-1, 1] mapping.

#include <memcnn/data/image_quality.h>

#include "helpers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <vector>

namespace memcnn::data::test {
namespace {

torch::Tensor random_bytes(std::vector<int64_t> shape, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randint(0, 256, shape, generator, torch::kLong).to(torch::kFloat64);
}

// SSIM of one voxel of 3-D volumes [X, Y, Z] by the definition: the 3-D Gaussian window of weights
// exp(-|d|^2 / (2 sigma^2)) over the offsets d with |d_i| <= 5 that stay inside the volume,
// normalised to sum 1.
double reference_ssim_at(const torch::Tensor& x, const torch::Tensor& y, int64_t i, int64_t j, int64_t k) {
  const auto a = x.accessor<double, 3>(), b = y.accessor<double, 3>();
  const double sigma = 1.5, c1 = std::pow(0.01 * 255, 2), c2 = std::pow(0.03 * 255, 2);
  double w_sum = 0, ma = 0, mb = 0, aa = 0, bb = 0, ab = 0;
  for (int64_t di = -5; di <= 5; ++di)
    for (int64_t dj = -5; dj <= 5; ++dj)
      for (int64_t dk = -5; dk <= 5; ++dk) {
        const int64_t p = i + di, q = j + dj, r = k + dk;
        if (p < 0 || q < 0 || r < 0 || p >= x.size(0) || q >= x.size(1) || r >= x.size(2)) continue;
        const double w = std::exp(-static_cast<double>(di * di + dj * dj + dk * dk) / (2 * sigma * sigma));
        w_sum += w;
        ma += w * a[p][q][r];
        mb += w * b[p][q][r];
        aa += w * a[p][q][r] * a[p][q][r];
        bb += w * b[p][q][r] * b[p][q][r];
        ab += w * a[p][q][r] * b[p][q][r];
      }
  ma /= w_sum, mb /= w_sum, aa /= w_sum, bb /= w_sum, ab /= w_sum;
  const double va = aa - ma * ma, vb = bb - mb * mb, cov = ab - ma * mb;
  return (2 * ma * mb + c1) * (2 * cov + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
}

TEST(ImageQuality, BytesToUnitAndBack) {
  const auto bytes = torch::arange(256, torch::kLong);
  const auto unit = bytes_to_unit(bytes);
  EXPECT_EQ(unit.scalar_type(), torch::kFloat32);
  EXPECT_EQ(unit[0].item<float>(), -1.0f);
  EXPECT_EQ(unit[255].item<float>(), 1.0f);
  EXPECT_TRUE(torch::equal(unit_to_bytes(unit), bytes.to(torch::kFloat32)));
  // Outside [-1, 1] clamps to the stored range; between bytes rounds to the nearest.
  const auto back = unit_to_bytes(torch::tensor({-1.5, 1.2, 0.004, -0.004}, torch::kFloat64));
  EXPECT_TRUE(torch::equal(back, torch::tensor({0.f, 255.f, 128.f, 127.f})));
  expect_error_mentioning([] { unit_to_bytes(torch::tensor({3}, torch::kUInt8)); }, {"floating-point"});
}

TEST(ImageQuality, PsnrAndL1MatchLoops) {
  const auto x = random_bytes({5, 6, 7}, 1), y = random_bytes({5, 6, 7}, 2);
  const auto mask = random_bytes({5, 6, 7}, 3).gt(100);
  const auto a = x.accessor<double, 3>(), b = y.accessor<double, 3>();
  const auto m = mask.accessor<bool, 3>();
  double squares = 0, absolutes = 0, masked_squares = 0, masked_absolutes = 0;
  int64_t masked = 0;
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 6; ++j)
      for (int64_t k = 0; k < 7; ++k) {
        const double d = a[i][j][k] - b[i][j][k];
        squares += d * d;
        absolutes += std::abs(d);
        if (m[i][j][k]) masked_squares += d * d, masked_absolutes += std::abs(d), ++masked;
      }
  ASSERT_GT(masked, 0);
  EXPECT_NEAR(psnr(x, y), 10 * std::log10(255.0 * 255.0 / (squares / 210)), 1e-12);
  EXPECT_NEAR(psnr(x, y, mask), 10 * std::log10(255.0 * 255.0 / (masked_squares / masked)), 1e-12);
  EXPECT_NEAR(psnr(x, y, {}, 1.0), 10 * std::log10(1.0 / (squares / 210)), 1e-12);
  EXPECT_NEAR(mean_absolute_error(x, y), absolutes / 210, 1e-12);
  EXPECT_NEAR(mean_absolute_error(x, y, mask), masked_absolutes / masked, 1e-12);
  // Any dtype: bytes and float32 give the same figure.
  EXPECT_NEAR(psnr(x.to(torch::kUInt8), y.to(torch::kFloat32)), psnr(x, y), 1e-12);
}

TEST(ImageQuality, IdenticalImages) {
  const auto x = random_bytes({9, 8, 7}, 4);
  EXPECT_EQ(psnr(x, x.clone()), std::numeric_limits<double>::infinity());
  EXPECT_EQ(mean_absolute_error(x, x), 0.0);
  EXPECT_EQ(ssim(x, x.clone(), 3), 1.0);
  EXPECT_EQ(ssim(x, x.clone(), 2), 1.0);
  // Equal where the mask looks, different elsewhere: still exact.
  auto y = x.clone();
  y[0][0][0] = x[0][0][0].item<double>() + 1;
  const auto mask = torch::ones_like(x, torch::kBool);
  mask[0][0][0] = false;
  EXPECT_EQ(psnr(y, x, mask), std::numeric_limits<double>::infinity());
  EXPECT_LT(psnr(y, x), 100);
}

TEST(ImageQuality, Ssim3dMatchesTheDefinitionVoxelByVoxel) {
  // 13 > 2 * 5 + 1 along x: voxels with the full window and voxels with a cut one.
  const auto x = random_bytes({13, 6, 7}, 5);
  const auto y = (x * 0.7 + random_bytes({13, 6, 7}, 6) * 0.3).round();
  const auto map = ssim_map(x, y, 3);
  ASSERT_EQ(map.sizes(), x.sizes());
  EXPECT_EQ(map.scalar_type(), torch::kFloat64);
  const auto got = map.accessor<double, 3>();
  double sum = 0;
  for (int64_t i = 0; i < 13; ++i)
    for (int64_t j = 0; j < 6; ++j)
      for (int64_t k = 0; k < 7; ++k) {
        const double expected = reference_ssim_at(x, y, i, j, k);
        ASSERT_NEAR(got[i][j][k], expected, 1e-10) << i << " " << j << " " << k;
        sum += expected;
      }
  EXPECT_NEAR(ssim(x, y, 3), sum / x.numel(), 1e-10);
  const auto mask = torch::zeros_like(x, torch::kBool);
  mask[6][3][3] = true;
  mask[0][5][6] = true;
  EXPECT_NEAR(ssim(x, y, 3, mask), (reference_ssim_at(x, y, 6, 3, 3) + reference_ssim_at(x, y, 0, 5, 6)) / 2, 1e-10);
}

TEST(ImageQuality, Ssim2dIsPerImageOverLeadingDims) {
  // [N, 1, H, W]: each image on its own; the 2-D map of image n equals the 3-D definition's on a
  // volume of one slice (whose window then has only dk = 0).
  const auto x = random_bytes({3, 1, 9, 12}, 7), y = random_bytes({3, 1, 9, 12}, 8);
  const auto map = ssim_map(x, y, 2);
  for (int64_t n = 0; n < 3; ++n) {
    const auto a = x[n][0].unsqueeze(2).contiguous(), b = y[n][0].unsqueeze(2).contiguous();
    for (int64_t i = 0; i < 9; ++i)
      for (int64_t j = 0; j < 12; ++j)
        ASSERT_NEAR(map[n][0][i][j].item<double>(), reference_ssim_at(a, b, i, j, 0), 1e-10)
            << n << " " << i << " " << j;
  }
}

TEST(ImageQuality, SsimOfConstantImagesIsTheLuminanceTerm) {
  // No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) at every voxel.
  const auto x = torch::full({4, 5, 6}, 100.0, torch::kFloat64), y = torch::full({4, 5, 6}, 140.0, torch::kFloat64);
  const double c1 = std::pow(0.01 * 255, 2);
  EXPECT_NEAR(ssim(x, y, 3), (2 * 100 * 140 + c1) / (100 * 100 + 140 * 140 + c1), 1e-12);
  EXPECT_LT(ssim(random_bytes({8, 8}, 9), random_bytes({8, 8}, 10), 2), 0.2);
}

TEST(ImageQuality, BadInputNamesTheProblem) {
  const auto x = torch::zeros({4, 4, 4});
  expect_error_mentioning([&] { psnr(x, torch::zeros({4, 4, 5})); }, {"psnr", "shape"});
  expect_error_mentioning([&] { psnr(x, x, torch::zeros({4, 4}, torch::kBool)); }, {"mask's shape"});
  expect_error_mentioning([&] { psnr(x, x, torch::zeros({4, 4, 4}, torch::kBool)); }, {"selects no voxel"});
  expect_error_mentioning([&] { psnr(x, x, {}, 0.0); }, {"peak"});
  expect_error_mentioning([&] { ssim(x, x, 4); }, {"spatial_dims"});
  expect_error_mentioning([&] { ssim(torch::zeros({4, 4}), torch::zeros({4, 4}), 3); }, {"fewer than spatial_dims"});
  expect_error_mentioning([&] { mean_absolute_error(x, torch::zeros({2})); }, {"mean_absolute_error", "shape"});
}

}  // namespace
}  // namespace memcnn::data::test
