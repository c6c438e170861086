#pragma once
// Image-to-image translation with GANs (models/revgan.h): the revgan2d, revgan3d, convgan2d and
// convgan3d jobs of memcnn-train. One recipe for both kinds of generator (a RevGANGenerator, whose
// two directions share one invertible core, or a ConvGANPair of two generators) and both kinds of
// task:
// - paired (pix2pix): in each direction the GAN loss (BCE with logits) of a conditional PatchGAN,
//   which judges input and output concatenated, plus l1_weight (100) times the L1 distance to the
//   true output;
// - unpaired (CycleGAN): least-squares GAN losses, cycle consistency (cycle_weight, 10, each way),
//   identity (identity_weight times cycle_weight: the generator given an image of its output
//   domain returns it; 0.5 in 2-D, 0 in 3-D), and the discriminators judge fakes drawn from an
//   image pool (history of generated images).
// The discriminator loss is halved in both. Adam (lr 2e-4, betas 0.5, 0.999): one optimizer for
// every generator parameter, one for both discriminators; the learning rate is constant, then
// falls linearly to zero over the last decay_iterations.
//
// Checkpoints hold the networks, both optimizers and the pools; every random draw of training
// (batches, the pools' choices) is a pure function of the seed and the iteration, so a resumed run
// continues exactly as an uninterrupted one. Progress line, checkpoints, resume rules, results
// lock, metrics CSV and plot are the classification trainer's (progress.h, checkpoint.h,
// resume.h, metrics.h).

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

// The recipe of a GAN experiment (an entry of experiments.json).
struct GANConfig {
  std::string model;    // revgan2d, revgan3d, convgan2d, convgan3d
  std::string dataset;  // ch2-superresolution, fashion-edges, fashion-edges-unpaired
  bool paired = true;            // default: false for a dataset named *-unpaired
  std::string gan_loss = "bce";  // "bce" (with logits) or "lsgan" (least squares)
  double l1_weight = 100;        // paired: L1 to the true output, each direction
  double cycle_weight = 10;      // unpaired: L1 of A -> B -> A to A and of B -> A -> B to B
  double identity_weight = 0.5;  // unpaired: times cycle_weight, L1 of G_AB(b) to b and G_BA(a) to a
  int64_t pool_size = 50;        // unpaired: generated images each discriminator's pool holds (0: none)
  int64_t batch_size = 1;
  int64_t max_iterations = 20000;  // the learning rate reaches 0 here
  int64_t decay_iterations = 10000;  // the last ones: the learning rate falls linearly to 0
  double lr = 2e-4, beta1 = 0.5, beta2 = 0.999;  // Adam's, both optimizers ("betas": [beta1, beta2])
  int64_t checkpoint_every = 500;
  int64_t validate_every = 1000;  // evaluation (metrics' test column) every N iterations and at the end
  int64_t log_every = 10;         // a progress line and a metrics row every N iterations
  uint64_t seed = 0;              // of the networks' initialisation, the batches and the pools
  // The generator: ngf, depth, downsamplings, stem_kernel, memory_saving (RevGAN), init_std; the
  // discriminators: ndf, discriminator_layers. Absent: the authors' sizes for the dimension.
  Json model_options = Json::object();
  // The task's data: ch2-superresolution: patch [x, y, z], factor, margin; fashion: none.
  Json data = Json::object();
  // How it is evaluated (free to change on resume): max_test (fashion: the first N test images, 0:
  // all 10,000), tile [x, y, z] and border (ch2: the whole-volume prediction in tiles).
  Json evaluation = Json::object();

  // Validates every field; std::invalid_argument says which one and why.
  static GANConfig from_json(const Json& experiment);
  Json to_json() const;
  static ResumeRules resume_rules(bool allow_changes);  // as TrainConfig's
  // lr until the last decay_iterations, then lr * (max_iterations - iteration) / decay_iterations.
  double lr_at(int64_t iteration) const;
  int64_t dims() const;       // 3 for *3d models, else 2
  bool reversible() const;    // revgan*, not convgan*
};

// Whether MODEL names a GAN experiment.
bool is_gan_model(const std::string& model);

// One batch of both domains, [B, channels, spatial...] each in [-1, 1]; paired: b[i] is a[i]'s
// true translation.
struct GANBatch {
  torch::Tensor a, b;  // domain A (the generator's input), domain B
};

// The figures of A-to-B translation on the task's test data.
struct GANEvaluation {
  double psnr = 0, ssim = 0;
  std::optional<double> l1;  // where the task reports it (bytes, 0..255)
  std::string text;          // the figures as one line, with what they were measured on
};

// What a GAN trains on: batches (a pure function of the iteration, so a resumed run sees what an
// uninterrupted one would) and the evaluation of the A-to-B direction.
struct GANTask {
  std::string description;  // what it trains and is evaluated on, one line
  int64_t dims = 2, channels_a = 1, channels_b = 1;
  std::function<GANBatch(int64_t iteration)> batch;
  // Runs `a_to_b` (no gradients) on the test data and scores it; `final`: also writes what the
  // task writes (ch2: prediction.nii.gz in `results_dir`).
  std::function<GANEvaluation(const std::function<torch::Tensor(const torch::Tensor&)>& a_to_b, bool final,
                              const std::string& results_dir)>
      evaluate;
  // Printed once before training (ch2: the linear and cubic baselines on the same voxels).
  std::string baseline_text;
};

// The tasks of the shipped datasets. `data_dir` empty: Debian's folder (mricron-data,
// dataset-fashion-mnist); a missing file is an error naming the package.
GANTask make_gan_task(const GANConfig& config, const std::string& data_dir);

// Generator and discriminators under one module (what checkpoints hold): "generator" (a
// RevGANGenerator or a ConvGANPair), "discriminator_a" (judges domain A, conditioned on B in
// paired training) and "discriminator_b".
class GANNetworksImpl : public torch::nn::Module {
 public:
  GANNetworksImpl(const GANConfig& config, int64_t dims, int64_t channels_a, int64_t channels_b);
  // Memory saving of RevGAN's core (no effect on a ConvGANPair, which has none).
  void set_memory_saving(bool on);
  std::vector<torch::Tensor> generator_parameters() const;
  std::vector<torch::Tensor> discriminator_parameters() const;

  models::Translator generator{nullptr};    // both directions
  models::RevGANGenerator revgan{nullptr};  // the generator when it is a RevGAN, else empty
  models::PatchGAN discriminator_a{nullptr}, discriminator_b{nullptr};  // see above
};
TORCH_MODULE(GANNetworks);

// A history of generated images (CycleGAN's): each discriminator step judges, per image, either
// the image just generated or, with probability 1/2 once the pool is full, one generated earlier
// (which the new one replaces). Draws come from a generator seeded by (seed, iteration, stream).
class ImagePool {
 public:
  explicit ImagePool(int64_t capacity) : capacity_(capacity) {}  // 0: serves what it is given
  // images [B, ...] detached; returns [B, ...].
  torch::Tensor query(const torch::Tensor& images, uint64_t seed, int64_t iteration, uint64_t stream);
  int64_t size() const { return static_cast<int64_t>(images_.size()); }  // images held
  // The contents stacked ([0] when empty) and back.
  torch::Tensor stacked() const;
  void load(const torch::Tensor& stacked);  // c10::Error when it holds more than the capacity

 private:
  int64_t capacity_;
  std::vector<torch::Tensor> images_;
};

// The losses of one training step (means over the batch).
struct GANStepLosses {
  double generator = 0;      // everything the generator optimizer minimised
  double discriminator = 0;  // both discriminators, halved
  double adversarial = 0;    // the generators' GAN terms
  double reconstruction = 0; // paired: weighted L1; unpaired: weighted cycle + identity
  double train_psnr = 0;     // of A to B on the batch against b (paired), dB (peak: the [-1, 1] range)
};

// Where and how a GANTrainer runs.
struct GANTrainerOptions {
  std::string results_dir;  // this experiment's folder: checkpoints, metrics.csv, metrics.svg, outputs
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat32;  // of the networks and batches (tests: float64)
  bool live_line = false;            // rewrite one progress line (a terminal)
  std::ostream* out = nullptr;       // progress output; std::cout when null
  bool allow_recipe_change = false;  // as TrainerOptions::allow_recipe_change
};

// What a GANTrainer::run did.
struct GANSummary {
  int64_t generator_parameters = 0, discriminator_parameters = 0;
  int64_t start_iteration = 0, final_iteration = 0;  // a resumed run starts above 0
  bool interrupted = false;                          // stopped by request (checkpointed)
  double seconds = 0;                                // wall time of this run
  std::optional<double> total_seconds;               // as TrainSummary::total_seconds
  GANEvaluation evaluation;  // at the end (none when interrupted)
  bool evaluated = false;        // whether `evaluation` holds figures
  int64_t activation_bytes = 0;  // of the last training step
};

// Trains a GAN experiment; on CPU the program must have called memcnn::enable_cpu_memory_tracking()
// (memory.h) first, as for the other trainers.
class GANTrainer {
 public:
  GANTrainer(GANConfig config, GANTask task, GANTrainerOptions options);
  ~GANTrainer();
  // Trains from the newest checkpoint (if any) to config.max_iterations, then evaluates.
  GANSummary run();
  // One step of both optimizers on a batch at an iteration's learning rate (run() calls it).
  GANStepLosses step(const GANBatch& batch, int64_t iteration);
  // The task's evaluation of the current generator (A to B); `final` as GANTask::evaluate's.
  GANEvaluation evaluate(bool final);
  int64_t restore();  // loads the newest checkpoint: its iteration, or -1
  GANNetworks& networks();
  const GANConfig& config() const;
  const GANTask& task() const;
  GANBatch training_batch(int64_t iteration) const;  // on the trainer's device and dtype
  const ImagePool& pool_a() const;  // fakes of domain A, judged by discriminator_a
  const ImagePool& pool_b() const;  // fakes of domain B
  // Peak bytes above the start of one training step on `batch` with the generator's memory
  // saving on or off (same weights; the networks and optimizers are left as they were).
  int64_t step_bytes(const GANBatch& batch, bool memory_saving);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace train
}  // namespace memcnn
