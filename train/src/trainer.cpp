#include "memcnn/train/trainer.h"

#include "memcnn/train/checkpoint.h"
#include "memcnn/train/metrics.h"
#include "memcnn/train/progress.h"
#include "memcnn/train/resume.h"

#include <memcnn/data/loader.h>
#include <memcnn/distributed/data_parallel.h>
#include <memcnn/autocast.h>
#include <memcnn/memory.h>
#include <memcnn/models/vit.h>

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace train {
namespace {

models::BlockKind block_from(const std::string& name) {
  if (name == "basic") return models::BlockKind::basic;
  if (name == "bottleneck") return models::BlockKind::bottleneck;
  throw std::invalid_argument("model_options.block must be \"basic\" or \"bottleneck\", got \"" + name + "\"");
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

// SGD over every parameter (MemCNN's), or AdamW with weight decay on the parameters the model
// does not exempt (ClassifierImpl::decays) and none on the others.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainConfig& c, models::Classifier& model) {
  if (c.optimizer != "adamw") {
    return std::make_unique<torch::optim::SGD>(
        model->parameters(), torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
  }
  const auto options =
      torch::optim::AdamWOptions(c.lr).betas(std::make_tuple(c.beta1, c.beta2)).eps(c.eps).weight_decay(c.weight_decay);
  std::vector<torch::Tensor> decayed, spared;
  for (const auto& p : model->named_parameters()) (model->decays(p.key(), p.value()) ? decayed : spared).push_back(p.value());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, std::make_unique<torch::optim::AdamWOptions>(options));
  groups.emplace_back(spared, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options);
}

std::string choices(const std::vector<std::string>& keys) {
  std::string text;
  for (const auto& k : keys) text += (text.empty() ? "" : ", ") + k;
  return text;
}

// A transformer's overrides, each checked against the options the model has.
models::Classifier build_transformer(const TrainConfig& config) {
  if (config.image_size <= 0) {
    throw std::invalid_argument("transformer " + config.model + ": image_size is not known; set it in the experiment "
                                "(the trainer and memcnn-train take it from the data)");
  }
  auto shape = models::transformer_options(config.model, config.num_classes, config.in_channels, config.image_size);
  const bool reversible = models::is_reversible_transformer(config.model);
  models::RevViTOptions rev;
  std::vector<std::string> known = {"patch_size", "dim", "depth", "heads", "mlp_dim", "pooling", "dropout",
                                    "attention_dropout", "drop_path", "layer_norm_eps"};
  if (reversible) {
    for (const char* k : {"merge", "exact", "fraction_bits", "single_node", "fused_backward"}) known.emplace_back(k);
  }
  const Json& o = config.model_options;
  for (auto it = o.begin(); it != o.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end()) {
      throw std::invalid_argument("model_options." + it.key() + " is not an option of " + config.model +
                                  (it.key() == "exact" ? " (exact couplings exist in RevViT: revvit_*)" : "") +
                                  "; its options: " + choices(known));
    }
  }
  try {
    if (o.contains("patch_size")) shape.patch_size(o.at("patch_size").get<int64_t>());
    if (o.contains("dim")) shape.dim(o.at("dim").get<int64_t>());
    if (o.contains("depth")) shape.depth(o.at("depth").get<int64_t>());
    if (o.contains("heads")) shape.heads(o.at("heads").get<int64_t>());
    if (o.contains("mlp_dim")) shape.mlp_dim(o.at("mlp_dim").get<int64_t>());
    if (o.contains("pooling")) {
      const auto pooling = o.at("pooling").get<std::string>();
      if (pooling != "class_token" && pooling != "mean") {
        throw std::invalid_argument("model_options.pooling must be \"class_token\" or \"mean\", got \"" + pooling + "\"");
      }
      shape.pooling(pooling == "mean" ? models::TokenPooling::mean : models::TokenPooling::class_token);
    }
    if (o.contains("dropout")) shape.dropout(o.at("dropout").get<double>());
    if (o.contains("attention_dropout")) shape.attention_dropout(o.at("attention_dropout").get<double>());
    if (o.contains("drop_path")) shape.drop_path(o.at("drop_path").get<double>());
    if (o.contains("layer_norm_eps")) shape.layer_norm_eps(o.at("layer_norm_eps").get<double>());
    if (!reversible) return models::Classifier(models::ViT(shape));
    rev.transformer(shape);
    if (o.contains("merge")) {
      const auto merge = o.at("merge").get<std::string>();
      if (merge != "concatenate" && merge != "mean") {
        throw std::invalid_argument("model_options.merge must be \"concatenate\" or \"mean\", got \"" + merge + "\"");
      }
      rev.merge(merge == "mean" ? models::StreamMerge::mean : models::StreamMerge::concatenate);
    }
    if (o.contains("exact")) rev.exact(o.at("exact").get<bool>());
    if (o.contains("fraction_bits")) rev.fraction_bits(o.at("fraction_bits").get<int64_t>());
    if (o.contains("single_node")) rev.single_node(o.at("single_node").get<bool>());
    if (o.contains("fused_backward")) rev.wrapper().fused_backward(o.at("fused_backward").get<bool>());
  } catch (const Json::exception& e) {
    throw std::invalid_argument(std::string("model_options: wrong type: ") + e.what());
  }
  return models::Classifier(models::RevViT(rev));
}

// The seed of the default generators for one training step: dropout and stochastic depth draw
// from them, so a resumed run draws what an uninterrupted one drew, whatever ran before (the
// ResNets draw nothing there). splitmix64 of seed, iteration and rank.
uint64_t step_seed(uint64_t seed, int64_t iteration, int64_t rank) {
  uint64_t z = seed ^ (static_cast<uint64_t>(iteration) * 0x9E3779B97F4A7C15ULL) ^
               (static_cast<uint64_t>(rank) * 0xD1B54A32D192ED03ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

torch::Tensor tf_style_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  const auto one_hot = torch::one_hot(labels, logits.size(1)).to(logits.dtype());
  return -(one_hot * torch::log_softmax(logits, 1)).sum(1).mean();
}

models::ResNet build_model(const TrainConfig& config) {
  if (models::is_transformer(config.model)) {
    throw std::invalid_argument("build_model builds ResNets and RevNets; " + config.model +
                                " is a transformer: use build_classifier");
  }
  auto options = models::model_options(config.model, config.num_classes, config.in_channels);
  const Json& o = config.model_options;
  try {
    if (o.contains("layers")) options.layers(o.at("layers").get<std::vector<int64_t>>());
    if (o.contains("channels_per_layer")) options.channels_per_layer(o.at("channels_per_layer").get<std::vector<int64_t>>());
    if (o.contains("strides")) options.strides(o.at("strides").get<std::vector<int64_t>>());
    if (o.contains("init_kernel_size")) options.init_kernel_size(o.at("init_kernel_size").get<int64_t>());
    if (o.contains("block")) options.block(block_from(o.at("block").get<std::string>()));
    if (o.contains("reversible")) options.reversible(o.at("reversible").get<bool>());
    if (o.contains("fused_backward")) options.wrapper().fused_backward(o.at("fused_backward").get<bool>());
    if (o.contains("checkpoint_transitions")) options.checkpoint_transitions(o.at("checkpoint_transitions").get<bool>());
    if (o.contains("exact")) options.exact(o.at("exact").get<bool>());
    if (o.contains("fraction_bits")) options.fraction_bits(o.at("fraction_bits").get<int64_t>());
    if (o.contains("anchor_every")) options.anchor_every(o.at("anchor_every").get<int64_t>());
    // MemCNN's switch between TensorFlow's BatchNorm settings carried over literally (its ResNet's
    // default, and ResNetOptions') and PyTorch's, which MemCNN's experiments use: the statistics
    // and eps a model's weights were trained with, so weights trained by MemCNN evaluate the same.
    if (o.contains("batch_norm_fix")) {
      const bool fix = o.at("batch_norm_fix").get<bool>();
      options.bn_momentum(fix ? 0.99 : 0.1).bn_eps(fix ? 1e-3 : 1e-5);
    }
  } catch (const Json::exception& e) {
    throw std::invalid_argument(std::string("model_options: wrong type: ") + e.what());
  }
  return models::ResNet(options);
}

models::Classifier build_classifier(const TrainConfig& config) {
  if (models::is_transformer(config.model)) return build_transformer(config);
  return models::Classifier(build_model(config));
}

torch::Tensor smoothed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, double smoothing) {
  if (smoothing == 0) return tf_style_cross_entropy(logits, labels);
  const int64_t classes = logits.size(1);
  const auto target = torch::one_hot(labels, classes).to(logits.dtype()) * (1 - smoothing) + smoothing / classes;
  return -(target * torch::log_softmax(logits, 1)).sum(1).mean();
}

namespace {

// Forward passes (and the loss) under TrainConfig::autocast; backward runs outside, as usual.
class ForwardPrecision {
 public:
  ForwardPrecision(const std::string& autocast, torch::Device device) {
    if (autocast == "bfloat16") guard_.emplace(device.type(), torch::kBFloat16);
  }

 private:
  std::optional<Autocast> guard_;
};

torch::Tensor training_loss(models::Classifier& model, const torch::Tensor& images, const torch::Tensor& labels,
                            const std::string& autocast, torch::Tensor* logits = nullptr, double label_smoothing = 0) {
  ForwardPrecision precision(autocast, images.device());
  auto out = model->forward(images).to(torch::kFloat32);  // the loss in float32 whatever the logits
  if (logits != nullptr) *logits = out;
  return smoothed_cross_entropy(out, labels, label_smoothing);
}

}  // namespace

int64_t measure_activation_bytes(models::Classifier& model, const torch::Tensor& images, const torch::Tensor& labels,
                                 const std::string& autocast) {
  model->train();
  training_loss(model, images, labels, autocast).backward();  // allocates the gradients
  zero_gradients_in_place(model->parameters());
  MemoryProbe probe(images.device());
  training_loss(model, images, labels, autocast).backward();
  return probe.peak_above_start();
}

struct Trainer::State {
  TrainConfig config;
  TrainerOptions options;
  std::ostream silent{nullptr};  // the output of ranks other than 0
  std::ostream& out;
  models::Classifier model{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<data::BatchLoader> train_loader, test_loader;
  std::unique_ptr<distributed::DataParallel> parallel;  // attached once the weights are restored
  Checkpointer checkpointer;
  MetricsLog metrics;
  // The recipe's autocast ("auto" included); config.autocast holds what it resolved to.
  std::string requested_autocast;
  CpuBfloat16Support cpu_bfloat16;
  PrecisionChoice precision;
  // Where this run started and when it began: checkpoints record the training time of both.
  ResumePoint resume_point;
  Clock::time_point run_start = Clock::now();

  State(TrainConfig c, data::Dataset train_set, data::Dataset test_set, TrainerOptions o)
      : config(std::move(c)), options(std::move(o)),
        out(rank() != 0 ? silent : options.out ? *options.out : std::cout),
        checkpointer(options.results_dir), metrics(options.results_dir), requested_autocast(config.autocast),
        cpu_bfloat16(options.cpu_bfloat16 ? *options.cpu_bfloat16 : cpu_bfloat16_support()) {
    // Every step measures its activation memory: without CPU tracking, fail here rather than
    // after the data is loaded.
    (void)memory_stats(options.device);
    settle_precision(std::nullopt);
    if (config.image_size == 0 && train_set.images.dim() == 4) config.image_size = train_set.images.size(2);
    torch::manual_seed(config.seed);
    model = build_classifier(config);
    model->to(options.device);
    optimizer = make_optimizer(config, model);
    const bool memcnn_inputs = config.inputs == "memcnn";
    data::Dataset all_images;
    if (memcnn_inputs) all_images.images = torch::cat({train_set.images, test_set.images});
    const auto mean = memcnn_inputs ? data::mean_image(all_images) * 255 : data::mean_image(train_set);
    const int workers = static_cast<int>(config.loader_workers);
    train_loader = std::make_unique<data::BatchLoader>(
        std::move(train_set), mean,
        data::LoaderOptions().batch_size(config.batch_size).seed(config.seed).workers(workers).shard(rank()).shards(world())
            .augment(config.augment).crop_padding(config.crop_padding).erase_probability(config.random_erasing)
            .byte_range(memcnn_inputs));
    test_loader = std::make_unique<data::BatchLoader>(
        std::move(test_set), mean,
        data::LoaderOptions().batch_size(config.batch_size).augment(false).shuffle(false).drop_last(false).workers(workers)
            .shard(rank()).shards(world()).byte_range(memcnn_inputs));
  }

  std::string title() const { return config.model + " on " + config.dataset; }
  int64_t rank() const { return options.group ? options.group->rank() : 0; }
  int64_t world() const { return options.group ? options.group->size() : 1; }
  bool writes_files() const { return rank() == 0; }

  // Every rank holds rank 0's BatchNorm statistics (they are per rank in training).
  void synchronize_buffers() {
    if (!options.group) return;
    auto buffers = model->buffers();
    options.group->broadcast(buffers, 0);
  }

  // Sums over the ranks (no-op in one process).
  void sum_over_ranks(torch::Tensor& values) {
    if (options.group) options.group->allreduce_sum(values);
  }

  // Resolves the recipe's autocast, keeping `recorded` (the precision of the checkpoint this
  // trainer continues) under "auto". Every rank computes in rank 0's choice.
  void settle_precision(const std::optional<std::string>& recorded) {
    precision = choose_precision(requested_autocast, options.device.type(), cpu_bfloat16, recorded);
    if (options.group && requested_autocast == "auto") {
      std::vector<torch::Tensor> in_bfloat16{
          torch::full({1}, precision.autocast == "bfloat16" ? 1 : 0, torch::dtype(torch::kInt64).device(options.device))};
      options.group->broadcast(in_bfloat16, 0);
      const std::string rank0 = in_bfloat16[0].item<int64_t>() != 0 ? "bfloat16" : "";
      if (rank0 != precision.autocast) {
        precision = choose_precision(rank0, options.device.type(), cpu_bfloat16);
        precision.reason += " (autocast \"auto\" as rank 0 chose it)";
      }
    }
    config.autocast = precision.autocast;
  }

  // The plot's labels: the validations' accuracy, and the final evaluation's once the run ends.
  PlotLabels plot_labels(std::optional<double> final_accuracy = std::nullopt) const {
    PlotLabels labels;
    labels.title = title();
    if (config.validation_batches > 0) {
      labels.test_series = "test accuracy (first " + std::to_string(config.validation_batches) + " batches)";
    }
    labels.final_figure = final_accuracy;
    return labels;
  }

  void save_checkpoint(int64_t iteration) {
    synchronize_buffers();
    if (!writes_files()) return;
    const auto seconds = resume_point.total_seconds(seconds_since(run_start));
    checkpointer.save(*model, *optimizer, {iteration, seconds, config.to_json()});
  }
};

Trainer::Trainer(TrainConfig config, data::Dataset train_set, data::Dataset test_set, TrainerOptions options)
    : state_(std::make_unique<State>(std::move(config), std::move(train_set), std::move(test_set), std::move(options))) {}

Trainer::~Trainer() = default;

models::Classifier& Trainer::model() { return state_->model; }

data::Batch Trainer::training_batch(int64_t iteration) { return state_->train_loader->batch(iteration); }

void Trainer::request_stop() { train::request_stop(); }

void Trainer::clear_stop_request() { train::clear_stop_request(); }

int64_t Trainer::restore() {
  auto& s = *state_;
  const auto checkpoint = s.checkpointer.restore(*s.model, *s.optimizer, s.options.device);
  if (!checkpoint) return -1;
  s.settle_precision(recorded_precision(*checkpoint));
  return checkpoint->iteration;
}

const PrecisionChoice& Trainer::precision() const { return state_->precision; }

torch::optim::Optimizer& Trainer::optimizer() { return *state_->optimizer; }

namespace {

// Calls `use(logits, labels)` for the first `max_batches` test batches (0: all) in eval mode,
// without gradients, under the recipe's precision; the model is back in training mode after.
template <typename Use>
void for_test_batches(Trainer::State& s, int64_t max_batches, Use&& use) {
  s.synchronize_buffers();
  torch::NoGradGuard no_grad;
  s.model->eval();
  const int64_t batches = s.test_loader->batches_per_epoch();
  const int64_t count = max_batches > 0 ? std::min(max_batches, batches) : batches;
  ForwardPrecision precision(s.config.autocast, s.options.device);
  for (int64_t b = 0; b < count; ++b) {
    const auto batch = s.test_loader->batch(b);
    if (batch.labels.size(0) == 0) continue;  // a rank's empty share of a short last batch
    use(s.model->forward(batch.images.to(s.options.device)).cpu(), batch.labels);
  }
  s.model->train();
}

}  // namespace

double Trainer::evaluate(int64_t max_batches) {
  auto& s = *state_;
  int64_t correct = 0, seen = 0;
  for_test_batches(s, max_batches, [&](const torch::Tensor& logits, const torch::Tensor& labels) {
    correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
    seen += labels.size(0);
  });
  auto counts = torch::tensor({static_cast<double>(correct), static_cast<double>(seen)}, torch::kFloat64);
  s.sum_over_ranks(counts);
  return counts[1].item<double>() > 0 ? counts[0].item<double>() / counts[1].item<double>() : 0.0;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::test_logits() {
  auto& s = *state_;
  TORCH_CHECK(s.world() == 1, "test_logits: the whole test set's logits are collected in one process only");
  std::vector<torch::Tensor> logits, labels;
  for_test_batches(s, 0, [&](const torch::Tensor& batch_logits, const torch::Tensor& batch_labels) {
    logits.push_back(batch_logits.to(torch::kFloat));
    labels.push_back(batch_labels.to(torch::kLong));
  });
  return {torch::cat(logits), torch::cat(labels)};
}

TrainSummary Trainer::run() {
  auto& s = *state_;
  const auto& c = s.config;
  TrainSummary summary;
  summary.parameters = models::count_parameters(*s.model);
  summary.world_size = s.world();
  // The checkpoint first: under "auto" a resumed run computes in the precision it started in.
  const auto checkpoint = s.checkpointer.restore(*s.model, *s.optimizer, s.options.device);
  s.settle_precision(checkpoint ? recorded_precision(*checkpoint) : std::nullopt);
  summary.autocast = c.autocast;
  s.out << "[memcnn-train] " << s.title() << ": " << summary.parameters << " parameters, device "
        << s.options.device << ", batch " << c.batch_size;
  if (s.options.group) {
    s.out << " (" << s.world() << " ranks x " << c.batch_size / s.world() << ", " << s.options.group->backend() << ")";
  }
  s.out << ", " << c.max_iterations << " iterations" << (c.autocast.empty() ? std::string() : ", autocast " + c.autocast)
        << std::endl;
  print_precision(s.precision, s.out);

  s.resume_point = resume_from(checkpoint, c.to_json(), TrainConfig::resume_rules(s.options.allow_recipe_change),
                               s.options.results_dir, s.out);
  summary.start_iteration = s.resume_point.iteration;
  if (s.resume_point.resumed && s.writes_files()) s.metrics.truncate_after(s.resume_point.iteration);
  if (s.options.group && !s.parallel) s.parallel = std::make_unique<distributed::DataParallel>(s.model.ptr(), s.options.group);
  s.model->train();
  const auto start = Clock::now();
  s.run_start = start;
  auto window_start = Clock::now();
  double window_loss = 0, window_wait = 0, total_wait = 0, total_communication_wait = 0;
  int64_t window_correct = 0, window_seen = 0, window_steps = 0;

  int64_t iteration = summary.start_iteration;
  while (iteration < c.max_iterations) {
    const auto wait_start = Clock::now();
    const auto batch = s.train_loader->batch(iteration);
    const double wait = seconds_since(wait_start);
    window_wait += wait;
    total_wait += wait;
    const auto images = batch.images.to(s.options.device);
    const auto labels = batch.labels.to(s.options.device);
    const double lr = c.lr_at(iteration);
    set_learning_rate(*s.optimizer, lr);
    zero_gradients_in_place(s.model->parameters());

    torch::manual_seed(step_seed(c.seed, iteration, s.rank()));
    MemoryProbe probe(s.options.device);
    torch::Tensor logits;
    const auto loss = training_loss(s.model, images, labels, c.autocast, &logits, c.label_smoothing);
    loss.backward();
    summary.activation_bytes = probe.peak_above_start();
    // After backward, whose end waits for the ranks' averaged gradients: every rank clips alike.
    if (c.gradient_clipping > 0) torch::nn::utils::clip_grad_norm_(s.model->parameters(), c.gradient_clipping);
    // The batch's loss and accuracy over all ranks, and whether any rank was asked to stop: every
    // rank takes the same decisions at the same iteration.
    const double local_seen = static_cast<double>(labels.size(0));
    auto step_values = torch::tensor({loss.item<double>() * local_seen,
                                      static_cast<double>(logits.argmax(1).eq(labels).sum().item<int64_t>()), local_seen,
                                      stop_requested() ? 1.0 : 0.0},
                                     torch::kFloat64);
    s.sum_over_ranks(step_values);
    const double loss_value = step_values[0].item<double>() / step_values[2].item<double>();
    const bool stop = step_values[3].item<double>() > 0;
    if (!std::isfinite(loss_value)) {
      throw_non_finite_loss("the loss became " + std::to_string(loss_value), iteration, lr,
                            "Lower optimizer.lr in the experiments file or check the data", s.options.results_dir);
    }
    s.optimizer->step();
    ++iteration;

    window_loss += loss_value;
    window_correct += static_cast<int64_t>(step_values[1].item<double>());
    window_seen += static_cast<int64_t>(step_values[2].item<double>());
    ++window_steps;

    const bool validate = iteration % c.validate_every == 0 && iteration < c.max_iterations;
    if (iteration % c.log_every == 0 || validate || iteration == c.max_iterations) {
      MetricsRow row;
      row.iteration = iteration;
      row.loss = window_loss / window_steps;
      row.train_accuracy = static_cast<double>(window_correct) / window_seen;
      row.lr = lr;
      const double window_seconds = std::max(1e-9, seconds_since(window_start));
      row.iterations_per_second = window_steps / window_seconds;
      row.activation_bytes = summary.activation_bytes;
      if (validate) row.test_accuracy = evaluate(c.validation_batches);
      if (s.writes_files()) s.metrics.append(row);
      const double eta = eta_seconds(iteration, c.max_iterations, row.iterations_per_second);
      std::ostringstream line;
      line << "[" << s.title() << "] it " << iteration << "/" << c.max_iterations << "  loss " << std::fixed
           << std::setprecision(4) << row.loss << "  acc " << std::setprecision(1) << 100 * row.train_accuracy
           << "%  " << std::setprecision(2) << row.iterations_per_second << " it/s  ETA " << format_duration(eta)
           << "  activations " << format_mib(summary.activation_bytes) << "  data wait "
           << std::setprecision(0) << 100 * window_wait / window_seconds << "%";
      if (s.parallel) {
        const auto comm = s.parallel->stats();
        s.parallel->reset_stats();
        total_communication_wait += comm.wait_seconds;
        line << "  world " << s.world() << "  comm " << std::setprecision(1)
             << 1000 * comm.allreduce_seconds / std::max<int64_t>(1, comm.synchronized_backwards) << " ms/it, waited "
             << std::setprecision(0) << 100 * comm.wait_seconds / window_seconds << "%";
      }
      if (row.test_accuracy) line << "  test acc " << std::setprecision(2) << 100 * *row.test_accuracy << "%";
      print_progress(s.out, line.str(), s.options.live_line, row.test_accuracy.has_value());
      window_start = Clock::now();
      window_loss = window_wait = 0;
      window_correct = window_seen = window_steps = 0;
    }
    if (validate && s.writes_files()) s.metrics.plot(s.plot_labels());
    if (iteration % c.checkpoint_every == 0 || iteration == c.max_iterations || stop) s.save_checkpoint(iteration);
    if (stop) {
      summary.interrupted = true;
      print_interrupted(s.out, iteration, s.options.results_dir);
      break;
    }
  }
  summary.final_iteration = iteration;
  summary.seconds = seconds_since(start);
  summary.total_seconds = s.resume_point.total_seconds(summary.seconds);
  summary.data_wait_fraction = total_wait / std::max(1e-9, summary.seconds);
  if (s.parallel) total_communication_wait += s.parallel->stats().wait_seconds;
  summary.communication_wait_fraction = total_communication_wait / std::max(1e-9, summary.seconds);
  if (!summary.interrupted) {
    summary.test_accuracy = evaluate(0);
    if (s.writes_files()) s.metrics.plot(s.plot_labels(summary.test_accuracy));
  }
  return summary;
}

}  // namespace train
}  // namespace memcnn
