// 3-D super-resolution data: block means and z-interpolation against loops and PyTorch's
// interpolate, the hemisphere split and patches on ch2 (mricron-data; skipped when missing), the
// baselines' figures, tiled prediction, the NIfTI written on ch2's grid, and bad input.

#include <memcnn/data/superresolution.h>

#include "helpers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>

namespace memcnn::data::test {
namespace {
namespace F = torch::nn::functional;

torch::Tensor random_volume(std::vector<int64_t> shape, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randint(0, 256, shape, generator, torch::kLong).to(torch::kFloat64);
}

TEST(SuperResolution, BlockMeansAlignAtSliceZeroAndClampTheLastBlock) {
  const auto v = random_volume({3, 2, 7}, 1);
  const auto low = average_slices(v, 4, 2);
  ASSERT_EQ(low.sizes(), (std::vector<int64_t>{3, 2, 2}));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 2; ++j) {
      const auto s = v[i][j];
      const double first = (s[0] + s[1] + s[2] + s[3]).item<double>() / 4;
      const double last = (s[4] + s[5] + s[6] + s[6]).item<double>() / 4;  // slice 6 copied
      EXPECT_NEAR(low[i][j][0].item<double>(), first, 1e-12);
      EXPECT_NEAR(low[i][j][1].item<double>(), last, 1e-12);
    }
  // Along another dim, and a size the factor divides.
  EXPECT_TRUE(torch::allclose(average_slices(v.permute({2, 0, 1}), 4, 0), low.permute({2, 0, 1})));
  EXPECT_EQ(average_slices(random_volume({2, 2, 8}, 2), 4).size(2), 2);
}

TEST(SuperResolution, LinearEqualsPytorchTrilinearWithoutAlignedCorners) {
  const auto v = random_volume({4, 3, 13}, 3);  // 4 blocks, the last of 1 slice
  const auto low = average_slices(v, 4, 2);
  const auto ours = interpolate_slices(low, 4, 13, Interpolation::kLinear, 2);
  const auto options =
      F::InterpolateFuncOptions().size(std::vector<int64_t>{4, 3, 16}).mode(torch::kTrilinear).align_corners(false);
  const auto theirs = F::interpolate(low.unsqueeze(0).unsqueeze(0), options);
  EXPECT_TRUE(torch::allclose(ours, theirs[0][0].narrow(2, 0, 13), 1e-12, 1e-10));
}

TEST(SuperResolution, CubicWithMinus075EqualsPytorchBicubic) {
  const auto v = random_volume({3, 5, 10}, 4);
  const auto low = average_slices(v, 4, 2);  // 3 blocks
  const auto ours = interpolate_slices(low, 4, 10, Interpolation::kCubic, 2, -0.75);
  // Bicubic over (y, z) with y kept: at scale 1 its y weights are exactly (0, 1, 0, 0).
  const auto options =
      F::InterpolateFuncOptions().size(std::vector<int64_t>{5, 12}).mode(torch::kBicubic).align_corners(false);
  const auto theirs = F::interpolate(low.unsqueeze(0), options);
  EXPECT_TRUE(torch::allclose(ours, theirs[0].narrow(2, 0, 10), 1e-12, 1e-10));
}

TEST(SuperResolution, CubicIsCatmullRomWithClampedEnds) {
  const auto low = random_volume({2, 2, 5}, 5);
  const auto ours = interpolate_slices(low, 4, 19, Interpolation::kCubic, 2);
  const auto l = low.accessor<double, 3>();
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t z = 0; z < 19; ++z) {
        const double u = (z + 0.5) / 4 - 0.5;
        const auto b = static_cast<int64_t>(std::floor(u));
        const double t = u - b;
        auto at = [&](int64_t k) { return l[i][j][std::min<int64_t>(std::max<int64_t>(k, 0), 4)]; };
        const double p0 = at(b - 1), p1 = at(b), p2 = at(b + 1), p3 = at(b + 2);
        const double expected = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t +
                                       (3 * p1 - p0 - 3 * p2 + p3) * t * t * t);
        ASSERT_NEAR(ours[i][j][z].item<double>(), expected, 1e-9) << i << " " << j << " " << z;
      }
  expect_error_mentioning([&] { interpolate_slices(low, 4, 16, Interpolation::kCubic); }, {"17..20", "not 16"});
  expect_error_mentioning([&] { average_slices(low, 6); }, {"factor 6", "1..5"});
}

// A small volume written to a temporary folder: 24 x 10 x 9 (z), uint8, no orientation.
struct SmallVolume {
  TempDir dir;
  SuperResolutionOptions options;
  SmallVolume() {
    auto image = random_volume({24, 10, 9}, 6).to(torch::kUInt8);
    auto mask = torch::zeros({24, 10, 9}, torch::kUInt8);
    mask.narrow(0, 2, 20).narrow(1, 2, 6).narrow(2, 1, 7).fill_(1);
    write_nifti(dir / "image.nii.gz", image, std::vector<double>{1, 1, 1});
    write_nifti(dir / "mask.nii.gz", mask, std::vector<double>{1, 1, 1});
    options.folder(dir.path()).image("image.nii.gz").mask("mask.nii.gz").midline(12).margin(2);
  }
};

TEST(SuperResolution, SmallVolumeSplitPatchesAndErrors) {
  SmallVolume small;
  const auto data = load_superresolution(small.options);
  EXPECT_EQ(data.midline, 12);
  EXPECT_EQ(data.training.begin, 0);
  EXPECT_EQ(data.training.end, 10);
  EXPECT_EQ(data.evaluation.begin, 15);
  EXPECT_EQ(data.evaluation.end, 24);
  EXPECT_EQ(data.low.size(2), 3);
  EXPECT_TRUE(torch::equal(data.cubic, interpolate_slices(average_slices(data.target, 4), 4, 9, Interpolation::kCubic)
                                           .clamp(0, 255).round().to(torch::kFloat32)));
  auto right = small.options;
  right.training_side(Hemisphere::kRight);
  EXPECT_EQ(load_superresolution(right).training.begin, 15);

  SuperResolutionPatches patches(data, PatchOptions().size({10, 4, 5}).batch_size(3).seed(7));
  const auto batch = patches.batch(5);
  ASSERT_EQ(batch.input.sizes(), (std::vector<int64_t>{3, 1, 10, 4, 5}));
  for (size_t b = 0; b < 3; ++b) {
    const auto& o = batch.origins[b];
    EXPECT_TRUE(data.mask[o[0] + 5][o[1] + 2][o[2] + 2].item<bool>());
    const auto expected = data.target.narrow(0, o[0], 10).narrow(1, o[1], 4).narrow(2, o[2], 5) / 127.5 - 1;
    EXPECT_TRUE(torch::allclose(batch.target[static_cast<int64_t>(b)][0], expected));
  }
  EXPECT_TRUE(torch::equal(patches.batch(5).input, batch.input));  // a pure function of the iteration
  expect_error_mentioning([&] { SuperResolutionPatches(data, PatchOptions().size({11, 4, 5})); },
                          {"patch size 11", "training side", "1..10", "margin"});
  expect_error_mentioning([&] { SuperResolutionPatches(data, PatchOptions().size({4, 4})); }, {"3 dims"});

  auto missing = small.options;
  missing.image("absent.nii.gz");
  expect_error_mentioning([&] { load_superresolution(missing); }, {"absent.nii.gz", "mricron-data", "folder"});
  write_nifti(small.dir / "other.nii.gz", torch::zeros({24, 10, 8}, torch::kUInt8), std::vector<double>{1, 1, 1});
  auto other = small.options;
  other.mask("other.nii.gz");
  expect_error_mentioning([&] { load_superresolution(other); }, {"other.nii.gz", "image's grid"});
  auto wide = small.options;
  wide.margin(12);
  expect_error_mentioning([&] { load_superresolution(wide); }, {"margin 12", "smaller margin"});
  auto no_midline = small.options;
  no_midline.midline(-1).margin(0);  // no orientation: world x = 0 at voxel 0
  expect_error_mentioning([&] { load_superresolution(no_midline); }, {"leaves a side empty"});
  auto coarse = small.options;
  coarse.factor(10);
  expect_error_mentioning([&] { load_superresolution(coarse); }, {"factor 10", "2..9"});
  EXPECT_THROW(evaluate_superresolution(data, torch::zeros({24, 10, 8})), c10::Error);
}

TEST(SuperResolution, TiledPredictionEqualsTheWholePass) {
  const auto v = random_volume({20, 23, 17}, 8).to(torch::kFloat32);
  // A 3x3x3 box filter, zero beyond the faces: receptive radius 1.
  const auto blur = [](const torch::Tensor& x) {
    return F::avg_pool3d(x, F::AvgPool3dFuncOptions(3).stride(1).padding(1));
  };
  const auto whole = blur(v.unsqueeze(0).unsqueeze(0))[0][0];
  int calls = 0;
  const auto counted = [&](const torch::Tensor& x) {
    ++calls;
    return blur(x);
  };
  const auto tiled = predict_in_tiles(v, {8, 8, 8}, 1, counted);
  EXPECT_TRUE(torch::allclose(tiled, whole, 0, 1e-5));
  EXPECT_EQ(calls, 3 * 4 * 3);  // starts 0, 6, 12 | 0, 6, 12, 15 | 0, 6, 9
  EXPECT_FALSE(torch::allclose(predict_in_tiles(v, {8, 8, 8}, 0, blur), whole, 0, 1e-5));  // no context: seams
  EXPECT_TRUE(torch::allclose(predict_in_tiles(v, {20, 23, 17}, 0, blur), whole, 0, 1e-6));
  expect_error_mentioning([&] { predict_in_tiles(v, {21, 8, 8}, 1, blur); }, {"tile size 21", "1..20"});
  expect_error_mentioning([&] { predict_in_tiles(v, {8, 8, 8}, 4, blur); }, {"border 4"});
  expect_error_mentioning([&] { predict_in_tiles(v, {8, 8, 8}, 1, [](const torch::Tensor& x) { return x[0]; }); },
                          {"forward returned shape"});
}

// ch2 (mricron-data), read once for the suite.
class Ch2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(default_mricron_dir() + "/ch2.nii.gz")) return;
    data_ = std::make_unique<SuperResolutionData>(load_superresolution());
  }
  static void TearDownTestSuite() { data_.reset(); }
  void SetUp() override {
    if (!data_) GTEST_SKIP() << default_mricron_dir() << "/ch2.nii.gz is missing: install Debian's mricron-data";
  }
  static std::unique_ptr<SuperResolutionData> data_;
};
std::unique_ptr<SuperResolutionData> Ch2::data_;

TEST_F(Ch2, VolumesAndHemispheres) {
  const auto& d = *data_;
  const std::vector<int64_t> shape{181, 217, 181};
  EXPECT_EQ(d.target.sizes(), shape);
  EXPECT_EQ(d.input.sizes(), shape);
  EXPECT_EQ(d.low.sizes(), (std::vector<int64_t>{181, 217, 46}));
  // The last block holds slice 180 alone (and three copies of it).
  EXPECT_TRUE(torch::allclose(d.low.select(2, 45), d.target.select(2, 180)));
  EXPECT_TRUE(torch::allclose(d.low.select(2, 0), d.target.narrow(2, 0, 4).mean(2)));
  EXPECT_GE(d.input.min().item<float>(), 0);
  EXPECT_LE(d.input.max().item<float>(), 255);
  EXPECT_TRUE(torch::equal(d.cubic, d.input.round()));
  EXPECT_EQ(d.midline, 90);  // world x = 0 (sform offset -90 mm)
  EXPECT_EQ(d.training.begin, 0);
  EXPECT_EQ(d.training.end, 82);
  EXPECT_EQ(d.evaluation.begin, 99);
  EXPECT_EQ(d.evaluation.end, 181);
  EXPECT_GT(d.mask.narrow(0, 99, 82).sum().item<int64_t>(), 500000);
}

TEST_F(Ch2, CubicBeatsLinearOnTheHeldOutHemisphere) {
  const auto& d = *data_;
  const auto baselines = superresolution_baselines(d);
  std::ostringstream line;
  print_superresolution_baselines(line, d, baselines);
  std::cout << line.str();
  EXPECT_NE(line.str().find("held-out right hemisphere (x 99..180, midline 90, margin 8)"), std::string::npos);
  EXPECT_EQ(baselines.linear.voxels, d.mask.narrow(0, 99, 82).sum().item<int64_t>());
  EXPECT_GT(baselines.cubic.psnr, baselines.linear.psnr);
  EXPECT_GT(baselines.cubic.ssim, baselines.linear.ssim);
  EXPECT_GT(baselines.linear.psnr, 20);
  EXPECT_LT(baselines.cubic.psnr, 45);
  EXPECT_LT(baselines.cubic.ssim, 1);
  // The truth on the held-out side scores perfectly whatever lies elsewhere: the evaluator, SSIM's
  // windows included, reads only the held-out side.
  auto spoiled = d.target.clone();
  spoiled.narrow(0, 0, 99).zero_();
  const auto perfect = evaluate_superresolution(d, spoiled);
  EXPECT_EQ(perfect.psnr, std::numeric_limits<double>::infinity());
  EXPECT_EQ(perfect.ssim, 1.0);
  // A prediction in stored units is clamped and rounded first: the unrounded input scores as the
  // rounded cubic baseline.
  const auto input = evaluate_superresolution(d, d.input);
  EXPECT_EQ(input.psnr, baselines.cubic.psnr);
  EXPECT_EQ(input.ssim, baselines.cubic.ssim);
}

TEST_F(Ch2, PatchesStayOnTheTrainingSideWithBrainCentres) {
  const auto& d = *data_;
  SuperResolutionPatches patches(d, PatchOptions().size({64, 64, 64}).batch_size(2).seed(3));
  EXPECT_GT(patches.positions(), 10000);
  for (int64_t iteration = 0; iteration < 20; ++iteration) {
    const auto batch = patches.batch(iteration);
    for (const auto& o : batch.origins) {
      EXPECT_GE(o[0], 0);
      EXPECT_LE(o[0] + 64, 82);
      EXPECT_TRUE(d.mask[o[0] + 32][o[1] + 32][o[2] + 32].item<bool>());
    }
    EXPECT_GE(batch.input.min().item<float>(), -1);
    EXPECT_LE(batch.target.max().item<float>(), 1);
  }
  SuperResolutionPatches other(d, PatchOptions().size({64, 64, 64}).batch_size(2).seed(4));
  EXPECT_FALSE(torch::equal(other.batch(0).input, patches.batch(0).input));
  SuperResolutionPatches anywhere(d, PatchOptions().size({32, 32, 32}).centre_in_mask(false));
  EXPECT_EQ(anywhere.positions(), 51 * 186 * 150);
  expect_error_mentioning([&] { SuperResolutionPatches(d, PatchOptions().size({83, 64, 64})); },
                          {"patch size 83", "training side", "1..82"});
}

TEST_F(Ch2, PredictionWrittenOnCh2sGrid) {
  const auto& d = *data_;
  TempDir dir;
  const std::string path = dir / "prediction.nii.gz";
  write_superresolution(path, d, d.input);
  const auto back = read_nifti(path);
  EXPECT_EQ(back.data.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(back.data.to(torch::kFloat32), d.cubic));
  EXPECT_TRUE(torch::equal(back.affine(), d.source.affine()));
  EXPECT_EQ(back.sform_code, d.source.sform_code);
  EXPECT_EQ(back.qform_code, d.source.qform_code);
  EXPECT_EQ(back.spacing, d.source.spacing);
  expect_error_mentioning([&] { write_superresolution(path, d, d.input.narrow(0, 0, 10)); }, {"shape"});
}

}  // namespace
}  // namespace memcnn::data::test
