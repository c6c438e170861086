#include "memcnn/train/gan.h"

#include "memcnn/train/checkpoint.h"
#include "memcnn/train/metrics.h"
#include "memcnn/train/progress.h"
#include "memcnn/train/resume.h"

#include <memcnn/memory.h>
#include <memcnn/models/resnet.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace memcnn {
namespace train {
namespace {

[[noreturn]] void wrong_field(const std::string& name, const std::string& what) {
  throw std::invalid_argument("GAN experiment: field \"" + name + "\" " + what);
}

void require(bool condition, const std::string& message) {
  if (!condition) throw std::invalid_argument("GAN experiment: " + message);
}

// Integers go through whole_number (config.h), as the other recipes' do.
template <typename T>
T field(const Json& json, const std::string& name, const T& fallback) {
  if (!json.contains(name)) return fallback;
  const Json& value = json.at(name);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return whole_number<T>(value, name);
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (!value.is_array()) wrong_field(name, "must be a list, not " + value.dump());
    T list;
    for (const Json& item : value) list.push_back(whole_number<int64_t>(item, name));
    return list;
  } else {
    try {
      return value.get<T>();
    } catch (const Json::exception& e) {
      wrong_field(name, std::string("has the wrong type: ") + e.what());
    }
  }
}

const std::set<std::string>& gan_models() {
  static const std::set<std::string> models{"revgan2d", "revgan3d", "convgan2d", "convgan3d"};
  return models;
}

// Fields of an options object must be among `known`: a misspelt size would silently train the default.
void check_known(const Json& options, const std::string& what, const std::vector<std::string>& known) {
  require(options.is_object(), "\"" + what + "\" must be an object");
  for (auto it = options.begin(); it != options.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) != known.end() || it.key() == "comment") continue;
    std::string list;
    for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
    wrong_field(what + "." + it.key(), "is not an option; the options are " + list);
  }
}

const std::vector<std::string> kModelOptions{"ngf",        "depth", "downsamplings", "stem_kernel", "memory_saving",
                                             "init_std",   "ndf",   "discriminator_layers", "pad_to_stride",
                                             "add_input"};

models::RevGANOptions generator_options(const GANConfig& config, int64_t channels_a, int64_t channels_b) {
  const Json& o = config.model_options;
  models::RevGANOptions options(config.dims());
  options.channels_a(channels_a).channels_b(channels_b);
  options.ngf(field(o, "ngf", options.ngf()));
  options.depth(field(o, "depth", options.depth()));
  options.downsamplings(field(o, "downsamplings", options.downsamplings()));
  options.stem_kernel(field(o, "stem_kernel", options.stem_kernel()));
  options.memory_saving(field(o, "memory_saving", options.memory_saving()));
  options.init_std(field(o, "init_std", options.init_std()));
  options.pad_to_stride(field(o, "pad_to_stride", options.pad_to_stride()));
  options.add_input(field(o, "add_input", options.add_input()));
  return options;
}

models::PatchGANOptions discriminator_options(const GANConfig& config, int64_t channels) {
  const Json& o = config.model_options;
  models::PatchGANOptions options(config.dims(), channels);
  options.ndf(field(o, "ndf", options.ndf()));
  options.layers(field(o, "discriminator_layers", options.layers()));
  options.init_std(field(o, "init_std", options.init_std()));
  return options;
}

torch::Tensor gan_term(const std::string& kind, const torch::Tensor& logits, bool real) {
  const auto target = real ? torch::ones_like(logits) : torch::zeros_like(logits);
  if (kind == "bce") return torch::binary_cross_entropy_with_logits(logits, target);
  return torch::mse_loss(logits, target);
}

// PSNR of x against y, both in [-1, 1]: the peak-to-peak range is 2, so this is the byte images'
// PSNR at peak 255 (before rounding).
double unit_psnr(const torch::Tensor& x, const torch::Tensor& y) {
  const double mse = (x.detach() - y.detach()).pow(2).mean().item<double>();
  return 10 * std::log10(4.0 / std::max(mse, 1e-20));
}

void set_requires_grad(const std::vector<torch::Tensor>& parameters, bool on) {
  for (auto p : parameters) p.requires_grad_(on);
}

void set_lr(torch::optim::Adam& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

uint64_t draw_seed(uint64_t seed, int64_t iteration, uint64_t stream) {
  // Distinct (seed, iteration, stream) give distinct generator seeds for any realistic run.
  return seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(iteration) * 8 + stream + 1;
}

std::string number(double value) {
  std::ostringstream text;
  text << value;
  return text.str();
}

PlotLabels plot_labels(const GANConfig& config, std::optional<double> final_psnr = std::nullopt) {
  PlotLabels labels;
  labels.title = config.model + " on " + config.dataset + " (loss: the generators')";
  labels.metric = "PSNR (dB)";
  labels.train_series = config.paired ? "train PSNR (A to B)" : "train cycle PSNR (A to B to A)";
  labels.test_series = "test PSNR (A to B)";
  labels.percent = false;
  labels.final_figure = final_psnr;
  labels.final_name = "final test PSNR";
  return labels;
}

}  // namespace

bool is_gan_model(const std::string& model) { return gan_models().count(model) != 0; }

// ---- GANConfig ----

GANConfig GANConfig::from_json(const Json& e) {
  GANConfig c;
  c.model = field<std::string>(e, "model", "");
  c.dataset = field<std::string>(e, "dataset", "");
  require(!c.model.empty() && !c.dataset.empty(), "needs \"model\" and \"dataset\"");
  require(is_gan_model(c.model), "model \"" + c.model + "\" is not a GAN; the GANs are revgan2d, revgan3d, "
                                                          "convgan2d and convgan3d");
  const bool unpaired_name = c.dataset.size() > 9 && c.dataset.compare(c.dataset.size() - 9, 9, "-unpaired") == 0;
  c.paired = field(e, "paired", !unpaired_name);
  // The shipped datasets' dimension: a model of the other one would fail only after loading them.
  const int64_t data_dims = c.dataset == "ch2-superresolution" ? 3 : c.dataset.rfind("fashion-edges", 0) == 0 ? 2 : 0;
  if (data_dims != 0 && data_dims != c.dims()) {
    const std::string kind = c.reversible() ? "revgan" : "convgan";
    throw std::invalid_argument(c.model + " cannot train on " + c.dataset + ": it is a " + std::to_string(c.dims()) +
                                "-D model and " + c.dataset + " is " + std::to_string(data_dims) + "-D; use " + kind +
                                std::to_string(data_dims) + "d (the 2-D GANs go with fashion-edges and "
                                "fashion-edges-unpaired, the 3-D ones with ch2-superresolution)");
  }
  c.gan_loss = field<std::string>(e, "gan_loss", c.paired ? "bce" : "lsgan");
  require(c.gan_loss == "bce" || c.gan_loss == "lsgan",
          "gan_loss must be \"bce\" (with logits, pix2pix's) or \"lsgan\" (least squares, CycleGAN's), not \"" +
              c.gan_loss + "\"");
  c.l1_weight = field(e, "l1_weight", c.l1_weight);
  c.cycle_weight = field(e, "cycle_weight", c.cycle_weight);
  c.identity_weight = field(e, "identity_weight", c.dims() == 3 ? 0.0 : 0.5);
  c.pool_size = field<int64_t>(e, "pool_size", c.paired ? 0 : 50);
  c.batch_size = field(e, "batch_size", c.batch_size);
  c.max_iterations = field(e, "max_iterations", c.max_iterations);
  c.decay_iterations = field(e, "decay_iterations", c.decay_iterations);
  c.lr = field(e, "lr", c.lr);
  const auto betas = field(e, "betas", std::vector<double>{c.beta1, c.beta2});
  require(betas.size() == 2, "betas must be a list of two numbers [beta1, beta2]");
  c.beta1 = betas[0];
  c.beta2 = betas[1];
  c.checkpoint_every = field(e, "checkpoint_every", c.checkpoint_every);
  c.validate_every = field(e, "validate_every", c.validate_every);
  c.log_every = field(e, "log_every", c.log_every);
  c.seed = field(e, "seed", c.seed);
  c.model_options = field(e, "model_options", c.model_options);
  c.data = field(e, "data", c.data);
  c.evaluation = field(e, "evaluation", c.evaluation);
  check_known(c.model_options, "model_options", kModelOptions);
  check_known(c.data, "data", {"patch", "factor", "margin"});
  check_known(c.evaluation, "evaluation", {"max_test", "tile", "border"});
  for (const auto& [name, value] : {std::pair<const char*, double>{"l1_weight", c.l1_weight},
                                    {"cycle_weight", c.cycle_weight}, {"identity_weight", c.identity_weight}}) {
    require(std::isfinite(value) && value >= 0, std::string(name) + " must be a finite number, 0 or more");
  }
  require(std::isfinite(c.lr) && c.lr > 0, "lr must be a positive number");
  require(c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1, "betas must lie in [0, 1)");
  require(c.pool_size >= 0, "pool_size must be 0 (none) or more");
  require(c.batch_size >= 1 && c.max_iterations >= 1, "batch_size and max_iterations must be positive");
  require(c.decay_iterations >= 0, "decay_iterations must be 0 (a constant learning rate) or more");
  require(c.checkpoint_every >= 1 && c.validate_every >= 1 && c.log_every >= 1,
          "checkpoint_every, validate_every and log_every must be positive");
  return c;
}

Json GANConfig::to_json() const {
  return Json{{"model", model}, {"dataset", dataset}, {"paired", paired}, {"gan_loss", gan_loss},
              {"l1_weight", l1_weight}, {"cycle_weight", cycle_weight}, {"identity_weight", identity_weight},
              {"pool_size", pool_size}, {"batch_size", batch_size}, {"max_iterations", max_iterations},
              {"decay_iterations", decay_iterations}, {"lr", lr}, {"betas", {beta1, beta2}},
              {"checkpoint_every", checkpoint_every}, {"validate_every", validate_every}, {"log_every", log_every},
              {"seed", seed}, {"model_options", model_options}, {"data", data}, {"evaluation", evaluation}};
}

ResumeRules GANConfig::resume_rules(bool allow_changes) {
  return resume_rules_of<GANConfig>({"max_iterations", "checkpoint_every", "validate_every", "log_every", "evaluation"},
                                    allow_changes);
}

double GANConfig::lr_at(int64_t iteration) const {
  const int64_t left = max_iterations - iteration;
  if (decay_iterations == 0 || left >= decay_iterations) return lr;
  return lr * static_cast<double>(std::max<int64_t>(0, left)) / static_cast<double>(decay_iterations);
}

int64_t GANConfig::dims() const { return model.size() > 2 && model.compare(model.size() - 2, 2, "3d") == 0 ? 3 : 2; }

bool GANConfig::reversible() const { return model.rfind("revgan", 0) == 0; }

// ---- GANNetworks ----

GANNetworksImpl::GANNetworksImpl(const GANConfig& config, int64_t dims, int64_t channels_a, int64_t channels_b) {
  TORCH_CHECK_VALUE(dims == config.dims(), config.model, " is a ", config.dims(), "-D model; the dataset ",
                    config.dataset, " is ", dims, "-D: use ", config.reversible() ? "revgan" : "convgan", dims,
                    "d");
  const auto options = generator_options(config, channels_a, channels_b);
  if (config.reversible()) {
    revgan = models::RevGANGenerator(options);
    generator = register_module("generator", revgan.ptr());
  } else {
    generator = register_module("generator", models::ConvGANPair(options).ptr());
  }
  // Conditional (paired): each judges its domain's image beside the image it was made from.
  const int64_t condition_a = config.paired ? channels_b : 0, condition_b = config.paired ? channels_a : 0;
  discriminator_a = register_module("discriminator_a", models::PatchGAN(discriminator_options(config, channels_a + condition_a)));
  discriminator_b = register_module("discriminator_b", models::PatchGAN(discriminator_options(config, channels_b + condition_b)));
}

void GANNetworksImpl::set_memory_saving(bool on) {
  if (revgan) revgan->set_memory_saving(on);
}

std::vector<torch::Tensor> GANNetworksImpl::generator_parameters() const { return generator->parameters(); }

std::vector<torch::Tensor> GANNetworksImpl::discriminator_parameters() const {
  auto parameters = discriminator_a->parameters();
  for (const auto& p : discriminator_b->parameters()) parameters.push_back(p);
  return parameters;
}

// ---- ImagePool ----

torch::Tensor ImagePool::query(const torch::Tensor& images, uint64_t seed, int64_t iteration, uint64_t stream) {
  if (capacity_ == 0) return images;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(draw_seed(seed, iteration, stream));
  std::vector<torch::Tensor> served;
  for (int64_t i = 0; i < images.size(0); ++i) {
    auto image = images[i].detach().clone();
    if (size() < capacity_) {
      images_.push_back(image);
      served.push_back(image);
      continue;
    }
    const auto draws = torch::rand({2}, generator, torch::kFloat64);
    if (draws[0].item<double>() < 0.5) {
      const auto index = std::min<int64_t>(capacity_ - 1, static_cast<int64_t>(draws[1].item<double>() * capacity_));
      served.push_back(images_[static_cast<size_t>(index)]);
      images_[static_cast<size_t>(index)] = image;
    } else {
      served.push_back(image);
    }
  }
  return torch::stack(served);
}

torch::Tensor ImagePool::stacked() const { return images_.empty() ? torch::empty({0}) : torch::stack(images_); }

void ImagePool::load(const torch::Tensor& stacked) {
  images_.clear();
  if (stacked.dim() <= 1) return;  // empty
  TORCH_CHECK(stacked.size(0) <= capacity_, "the image pool holds ", stacked.size(0), " images, more than its size ",
              capacity_);
  for (int64_t i = 0; i < stacked.size(0); ++i) images_.push_back(stacked[i].clone());
}

// ---- GANTrainer ----

struct GANTrainer::State {
  GANConfig config;
  GANTask task;
  GANTrainerOptions options;
  std::ostream& out;
  GANNetworks networks{nullptr};
  std::unique_ptr<torch::optim::Adam> generator_optimizer, discriminator_optimizer;
  ImagePool pool_a, pool_b;
  Checkpointer checkpointer;
  MetricsLog metrics;
  ResumePoint resume_point;
  int64_t step_activation_bytes = 0;

  State(GANConfig c, GANTask t, GANTrainerOptions o)
      : config(std::move(c)), task(std::move(t)), options(std::move(o)), out(options.out ? *options.out : std::cout),
        pool_a(config.pool_size), pool_b(config.pool_size), checkpointer(options.results_dir),
        metrics(options.results_dir) {
    (void)memory_stats(options.device);  // fail now without CPU tracking, not after the first step
    TORCH_CHECK_VALUE(config.paired || config.identity_weight == 0 || task.channels_a == task.channels_b,
                      "GAN experiment: identity_weight needs the two domains to have the same channels (",
                      task.channels_a, " and ", task.channels_b, "); set it to 0");
    torch::manual_seed(config.seed);
    networks = GANNetworks(config, task.dims, task.channels_a, task.channels_b);
    networks->to(options.device, options.dtype);
    const auto adam = torch::optim::AdamOptions(config.lr).betas(std::make_tuple(config.beta1, config.beta2));
    generator_optimizer = std::make_unique<torch::optim::Adam>(networks->generator_parameters(), adam);
    discriminator_optimizer = std::make_unique<torch::optim::Adam>(networks->discriminator_parameters(), adam);
  }

  std::string title() const { return config.model + " on " + config.dataset; }

  TrainingState training_state() {
    TrainingState state;
    state.optimizers = {{"generator_optimizer", generator_optimizer.get()},
                        {"discriminator_optimizer", discriminator_optimizer.get()}};
    state.save_extra = [this](torch::serialize::OutputArchive& archive) {
      archive.write("pool_a", pool_a.stacked());
      archive.write("pool_b", pool_b.stacked());
    };
    state.load_extra = [this](torch::serialize::InputArchive& archive) {
      torch::Tensor a, b;
      archive.read("pool_a", a);
      archive.read("pool_b", b);
      pool_a.load(a.to(options.device));
      pool_b.load(b.to(options.device));
    };
    return state;
  }

  // The generators' losses and their backward; the fakes for the discriminators.
  struct GeneratorPass {
    torch::Tensor fake_a, fake_b;
    GANStepLosses losses;
  };

  GeneratorPass generator_pass(const GANBatch& batch) {
    auto& n = *networks;
    const auto& c = config;
    const auto& a = batch.a;
    const auto& b = batch.b;
    GeneratorPass pass;
    set_requires_grad(n.discriminator_parameters(), false);
    torch::Tensor adversarial, reconstruction;
    pass.fake_b = n.generator->a_to_b(a);
    pass.fake_a = n.generator->b_to_a(b);
    if (c.paired) {
      adversarial = gan_term(c.gan_loss, n.discriminator_b->forward(torch::cat({a, pass.fake_b}, 1)), true) +
                    gan_term(c.gan_loss, n.discriminator_a->forward(torch::cat({b, pass.fake_a}, 1)), true);
      reconstruction = c.l1_weight * (torch::l1_loss(pass.fake_b, b) + torch::l1_loss(pass.fake_a, a));
      pass.losses.train_psnr = unit_psnr(pass.fake_b, b);
    } else {
      adversarial = gan_term(c.gan_loss, n.discriminator_b->forward(pass.fake_b), true) +
                    gan_term(c.gan_loss, n.discriminator_a->forward(pass.fake_a), true);
      const auto cycle_a = n.generator->b_to_a(pass.fake_b);
      const auto cycle_b = n.generator->a_to_b(pass.fake_a);
      reconstruction = c.cycle_weight * (torch::l1_loss(cycle_a, a) + torch::l1_loss(cycle_b, b));
      if (c.identity_weight > 0) {
        reconstruction = reconstruction + c.cycle_weight * c.identity_weight *
                                              (torch::l1_loss(n.generator->a_to_b(b), b) +
                                               torch::l1_loss(n.generator->b_to_a(a), a));
      }
      pass.losses.train_psnr = unit_psnr(cycle_a, a);
    }
    const auto loss = adversarial + reconstruction;
    loss.backward();
    set_requires_grad(n.discriminator_parameters(), true);
    pass.losses.generator = loss.item<double>();
    pass.losses.adversarial = adversarial.item<double>();
    pass.losses.reconstruction = reconstruction.item<double>();
    return pass;
  }

  // Both discriminators' halved loss on real images and on the fakes (through the pools), and its backward.
  double discriminator_pass(const GANBatch& batch, const GeneratorPass& pass, int64_t iteration) {
    auto& n = *networks;
    const auto& c = config;
    const auto fake_a = pool_a.query(pass.fake_a.detach(), c.seed, iteration, 0);
    const auto fake_b = pool_b.query(pass.fake_b.detach(), c.seed, iteration, 1);
    torch::Tensor real_a = batch.a, real_b = batch.b, judged_fake_a = fake_a, judged_fake_b = fake_b;
    if (c.paired) {  // each beside the image it was made from
      real_b = torch::cat({batch.a, batch.b}, 1);
      judged_fake_b = torch::cat({batch.a, fake_b}, 1);
      real_a = torch::cat({batch.b, batch.a}, 1);
      judged_fake_a = torch::cat({batch.b, fake_a}, 1);
    }
    const auto loss = 0.5 * (gan_term(c.gan_loss, n.discriminator_b->forward(real_b), true) +
                             gan_term(c.gan_loss, n.discriminator_b->forward(judged_fake_b), false)) +
                      0.5 * (gan_term(c.gan_loss, n.discriminator_a->forward(real_a), true) +
                             gan_term(c.gan_loss, n.discriminator_a->forward(judged_fake_a), false));
    loss.backward();
    return loss.item<double>();
  }

  GANStepLosses step(const GANBatch& batch, int64_t iteration, bool update) {
    const double lr = config.lr_at(iteration);
    set_lr(*generator_optimizer, lr);
    set_lr(*discriminator_optimizer, lr);
    networks->train();
    zero_gradients_in_place(networks->parameters());
    int64_t generator_bytes = 0, discriminator_bytes = 0;
    GeneratorPass pass;
    {
      MemoryProbe probe(options.device);
      pass = generator_pass(batch);
      generator_bytes = probe.peak_above_start();
    }
    if (update) generator_optimizer->step();
    zero_gradients_in_place(networks->discriminator_parameters());
    {
      MemoryProbe probe(options.device);
      pass.losses.discriminator = discriminator_pass(batch, pass, iteration);
      discriminator_bytes = probe.peak_above_start();
    }
    if (update) discriminator_optimizer->step();
    step_activation_bytes = std::max(generator_bytes, discriminator_bytes);
    return pass.losses;
  }
};

GANTrainer::GANTrainer(GANConfig config, GANTask task, GANTrainerOptions options)
    : state_(std::make_unique<State>(std::move(config), std::move(task), std::move(options))) {}

GANTrainer::~GANTrainer() = default;

GANNetworks& GANTrainer::networks() { return state_->networks; }
const GANConfig& GANTrainer::config() const { return state_->config; }
const GANTask& GANTrainer::task() const { return state_->task; }
const ImagePool& GANTrainer::pool_a() const { return state_->pool_a; }
const ImagePool& GANTrainer::pool_b() const { return state_->pool_b; }

GANBatch GANTrainer::training_batch(int64_t iteration) const {
  const auto& s = *state_;
  auto batch = s.task.batch(iteration);
  return {batch.a.to(s.options.device, s.options.dtype), batch.b.to(s.options.device, s.options.dtype)};
}

GANStepLosses GANTrainer::step(const GANBatch& batch, int64_t iteration) {
  return state_->step(batch, iteration, /*update=*/true);
}

int64_t GANTrainer::step_bytes(const GANBatch& batch, bool memory_saving) {
  auto& s = *state_;
  const auto pools = std::make_pair(s.pool_a, s.pool_b);
  const bool saving = !s.networks->revgan || s.networks->revgan->options.memory_saving();
  s.networks->set_memory_saving(memory_saving);
  s.step(batch, 0, /*update=*/false);  // the gradients exist before the measured step, as in training
  s.step(batch, 0, /*update=*/false);
  s.networks->set_memory_saving(saving);
  s.pool_a = pools.first;
  s.pool_b = pools.second;
  return s.step_activation_bytes;
}

int64_t GANTrainer::restore() {
  auto& s = *state_;
  const auto checkpoint = s.checkpointer.restore(*s.networks, s.training_state(), s.options.device);
  return checkpoint ? checkpoint->iteration : -1;
}

GANEvaluation GANTrainer::evaluate(bool final) {
  auto& s = *state_;
  auto& generator = s.networks->generator;
  const auto a_to_b = [&](const torch::Tensor& a) {
    torch::NoGradGuard no_grad;
    return generator->a_to_b(a.to(s.options.device, s.options.dtype)).to(torch::kCPU, torch::kFloat32);
  };
  return s.task.evaluate(a_to_b, final, s.options.results_dir);
}

GANSummary GANTrainer::run() {
  auto& s = *state_;
  const auto& c = s.config;
  GANSummary summary;
  summary.generator_parameters = models::count_parameters(*s.networks->generator);
  summary.discriminator_parameters =
      models::count_parameters(*s.networks->discriminator_a) + models::count_parameters(*s.networks->discriminator_b);
  s.out << "[memcnn-train] " << s.title() << ": " << s.task.description << "; generator "
        << summary.generator_parameters << " parameters, discriminators " << summary.discriminator_parameters
        << ", device " << s.options.device << ", batch " << c.batch_size << ", " << c.max_iterations
        << " iterations (lr " << c.lr << " constant, then linearly to 0 over the last " << c.decay_iterations << "), "
        << (c.paired ? "paired: " + c.gan_loss + " GAN loss + L1 x " + number(c.l1_weight)
                     : "unpaired: " + c.gan_loss + " GAN loss + cycle x " + number(c.cycle_weight) + " + identity x " +
                           number(c.identity_weight) + " of it, pool " + std::to_string(c.pool_size))
        << std::endl;
  if (!s.task.baseline_text.empty()) s.out << "[memcnn-train] baselines: " << s.task.baseline_text << std::endl;
  s.resume_point = resume_from(s.checkpointer.restore(*s.networks, s.training_state(), s.options.device), c.to_json(),
                               GANConfig::resume_rules(s.options.allow_recipe_change), s.options.results_dir, s.out);
  summary.start_iteration = s.resume_point.iteration;
  if (s.resume_point.resumed) s.metrics.truncate_after(s.resume_point.iteration);
  const auto start = Clock::now();
  auto window_start = Clock::now();
  double window_generator = 0, window_discriminator = 0, window_psnr = 0;
  int64_t window_steps = 0;
  int64_t iteration = summary.start_iteration;
  while (iteration < c.max_iterations) {
    const auto batch = training_batch(iteration);
    const double lr = c.lr_at(iteration);
    const auto losses = s.step(batch, iteration, /*update=*/true);
    summary.activation_bytes = s.step_activation_bytes;
    if (!std::isfinite(losses.generator) || !std::isfinite(losses.discriminator)) {
      std::ostringstream what;
      what << "the losses became " << losses.generator << " (generators) and " << losses.discriminator
           << " (discriminators)";
      throw_non_finite_loss(what.str(), iteration, lr, "Lower lr in the experiments file", s.options.results_dir);
    }
    ++iteration;
    window_generator += losses.generator;
    window_discriminator += losses.discriminator;
    window_psnr += losses.train_psnr;
    ++window_steps;
    const bool stop = stop_requested();
    const bool last = iteration == c.max_iterations;
    const bool validate = iteration % c.validate_every == 0 || last;
    if (iteration % c.log_every == 0 || validate) {
      MetricsRow row;
      row.iteration = iteration;
      row.loss = window_generator / window_steps;
      row.train_accuracy = window_psnr / window_steps;
      row.lr = lr;
      row.iterations_per_second = window_steps / std::max(1e-9, seconds_since(window_start));
      row.activation_bytes = summary.activation_bytes;
      std::optional<GANEvaluation> evaluation;
      if (validate) {
        evaluation = evaluate(/*final=*/last);  // the last one writes what the task writes
        if (last) {
          summary.evaluation = *evaluation;
          summary.evaluated = true;
        }
        row.test_accuracy = evaluation->psnr;
      }
      s.metrics.append(row);
      std::ostringstream line;
      line << "[" << s.title() << "] it " << iteration << "/" << c.max_iterations << "  G " << std::fixed
           << std::setprecision(4) << row.loss << "  D " << window_discriminator / window_steps << "  train PSNR "
           << std::setprecision(2) << row.train_accuracy << " dB  " << row.iterations_per_second << " it/s  ETA "
           << format_duration(eta_seconds(iteration, c.max_iterations, row.iterations_per_second)) << "  activations "
           << format_mib(summary.activation_bytes);
      if (evaluation) line << "  " << evaluation->text;
      print_progress(s.out, line.str(), s.options.live_line, evaluation.has_value());
      window_start = Clock::now();
      window_generator = window_discriminator = window_psnr = 0;
      window_steps = 0;
    }
    if (validate) s.metrics.plot(plot_labels(c));
    if (iteration % c.checkpoint_every == 0 || last || stop) {
      s.checkpointer.save(*s.networks, s.training_state(),
                          {iteration, s.resume_point.total_seconds(seconds_since(start)), c.to_json()});
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
    if (!summary.evaluated) {
      summary.evaluation = evaluate(/*final=*/true);
      summary.evaluated = true;
    }
    s.metrics.plot(plot_labels(c, summary.evaluation.psnr));
  }
  return summary;
}

}  // namespace train
}  // namespace memcnn
