#pragma once
/// @file
/// Experiment configuration in MemCNN's style: a JSON file of named entries, each of which may
/// name one or more `base` entries it inherits from (objects merge recursively, the entry
/// itself wins). The experiment for MODEL and DATASET is the entry "MODEL_DATASET" when the
/// file has one, otherwise the entries DATASET and MODEL merged in that order.

#include "memcnn/train/resume.h"

#include <memcnn/autocast.h>
#include <nlohmann/json.hpp>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <iosfwd>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace memcnn {
/// Training (the memcnn::train component, library memcnn_train): experiment recipes, the
/// classifier and segmentation trainers behind memcnn-train, atomic checkpoints and resuming,
/// metrics logs and plots, the progress line, and weight export for memcnn's Python package.
namespace train {

/// The JSON type of recipes and checkpoints (nlohmann::json).
using Json = nlohmann::json;

/// The deepest nesting of arrays and objects the trainer reads (the shipped experiments nest 4
/// levels): merging, comparing and printing recipes recurse through them, and a file nested
/// 50000 levels deep overflowed the stack.
constexpr int kMaxJsonDepth = 64;
/// Parses JSON the trainer reads (experiments files, a checkpoint's recipe); std::runtime_error
/// starting with `what` when it is not JSON or nests deeper than kMaxJsonDepth.
Json parse_json(const std::string& text, const std::string& what);

/// The value of an integer field of type T (named `key` in messages). nlohmann's get<T> casts any
/// JSON number, which is undefined for a float beyond T's range (1e300 as int64_t) and wraps an
/// integer beyond it (-1 as an unsigned seed); here a non-integer or an integer out of range is a
/// std::invalid_argument naming the field.
template <typename T>
T whole_number(const Json& value, const std::string& key) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "whole_number reads integer types");
  using limits = std::numeric_limits<T>;
  bool in_range = false;
  if (value.is_number_unsigned()) {
    in_range = value.get<uint64_t>() <= static_cast<uint64_t>(limits::max());
  } else if (value.is_number_integer()) {
    const auto number = value.get<int64_t>();
    in_range = number >= 0 ? static_cast<uint64_t>(number) <= static_cast<uint64_t>(limits::max())
                           : std::is_signed_v<T> && number >= static_cast<int64_t>(limits::min());
  } else {
    throw std::invalid_argument("experiment field '" + key + "' must be a whole number, not " + value.dump());
  }
  if (!in_range)
    throw std::invalid_argument("experiment field '" + key + "' is " + value.dump() + ", outside the range of " +
                                (std::is_signed_v<T> ? "a signed " : "an unsigned ") +
                                std::to_string(8 * sizeof(T)) + "-bit integer");
  return value.get<T>();
}

/// The experiments shipped with memcnn (train/experiments.json, built into the program).
Json default_experiments();
/// Reads an experiments file; a clear error names the file and what is wrong.
Json load_experiments(const std::string& path);
/// An entry with its bases resolved; errors for unknown names and cycles.
Json resolve_experiment(const Json& experiments, const std::string& name);
/// The experiment for a model and dataset (see above).
Json experiment_for(const Json& experiments, const std::string& model, const std::string& dataset);

/// A classifier's training recipe: an experiment entry of the experiments file, validated.
/// Defaults are MemCNN's CIFAR-10 schedule (SGD, lr 0.1, /10 at 40k and 60k of 80k iterations).
struct TrainConfig {
  std::string model;    ///< The model's name (models::model_names(), models::transformer_names()); required.
  std::string dataset;  ///< The data set's name (data::load_dataset()); required.
  int64_t num_classes = 10;  ///< Classes of the data set (at least 2).
  int64_t in_channels = 3;   ///< Channels of the images.
  int64_t batch_size = 100;  ///< Global batch size (split across data-parallel ranks).
  int64_t max_iterations = 80000;  ///< Iterations (updates) of the whole run.
  /// "sgd" (momentum; weight decay on every parameter: MemCNN's) or "adamw" (betas, eps; decoupled
  /// weight decay on the parameters the model does not exempt: ClassifierImpl::decays). In JSON:
  /// "optimizer": {"name": ..., "lr", "momentum", "weight_decay", "betas": [b1, b2], "eps"}; the
  /// fields of the other optimizer are ignored (an experiment may inherit them from its bases).
  std::string optimizer = "sgd";
  double lr = 0.1;             ///< Peak learning rate (optimizer.lr).
  double momentum = 0.9;       ///< SGD's momentum (optimizer.momentum).
  double weight_decay = 2e-4;  ///< optimizer.weight_decay.
  double beta1 = 0.9;          ///< AdamW's first beta (optimizer.betas[0]).
  double beta2 = 0.999;        ///< AdamW's second beta (optimizer.betas[1]).
  double eps = 1e-8;           ///< AdamW's epsilon (optimizer.eps).
  /// "multistep": lr * lr_gamma^(milestones passed); "cosine": from lr down to min_lr at
  /// max_iterations along half a cosine period. Either after a linear warm-up: iteration i <
  /// warmup_iterations trains at lr * (i + 1) / warmup_iterations.
  std::string lr_schedule = "multistep";
  std::vector<int64_t> lr_milestones{40000, 60000};  ///< multistep: iterations where lr is multiplied by lr_gamma.
  double lr_gamma = 0.1;           ///< multistep: the factor at each milestone (positive).
  int64_t warmup_iterations = 0;   ///< Iterations of linear warm-up (below max_iterations).
  double min_lr = 0;               ///< cosine: the learning rate at max_iterations (at most lr).
  /// Cross-entropy against (1 - s) on the label and s / classes on every class; 0: plain.
  double label_smoothing = 0;
  /// Largest global L2 norm of the gradients before each update (rescaled above it); 0: off.
  double gradient_clipping = 0;
  /// Height and width of the images, for models sized by them (transformers); 0: from the data.
  int64_t image_size = 0;
  /// Training batches padded by crop_padding, randomly cropped and flipped
  /// (data::LoaderOptions::augment); crop_padding 0 flips only.
  bool augment = true;
  int64_t crop_padding = 2;  ///< Padding in pixels of the random crop (0: flips only).
  /// Share of training samples that also get a random rectangle erased (data::LoaderOptions::
  /// erase_probability); needs augment. 0: off.
  double random_erasing = 0;
  int64_t checkpoint_every = 1000;  ///< Iterations between checkpoints (positive).
  int64_t validate_every = 1000;    ///< Iterations between test-set evaluations (positive).
  int64_t validation_batches = 0;  ///< 0: the whole test set
  int64_t log_every = 10;           ///< Iterations between metrics rows and progress reports (positive).
  uint64_t seed = 0;                ///< Seed of the weights' initialisation and the batches.
  int64_t loader_workers = 2;       ///< Threads preparing batches (at least 1).
  /// Mixed precision: "" (float32), "bfloat16" (autocast on the training device; no loss
  /// scaling needed, as float16 would) or "auto" (bfloat16 where the device computes it natively,
  /// else float32: choose_precision). A trainer resolves "auto" before it trains, so checkpoints
  /// record "" or "bfloat16".
  std::string autocast;
  /// What the network sees: "unit" (pixels / 255 minus the training images' mean image) or
  /// "memcnn" (pixels 0..255 minus the mean image of the training and test images together, as
  /// MemCNN's own trainer prepares them: for weights trained with it).
  std::string inputs = "unit";
  Json model_options = Json::object();  ///< overrides of the named model's architecture

  /// Validates every field; std::invalid_argument says which one and why.
  static TrainConfig from_json(const Json& experiment);
  /// The recipe as JSON, in from_json()'s layout (what checkpoints record).
  Json to_json() const;
  /// How a resumed run's recipe is checked against its checkpoint's (check_resume): it may change
  /// how long it trains and how it reports and loads data, none of which changes the weights of a
  /// given iteration; saved recipes are read through from_json, so fields added since take their
  /// defaults.
  static ResumeRules resume_rules(bool allow_changes);
  /// The learning rate at an iteration (lr_schedule, after the warm-up).
  double lr_at(int64_t iteration) const;
};

/// The precision a run trains under, and why.
struct PrecisionChoice {
  std::string autocast;                ///< TrainConfig::autocast resolved: "" (float32) or "bfloat16"
  std::string reason;                  ///< the precision and why, one sentence for the start of the run
  std::optional<std::string> warning;  ///< bfloat16 on a CPU that does not compute it natively
};
/// Resolves a recipe's autocast (`requested`: "", "bfloat16" or "auto") for training on `device`
/// with a CPU that offers `cpu` (cpu_bfloat16_support() on this machine). "auto" is bfloat16 on CUDA
/// and on a CPU with native bfloat16 (oneDNN with AVX512_BF16 or AMX), where it is faster and halves
/// activation memory, and float32 elsewhere, where bfloat16 is emulated and slower. `recorded` is
/// the precision of the checkpoint a resumed run continues (recorded_precision): "auto" keeps it, so
/// that a run started on one machine does not switch precision when it resumes on another; "" and
/// "bfloat16" stay as asked (a change from the checkpoint's is a recipe change, refused on resume).
PrecisionChoice choose_precision(const std::string& requested, c10::DeviceType device, const CpuBfloat16Support& cpu,
                                 const std::optional<std::string>& recorded = std::nullopt);
/// The precision a checkpoint was trained under ("" or "bfloat16"; a recipe without the field
/// trained in float32); none when it recorded no recipe or an unknown value.
std::optional<std::string> recorded_precision(const CheckpointInfo& checkpoint);
/// "[memcnn-train] precision: ..." and the warning, if any, on `out`.
void print_precision(const PrecisionChoice& choice, std::ostream& out);

}  // namespace train
}  // namespace memcnn
