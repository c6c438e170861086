#include "memcnn/train/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace memcnn {
namespace train {

extern const char* const kDefaultExperimentsJson;  // generated from train/experiments.json

namespace {

void merge_into(Json& target, const Json& source) {
  for (auto it = source.begin(); it != source.end(); ++it) {
    if (it.key() == "base") continue;
    if (it.value().is_object() && target.contains(it.key()) && target[it.key()].is_object()) {
      merge_into(target[it.key()], it.value());
    } else {
      target[it.key()] = it.value();
    }
  }
}

Json resolve(const Json& experiments, const std::string& name, std::vector<std::string>& chain) {
  if (!experiments.contains(name)) throw std::invalid_argument("experiment configuration has no entry '" + name + "'");
  for (const auto& seen : chain) {
    if (seen == name) throw std::invalid_argument("experiment configuration: 'base' entries form a cycle through '" + name + "'");
  }
  const Json& entry = experiments.at(name);
  if (!entry.is_object()) throw std::invalid_argument("experiment configuration: entry '" + name + "' is not an object");
  chain.push_back(name);
  Json result = Json::object();
  if (entry.contains("base")) {
    const Json& base = entry.at("base");
    std::vector<std::string> bases;
    if (base.is_string()) {
      bases.push_back(base.get<std::string>());
    } else if (base.is_array()) {
      for (const auto& b : base) {
        if (!b.is_string()) throw std::invalid_argument("experiment configuration: 'base' of '" + name + "' must hold names");
        bases.push_back(b.get<std::string>());
      }
    } else {
      throw std::invalid_argument("experiment configuration: 'base' of '" + name + "' must be a name or a list of names");
    }
    for (const auto& b : bases) merge_into(result, resolve(experiments, b, chain));
  }
  merge_into(result, entry);
  chain.pop_back();
  return result;
}

template <typename T>
T field(const Json& j, const char* key, T fallback) {
  if (!j.contains(key)) return fallback;
  const Json& value = j.at(key);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return whole_number<T>(value, key);
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (!value.is_array()) throw std::invalid_argument(std::string("experiment field '") + key + "' must be a list");
    std::vector<int64_t> numbers;
    for (const Json& item : value) numbers.push_back(whole_number<int64_t>(item, key));
    return numbers;
  } else {
    try {
      return value.get<T>();
    } catch (const Json::exception& e) {
      throw std::invalid_argument(std::string("experiment field '") + key + "' has the wrong type: " + e.what());
    }
  }
}

void require(bool condition, const std::string& message) {
  if (!condition) throw std::invalid_argument("experiment configuration: " + message);
}

}  // namespace

Json parse_json(const std::string& text, const std::string& what) {
  const auto within_depth = [&](int depth, Json::parse_event_t, Json&) {
    if (depth > kMaxJsonDepth)
      throw std::runtime_error(what + " nests arrays and objects more than " + std::to_string(kMaxJsonDepth) +
                               " levels deep, deeper than the trainer reads");
    return true;
  };
  try {
    return Json::parse(text, within_depth);
  } catch (const Json::exception& e) {
    throw std::runtime_error(what + " is not valid JSON: " + e.what());
  }
}

Json default_experiments() { return Json::parse(kDefaultExperimentsJson); }

Json load_experiments(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open experiments file '" + path + "'");
  std::ostringstream text;
  text << file.rdbuf();
  if (!file) throw std::runtime_error("error reading experiments file '" + path + "'");
  Json j = parse_json(text.str(), "experiments file '" + path + "'");
  if (!j.is_object())
    throw std::runtime_error("experiments file '" + path + "': the top level must be an object of named experiments");
  return j;
}

Json resolve_experiment(const Json& experiments, const std::string& name) {
  std::vector<std::string> chain;
  return resolve(experiments, name, chain);
}

Json experiment_for(const Json& experiments, const std::string& model, const std::string& dataset) {
  const std::string combined = model + "_" + dataset;
  if (experiments.contains(combined)) return resolve_experiment(experiments, combined);
  Json result = resolve_experiment(experiments, dataset);
  merge_into(result, resolve_experiment(experiments, model));
  return result;
}

TrainConfig TrainConfig::from_json(const Json& j) {
  TrainConfig c;
  c.model = field<std::string>(j, "model", "");
  c.dataset = field<std::string>(j, "dataset", "");
  require(!c.model.empty(), "no 'model' given");
  require(!c.dataset.empty(), "no 'dataset' given");
  c.num_classes = field(j, "num_classes", c.num_classes);
  c.in_channels = field(j, "in_channels", c.in_channels);
  c.batch_size = field(j, "batch_size", c.batch_size);
  c.max_iterations = field(j, "max_iterations", c.max_iterations);
  const Json optimizer = j.contains("optimizer") ? j.at("optimizer") : Json::object();
  require(optimizer.is_object(), "'optimizer' must be an object");
  c.optimizer = field(optimizer, "name", c.optimizer);
  c.lr = field(optimizer, "lr", c.lr);
  c.momentum = field(optimizer, "momentum", c.momentum);
  c.weight_decay = field(optimizer, "weight_decay", c.weight_decay);
  const auto betas = field(optimizer, "betas", std::vector<double>{c.beta1, c.beta2});
  require(betas.size() == 2, "optimizer.betas must be a list of two numbers [beta1, beta2]");
  c.beta1 = betas[0];
  c.beta2 = betas[1];
  c.eps = field(optimizer, "eps", c.eps);
  c.lr_schedule = field(j, "lr_schedule", c.lr_schedule);
  c.lr_milestones = field(j, "lr_milestones", c.lr_milestones);
  c.lr_gamma = field(j, "lr_gamma", c.lr_gamma);
  c.warmup_iterations = field(j, "warmup_iterations", c.warmup_iterations);
  c.min_lr = field(j, "min_lr", c.min_lr);
  c.label_smoothing = field(j, "label_smoothing", c.label_smoothing);
  c.gradient_clipping = field(j, "gradient_clipping", c.gradient_clipping);
  c.image_size = field(j, "image_size", c.image_size);
  c.augment = field(j, "augment", c.augment);
  c.crop_padding = field(j, "crop_padding", c.crop_padding);
  c.random_erasing = field(j, "random_erasing", c.random_erasing);
  c.checkpoint_every = field(j, "checkpoint_every", c.checkpoint_every);
  c.validate_every = field(j, "validate_every", c.validate_every);
  c.validation_batches = field(j, "validation_batches", c.validation_batches);
  c.log_every = field(j, "log_every", c.log_every);
  c.seed = field(j, "seed", c.seed);
  c.loader_workers = field(j, "loader_workers", c.loader_workers);
  c.autocast = field<std::string>(j, "autocast", "");
  c.inputs = field<std::string>(j, "inputs", c.inputs);
  c.model_options = field(j, "model_options", Json::object());
  for (const auto& [name, value] :
       {std::pair<const char*, double>{"optimizer.lr", c.lr}, {"optimizer.momentum", c.momentum},
        {"optimizer.weight_decay", c.weight_decay}, {"optimizer.betas", c.beta1}, {"optimizer.betas", c.beta2},
        {"optimizer.eps", c.eps}, {"lr_gamma", c.lr_gamma}, {"min_lr", c.min_lr},
        {"label_smoothing", c.label_smoothing}, {"gradient_clipping", c.gradient_clipping},
        {"random_erasing", c.random_erasing}})
    require(std::isfinite(value), std::string(name) + " must be a finite number (JSON reads 1e400 as infinity)");
  require(c.num_classes > 1, "num_classes must be at least 2");
  require(c.in_channels > 0, "in_channels must be positive");
  require(c.batch_size > 0, "batch_size must be positive");
  require(c.max_iterations > 0, "max_iterations must be positive");
  require(c.lr > 0, "optimizer.lr must be positive");
  require(c.momentum >= 0 && c.weight_decay >= 0, "optimizer.momentum and weight_decay must not be negative");
  require(c.optimizer == "sgd" || c.optimizer == "adamw",
          "optimizer.name must be \"sgd\" or \"adamw\", not \"" + c.optimizer + "\"");
  require(c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1, "optimizer.betas must lie in [0, 1)");
  require(c.eps > 0, "optimizer.eps must be positive");
  require(c.lr_schedule == "multistep" || c.lr_schedule == "cosine",
          "lr_schedule must be \"multistep\" or \"cosine\", not \"" + c.lr_schedule + "\"");
  require(c.lr_gamma > 0, "lr_gamma (the factor of the learning rate at each milestone) must be positive, not " +
                              std::to_string(c.lr_gamma));
  require(c.warmup_iterations >= 0 && c.warmup_iterations < c.max_iterations,
          "warmup_iterations must be at least 0 and below max_iterations (" + std::to_string(c.max_iterations) +
              "), got " + std::to_string(c.warmup_iterations));
  require(c.min_lr >= 0 && c.min_lr <= c.lr, "min_lr must lie between 0 and optimizer.lr");
  require(c.label_smoothing >= 0 && c.label_smoothing < 1, "label_smoothing must lie in [0, 1)");
  require(c.gradient_clipping >= 0, "gradient_clipping must not be negative (0: off)");
  require(c.image_size >= 0, "image_size must not be negative (0: from the data)");
  require(c.crop_padding >= 0, "crop_padding must not be negative (0 flips without cropping)");
  require(c.random_erasing >= 0 && c.random_erasing <= 1, "random_erasing must lie in [0, 1] (0: off)");
  require(c.random_erasing == 0 || c.augment, "random_erasing is an augmentation: it needs \"augment\": true");
  require(c.checkpoint_every > 0 && c.validate_every > 0 && c.log_every > 0,
          "checkpoint_every, validate_every and log_every must be positive");
  require(c.validation_batches >= 0, "validation_batches must not be negative");
  require(c.loader_workers >= 1, "loader_workers must be at least 1");
  require(c.autocast != "float16", "autocast \"float16\" needs loss scaling, which LibTorch's C++ API does not "
          "provide; use \"bfloat16\" (same range as float32)");
  require(c.autocast.empty() || c.autocast == "bfloat16" || c.autocast == "auto",
          "autocast must be \"bfloat16\", \"auto\" (bfloat16 where the device computes it natively) or absent "
          "(float32), not \"" + c.autocast + "\"");
  require(c.inputs == "unit" || c.inputs == "memcnn",
          "inputs must be \"unit\" (pixels/255 minus the training mean) or \"memcnn\" (MemCNN's own trainer's: "
          "pixels 0..255 minus the mean of training and test images), not \"" + c.inputs + "\"");
  return c;
}

Json TrainConfig::to_json() const {
  return Json{{"model", model}, {"dataset", dataset}, {"num_classes", num_classes}, {"in_channels", in_channels},
              {"batch_size", batch_size}, {"max_iterations", max_iterations},
              {"optimizer", {{"name", optimizer}, {"lr", lr}, {"momentum", momentum}, {"weight_decay", weight_decay},
                             {"betas", {beta1, beta2}}, {"eps", eps}}},
              {"lr_schedule", lr_schedule}, {"lr_milestones", lr_milestones}, {"lr_gamma", lr_gamma},
              {"warmup_iterations", warmup_iterations}, {"min_lr", min_lr}, {"label_smoothing", label_smoothing},
              {"gradient_clipping", gradient_clipping}, {"image_size", image_size}, {"augment", augment},
              {"crop_padding", crop_padding}, {"random_erasing", random_erasing},
              {"checkpoint_every", checkpoint_every},
              {"validate_every", validate_every}, {"validation_batches", validation_batches},
              {"log_every", log_every}, {"seed", seed}, {"loader_workers", loader_workers},
              {"autocast", autocast}, {"inputs", inputs}, {"model_options", model_options}};
}

ResumeRules TrainConfig::resume_rules(bool allow_changes) {
  return resume_rules_of<TrainConfig>(
      {"max_iterations", "checkpoint_every", "validate_every", "validation_batches", "log_every", "loader_workers"},
      allow_changes);
}

double TrainConfig::lr_at(int64_t iteration) const {
  if (iteration < warmup_iterations) {
    return lr * static_cast<double>(iteration + 1) / static_cast<double>(warmup_iterations);
  }
  if (lr_schedule == "cosine") {
    const double span = static_cast<double>(max_iterations - warmup_iterations);
    const double progress = std::min(1.0, static_cast<double>(iteration - warmup_iterations) / span);
    return min_lr + (lr - min_lr) * 0.5 * (1 + std::cos(M_PI * progress));
  }
  double rate = lr;
  for (const auto milestone : lr_milestones) {
    if (iteration >= milestone) rate *= lr_gamma;
  }
  return rate;
}

namespace {

std::string precision_name(const std::string& autocast) {
  return autocast == "bfloat16" ? "bfloat16 autocast" : "float32";
}

// What "auto" chooses on this machine, and why.
std::pair<std::string, std::string> automatic_precision(c10::DeviceType device, const CpuBfloat16Support& cpu) {
  if (device == c10::DeviceType::CUDA) return {"bfloat16", "CUDA computes bfloat16 natively"};
  if (!cpu.onednn) return {"", "LibTorch was built without oneDNN, whose kernels CPU bfloat16 needs to be fast"};
  if (cpu.native_bfloat16) return {"bfloat16", "this CPU computes bfloat16 natively (AVX512_BF16 or AMX)"};
  return {"", std::string("this CPU has no native bfloat16 (AVX512_BF16 or AMX), so bfloat16 would be emulated") +
                  (cpu.avx512_core ? " with AVX-512, no faster than float32"
                                   : " by slow fallback kernels, many times slower than float32")};
}

}  // namespace

PrecisionChoice choose_precision(const std::string& requested, c10::DeviceType device, const CpuBfloat16Support& cpu,
                                 const std::optional<std::string>& recorded) {
  PrecisionChoice choice;
  if (requested == "auto") {
    const auto [here, why] = automatic_precision(device, cpu);
    if (recorded) {
      choice.autocast = *recorded;
      choice.reason = precision_name(*recorded) + " (autocast \"auto\", kept from the checkpoint, which was trained in "
                      "it";
      choice.reason += here == *recorded ? ")"
                                         : "; on this machine \"auto\" would choose " + precision_name(here) + ": " +
                                               why + ". To train in " + precision_name(here) +
                                               ", start over with --fresh)";
    } else {
      choice.autocast = here;
      choice.reason = precision_name(here) + " (autocast \"auto\": " + why + ")";
    }
  } else {
    choice.autocast = requested;
    choice.reason = precision_name(requested) +
                    (requested.empty() ? " (the recipe sets no autocast)" : " (the recipe's autocast \"bfloat16\")");
  }
  if (choice.autocast == "bfloat16" && device == c10::DeviceType::CPU) choice.warning = cpu_bfloat16_warning(cpu);
  return choice;
}

std::optional<std::string> recorded_precision(const CheckpointInfo& checkpoint) {
  if (!checkpoint.recipe || !checkpoint.recipe->is_object()) return std::nullopt;
  const auto found = checkpoint.recipe->find("autocast");
  if (found == checkpoint.recipe->end()) return "";
  if (!found->is_string()) return std::nullopt;
  const auto value = found->get<std::string>();
  if (value.empty() || value == "bfloat16") return value;
  return std::nullopt;
}

void print_precision(const PrecisionChoice& choice, std::ostream& out) {
  out << "[memcnn-train] precision: " << choice.reason << std::endl;
  if (choice.warning) out << "[memcnn-train] warning: " << *choice.warning << std::endl;
}

}  // namespace train
}  // namespace memcnn
