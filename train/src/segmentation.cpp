#include "memcnn/train/segmentation.h"

#include "memcnn/train/checkpoint.h"
#include "memcnn/train/metrics.h"
#include "memcnn/train/progress.h"
#include "memcnn/train/resume.h"

#include <memcnn/data/nifti.h>
#include <memcnn/memory.h>

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace train {
namespace {

[[noreturn]] void wrong_field(const char* name, const std::string& what) {
  throw std::invalid_argument(std::string("segmentation experiment: field \"") + name + "\" " + what);
}

// Integers, alone or in lists, go through whole_number (config.h) as the classification recipe's
// do: nlohmann's get<T> casts any number, which is undefined for one beyond T's range.
template <typename T>
T field(const Json& json, const char* name, const T& fallback) {
  if (!json.contains(name)) return fallback;
  const Json& value = json.at(name);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return whole_number<T>(value, name);
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<std::array<int64_t, 2>>>) {
    if (!value.is_array()) wrong_field(name, "must be a list, not " + value.dump());
    T list;
    for (const Json& item : value) {
      if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
        list.push_back(whole_number<int64_t>(item, name));
      } else {
        if (!item.is_array() || item.size() != 2) wrong_field(name, "must hold pairs [begin, end], not " + item.dump());
        list.push_back({whole_number<int64_t>(item[0], name), whole_number<int64_t>(item[1], name)});
      }
    }
    return list;
  } else {
    try {
      return value.get<T>();
    } catch (const Json::exception& e) {
      wrong_field(name, std::string("has the wrong type: ") + e.what());
    }
  }
}

void require(bool condition, const std::string& message) {
  if (!condition) throw std::invalid_argument("segmentation experiment: " + message);
}

// Soft Dice on probabilities plus binary cross-entropy, both over the labelled voxels only: the
// cross-entropy gives every voxel a gradient from the start, Dice balances the mask against the
// (larger) background.
torch::Tensor segmentation_loss(const torch::Tensor& logits, const torch::Tensor& target, const torch::Tensor& labelled) {
  const auto voxels = labelled.sum().clamp_min(1);
  const auto bce = torch::binary_cross_entropy_with_logits(logits, target, labelled, {}, at::Reduction::Sum) / voxels;
  const auto p = torch::sigmoid(logits) * labelled;
  const auto soft_dice = (2 * (p * target).sum() + 1) / (p.sum() + (target * labelled).sum() + 1);
  return bce + (1 - soft_dice);
}

// Where a patch of `size` starts on an axis of `extent`: around a uniformly drawn centre, moved
// inside the volume. The first and last slices are then covered more than half as often as the
// middle ones (a uniformly drawn start covers them 1/size as often), so the ends of the volume,
// where the task is hardest (the skull base, the top of the head), are trained as much as the middle.
int64_t patch_start(int64_t centre, int64_t size, int64_t extent) {
  return std::clamp<int64_t>(centre - size / 2, 0, extent - size);
}

// The plot names the job's figure, Dice, and labels the held-out Dice the run reports at its end.
PlotLabels plot_labels(const std::string& title, std::optional<double> final_held_out_dice = std::nullopt) {
  PlotLabels labels;
  labels.title = title;
  labels.metric = "Dice";
  labels.train_series = "train Dice";
  labels.test_series = "held-out Dice";
  labels.whole_series = "whole-volume Dice";
  labels.percent = false;
  labels.final_figure = final_held_out_dice;
  labels.final_name = "final held-out Dice";
  return labels;
}

}  // namespace

bool is_segmentation_model(const std::string& model) { return model.rfind("iunet", 0) == 0; }

SegmentationConfig SegmentationConfig::from_json(const Json& e) {
  SegmentationConfig c;
  c.model = field<std::string>(e, "model", "");
  c.dataset = field<std::string>(e, "dataset", "");
  require(!c.model.empty() && !c.dataset.empty(), "needs \"model\" and \"dataset\"");
  c.image = field(e, "image", c.image);
  c.mask = field(e, "mask", c.mask);
  c.mask_threshold = field(e, "mask_threshold", c.mask_threshold);
  c.axis = field(e, "axis", c.axis);
  require(c.axis >= 0 && c.axis <= 2, "axis must be 0, 1 or 2");
  if (e.contains("held_out")) c.held_out = field<std::vector<std::array<int64_t, 2>>>(e, "held_out", {});
  require(!c.held_out.empty(), "held_out needs at least one [begin, end) slab to evaluate on");
  for (const auto& slab : c.held_out) require(0 <= slab[0] && slab[0] < slab[1], "every held_out slab needs 0 <= begin < end");
  c.patch = field(e, "patch", c.patch);
  require(c.patch.size() == 3, "patch needs 3 sizes");
  for (const auto p : c.patch) require(p >= 1, "patch sizes must be positive");
  c.batch_size = field(e, "batch_size", c.batch_size);
  c.max_iterations = field(e, "max_iterations", c.max_iterations);
  c.lr = field(e, "lr", c.lr);
  c.weight_decay = field(e, "weight_decay", c.weight_decay);
  c.warmup_iterations = field(e, "warmup_iterations", c.warmup_iterations);
  c.checkpoint_every = field(e, "checkpoint_every", c.checkpoint_every);
  c.validate_every = field(e, "validate_every", c.validate_every);
  c.log_every = field(e, "log_every", c.log_every);
  c.seed = field(e, "seed", c.seed);
  c.augment = field(e, "augment", c.augment);
  c.model_options = field(e, "model_options", c.model_options);
  require(c.batch_size >= 1 && c.max_iterations >= 1 && c.lr > 0, "batch_size, max_iterations and lr must be positive");
  require(c.checkpoint_every >= 1 && c.validate_every >= 1 && c.log_every >= 1,
          "checkpoint_every, validate_every and log_every must be positive");
  require(c.warmup_iterations >= 0, "warmup_iterations must be 0 or more");
  return c;
}

Json SegmentationConfig::to_json() const {
  return Json{{"model", model}, {"dataset", dataset}, {"image", image}, {"mask", mask},
              {"mask_threshold", mask_threshold}, {"axis", axis}, {"held_out", held_out}, {"patch", patch},
              {"batch_size", batch_size}, {"max_iterations", max_iterations}, {"lr", lr},
              {"weight_decay", weight_decay}, {"warmup_iterations", warmup_iterations},
              {"checkpoint_every", checkpoint_every}, {"validate_every", validate_every}, {"log_every", log_every},
              {"seed", seed}, {"augment", augment}, {"model_options", model_options}};
}

ResumeRules SegmentationConfig::resume_rules(bool allow_changes) {
  return resume_rules_of<SegmentationConfig>({"max_iterations", "checkpoint_every", "validate_every", "log_every"},
                                             allow_changes);
}

double SegmentationConfig::lr_at(int64_t iteration) const {
  if (iteration < warmup_iterations) return lr * static_cast<double>(iteration + 1) / static_cast<double>(warmup_iterations);
  const double progress = static_cast<double>(iteration - warmup_iterations) /
                          static_cast<double>(std::max<int64_t>(1, max_iterations - warmup_iterations));
  return lr * 0.5 * (1 + std::cos(M_PI * std::min(1.0, progress)));
}

models::IUNetSegmentation build_segmentation_model(const SegmentationConfig& config) {
  const Json& o = config.model_options;
  const auto channels = field<std::vector<int64_t>>(o, "channels", {8, 32, 128});
  // No blocks at full resolution: the stem, the split and the resampling carry it, and the
  // blocks run where voxels are 8 and 64 times fewer (3-D convolutions of few channels are slow
  // on CPUs).
  const auto layers = field<std::vector<int64_t>>(o, "layers", {0, 2, 2});
  models::IUNetOptions options(channels, layers, 3);
  const auto norm = field<std::string>(o, "norm", "batch");
  require(norm == "batch" || norm == "group", "model_options.norm must be \"batch\" or \"group\"");
  options.block(models::iunet_coupling_blocks(norm == "batch" ? models::IUNetNorm::batch : models::IUNetNorm::group));
  const auto method = field<std::string>(o, "method", "cayley");
  require(method == "cayley" || method == "exp", "model_options.method must be \"cayley\" or \"exp\"");
  options.method(method == "cayley" ? OrthogonalMethod::cayley : OrthogonalMethod::exp);
  const auto init = field<std::string>(o, "init", "haar");
  require(init == "haar" || init == "squeeze", "model_options.init must be \"haar\" or \"squeeze\"");
  options.init(init == "haar" ? ResamplingInit::haar : ResamplingInit::squeeze);
  options.learnable_resampling(field(o, "learnable_resampling", true));
  options.channel_mixing_every(field<int64_t>(o, "channel_mixing_every", 1));
  options.memory_saving(field(o, "memory_saving", true));
  try {
    return models::IUNetSegmentation(models::IUNetSegmentationOptions(1, 1, options));
  } catch (const c10::Error& e) {
    throw std::invalid_argument(std::string("model_options: ") + e.what_without_backtrace());
  }
}

double dice_score(const torch::Tensor& prediction, const torch::Tensor& target) {
  TORCH_CHECK_VALUE(prediction.sizes() == target.sizes(), "dice_score: shapes differ: ", prediction.sizes(), " and ",
                    target.sizes());
  const auto p = prediction.to(torch::kBool), t = target.to(torch::kBool);
  const double both = static_cast<double>((p & t).sum().item<int64_t>());
  const double total = static_cast<double>(p.sum().item<int64_t>() + t.sum().item<int64_t>());
  return total == 0 ? 1.0 : 2 * both / total;
}

struct SegmentationTrainer::State {
  SegmentationConfig config;
  SegmentationTrainerOptions options;
  std::ostream& out;
  data::NiftiVolume image_volume;
  torch::Tensor image, mask;  // [X, Y, Z]: normalised intensities, and 0/1 float
  torch::Tensor labelled;     // [X, Y, Z]: 0 on the held-out slabs, 1 elsewhere (float)
  models::IUNetSegmentation model{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer;
  Checkpointer checkpointer;
  MetricsLog metrics;
  ResumePoint resume_point;  // as in the classification trainer

  State(SegmentationConfig c, SegmentationTrainerOptions o)
      : config(std::move(c)), options(std::move(o)), out(options.out ? *options.out : std::cout),
        checkpointer(options.results_dir), metrics(options.results_dir) {
    (void)memory_stats(options.device);  // fail now without CPU tracking, not after loading
    const auto folder = std::filesystem::path(options.data_dir);
    image_volume = data::read_nifti((folder / config.image).string());
    const auto mask_volume = data::read_nifti((folder / config.mask).string());
    TORCH_CHECK_VALUE(image_volume.data.dim() == 3 && mask_volume.data.sizes() == image_volume.data.sizes(),
                      "segmentation: ", image_volume.path, " and ", mask_volume.path,
                      " must be 3-D volumes on the same grid, got ", image_volume.data.sizes(), " and ",
                      mask_volume.data.sizes());
    const auto image_grid = image_volume.affine(), mask_grid = mask_volume.affine();
    TORCH_CHECK_VALUE(torch::allclose(image_grid, mask_grid, 0, 1e-3), "segmentation: ", mask_volume.path,
                      " is not on the grid of ", image_volume.path, " (voxel-to-world affines ", mask_grid, " and ",
                      image_grid, "); resample the mask onto the image's grid first");
    const auto raw = image_volume.data.to(torch::kFloat32).contiguous();
    image = ((raw - raw.mean()) / raw.std()).contiguous();
    mask = mask_volume.data.to(torch::kFloat64).gt(config.mask_threshold).to(torch::kFloat32).contiguous();
    const int64_t extent = image.size(config.axis);
    for (int64_t d = 0; d < 3; ++d) {
      TORCH_CHECK_VALUE(config.patch[d] <= image.size(d), "segmentation: the patch ", c10::IntArrayRef(config.patch),
                        " is larger than the volume ", image.sizes());
    }
    for (const auto& slab : config.held_out) {
      TORCH_CHECK_VALUE(slab[1] <= extent, "segmentation: held-out slab [", slab[0], ", ", slab[1],
                        ") lies outside the volume's ", extent, " slices along axis ", config.axis);
    }
    labelled = torch::ones_like(mask);
    for (const auto& slab : config.held_out) labelled.narrow(config.axis, slab[0], slab[1] - slab[0]).zero_();
    TORCH_CHECK_VALUE(labelled.sum().item<double>() > 0, "segmentation: the held-out slabs cover all ", extent,
                      " slices along axis ", config.axis, "; leave some for training");
    torch::manual_seed(config.seed);
    model = build_segmentation_model(config);
    model->to(options.device);
    optimizer = std::make_unique<torch::optim::AdamW>(
        model->parameters(), torch::optim::AdamWOptions(config.lr).weight_decay(config.weight_decay));
  }

  std::string title() const { return config.model + " on " + config.dataset; }

  void set_lr(double lr) {
    for (auto& group : optimizer->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
};

SegmentationTrainer::SegmentationTrainer(SegmentationConfig config, SegmentationTrainerOptions options)
    : state_(std::make_unique<State>(std::move(config), std::move(options))) {}

SegmentationTrainer::~SegmentationTrainer() = default;

models::IUNetSegmentation& SegmentationTrainer::model() { return state_->model; }

void SegmentationTrainer::request_stop() { train::request_stop(); }
void SegmentationTrainer::clear_stop_request() { train::clear_stop_request(); }

std::vector<int64_t> SegmentationTrainer::training_slices() const {
  const auto& s = *state_;
  const auto per_slice = s.labelled.movedim(s.config.axis, 0).flatten(1).amax(1);
  std::vector<int64_t> slices;
  for (int64_t i = 0; i < per_slice.size(0); ++i) {
    if (per_slice[i].item<double>() > 0) slices.push_back(i);
  }
  return slices;
}

SegmentationBatch SegmentationTrainer::training_batch(int64_t iteration) const {
  const auto& s = *state_;
  const auto& c = s.config;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(c.seed * 1000003 + static_cast<uint64_t>(iteration));
  auto uniform = [&](int64_t n) {  // 0 .. n-1
    return torch::randint(n, {1}, generator, torch::kLong).item<int64_t>();
  };
  std::vector<torch::Tensor> images, masks, labelled;
  std::vector<std::array<int64_t, 3>> origins;
  for (int64_t b = 0; b < c.batch_size; ++b) {
    torch::Tensor image = s.image, mask = s.mask, known = s.labelled;
    auto& origin = origins.emplace_back();
    for (int64_t d = 0; d < 3; ++d) {
      const int64_t extent = s.image.size(d);
      const int64_t start = patch_start(uniform(extent), c.patch[d], extent);
      origin[static_cast<std::size_t>(d)] = start;
      image = image.narrow(d, start, c.patch[d]);
      mask = mask.narrow(d, start, c.patch[d]);
      known = known.narrow(d, start, c.patch[d]);
    }
    if (c.augment) {
      const auto draws = torch::rand({3}, generator, torch::kFloat64);
      if (draws[0].item<double>() < 0.5) {  // left-right: the brain is nearly symmetric
        image = image.flip({0});
        mask = mask.flip({0});
        known = known.flip({0});
      }
      image = image * (0.9 + 0.2 * draws[1].item<double>()) + (draws[2].item<double>() - 0.5) * 0.2;
    }
    images.push_back(image.contiguous().unsqueeze(0));
    masks.push_back(mask.contiguous().unsqueeze(0));
    labelled.push_back(known.contiguous().unsqueeze(0));
  }
  return {torch::stack(images), torch::stack(masks), torch::stack(labelled), origins};
}

int64_t SegmentationTrainer::restore() {
  auto& s = *state_;
  const auto checkpoint = s.checkpointer.restore(*s.model, *s.optimizer, s.options.device);
  return checkpoint ? checkpoint->iteration : -1;
}

SegmentationEvaluation SegmentationTrainer::evaluate(bool write_prediction) {
  auto& s = *state_;
  const int64_t axis = s.config.axis;
  torch::NoGradGuard no_grad;
  s.model->eval();
  const auto input = s.image.unsqueeze(0).unsqueeze(0).to(s.options.device);
  const auto predicted = s.model->forward(input).squeeze(0).squeeze(0).gt(0).cpu();
  s.model->train();
  const auto truth = s.mask.gt(0.5);
  const auto held_out = s.labelled.lt(0.5);
  SegmentationEvaluation evaluation;
  evaluation.held_out_dice = dice_score(predicted.masked_select(held_out), truth.masked_select(held_out));
  evaluation.whole_volume_dice = dice_score(predicted, truth);
  const int64_t extent = predicted.size(axis);
  for (int64_t begin = 0; begin < extent; begin += kDiceBand) {
    const int64_t end = std::min(extent, begin + kDiceBand);
    evaluation.bands.push_back(
        {begin, end, dice_score(predicted.narrow(axis, begin, end - begin), truth.narrow(axis, begin, end - begin))});
  }
  if (write_prediction) {
    const auto path = (std::filesystem::path(s.options.results_dir) / "prediction.nii.gz").string();
    data::write_nifti(path, predicted.to(torch::kUInt8), s.image_volume);
  }
  return evaluation;
}

SegmentationSummary SegmentationTrainer::run() {
  auto& s = *state_;
  const auto& c = s.config;
  SegmentationSummary summary;
  for (const auto& p : s.model->parameters()) summary.parameters += p.numel();
  s.out << "[memcnn-train] " << s.title() << ": " << summary.parameters << " parameters, device " << s.options.device
        << ", volume " << s.image.sizes() << " from " << s.image_volume.path << ", patches "
        << c10::IntArrayRef(c.patch) << " x " << c.batch_size << ", " << c.max_iterations << " iterations, "
        << training_slices().size() << " of " << s.image.size(c.axis) << " slices along axis " << c.axis
        << " labelled for training, " << c.held_out.size() << " held-out slabs from slice " << c.held_out.front()[0]
        << " to " << c.held_out.back()[1] - 1 << std::endl;
  s.resume_point = resume(s.checkpointer, *s.model, *s.optimizer, s.options.device, c.to_json(),
                          SegmentationConfig::resume_rules(s.options.allow_recipe_change), s.options.results_dir,
                          s.out);
  summary.start_iteration = s.resume_point.iteration;
  if (s.resume_point.resumed) s.metrics.truncate_after(s.resume_point.iteration);
  s.model->train();
  const auto start = Clock::now();
  auto window_start = Clock::now();
  double window_loss = 0, window_dice = 0;
  int64_t window_steps = 0;
  int64_t iteration = summary.start_iteration;
  while (iteration < c.max_iterations) {
    const auto batch = training_batch(iteration);
    const auto images = batch.images.to(s.options.device);
    const auto masks = batch.masks.to(s.options.device);
    const auto labelled = batch.labelled.to(s.options.device);
    const double lr = c.lr_at(iteration);
    s.set_lr(lr);
    zero_gradients_in_place(s.model->parameters());
    MemoryProbe probe(s.options.device);
    torch::Tensor logits, loss_value;
    {
      logits = s.model->forward(images);
      const auto loss_tensor = segmentation_loss(logits, masks, labelled);
      loss_tensor.backward();
      loss_value = loss_tensor.detach();
    }
    summary.activation_bytes = probe.peak_above_start();
    const double loss = loss_value.item<double>();
    if (!std::isfinite(loss)) {
      throw_non_finite_loss("the loss became " + std::to_string(loss), iteration, lr,
                            "Lower lr in the experiments file", s.options.results_dir);
    }
    s.optimizer->step();
    ++iteration;
    window_loss += loss;
    const auto known = labelled.gt(0.5);
    window_dice += dice_score(logits.detach().gt(0).masked_select(known), masks.gt(0.5).masked_select(known));
    ++window_steps;
    const bool stop = stop_requested();
    const bool last = iteration == c.max_iterations;
    const bool validate = iteration % c.validate_every == 0 || last;
    if (iteration % c.log_every == 0 || validate) {
      MetricsRow row;
      row.iteration = iteration;
      row.loss = window_loss / window_steps;
      row.train_accuracy = window_dice / window_steps;
      row.lr = lr;
      const double window_seconds = std::max(1e-9, seconds_since(window_start));
      row.iterations_per_second = window_steps / window_seconds;
      row.activation_bytes = summary.activation_bytes;
      if (validate) {
        // The last one writes the prediction the summary reports.
        const auto evaluation = evaluate(/*write_prediction=*/last);
        if (last) summary.evaluation = evaluation;
        row.test_accuracy = evaluation.held_out_dice;
        row.whole_accuracy = evaluation.whole_volume_dice;
      }
      s.metrics.append(row);
      const double eta = eta_seconds(iteration, c.max_iterations, row.iterations_per_second);
      std::ostringstream line;
      line << "[" << s.title() << "] it " << iteration << "/" << c.max_iterations << "  loss " << std::fixed
           << std::setprecision(4) << row.loss << "  dice " << std::setprecision(3) << row.train_accuracy << "  "
           << std::setprecision(2) << row.iterations_per_second << " it/s  ETA " << format_duration(eta)
           << "  activations " << format_mib(summary.activation_bytes);
      if (row.test_accuracy) {
        line << "  held-out dice " << std::setprecision(4) << *row.test_accuracy << "  whole-volume dice "
             << *row.whole_accuracy;
      }
      print_progress(s.out, line.str(), s.options.live_line, row.test_accuracy.has_value());
      window_start = Clock::now();
      window_loss = window_dice = 0;
      window_steps = 0;
    }
    if (validate) s.metrics.plot(plot_labels(s.title()));
    if (iteration % c.checkpoint_every == 0 || iteration == c.max_iterations || stop) {
      const auto seconds = s.resume_point.total_seconds(seconds_since(start));
      s.checkpointer.save(*s.model, *s.optimizer, {iteration, seconds, c.to_json()});
    }
    if (stop) {
      summary.interrupted = true;
      print_interrupted(s.out, iteration, s.options.results_dir);
      break;
    }
  }
  summary.final_iteration = iteration;
  summary.seconds = seconds_since(start);
  summary.total_seconds = s.resume_point.total_seconds(summary.seconds);
  if (!summary.interrupted) {
    // A run resumed at its end trained no iteration, so it has not evaluated yet.
    if (summary.evaluation.whole_volume_dice < 0) summary.evaluation = evaluate(/*write_prediction=*/true);
    summary.prediction_path = (std::filesystem::path(s.options.results_dir) / "prediction.nii.gz").string();
    s.metrics.plot(plot_labels(s.title(), summary.evaluation.held_out_dice));
  }
  return summary;
}

}  // namespace train
}  // namespace memcnn
