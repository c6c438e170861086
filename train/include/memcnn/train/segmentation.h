#pragma once
/// @file
/// Volume segmentation with an iUNet (models/iunet.h): the brain-extraction job of memcnn-train
/// (`memcnn-train iunet3d brain-extraction`). One NIfTI volume and its mask; the network trains
/// on random patches (with augmentation) drawn from the whole volume, with the labels of thin
/// held-out slabs spread from one end of the volume to the other left out of the loss. It is
/// evaluated by Dice on those slabs, whose labels no training step used, and by Dice on the whole
/// volume, and writes the predicted mask of the whole volume as NIfTI on the input's grid and
/// orientation. Checkpoints, resume, metrics (Dice in the accuracy columns) and the plot are the
/// classification trainer's.

#include "memcnn/train/config.h"

#include <memcnn/models/iunet.h>

#include <torch/types.h>

#include <array>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace memcnn {
namespace train {

/// A segmentation job's recipe: an experiment entry of the experiments file, validated.
struct SegmentationConfig {
  std::string model;    ///< "iunet3d"
  std::string dataset;  ///< "brain-extraction"
  std::string image = "ch2.nii.gz";    ///< relative to the data folder
  std::string mask = "ch2bet.nii.gz";  ///< the label is mask > mask_threshold
  double mask_threshold = 0;           ///< Mask values above it are foreground.
  int64_t axis = 2;  ///< the axis the held-out slabs cut (2: axial, z)
  /// [begin, end) along axis: slices whose labels the loss never sees. Patches may cross them (the
  /// image is the network's input at every slice, as when it predicts the whole volume).
  std::vector<std::array<int64_t, 2>> held_out{{7, 13},    {27, 33},   {47, 53},   {67, 73},  {87, 93},
                                               {107, 113}, {127, 133}, {147, 153}, {167, 173}};
  std::vector<int64_t> patch{72, 72, 24};  ///< Size of the training patches in voxels (x, y, z).
  int64_t batch_size = 2;          ///< Patches per batch.
  int64_t max_iterations = 3000;   ///< Iterations (updates) of the whole run.
  double lr = 2e-3;                ///< AdamW's peak learning rate.
  double weight_decay = 0;         ///< AdamW's decoupled weight decay.
  int64_t warmup_iterations = 50;  ///< linear warm-up, then cosine decay to 0
  int64_t checkpoint_every = 500;  ///< Iterations between checkpoints.
  int64_t validate_every = 500;    ///< Iterations between evaluations (Dice).
  int64_t log_every = 10;          ///< Iterations between metrics rows and progress reports.
  uint64_t seed = 0;               ///< Seed of the weights' initialisation and the patches.
  bool augment = true;  ///< flips along x, intensity scale and shift
  Json model_options = Json::object();  ///< channels, layers, norm, memory_saving, ...

  /// Validates every field; std::invalid_argument says which one and why.
  static SegmentationConfig from_json(const Json& experiment);
  /// The recipe as JSON, in from_json()'s layout (what checkpoints record).
  Json to_json() const;
  static ResumeRules resume_rules(bool allow_changes);  ///< as TrainConfig's
  /// The learning rate at an iteration: linear warm-up, then cosine decay to 0 at max_iterations.
  double lr_at(int64_t iteration) const;
};

/// Whether `model` names a segmentation model (the iUNet models: a name beginning with "iunet").
bool is_segmentation_model(const std::string& model);

/// The configured network: one input channel, one output logit, an iUNet of three dimensions with
/// config.model_options' channels ({8, 32, 128}), layers ({0, 2, 2}), norm ("batch" or "group"),
/// method ("cayley" or "exp"), init ("haar" or "squeeze"), learnable_resampling,
/// channel_mixing_every and memory_saving.
/// @throws std::invalid_argument naming the model option that is wrong.
models::IUNetSegmentation build_segmentation_model(const SegmentationConfig& config);

/// 2|A n B| / (|A| + |B|) of two boolean masks; 1 when both are empty.
/// @throws c10::ValueError when the shapes differ.
double dice_score(const torch::Tensor& prediction, const torch::Tensor& target);

/// Dice of a band of slices [begin, end) along the held-out axis.
struct BandDice {
  int64_t begin = 0;  ///< The band's first slice.
  int64_t end = 0;    ///< One past the band's last slice.
  double dice = 0;    ///< Dice of the prediction in the band.
};

/// The whole-volume prediction against the mask.
struct SegmentationEvaluation {
  double held_out_dice = -1;      ///< over the held-out slabs' voxels (labels no training step used)
  double whole_volume_dice = -1;  ///< over every voxel: what prediction.nii.gz scores against the mask
  std::vector<BandDice> bands;    ///< whole-volume Dice per band of kDiceBand slices along the axis
};

/// Slices per band of SegmentationEvaluation::bands.
constexpr int64_t kDiceBand = 20;

/// Patches of the image and the mask, and where the loss may use the mask: [B, 1, patch...] each,
/// float32; `labelled` is 0 on held-out slices, 1 elsewhere. `origins`: each patch's first voxel in
/// the volume.
struct SegmentationBatch {
  torch::Tensor images;    ///< The image patches, normalised intensities.
  torch::Tensor masks;     ///< The mask patches, 0 or 1.
  torch::Tensor labelled;  ///< 0 on held-out slices, 1 elsewhere.
  std::vector<std::array<int64_t, 3>> origins;  ///< Each patch's first voxel in the volume.
};

/// How and where a SegmentationTrainer runs (what the recipe does not say).
struct SegmentationTrainerOptions {
  std::string results_dir;  ///< as TrainerOptions::results_dir; prediction.nii.gz goes there too
  std::string data_dir;  ///< where config.image and config.mask are
  torch::Device device = torch::kCPU;  ///< The device the model trains on.
  bool live_line = false;       ///< as TrainerOptions::live_line
  std::ostream* out = nullptr;  ///< progress output; std::cout when null
  bool allow_recipe_change = false;  ///< as TrainerOptions::allow_recipe_change
};

/// What SegmentationTrainer::run() reports of a run.
struct SegmentationSummary {
  int64_t parameters = 0;       ///< Parameter elements of the model.
  int64_t start_iteration = 0;  ///< where this run began (a resumed run starts above 0)
  int64_t final_iteration = 0;  ///< The iteration it stopped at.
  bool interrupted = false;     ///< Whether it stopped early on request, after a checkpoint.
  double seconds = 0;           ///< wall time of this run
  std::optional<double> total_seconds;  ///< as TrainSummary::total_seconds
  SegmentationEvaluation evaluation;  ///< at the end; Dice -1 when interrupted
  int64_t activation_bytes = 0;       ///< of the last training step
  std::string prediction_path;        ///< the prediction written at the end; empty when interrupted
};

/// The segmentation trainer behind `memcnn-train iunet3d brain-extraction` (see the file's
/// description). Like Trainer it needs memcnn::enable_cpu_memory_tracking() on CPU.
class SegmentationTrainer {
 public:
  /// Reads the volume and its mask from options.data_dir and builds the model and optimizer.
  /// @throws c10::Error when a volume cannot be read, image and mask are not 3-D volumes on one
  ///   grid, the patch or a held-out slab does not fit the volume, or CPU memory tracking is off;
  ///   std::invalid_argument for wrong model options.
  SegmentationTrainer(SegmentationConfig config, SegmentationTrainerOptions options);
  /// Releases the trainer's state.
  ~SegmentationTrainer();
  /// Trains from the newest checkpoint (if any) to config.max_iterations, then evaluates and
  /// writes prediction.nii.gz (unless stopped on request).
  SegmentationSummary run();
  /// Predicts the whole volume and scores it; writes prediction.nii.gz if asked.
  SegmentationEvaluation evaluate(bool write_prediction);
  int64_t restore();  ///< the checkpoint's iteration, or -1
  models::IUNetSegmentation& model();  ///< The model being trained.
  /// The (augmented) patches of an iteration; a pure function of the seed and the iteration, so a
  /// resumed run trains on what the uninterrupted one would.
  SegmentationBatch training_batch(int64_t iteration) const;
  /// Indices along the held-out axis whose labels the loss uses (every slice outside the slabs).
  std::vector<int64_t> training_slices() const;

  /// Asks a running trainer to checkpoint and stop after the current step (async-signal-safe).
  static void request_stop();
  /// Withdraws a stop request.
  static void clear_stop_request();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace train
}  // namespace memcnn
