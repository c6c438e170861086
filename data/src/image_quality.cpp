#include <memcnn/data/image_quality.h>

#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace memcnn::data {

namespace {

void check_pair(const char* function, const torch::Tensor& prediction, const torch::Tensor& target,
                const torch::Tensor& mask) {
  TORCH_CHECK_VALUE(prediction.defined() && target.defined(), function, ": prediction and target must be defined");
  TORCH_CHECK_VALUE(prediction.sizes() == target.sizes(), function, ": prediction's shape ", prediction.sizes(),
                    " differs from target's ", target.sizes(), "; compare images of the same size");
  TORCH_CHECK_VALUE(prediction.numel() > 0, function, ": the images are empty");
  if (mask.defined()) {
    TORCH_CHECK_VALUE(mask.sizes() == target.sizes(), function, ": mask's shape ", mask.sizes(),
                      " differs from the images' ", target.sizes());
  }
}

torch::Tensor as_double(const torch::Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat64); }

// The values of t where mask is true, or all of them; throws when the mask selects nothing.
torch::Tensor selected(const char* function, const torch::Tensor& t, const torch::Tensor& mask) {
  if (!mask.defined()) return t.reshape(-1);
  const auto chosen = t.masked_select(mask.detach().to(torch::kCPU).to(torch::kBool));
  TORCH_CHECK_VALUE(chosen.numel() > 0, function, ": the mask selects no voxel");
  return chosen;
}

std::vector<double> gaussian_taps(double sigma, int64_t radius) {
  std::vector<double> taps;
  double sum = 0;
  for (int64_t i = -radius; i <= radius; ++i) {
    taps.push_back(std::exp(-0.5 * static_cast<double>(i * i) / (sigma * sigma)));
    sum += taps.back();
  }
  for (double& tap : taps) tap /= sum;
  return taps;
}

// x filtered along dim by taps (centred), zero beyond the faces, divided by the weight that fell
// inside: the window cut at the faces and renormalised. Shifted adds of slices, no padded copy.
torch::Tensor window_along(const torch::Tensor& x, int64_t dim, const std::vector<double>& taps) {
  const auto radius = static_cast<int64_t>(taps.size() / 2);
  const int64_t n = x.size(dim);
  auto out = torch::zeros_like(x);
  auto weight = torch::zeros({n}, x.options());
  for (int64_t offset = -radius; offset <= radius; ++offset) {
    const int64_t overlap = n - std::abs(offset);
    if (overlap <= 0) continue;
    const double tap = taps[static_cast<size_t>(offset + radius)];
    // out[i] += tap * x[i + offset] where both lie inside.
    const int64_t first_out = std::max<int64_t>(0, -offset), first_in = std::max<int64_t>(0, offset);
    out.narrow(dim, first_out, overlap).add_(x.narrow(dim, first_in, overlap), tap);
    weight.narrow(0, first_out, overlap).add_(tap);
  }
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[static_cast<size_t>(dim)] = n;
  return out.div_(weight.view(shape));
}

torch::Tensor window(const torch::Tensor& x, int64_t spatial_dims, const std::vector<double>& taps) {
  torch::Tensor out = x;
  for (int64_t d = x.dim() - spatial_dims; d < x.dim(); ++d) out = window_along(out, d, taps);
  return out;
}

}  // namespace

torch::Tensor bytes_to_unit(const torch::Tensor& bytes) {
  TORCH_CHECK_VALUE(bytes.defined(), "bytes_to_unit: undefined tensor");
  return bytes.to(torch::kFloat32).div(127.5).sub_(1.0);
}

torch::Tensor unit_to_bytes(const torch::Tensor& unit) {
  TORCH_CHECK_VALUE(unit.defined(), "unit_to_bytes: undefined tensor");
  TORCH_CHECK_VALUE(unit.is_floating_point(), "unit_to_bytes: expects a floating-point tensor in [-1, 1], got ",
                    unit.scalar_type(), "; byte images are already stored values");
  return unit.detach().to(torch::kFloat32).add(1.0).mul_(127.5).clamp_(0.0, 255.0).round_();
}

double mean_absolute_error(const torch::Tensor& prediction, const torch::Tensor& target, const torch::Tensor& mask) {
  check_pair("mean_absolute_error", prediction, target, mask);
  const auto difference = (as_double(prediction) - as_double(target)).abs_();
  return selected("mean_absolute_error", difference, mask).mean().item<double>();
}

double psnr(const torch::Tensor& prediction, const torch::Tensor& target, const torch::Tensor& mask, double peak) {
  check_pair("psnr", prediction, target, mask);
  TORCH_CHECK_VALUE(std::isfinite(peak) && peak > 0, "psnr: peak must be a positive number, not ", peak);
  const auto difference = as_double(prediction) - as_double(target);
  const double mse = selected("psnr", difference.square(), mask).mean().item<double>();
  if (mse == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(peak * peak / mse);
}

torch::Tensor ssim_map(const torch::Tensor& x, const torch::Tensor& y, int64_t spatial_dims,
                       const SsimOptions& options) {
  check_pair("ssim", x, y, {});
  TORCH_CHECK_VALUE(spatial_dims >= 1 && spatial_dims <= 3, "ssim: spatial_dims must be 1, 2 or 3, not ",
                    spatial_dims);
  TORCH_CHECK_VALUE(x.dim() >= spatial_dims, "ssim: images of shape ", x.sizes(), " have fewer than spatial_dims (",
                    spatial_dims, ") dims");
  TORCH_CHECK_VALUE(options.sigma() > 0 && options.radius() >= 0, "ssim: sigma must be positive and radius >= 0");
  TORCH_CHECK_VALUE(options.data_range() > 0 && options.k1() > 0 && options.k2() > 0,
                    "ssim: data_range, k1 and k2 must be positive");
  const auto taps = gaussian_taps(options.sigma(), options.radius());
  const double c1 = std::pow(options.k1() * options.data_range(), 2);
  const double c2 = std::pow(options.k2() * options.data_range(), 2);
  // Separate images ([N, ..., spatial]) in chunks of about 2^18 voxels, so the float64
  // temporaries stay small (10,000 Fashion-MNIST images at once: 60 MiB each).
  const auto images = x.sizes().slice(0, x.dim() - spatial_dims);
  const auto image_shape = x.sizes().slice(x.dim() - spatial_dims);
  const int64_t count = c10::multiply_integers(images);
  const int64_t per_image = c10::multiply_integers(image_shape);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(per_image, 1));
  std::vector<int64_t> flat{count};
  flat.insert(flat.end(), image_shape.begin(), image_shape.end());
  const auto a_all = x.detach().to(torch::kCPU).reshape(flat), b_all = y.detach().to(torch::kCPU).reshape(flat);
  auto out = torch::empty(flat, torch::kFloat64);
  for (int64_t first = 0; first < count; first += chunk) {
    const int64_t n = std::min(chunk, count - first);
    const auto a = a_all.narrow(0, first, n).to(torch::kFloat64), b = b_all.narrow(0, first, n).to(torch::kFloat64);
    const auto mu_a = window(a, spatial_dims, taps);
    const auto mu_b = window(b, spatial_dims, taps);
    const auto var_a = window(a * a, spatial_dims, taps) - mu_a * mu_a;
    const auto var_b = window(b * b, spatial_dims, taps) - mu_b * mu_b;
    const auto cov = window(a * b, spatial_dims, taps) - mu_a * mu_b;
    const auto numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2);
    const auto denominator = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2);
    out.narrow(0, first, n).copy_(numerator / denominator);
  }
  return out.view(x.sizes());
}

double ssim(const torch::Tensor& prediction, const torch::Tensor& target, int64_t spatial_dims,
            const torch::Tensor& mask, const SsimOptions& options) {
  check_pair("ssim", prediction, target, mask);
  return selected("ssim", ssim_map(prediction, target, spatial_dims, options), mask).mean().item<double>();
}

}  // namespace memcnn::data
