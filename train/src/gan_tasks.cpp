// The tasks of the GAN jobs (gan.h): 3-D super-resolution of ch2 and Fashion-MNIST edges to images.

#include "memcnn/train/gan.h"

#include <memcnn/data/image_quality.h>
#include <memcnn/data/image_translation.h>
#include <memcnn/data/superresolution.h>

#include <torch/torch.h>

#include <filesystem>
#include <iomanip>
#include <memory>
#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace train {
namespace {

template <typename T>
T option(const Json& json, const std::string& name, const T& fallback) {
  if (!json.contains(name)) return fallback;
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    const Json& value = json.at(name);
    if (!value.is_array()) throw std::invalid_argument("GAN experiment: field \"" + name + "\" must be a list");
    T list;
    for (const Json& item : value) list.push_back(whole_number<int64_t>(item, name));
    return list;
  } else {
    return whole_number<T>(json.at(name), name);
  }
}

std::string figures_text(const std::string& where, double psnr, double ssim, std::optional<double> l1 = std::nullopt) {
  std::ostringstream text;
  text << where << ":" << std::fixed;
  if (l1) text << " L1 " << std::setprecision(2) << *l1 << ",";
  text << " PSNR " << std::setprecision(2) << psnr << " dB, SSIM " << std::setprecision(4) << ssim;
  return text.str();
}

GANTask superresolution_task(const GANConfig& config, const std::string& data_dir) {
  const auto patch = option<std::vector<int64_t>>(config.data, "patch", {64, 64, 64});
  if (patch.size() != 3) throw std::invalid_argument("GAN experiment: data.patch needs 3 sizes [x, y, z]");
  auto options = data::SuperResolutionOptions()
                     .factor(option<int64_t>(config.data, "factor", 4))
                     .margin(option<int64_t>(config.data, "margin", 8));
  if (!data_dir.empty()) options.folder(data_dir);
  auto volumes = std::make_shared<const data::SuperResolutionData>(data::load_superresolution(options));
  auto patches = std::make_shared<const data::SuperResolutionPatches>(
      *volumes, data::PatchOptions().size(patch).batch_size(config.batch_size).seed(config.seed));
  const auto tile_request = option<std::vector<int64_t>>(config.evaluation, "tile", {128, 128, 128});
  if (tile_request.size() != 3) throw std::invalid_argument("GAN experiment: evaluation.tile needs 3 sizes [x, y, z]");
  const int64_t border = option<int64_t>(config.evaluation, "border", 8);
  const auto& ev = volumes->evaluation;
  const auto baselines = data::superresolution_baselines(*volumes);

  GANTask task;
  task.dims = 3;
  task.channels_a = task.channels_b = 1;
  std::ostringstream description;
  description << "ch2 (" << volumes->source.path << ") " << volumes->target.sizes() << ", slices along z averaged in "
              << "blocks of " << volumes->options.factor() << " and brought back by cubic interpolation, patches "
              << c10::IntArrayRef(patch) << " from x " << volumes->training.begin << ".." << volumes->training.end - 1
              << " (" << patches->positions() << " positions), evaluated on x " << ev.begin << ".." << ev.end - 1;
  task.description = description.str();
  std::ostringstream baseline;
  data::print_superresolution_baselines(baseline, *volumes, baselines);
  task.baseline_text = baseline.str();
  while (!task.baseline_text.empty() && task.baseline_text.back() == '\n') task.baseline_text.pop_back();
  task.batch = [patches](int64_t iteration) {
    auto batch = patches->batch(iteration);
    return GANBatch{batch.input, batch.target};
  };
  task.evaluate = [volumes, tile_request, border, baselines](
                      const std::function<torch::Tensor(const torch::Tensor&)>& a_to_b, bool final,
                      const std::string& results_dir) {
    const auto input = data::bytes_to_unit(volumes->input);
    std::vector<int64_t> tile(3);
    for (int64_t d = 0; d < 3; ++d) tile[static_cast<size_t>(d)] = std::min(tile_request[static_cast<size_t>(d)], input.size(d));
    const auto prediction = data::unit_to_bytes(data::predict_in_tiles(input, tile, border, a_to_b));
    const auto figures = data::evaluate_superresolution(*volumes, prediction);
    GANEvaluation evaluation;
    evaluation.psnr = figures.psnr;
    evaluation.ssim = figures.ssim;
    std::ostringstream where;
    where << "held-out x " << volumes->evaluation.begin << ".." << volumes->evaluation.end - 1 << " (" << figures.voxels
          << " brain voxels)";
    evaluation.text = figures_text(where.str(), figures.psnr, figures.ssim) + std::string(" (cubic ") +
                      figures_text("", baselines.cubic.psnr, baselines.cubic.ssim).substr(2) + ")";
    if (final) {
      data::write_superresolution((std::filesystem::path(results_dir) / "prediction.nii.gz").string(), *volumes,
                                  prediction);
    }
    return evaluation;
  };
  return task;
}

GANTask fashion_edges_task(const GANConfig& config, const std::string& data_dir) {
  auto train_pairs = data::load_fashion_edges(data_dir, /*train=*/true);
  auto test = std::make_shared<data::TranslationPairs>(data::load_fashion_edges(data_dir, /*train=*/false));
  const int64_t max_test = option<int64_t>(config.evaluation, "max_test", 0);
  if (max_test > 0 && max_test < test->a.size(0)) {
    test->a = test->a.narrow(0, 0, max_test);
    test->b = test->b.narrow(0, 0, max_test);
  }
  auto batches = std::make_shared<const data::TranslationBatches>(
      std::move(train_pairs),
      data::TranslationLoaderOptions().batch_size(config.batch_size).paired(config.paired).seed(config.seed));
  GANTask task;
  task.dims = 2;
  task.channels_a = task.channels_b = 1;
  std::ostringstream description;
  description << "Fashion-MNIST Sobel edges (A) and images (B), " << batches->size() << " training pairs "
              << (config.paired ? "(paired)" : "(unpaired: edges and images shuffled independently)") << ", "
              << test->a.size(0) << " test images";
  task.description = description.str();
  task.batch = [batches](int64_t iteration) {
    auto batch = batches->batch(iteration);
    return GANBatch{batch.a, batch.b};
  };
  task.evaluate = [test](const std::function<torch::Tensor(const torch::Tensor&)>& a_to_b, bool,
                         const std::string&) {
    constexpr int64_t kChunk = 500;
    std::vector<torch::Tensor> outputs;
    for (int64_t begin = 0; begin < test->a.size(0); begin += kChunk) {
      const int64_t n = std::min(kChunk, test->a.size(0) - begin);
      outputs.push_back(a_to_b(data::bytes_to_unit(test->a.narrow(0, begin, n))));
    }
    const auto figures = data::evaluate_translation(torch::cat(outputs), test->b);
    GANEvaluation evaluation;
    evaluation.psnr = figures.psnr;
    evaluation.ssim = figures.ssim;
    evaluation.l1 = figures.l1;
    evaluation.text = figures_text("test edges to images (" + std::to_string(figures.images) + ")", figures.psnr,
                                   figures.ssim, figures.l1);
    return evaluation;
  };
  return task;
}

}  // namespace

GANTask make_gan_task(const GANConfig& config, const std::string& data_dir) {
  if (config.dataset == "ch2-superresolution") return superresolution_task(config, data_dir);
  if (config.dataset == "fashion-edges" || config.dataset == "fashion-edges-unpaired") {
    return fashion_edges_task(config, data_dir);
  }
  throw std::invalid_argument("GAN experiment: no dataset \"" + config.dataset +
                              "\"; the GANs train on ch2-superresolution, fashion-edges and fashion-edges-unpaired");
}

}  // namespace train
}  // namespace memcnn
