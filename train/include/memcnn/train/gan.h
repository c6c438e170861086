#pragma once
/// @file
/// Image-to-image translation with GANs (models/revgan.h): the revgan2d, revgan3d, convgan2d and
/// convgan3d jobs of memcnn-train. One recipe for both kinds of generator (a RevGANGenerator, whose
/// two directions share one invertible core, or a ConvGANPair of two generators) and both kinds of
/// task:
/// - paired (pix2pix): in each direction the GAN loss (BCE with logits) of a conditional PatchGAN,
///   which judges input and output concatenated, plus l1_weight (100) times the L1 distance to the
///   true output;
/// - unpaired (CycleGAN): least-squares GAN losses, cycle consistency (cycle_weight, 10, each way),
///   identity (identity_weight times cycle_weight: the generator given an image of its output
///   domain returns it; 0.5 in 2-D, 0 in 3-D), and the discriminators judge fakes drawn from an
///   image pool (history of generated images).
///
/// The discriminator loss is halved in both. Adam (lr 2e-4, betas 0.5, 0.999): one optimizer for
/// every generator parameter, one for both discriminators; the learning rate is constant, then
/// falls linearly to zero over the last decay_iterations.
///
/// Checkpoints hold the networks, both optimizers and the pools; every random draw of training
/// (batches, the pools' choices) is a pure function of the seed and the iteration, so a resumed run
/// continues exactly as an uninterrupted one. Progress line, checkpoints, resume rules, results
/// lock, metrics CSV and plot are the classification trainer's (progress.h, checkpoint.h,
/// resume.h, metrics.h).

#include "memcnn/train/config.h"

#include <memcnn/models/revgan.h>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace memcnn {
namespace train {

/// The recipe of a GAN experiment (an entry of experiments.json).
struct GANConfig {
  std::string model;    ///< revgan2d, revgan3d, convgan2d, convgan3d
  std::string dataset;  ///< ch2-superresolution, fashion-edges, fashion-edges-unpaired
  bool paired = true;   ///< default: false for a dataset named `*-unpaired`
  /// "bce" (with logits) or "lsgan" (least squares); default: "bce" paired, "lsgan" unpaired.
  std::string gan_loss = "bce";
  double l1_weight = 100;    ///< paired: L1 to the true output, each direction
  double cycle_weight = 10;  ///< unpaired: L1 of A -> B -> A to A and of B -> A -> B to B
  /// unpaired: times cycle_weight, L1 of G_AB(b) to b and G_BA(a) to a; default 0.5 in 2-D, 0 in
  /// 3-D (non-zero needs both domains to have the same channels).
  double identity_weight = 0.5;
  /// unpaired: generated images each discriminator's pool holds (0: none); default 50 unpaired,
  /// 0 paired.
  int64_t pool_size = 50;
  int64_t batch_size = 1;            ///< images (fashion) or patches (ch2) of each domain per step
  int64_t max_iterations = 20000;    ///< the learning rate reaches 0 here
  int64_t decay_iterations = 10000;  ///< the last ones: the learning rate falls linearly to 0 (0: constant)
  double lr = 2e-4;    ///< Adam's, both optimizers
  double beta1 = 0.5;    ///< Adam's, both optimizers ("betas": [beta1, beta2])
  double beta2 = 0.999;  ///< Adam's, both optimizers ("betas": [beta1, beta2])
  int64_t checkpoint_every = 500;  ///< a checkpoint every N iterations, at the end and when stopped
  int64_t validate_every = 1000;  ///< evaluation (metrics' test column) every N iterations and at the end
  int64_t log_every = 10;         ///< a progress line and a metrics row every N iterations
  uint64_t seed = 0;              ///< of the networks' initialisation, the batches and the pools
  /// The generator: ngf, depth, downsamplings, stem_kernel, memory_saving (RevGAN), init_std,
  /// pad_to_stride, add_input; the discriminators: ndf, discriminator_layers. Absent: the authors' sizes for
  /// the dimension.
  Json model_options = Json::object();
  /// The task's data: ch2-superresolution: patch [x, y, z], factor, margin; fashion: none.
  Json data = Json::object();
  /// How it is evaluated (free to change on resume): max_test (fashion: the first N test images, 0:
  /// all 10,000), tile [x, y, z] and border (ch2: the whole-volume prediction in tiles).
  Json evaluation = Json::object();

  /// Validates every field; std::invalid_argument says which one and why.
  static GANConfig from_json(const Json& experiment);
  /// Every field as JSON (what checkpoints record as the recipe; from_json() reads it back).
  Json to_json() const;
  /// As TrainConfig's: max_iterations, checkpoint_every, validate_every, log_every and evaluation
  /// may change on resume; any other change is refused, or only warned of with `allow_changes`.
  static ResumeRules resume_rules(bool allow_changes);
  /// lr until the last decay_iterations, then lr * (max_iterations - iteration) / decay_iterations.
  double lr_at(int64_t iteration) const;
  int64_t dims() const;     ///< 3 for `*3d` models, else 2
  bool reversible() const;  ///< revgan models, not convgan ones
};

/// Whether `model` names a GAN experiment.
bool is_gan_model(const std::string& model);

/// One batch of both domains, [B, channels, spatial...] each in [-1, 1]; paired: b[i] is a[i]'s
/// true translation.
struct GANBatch {
  torch::Tensor a;  ///< domain A (the generator's input)
  torch::Tensor b;  ///< domain B
};

/// The figures of A-to-B translation on the task's test data.
struct GANEvaluation {
  double psnr = 0;           ///< dB
  double ssim = 0;           ///< structural similarity, 1 at best
  std::optional<double> l1;  ///< where the task reports it (bytes, 0..255)
  std::string text;          ///< the figures as one line, with what they were measured on
};

/// What a GAN trains on: batches (a pure function of the iteration, so a resumed run sees what an
/// uninterrupted one would) and the evaluation of the A-to-B direction.
struct GANTask {
  std::string description;  ///< what it trains and is evaluated on, one line
  int64_t dims = 2;         ///< spatial dimensions of the images: 2 or 3
  int64_t channels_a = 1;   ///< channels of domain A
  int64_t channels_b = 1;   ///< channels of domain B
  std::function<GANBatch(int64_t iteration)> batch;  ///< the training batch of an iteration
  /// Runs `a_to_b` (no gradients) on the test data and scores it; `final`: also writes what the
  /// task writes (ch2: prediction.nii.gz in `results_dir`).
  std::function<GANEvaluation(const std::function<torch::Tensor(const torch::Tensor&)>& a_to_b, bool final,
                              const std::string& results_dir)>
      evaluate;
  /// Printed once before training (ch2: the linear and cubic baselines on the same voxels).
  std::string baseline_text;
};

/// The tasks of the shipped datasets. `data_dir` empty: Debian's folder (mricron-data,
/// dataset-fashion-mnist); a missing file is an error naming the package.
/// @throws std::invalid_argument for another dataset or wrong data or evaluation options.
GANTask make_gan_task(const GANConfig& config, const std::string& data_dir);

/// Generator and discriminators under one module (what checkpoints hold): "generator" (a
/// RevGANGenerator or a ConvGANPair), "discriminator_a" (judges domain A, conditioned on B in
/// paired training) and "discriminator_b".
class GANNetworksImpl : public torch::nn::Module {
 public:
  /// The networks of `config` for a task of `dims` dimensions and these channels.
  /// @throws c10::ValueError when `dims` is not the model's; std::invalid_argument for wrong
  ///   model options.
  GANNetworksImpl(const GANConfig& config, int64_t dims, int64_t channels_a, int64_t channels_b);
  /// Memory saving of RevGAN's core (no effect on a ConvGANPair, which has none).
  void set_memory_saving(bool on);
  /// The parameters of the generator (both directions): the generator optimizer's.
  std::vector<torch::Tensor> generator_parameters() const;
  /// The parameters of both discriminators: the discriminator optimizer's.
  std::vector<torch::Tensor> discriminator_parameters() const;

  models::Translator generator{nullptr};    ///< both directions
  models::RevGANGenerator revgan{nullptr};  ///< the generator when it is a RevGAN, else empty
  /// Judges domain A (beside the B image it was made from in paired training).
  models::PatchGAN discriminator_a{nullptr};
  /// Judges domain B (beside the A image it was made from in paired training).
  models::PatchGAN discriminator_b{nullptr};
};
/// Module holder of GANNetworksImpl.
TORCH_MODULE(GANNetworks);

/// A history of generated images (CycleGAN's): each discriminator step judges, per image, either
/// the image just generated or, with probability 1/2 once the pool is full, one generated earlier
/// (which the new one replaces). Draws come from a generator seeded by (seed, iteration, stream).
class ImagePool {
 public:
  /// A pool of up to `capacity` images; 0: serves what it is given.
  explicit ImagePool(int64_t capacity) : capacity_(capacity) {}
  /// `images` [B, ...] detached; returns [B, ...].
  torch::Tensor query(const torch::Tensor& images, uint64_t seed, int64_t iteration, uint64_t stream);
  int64_t size() const { return static_cast<int64_t>(images_.size()); }  ///< images held
  /// The contents stacked ([0] when empty), as checkpoints hold them.
  torch::Tensor stacked() const;
  /// The contents back from stacked(); c10::Error when it holds more than the capacity.
  void load(const torch::Tensor& stacked);

 private:
  int64_t capacity_;
  std::vector<torch::Tensor> images_;
};

/// The losses of one training step (means over the batch).
struct GANStepLosses {
  double generator = 0;       ///< everything the generator optimizer minimised
  double discriminator = 0;   ///< both discriminators, halved
  double adversarial = 0;     ///< the generators' GAN terms
  double reconstruction = 0;  ///< paired: weighted L1; unpaired: weighted cycle + identity
  /// dB (peak: the [-1, 1] range): paired, of A to B on the batch against b; unpaired, of
  /// A -> B -> A against a.
  double train_psnr = 0;
};

/// Where and how a GANTrainer runs.
struct GANTrainerOptions {
  std::string results_dir;  ///< this experiment's folder: checkpoints, metrics.csv, metrics.svg, outputs
  torch::Device device = torch::kCPU;    ///< where the networks train
  torch::Dtype dtype = torch::kFloat32;  ///< of the networks and batches (tests: float64)
  bool live_line = false;            ///< rewrite one progress line (a terminal)
  std::ostream* out = nullptr;       ///< progress output; std::cout when null
  bool allow_recipe_change = false;  ///< as TrainerOptions::allow_recipe_change
};

/// What a GANTrainer::run did.
struct GANSummary {
  int64_t generator_parameters = 0;      ///< parameter elements of the generator
  int64_t discriminator_parameters = 0;  ///< parameter elements of both discriminators
  int64_t start_iteration = 0;  ///< where this run began (a resumed run starts above 0)
  int64_t final_iteration = 0;  ///< the iteration it stopped at
  bool interrupted = false;     ///< stopped by request (checkpointed)
  double seconds = 0;           ///< wall time of this run
  std::optional<double> total_seconds;  ///< as TrainSummary::total_seconds
  GANEvaluation evaluation;      ///< at the end (none when interrupted)
  bool evaluated = false;        ///< whether `evaluation` holds figures
  int64_t activation_bytes = 0;  ///< of the last training step
};

/// Trains a GAN experiment; on CPU the program must have called memcnn::enable_cpu_memory_tracking()
/// (memory.h) first, as for the other trainers.
class GANTrainer {
 public:
  /// Builds the networks (initialised from config.seed) and both optimizers on options.device in
  /// options.dtype.
  /// @throws c10::Error when CPU memory tracking is off; c10::ValueError when identity_weight is
  ///   set and the task's domains differ in channels, or the task's dimension is not the model's.
  GANTrainer(GANConfig config, GANTask task, GANTrainerOptions options);
  /// Releases the trainer's state.
  ~GANTrainer();
  /// Trains from the newest checkpoint (if any) to config.max_iterations, then evaluates.
  /// @throws std::runtime_error when the losses stop being finite (the last checkpoint is kept).
  GANSummary run();
  /// One step of both optimizers on a batch at an iteration's learning rate (run() calls it).
  GANStepLosses step(const GANBatch& batch, int64_t iteration);
  /// The task's evaluation of the current generator (A to B); `final` as GANTask::evaluate's.
  GANEvaluation evaluate(bool final);
  /// Loads the newest checkpoint: its iteration, or -1.
  int64_t restore();
  /// Generator and discriminators.
  GANNetworks& networks();
  /// The recipe it trains.
  const GANConfig& config() const;
  /// The data it trains and is evaluated on.
  const GANTask& task() const;
  /// The task's batch of `iteration` on the trainer's device and dtype.
  GANBatch training_batch(int64_t iteration) const;
  const ImagePool& pool_a() const;  ///< fakes of domain A, judged by discriminator_a
  const ImagePool& pool_b() const;  ///< fakes of domain B, judged by discriminator_b
  /// Peak bytes above the start of one training step on `batch` with the generator's memory
  /// saving on or off (same weights; the networks and optimizers are left as they were).
  int64_t step_bytes(const GANBatch& batch, bool memory_saving);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace train
}  // namespace memcnn
