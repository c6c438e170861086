#pragma once
/// @file
/// The training loop of the classification experiments: the RevNets' recipe (SGD with momentum and
/// weight decay, a multi-step learning-rate schedule by iteration, MemCNN's TensorFlow-style
/// cross-entropy) and the transformers' (AdamW, linear warm-up then cosine decay, label smoothing,
/// gradient clipping), periodic validation, metrics, atomic checkpoints and resumption, Ctrl-C
/// handling.

#include "memcnn/train/config.h"

#include <memcnn/data/dataset.h>
#include <memcnn/distributed/process_group.h>
#include <memcnn/data/loader.h>
#include <memcnn/models/classifier.h>
#include <memcnn/models/resnet.h>

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace memcnn {
namespace train {

/// -sum(one_hot(labels) * log_softmax(logits)) averaged over the batch, as MemCNN computes it.
torch::Tensor tf_style_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels);
/// The same against smoothed targets: (1 - smoothing) on the label plus smoothing / classes on
/// every class. smoothing 0 is tf_style_cross_entropy itself.
torch::Tensor smoothed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, double smoothing);

/// The configured ResNet or RevNet: the named architecture with the overrides of
/// config.model_options (layers, channels_per_layer, strides, init_kernel_size, block, reversible,
/// fused_backward, checkpoint_transitions, exact, fraction_bits, anchor_every, and MemCNN's
/// batch_norm_fix: true for TensorFlow's momentum 0.99 and eps 1e-3, false for PyTorch's 0.1 and
/// 1e-5, as MemCNN's experiments and the shipped ones train). A transformer's name
/// is an error (build_classifier builds any model).
models::ResNet build_model(const TrainConfig& config);

/// The configured model of any family: build_model's for the ResNets; for the transformers
/// (models::transformer_names()) the named shape for config.image_size with the overrides of
/// config.model_options: patch_size, dim, depth, heads, mlp_dim, pooling ("class_token" or
/// "mean"), dropout, attention_dropout, drop_path, layer_norm_eps, and for RevViT merge
/// ("concatenate" or "mean"), exact, fraction_bits, single_node, fused_backward. An option the
/// model does not have is an error that names the ones it has.
models::Classifier build_classifier(const TrainConfig& config);

/// Peak bytes allocated above the start by one forward and backward of the model on a batch
/// (its activation memory), on the device of the batch; `autocast` as TrainConfig::autocast.
/// On CPU it needs memcnn::enable_cpu_memory_tracking() (memory.h) to have been called.
int64_t measure_activation_bytes(models::Classifier& model, const torch::Tensor& images, const torch::Tensor& labels,
                                 const std::string& autocast = "");
/// The same for a ResNet or RevNet.
inline int64_t measure_activation_bytes(models::ResNet& model, const torch::Tensor& images, const torch::Tensor& labels,
                                        const std::string& autocast = "") {
  models::Classifier classifier(model);
  return measure_activation_bytes(classifier, images, labels, autocast);
}

/// How and where a Trainer runs (what the recipe does not say).
struct TrainerOptions {
  std::string results_dir;  ///< this experiment's folder: checkpoints, metrics.csv, metrics.svg
  torch::Device device = torch::kCPU;  ///< The device the model trains on (default the CPU).
  bool live_line = false;   ///< rewrite one progress line (a terminal) instead of printing lines
  std::ostream* out = nullptr;  ///< progress output; std::cout when null
  /// Data-parallel training: each rank trains on its shard of every global batch (config.batch_size
  /// is global, so MemCNN's schedule keeps its meaning), gradients are averaged in backward, and
  /// only rank 0 writes checkpoints, metrics and the plot and prints progress. Null: one process.
  std::shared_ptr<distributed::ProcessGroup> group;
  /// Resume from a checkpoint trained under a different recipe (warning) instead of refusing to
  /// (check_resume in resume.h; memcnn-train's --allow-recipe-change).
  bool allow_recipe_change = false;
  /// What the CPU offers bfloat16, by which autocast "auto" chooses (choose_precision); none: this
  /// machine's (cpu_bfloat16_support()). Set, it decides as on another machine.
  std::optional<CpuBfloat16Support> cpu_bfloat16;
};

/// What Trainer::run() reports of a run.
struct TrainSummary {
  int64_t parameters = 0;       ///< Parameter elements of the model (models::count_parameters()).
  int64_t start_iteration = 0;  ///< where this run began (a resumed run starts above 0)
  int64_t final_iteration = 0;  ///< The iteration it stopped at: max_iterations, or earlier when interrupted.
  bool interrupted = false;     ///< Whether it stopped early on request (request_stop()), after a checkpoint.
  double seconds = 0;           ///< wall time of this run
  /// Wall time of every run from iteration 0 to final_iteration (this one and those it resumed);
  /// absent when it resumed from a checkpoint that did not record it.
  std::optional<double> total_seconds;
  double test_accuracy = -1;    ///< on the whole test set at the end; -1 when interrupted
  std::string autocast;         ///< the precision it trained under: "" (float32) or "bfloat16"
  int64_t activation_bytes = 0; ///< of the last training step (on this rank, for its shard)
  double data_wait_fraction = 0; ///< share of the run spent waiting for the batch loader
  int64_t world_size = 1;       ///< Data-parallel ranks (1: one process).
  double communication_wait_fraction = 0;  ///< share of the run backward waited for gradient allreduces
};

/// The classification trainer behind memcnn-train: builds the model, optimizer and batch loaders
/// of a recipe and runs the training loop.
/// Reports each step's activation memory, so on CPU the program must have called
/// memcnn::enable_cpu_memory_tracking() (memory.h) before constructing it (memcnn-train does).
class Trainer {
 public:
  /// Builds the model (seeded with config.seed), its optimizer and the loaders of both data sets,
  /// and resolves the recipe's precision.
  /// @throws std::invalid_argument for model options the model does not have; c10::Error when CPU
  ///   memory tracking is off; the loaders' errors for unusable data or batch sizes.
  Trainer(TrainConfig config, data::Dataset train_set, data::Dataset test_set, TrainerOptions options);
  /// Stops the loaders' threads.
  ~Trainer();
  /// Trains from the newest checkpoint (if any) to config.max_iterations.
  TrainSummary run();
  /// Accuracy on the test set (max_batches 0: all of it) with the current weights; distributed,
  /// each rank evaluates its shard of every test batch with rank 0's BatchNorm statistics.
  double evaluate(int64_t max_batches = 0);
  /// Logits (float32, [N, classes]) and labels (int64, [N]) of the whole test set in its order,
  /// with the current weights in eval mode (one process).
  std::pair<torch::Tensor, torch::Tensor> test_logits();
  /// Loads the newest checkpoint; its iteration, or -1 without one. Under autocast "auto" the
  /// trainer then computes in the checkpoint's precision.
  int64_t restore();
  /// The precision the trainer computes in (TrainConfig::autocast resolved) and why.
  const PrecisionChoice& precision() const;
  models::Classifier& model();  ///< The model being trained.
  torch::optim::Optimizer& optimizer();  ///< Its optimizer (SGD or AdamW, as the recipe says).
  /// The (augmented) training batch of an iteration (this rank's shard of it).
  data::Batch training_batch(int64_t iteration);

  /// Asks a running trainer to checkpoint and stop after the current step (async-signal-safe).
  static void request_stop();
  /// Withdraws a stop request (train::clear_stop_request()).
  static void clear_stop_request();

  struct State;  ///< defined in trainer.cpp (public so its helpers there can name it)

 private:
  std::unique_ptr<State> state_;
};

}  // namespace train
}  // namespace memcnn
