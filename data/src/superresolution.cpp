#include <memcnn/data/superresolution.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <ostream>
#include <sstream>

namespace memcnn::data {

namespace {

constexpr int64_t kSpatialDims = 3;

std::string volume_path(const SuperResolutionOptions& options, const std::string& name, const char* field) {
  const std::string path = (std::filesystem::path(options.folder()) / name).string();
  TORCH_CHECK(std::filesystem::is_regular_file(path), "super-resolution: '", path, "' is missing: install Debian's ",
              "mricron-data (apt install mricron-data), or set SuperResolutionOptions::folder (now '",
              options.folder(), "') or ::", field, " (now '", name, "') to a volume you have");
  return path;
}

// Splitmix64's finaliser: well-spread generator seeds from (seed, iteration).
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

double keys_weight(double distance, double a) {
  const double s = std::abs(distance);
  if (s <= 1) return ((a + 2) * s - (a + 3)) * s * s + 1;
  if (s < 2) return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a;
  return 0;
}

std::vector<int64_t> along(int64_t dims, int64_t dim, int64_t n) {
  std::vector<int64_t> shape(static_cast<size_t>(dims), 1);
  shape[static_cast<size_t>(dim)] = n;
  return shape;
}

int64_t check_dim(const char* function, const torch::Tensor& t, int64_t dim) {
  TORCH_CHECK_VALUE(t.defined() && t.dim() >= 1, function, ": expects a defined tensor with at least one dim");
  TORCH_CHECK_VALUE(dim >= -t.dim() && dim < t.dim(), function, ": dim ", dim, " is out of range for shape ",
                    t.sizes());
  return dim < 0 ? dim + t.dim() : dim;
}

// The midline slice of dim 0: the voxel nearest the world plane x = 0 at the volume's centre.
// Also whether world x grows with the index (then the left hemisphere lies below the midline).
std::pair<int64_t, bool> find_midline(const NiftiVolume& volume) {
  const auto a = volume.affine();
  const auto m = a.accessor<double, 2>();
  const double x0 = std::abs(m[0][0]);
  TORCH_CHECK_VALUE(x0 > std::abs(m[0][1]) && x0 > std::abs(m[0][2]) && x0 > std::abs(m[1][0]) &&
                        x0 > std::abs(m[2][0]),
                    "super-resolution: the affine of '", volume.path, "' does not run world x (left-right) along ",
                    "dim 0; give SuperResolutionOptions::midline (the dim-0 slice that splits the hemispheres)");
  const double jc = 0.5 * static_cast<double>(volume.data.size(1) - 1);
  const double kc = 0.5 * static_cast<double>(volume.data.size(2) - 1);
  const double i = -(m[0][1] * jc + m[0][2] * kc + m[0][3]) / m[0][0];
  const auto midline = static_cast<int64_t>(std::llround(i));
  TORCH_CHECK_VALUE(midline >= 0 && midline < volume.data.size(0), "super-resolution: world x = 0 lies at voxel ", i,
                    " of dim 0, outside '", volume.path, "' (", volume.data.size(0),
                    " slices); give SuperResolutionOptions::midline");
  return {midline, m[0][0] > 0};
}

torch::Tensor as_stored(const torch::Tensor& t) { return t.to(torch::kFloat32).clamp(0.0, 255.0).round_(); }

std::string format_figures(const SuperResolutionFigures& f) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << "PSNR " << f.psnr << " dB, SSIM " << std::setprecision(4) << f.ssim;
  return out.str();
}

}  // namespace

std::string default_mricron_dir() { return "/usr/share/mricron/templates"; }

torch::Tensor average_slices(const torch::Tensor& volume, int64_t factor, int64_t dim) {
  dim = check_dim("average_slices", volume, dim);
  const int64_t n = volume.size(dim);
  TORCH_CHECK_VALUE(factor >= 1 && factor <= n, "average_slices: factor ", factor, " must lie in 1..", n,
                    " (the slices along dim ", dim, ")");
  const int64_t blocks = (n + factor - 1) / factor;
  // Slices first, so that blocks are runs of whole slices in memory.
  auto v = volume.detach().to(torch::kFloat64).movedim(dim, 0);
  if (blocks * factor > n) {  // copies of the last slice fill the last block
    auto copies = v.sizes().vec();
    copies[0] = blocks * factor - n;
    v = torch::cat({v, v.narrow(0, n - 1, 1).expand(copies)});
  }
  auto shape = v.sizes().vec();
  shape[0] = factor;
  shape.insert(shape.begin(), blocks);
  return v.reshape(shape).mean(1).movedim(0, dim).contiguous();
}

torch::Tensor interpolate_slices(const torch::Tensor& low, int64_t factor, int64_t size, Interpolation mode,
                                 int64_t dim, double cubic_a) {
  dim = check_dim("interpolate_slices", low, dim);
  const int64_t blocks = low.size(dim);
  TORCH_CHECK_VALUE(factor >= 1, "interpolate_slices: factor must be at least 1, not ", factor);
  TORCH_CHECK_VALUE(size > (blocks - 1) * factor && size <= blocks * factor, "interpolate_slices: ", blocks,
                    " blocks of ", factor, " slices make ", (blocks - 1) * factor + 1, "..", blocks * factor,
                    " slices, not ", size, "; pass the size of the volume average_slices was given");
  // Blocks first: each output slice is a weighted sum of whole input slices.
  const auto v = low.detach().to(torch::kFloat64).movedim(dim, 0).contiguous();
  const std::vector<int64_t> offsets = mode == Interpolation::kCubic ? std::vector<int64_t>{-1, 0, 1, 2}
                                                                     : std::vector<int64_t>{0, 1};
  std::vector<std::vector<int64_t>> index(offsets.size(), std::vector<int64_t>(static_cast<size_t>(size)));
  std::vector<std::vector<double>> weight(offsets.size(), std::vector<double>(static_cast<size_t>(size)));
  for (int64_t z = 0; z < size; ++z) {
    const double u = (static_cast<double>(z) + 0.5) / static_cast<double>(factor) - 0.5;
    const double base = std::floor(u);
    const double t = u - base;
    for (size_t k = 0; k < offsets.size(); ++k) {
      const auto source = static_cast<int64_t>(base) + offsets[k];
      index[k][static_cast<size_t>(z)] = std::clamp<int64_t>(source, 0, blocks - 1);
      const double distance = t - static_cast<double>(offsets[k]);
      weight[k][static_cast<size_t>(z)] =
          mode == Interpolation::kCubic ? keys_weight(distance, cubic_a) : 1.0 - std::abs(distance);
    }
  }
  torch::Tensor out;
  for (size_t k = 0; k < offsets.size(); ++k) {
    const auto idx = torch::tensor(index[k], torch::kLong);
    const auto w = torch::tensor(weight[k], torch::kFloat64).view(along(v.dim(), 0, size));
    const auto term = v.index_select(0, idx).mul_(w);
    out = out.defined() ? out.add_(term) : term;
  }
  return out.movedim(0, dim).contiguous();
}

SuperResolutionData load_superresolution(const SuperResolutionOptions& options) {
  const std::string image_path = volume_path(options, options.image(), "image");
  const std::string mask_path = volume_path(options, options.mask(), "mask");
  SuperResolutionData data;
  data.options = options;
  data.source = read_nifti(image_path);
  // Row-major once (read_nifti's tensor is a transposed view of the file's x-fastest buffer).
  const auto image = data.source.data.contiguous();
  TORCH_CHECK_VALUE(image.dim() == kSpatialDims, "super-resolution: '", image_path, "' has shape ", image.sizes(),
                    "; a 3-D volume is needed");
  const double low_value = image.min().item<double>(), high_value = image.max().item<double>();
  TORCH_CHECK_VALUE(low_value >= 0 && high_value <= 255, "super-resolution: '", image_path, "' holds values in [",
                    low_value, ", ", high_value, "]; the task scores bytes (0..255): rescale the volume to that range");
  const int64_t slices = image.size(2);
  TORCH_CHECK_VALUE(options.factor() >= 2 && options.factor() <= slices, "super-resolution: factor ",
                    options.factor(), " must lie in 2..", slices, " (the volume's slices along z)");
  const NiftiVolume mask = read_nifti(mask_path);
  TORCH_CHECK_VALUE(mask.data.sizes() == image.sizes(), "super-resolution: the mask '", mask_path, "' has shape ",
                    mask.data.sizes(), ", the image ", image.sizes(), "; give a mask on the image's grid");
  TORCH_CHECK_VALUE(torch::allclose(mask.affine(), data.source.affine(), 0, 1e-3), "super-resolution: the mask '",
                    mask_path, "' lies on another grid (affine) than the image; resample it to the image's");
  data.mask = mask.data.contiguous().to(torch::kFloat64).gt(options.mask_threshold());

  data.target = image.to(torch::kFloat32);
  const auto low = average_slices(data.target, options.factor(), 2);
  data.low = low.to(torch::kFloat32);
  const auto linear = interpolate_slices(low, options.factor(), slices, Interpolation::kLinear, 2);
  const auto cubic = interpolate_slices(low, options.factor(), slices, Interpolation::kCubic, 2);
  data.linear = as_stored(linear).contiguous();
  data.cubic = as_stored(cubic).contiguous();
  const auto& chosen = options.input_interpolation() == Interpolation::kCubic ? cubic : linear;
  data.input = chosen.clamp(0.0, 255.0).to(torch::kFloat32).contiguous();

  const int64_t width = image.size(0);
  bool ascending = true;
  if (options.midline() >= 0) {
    TORCH_CHECK_VALUE(options.midline() < width, "super-resolution: midline ", options.midline(),
                      " lies outside dim 0's ", width, " slices");
    data.midline = options.midline();
    ascending = data.source.affine()[0][0].item<double>() >= 0;
  } else {
    std::tie(data.midline, ascending) = find_midline(data.source);
  }
  TORCH_CHECK_VALUE(options.margin() >= 0, "super-resolution: margin must be >= 0, not ", options.margin());
  const SliceRange below{0, data.midline - options.margin()};
  const SliceRange above{data.midline + options.margin() + 1, width};
  TORCH_CHECK_VALUE(below.size() > 0 && above.size() > 0, "super-resolution: margin ", options.margin(),
                    " around midline ", data.midline, " leaves a side empty (dim 0 has ", width,
                    " slices); use a smaller margin");
  const bool left_below = ascending;  // world x < 0 below the midline when x grows with the index
  const bool train_below = (options.training_side() == Hemisphere::kLeft) == left_below;
  data.training = train_below ? below : above;
  data.evaluation = train_below ? above : below;
  return data;
}

SuperResolutionPatches::SuperResolutionPatches(const SuperResolutionData& data, PatchOptions options)
    : options_(std::move(options)) {
  const auto& size = options_.size();
  TORCH_CHECK_VALUE(size.size() == kSpatialDims, "SuperResolutionPatches: the patch size needs 3 dims (x, y, z), got ",
                    size.size());
  TORCH_CHECK_VALUE(options_.batch_size() >= 1, "SuperResolutionPatches: batch_size must be at least 1");
  const std::array<int64_t, 3> room{data.training.size(), data.target.size(1), data.target.size(2)};
  const char* names[] = {"x (the training side's width)", "y", "z"};
  for (size_t d = 0; d < kSpatialDims; ++d) {
    TORCH_CHECK_VALUE(size[d] >= 1 && size[d] <= room[d], "SuperResolutionPatches: patch size ", size[d],
                      " along ", names[d], " must lie in 1..", room[d],
                      d == 0 ? "; use a smaller patch, or a smaller margin (SuperResolutionOptions::margin)"
                             : "; use a smaller patch");
  }
  input_unit_ = bytes_to_unit(data.input);
  target_unit_ = bytes_to_unit(data.target);
  if (options_.centre_in_mask()) {
    const std::array<int64_t, 3> first{data.training.begin, 0, 0};
    torch::Tensor centres = data.mask;
    for (int64_t d = 0; d < kSpatialDims; ++d) {
      const auto u = static_cast<size_t>(d);
      centres = centres.narrow(d, first[u] + size[u] / 2, room[u] - size[u] + 1);
    }
    origins_ = centres.nonzero().add_(torch::tensor({first[0], first[1], first[2]}, torch::kLong));
    TORCH_CHECK_VALUE(origins_.size(0) > 0, "SuperResolutionPatches: no ", size, " patch on the training side has ",
                      "its centre in the mask; use a smaller patch or centre_in_mask = false");
  } else {
    origins_ = torch::tensor({data.training.begin, data.training.end - size[0] + 1, room[1] - size[1] + 1,
                              room[2] - size[2] + 1},
                             torch::kLong);
  }
}

int64_t SuperResolutionPatches::positions() const {
  if (options_.centre_in_mask()) return origins_.size(0);
  const auto bounds = origins_.accessor<int64_t, 1>();
  return (bounds[1] - bounds[0]) * bounds[2] * bounds[3];
}

PatchBatch SuperResolutionPatches::batch(int64_t iteration) const {
  TORCH_CHECK_VALUE(iteration >= 0, "SuperResolutionPatches::batch: iteration must be >= 0, not ", iteration);
  const uint64_t stream = mix(options_.seed() ^ mix(static_cast<uint64_t>(iteration)));
  auto generator = at::make_generator<at::CPUGeneratorImpl>(stream);
  auto draw = [&](int64_t n) { return torch::randint(n, {1}, generator, torch::kLong).item<int64_t>(); };
  const auto& size = options_.size();
  PatchBatch batch;
  std::vector<torch::Tensor> inputs, targets;
  for (int64_t b = 0; b < options_.batch_size(); ++b) {
    std::array<int64_t, 3> origin{};
    if (options_.centre_in_mask()) {
      const auto row = origins_[draw(origins_.size(0))];
      for (int64_t d = 0; d < kSpatialDims; ++d) origin[static_cast<size_t>(d)] = row[d].item<int64_t>();
    } else {
      const auto bounds = origins_.accessor<int64_t, 1>();
      origin = {bounds[0] + draw(bounds[1] - bounds[0]), draw(bounds[2]), draw(bounds[3])};
    }
    torch::Tensor input = input_unit_, target = target_unit_;
    for (int64_t d = 0; d < kSpatialDims; ++d) {
      const auto u = static_cast<size_t>(d);
      input = input.narrow(d, origin[u], size[u]);
      target = target.narrow(d, origin[u], size[u]);
    }
    inputs.push_back(input.unsqueeze(0));
    targets.push_back(target.unsqueeze(0));
    batch.origins.push_back(origin);
  }
  batch.input = torch::stack(inputs);
  batch.target = torch::stack(targets);
  return batch;
}

torch::Tensor predict_in_tiles(const torch::Tensor& volume, const std::vector<int64_t>& tile, int64_t border,
                               const std::function<torch::Tensor(const torch::Tensor&)>& forward) {
  TORCH_CHECK_VALUE(volume.defined() && volume.dim() == kSpatialDims, "predict_in_tiles: expects a volume [X, Y, Z]",
                    volume.defined() ? ", got shape " : "", volume.defined() ? volume.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(tile.size() == kSpatialDims, "predict_in_tiles: the tile size needs 3 dims, got ", tile.size());
  TORCH_CHECK_VALUE(border >= 0, "predict_in_tiles: border must be >= 0, not ", border);
  TORCH_CHECK_VALUE(forward != nullptr, "predict_in_tiles: forward is empty");
  // Per dim: each tile's start and the [begin, end) of the output it supplies.
  std::array<std::vector<std::array<int64_t, 3>>, 3> plans;
  for (int64_t d = 0; d < kSpatialDims; ++d) {
    const auto u = static_cast<size_t>(d);
    const int64_t extent = volume.size(d), t = tile[u];
    TORCH_CHECK_VALUE(t >= 1 && t <= extent, "predict_in_tiles: tile size ", t, " along dim ", d, " must lie in 1..",
                      extent, " (the volume's size); a tile of the volume's size is one whole pass");
    TORCH_CHECK_VALUE(t == extent || 2 * border < t, "predict_in_tiles: border ", border, " leaves nothing of a ", t,
                      "-voxel tile along dim ", d, "; use border < tile / 2");
    std::vector<int64_t> starts;
    for (int64_t s = 0;; s += t - 2 * border) {
      if (s + t >= extent) {
        starts.push_back(extent - t);
        break;
      }
      starts.push_back(s);
    }
    int64_t begin = 0;
    for (size_t i = 0; i < starts.size(); ++i) {
      const int64_t end = i + 1 == starts.size() ? extent : starts[i] + t - border;
      plans[u].push_back({starts[i], begin, end});
      begin = end;
    }
  }
  torch::Tensor output;
  for (const auto& px : plans[0]) {
    for (const auto& py : plans[1]) {
      for (const auto& pz : plans[2]) {
        const std::array<const std::array<int64_t, 3>*, 3> plan{&px, &py, &pz};
        torch::Tensor piece = volume;
        for (int64_t d = 0; d < kSpatialDims; ++d) {
          const auto u = static_cast<size_t>(d);
          piece = piece.narrow(d, (*plan[u])[0], tile[u]);
        }
        const auto result = forward(piece.contiguous().unsqueeze(0).unsqueeze(0));
        TORCH_CHECK_VALUE(result.defined() && result.dim() == 5 && result.size(0) == 1 && result.size(1) == 1 &&
                              result.sizes().slice(2) == piece.sizes(),
                          "predict_in_tiles: forward returned shape ",
                          result.defined() ? result.sizes() : at::IntArrayRef{},
                          " for a tile of ", piece.sizes(), "; it must return [1, 1, ", piece.sizes(), "]");
        auto values = result.detach().squeeze(0).squeeze(0);
        if (!output.defined()) output = torch::empty(volume.sizes(), values.options());
        torch::Tensor destination = output;
        for (int64_t d = 0; d < kSpatialDims; ++d) {
          const auto& p = *plan[static_cast<size_t>(d)];
          values = values.narrow(d, p[1] - p[0], p[2] - p[1]);
          destination = destination.narrow(d, p[1], p[2] - p[1]);
        }
        destination.copy_(values);
      }
    }
  }
  return output;
}

SuperResolutionFigures evaluate_superresolution(const SuperResolutionData& data, const torch::Tensor& prediction) {
  TORCH_CHECK_VALUE(prediction.defined() && prediction.sizes() == data.target.sizes(),
                    "evaluate_superresolution: the prediction's shape ",
                    prediction.defined() ? prediction.sizes() : at::IntArrayRef{}, " must be the volume's, ",
                    data.target.sizes());
  const auto& side = data.evaluation;
  const auto predicted = as_stored(prediction.detach().to(torch::kCPU)).narrow(0, side.begin, side.size());
  const auto target = data.target.narrow(0, side.begin, side.size());
  const auto mask = data.mask.narrow(0, side.begin, side.size());
  SuperResolutionFigures figures;
  figures.voxels = mask.sum().item<int64_t>();
  figures.psnr = psnr(predicted, target, mask);
  figures.ssim = ssim(predicted, target, kSpatialDims, mask);
  return figures;
}

SuperResolutionBaselines superresolution_baselines(const SuperResolutionData& data) {
  return {evaluate_superresolution(data, data.linear), evaluate_superresolution(data, data.cubic)};
}

void print_superresolution_baselines(std::ostream& out, const SuperResolutionData& data,
                                     const SuperResolutionBaselines& baselines) {
  const bool left = (data.options.training_side() == Hemisphere::kRight);
  out << "held-out " << (left ? "left" : "right") << " hemisphere (x " << data.evaluation.begin << ".."
      << data.evaluation.end - 1 << ", midline " << data.midline << ", margin " << data.options.margin() << "), "
      << baselines.linear.voxels << " brain voxels: linear " << format_figures(baselines.linear) << "; cubic "
      << format_figures(baselines.cubic) << "\n";
}

void write_superresolution(const std::string& path, const SuperResolutionData& data, const torch::Tensor& prediction) {
  TORCH_CHECK_VALUE(prediction.defined() && prediction.sizes() == data.target.sizes(),
                    "write_superresolution: the prediction's shape ",
                    prediction.defined() ? prediction.sizes() : at::IntArrayRef{}, " must be the volume's, ",
                    data.target.sizes());
  write_nifti(path, as_stored(prediction.detach().to(torch::kCPU)).to(torch::kUInt8), data.source);
}

}  // namespace memcnn::data
