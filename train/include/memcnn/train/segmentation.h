#pragma once
// Volume segmentation with an iUNet (models/iunet.h): the brain-extraction job of memcnn-train
// (`memcnn-train iunet3d brain-extraction`). One NIfTI volume and its mask; the network trains
// on random patches (with augmentation) drawn from the whole volume, with the labels of thin
// held-out slabs spread from one end of the volume to the other left out of the loss. It is
// evaluated by Dice on those slabs, whose labels no training step used, and by Dice on the whole
// volume, and writes the predicted mask of the whole volume as NIfTI on the input's grid and
// orientation. Checkpoints, resume, metrics (Dice in the accuracy columns) and the plot are the
// classification trainer's.

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

struct SegmentationConfig {
  std::string model;    // "iunet3d"
  std::string dataset;  // "brain-extraction"
  std::string image = "ch2.nii.gz";    // relative to the data folder
  std::string mask = "ch2bet.nii.gz";  // the label is mask > mask_threshold
  double mask_threshold = 0;
  int64_t axis = 2;  // the axis the held-out slabs cut (2: axial, z)
  // [begin, end) along axis: slices whose labels the loss never sees. Patches may cross them (the
  // image is the network's input at every slice, as when it predicts the whole volume).
  std::vector<std::array<int64_t, 2>> held_out{{7, 13},    {27, 33},   {47, 53},   {67, 73},  {87, 93},
                                               {107, 113}, {127, 133}, {147, 153}, {167, 173}};
  std::vector<int64_t> patch{72, 72, 24};
  int64_t batch_size = 2;
  int64_t max_iterations = 3000;
  double lr = 2e-3;
  double weight_decay = 0;
  int64_t warmup_iterations = 50;  // linear warm-up, then cosine decay to 0
  int64_t checkpoint_every = 500;
  int64_t validate_every = 500;
  int64_t log_every = 10;
  uint64_t seed = 0;
  bool augment = true;  // flips along x, intensity scale and shift
  Json model_options = Json::object();  // channels, layers, norm, memory_saving, ...

  // Validates every field; std::invalid_argument says which one and why.
  static SegmentationConfig from_json(const Json& experiment);
  Json to_json() const;
  static ResumeRules resume_rules(bool allow_changes);  // as TrainConfig's
  double lr_at(int64_t iteration) const;
};

// Whether MODEL/DATASET name a segmentation experiment (the iUNet models).
bool is_segmentation_model(const std::string& model);

models::IUNetSegmentation build_segmentation_model(const SegmentationConfig& config);

// 2|A n B| / (|A| + |B|) of two boolean masks; 1 when both are empty.
double dice_score(const torch::Tensor& prediction, const torch::Tensor& target);

// Dice of a band of slices [begin, end) along the held-out axis.
struct BandDice {
  int64_t begin = 0, end = 0;
  double dice = 0;
};

// The whole-volume prediction against the mask.
struct SegmentationEvaluation {
  double held_out_dice = -1;      // over the held-out slabs' voxels (labels no training step used)
  double whole_volume_dice = -1;  // over every voxel: what prediction.nii.gz scores against the mask
  std::vector<BandDice> bands;    // whole-volume Dice per band of kDiceBand slices along the axis
};

// Slices per band of SegmentationEvaluation::bands.
constexpr int64_t kDiceBand = 20;

// Patches of the image and the mask, and where the loss may use the mask: [B, 1, patch...] each,
// float32; `labelled` is 0 on held-out slices, 1 elsewhere. `origins`: each patch's first voxel in
// the volume.
struct SegmentationBatch {
  torch::Tensor images, masks, labelled;
  std::vector<std::array<int64_t, 3>> origins;
};

struct SegmentationTrainerOptions {
  std::string results_dir;
  std::string data_dir;  // where config.image and config.mask are
  torch::Device device = torch::kCPU;
  bool live_line = false;
  std::ostream* out = nullptr;
  bool allow_recipe_change = false;  // as TrainerOptions::allow_recipe_change
};

struct SegmentationSummary {
  int64_t parameters = 0;
  int64_t start_iteration = 0, final_iteration = 0;
  bool interrupted = false;
  double seconds = 0;
  std::optional<double> total_seconds;  // as TrainSummary::total_seconds
  SegmentationEvaluation evaluation;  // at the end; Dice -1 when interrupted
  int64_t activation_bytes = 0;       // of the last training step
  std::string prediction_path;
};

class SegmentationTrainer {
 public:
  SegmentationTrainer(SegmentationConfig config, SegmentationTrainerOptions options);
  ~SegmentationTrainer();
  SegmentationSummary run();
  // Predicts the whole volume and scores it; writes prediction.nii.gz if asked.
  SegmentationEvaluation evaluate(bool write_prediction);
  int64_t restore();  // the checkpoint's iteration, or -1
  models::IUNetSegmentation& model();
  // The (augmented) patches of an iteration; a pure function of the seed and the iteration, so a
  // resumed run trains on what the uninterrupted one would.
  SegmentationBatch training_batch(int64_t iteration) const;
  // Indices along the held-out axis whose labels the loss uses (every slice outside the slabs).
  std::vector<int64_t> training_slices() const;

  static void request_stop();
  static void clear_stop_request();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace train
}  // namespace memcnn
