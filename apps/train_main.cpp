// memcnn-train MODEL DATASET: the RevNet experiments of MemCNN, in C++.

#include <memcnn/data/dataset.h>
#include <memcnn/data/loader.h>
#include <memcnn/distributed/launch.h>
#include <memcnn/distributed/process_group.h>
#include <memcnn/memory.h>
#include <memcnn/memory_plan.h>
#include <memcnn/wrapper.h>
#include <memcnn/models/python_keys.h>
#include <memcnn/models/resnet.h>
#include <memcnn/models/vit.h>
#include <memcnn/state_dict.h>
#include <memcnn/train/checkpoint.h>
#include <memcnn/train/config.h>
#include <memcnn/train/gan.h>
#include <memcnn/train/memory_plan_json.h>
#include <memcnn/train/progress.h>
#include <memcnn/train/python_weights.h>
#include <memcnn/train/results_lock.h>
#include <memcnn/train/segmentation.h>
#include <memcnn/train/trainer.h>

#include "results_folder.h"
#include "train_gan.h"
#include "train_segmentation.h"

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include <unistd.h>

namespace fs = std::filesystem;
using namespace memcnn;

namespace {

void on_signal(int) { train::request_stop(); }  // whichever trainer runs

// The ResNet a RevNet is compared with in MemCNN's tables, and the other way round; a ViT's RevViT
// and the other way round.
std::string counterpart(const std::string& model) {
  static const std::map<std::string, std::string> pairs = {
      {"revnet38", "resnet32"}, {"revnet110", "resnet110"}, {"revnet164", "resnet164"},
      {"resnet32", "revnet38"}, {"resnet110", "revnet110"}, {"resnet164", "revnet164"},
      {"vit_tiny", "revvit_tiny"}, {"revvit_tiny", "vit_tiny"}, {"vit_small", "revvit_small"},
      {"revvit_small", "vit_small"}};
  const auto found = pairs.find(model);
  return found == pairs.end() ? "" : found->second;
}

struct Arguments {
  std::string model, dataset, data_dir, results_dir = "results", experiments_file, autocast, dist_backend = "auto";
  std::string weights, optimizer_state, export_weights, logits;  // torch.save files (Python's names)
  std::string inputs;  // overrides the recipe's
  bool fresh = false, no_cuda = false, evaluate = false, exact = false, allow_recipe_change = false;
  int64_t max_iterations = 0, batch_size = 0, threads = 0, nproc = 0, anchor_every = 0, fraction_bits = -1;
  int64_t max_test = 0;  // the GANs' evaluation on Fashion-MNIST: the first N test images
  double dist_timeout = 120;
  double memory_budget_mib = 0;  // 0: no memory plan
};

// Ranks of this machine sharing its cores (torchrun sets LOCAL_WORLD_SIZE).
// --memory-budget: the plan recorded in the results folder when there is one (a resumed run keeps
// its plan), else one made now on a copy of the model, so that the profile's steps leave the run's
// weights and BatchNorm statistics alone, and recorded there.
void apply_memory_budget(train::Trainer& trainer, const Arguments& args, const fs::path& results,
                         const torch::Device& device, const std::string& autocast, bool rank0) {
  const auto budget = static_cast<int64_t>(args.memory_budget_mib * kBytesPerMiB);
  const auto path = (results / "memory_plan.json").string();
  auto& model = *trainer.model();
  MemoryPlan plan;
  if (fs::exists(path)) {
    plan = train::load_memory_plan(path);
    if (plan.budget_bytes != budget) {
      throw std::invalid_argument(path + " holds a plan for a budget of " + format_mib(plan.budget_bytes, 1) +
                                  ", not " + format_mib(budget, 1) + "; give that --memory-budget to resume, or add "
                                  "--fresh to start over");
    }
    apply_memory_plan(model, plan);
    if (rank0) std::cout << "[memcnn-train] memory plan recorded in " << path << " (resumed run):\n";
  } else {
    auto copy = std::dynamic_pointer_cast<models::ClassifierImpl>(model.clone());
    copy->train();
    const auto batch = trainer.training_batch(0);
    const auto images = batch.images.to(device), labels = batch.labels.to(device);
    auto step = [&] {
      zero_gradients_in_place(copy->parameters());
      std::optional<Autocast> mixed;
      if (autocast == "bfloat16") mixed.emplace(device.type(), torch::kBFloat16);
      auto logits = copy->forward(images).to(torch::kFloat32);
      mixed.reset();
      torch::nn::functional::cross_entropy(logits, labels).backward();
    };
    plan = fit_memory_plan(*copy, step, budget, ProfileOptions().device(device));
    apply_memory_plan(model, plan);
    if (rank0) {
      train::save_memory_plan(path, plan);
      std::cout << "[memcnn-train] memory plan for a budget of " << format_mib(budget, 1) << " (profiled on "
                << "a copy of the model, batch " << images.size(0) << "; recorded in " << path << "):\n";
    }
  }
  if (rank0) print_memory_plan(std::cout, plan);
}

int64_t ranks_on_this_machine(const std::shared_ptr<distributed::ProcessGroup>& group) {
  if (!group) return 1;
  const char* local = std::getenv("LOCAL_WORLD_SIZE");
  return local != nullptr ? std::max(1, std::atoi(local)) : group->size();
}

// --weights FILE.pt: a state dict with the names of the model's Python twin, loaded strictly.
void load_weights(train::Trainer& trainer, const Arguments& args, const KeyMap& key_map) {
  const StateDict weights = read_state_dict(args.weights);
  load_state_dict(*trainer.model(), weights, LoadStateDictOptions().key_map(key_map).source("'" + args.weights + "'"));
  std::cout << "[memcnn-train] weights: " << weights.size() << " tensors from " << args.weights << std::endl;
  if (args.optimizer_state.empty()) return;
  const auto order = train::python_parameter_order(*trainer.model(), weights, key_map, "'" + args.weights + "'");
  const std::string groups = train::load_python_optimizer_state(
      trainer.optimizer(), read_torch_file(args.optimizer_state), order, "'" + args.optimizer_state + "'");
  std::cout << "[memcnn-train] optimizer state: " << args.optimizer_state << " (its settings, " << groups
            << "; the recipe's are used)" << std::endl;
}

// --export-weights FILE.pt: the last checkpoint's weights with the Python twin's names.
int export_weights(train::Trainer& trainer, const Arguments& args, const fs::path& results, const KeyMap& key_map) {
  const int64_t iteration = trainer.restore();
  if (iteration < 0) {
    std::cerr << "memcnn-train: no checkpoint in " << results.string() << " to export; train first" << std::endl;
    return 1;
  }
  train::export_python_weights(*trainer.model(), key_map, args.model, iteration, args.export_weights, std::cout);
  return 0;
}

int run(const Arguments& args) {
  const bool cuda = !args.no_cuda && torch::cuda::is_available();
  // A rank of a distributed job when the launcher (torchrun, --nproc, a scheduler) says so; each
  // local rank trains on its own GPU.
  const auto env = distributed::Environment::from_environment();
  const int64_t local_rank = env ? env->local_rank : 0;
  const torch::Device device =
      cuda ? torch::Device(torch::kCUDA, static_cast<int>(local_rank % torch::cuda::device_count())) : torch::Device(torch::kCPU);
  std::shared_ptr<distributed::ProcessGroup> group;
  if (env && env->world_size > 1) {
    group = distributed::ProcessGroup::connect(
        *env, distributed::ProcessGroupOptions()
                  .timeout(std::chrono::milliseconds(static_cast<int64_t>(args.dist_timeout * 1000)))
                  .backend(args.dist_backend)
                  .device(device));
  }
  const bool rank0 = !group || group->rank() == 0;
  const auto experiments =
      args.experiments_file.empty() ? train::default_experiments() : train::load_experiments(args.experiments_file);
  auto config = train::TrainConfig::from_json(train::experiment_for(experiments, args.model, args.dataset));
  if (args.max_iterations > 0) {
    config.max_iterations = args.max_iterations;
    // A run cut shorter than the recipe's warm-up (a smoke test) warms up over all but its last step.
    config.warmup_iterations = std::min(config.warmup_iterations, std::max<int64_t>(0, config.max_iterations - 1));
  }
  if (args.batch_size > 0) config.batch_size = args.batch_size;
  if (!args.autocast.empty()) {
    auto json = config.to_json();
    json["autocast"] = args.autocast == "float32" ? "" : args.autocast;
    config = train::TrainConfig::from_json(json);  // validates it
  }
  if (!args.inputs.empty()) {
    auto json = config.to_json();
    json["inputs"] = args.inputs;
    config = train::TrainConfig::from_json(json);
  }
  if (args.exact) config.model_options["exact"] = true;
  if (args.fraction_bits >= 0) config.model_options["fraction_bits"] = args.fraction_bits;
  if (args.anchor_every > 0) config.model_options["anchor_every"] = args.anchor_every;
  // LibTorch may default to fewer threads than the machine has cores; local ranks share them.
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t threads = args.threads > 0 ? args.threads : std::max<int64_t>(1, cores / ranks_on_this_machine(group));
  torch::set_num_threads(static_cast<int>(threads));

  const fs::path results = fs::path(args.results_dir) / (args.model + "_" + args.dataset);
  // One trainer per experiment (rank 0 speaks for a distributed one); evaluation only reads.
  std::optional<train::ResultsLock> lock;
  if (rank0) prepare_results_folder(results, !args.evaluate && args.export_weights.empty(), args.fresh, lock);
  if (group) group->barrier();  // the other ranks read checkpoints only after rank 0 cleared them

  auto train_set = data::load_dataset(config.dataset, args.data_dir, /*train=*/true);
  auto test_set = data::load_dataset(config.dataset, args.data_dir, /*train=*/false);
  config.in_channels = train_set.images.size(1);
  config.num_classes = train_set.num_classes;
  config.image_size = train_set.images.size(2);

  train::TrainerOptions options;
  options.results_dir = results.string();
  options.device = device;
  options.live_line = ::isatty(STDOUT_FILENO) != 0;
  options.group = group;
  options.allow_recipe_change = args.allow_recipe_change;
  train::Trainer trainer(config, std::move(train_set), std::move(test_set), options);
  const KeyMap key_map = models::python_key_map(*trainer.model());
  if (!args.export_weights.empty()) return rank0 ? export_weights(trainer, args, results, key_map) : 0;

  if (args.evaluate) {
    std::string evaluated;
    if (!args.weights.empty()) {
      load_weights(trainer, args, key_map);
      evaluated = args.weights;
    } else {
      const int64_t iteration = trainer.restore();
      if (iteration < 0) {
        std::cerr << "memcnn-train: no checkpoint in " << results.string() << " to evaluate; train first" << std::endl;
        return 1;
      }
      evaluated = "checkpoint at iteration " + std::to_string(iteration);
    }
    if (rank0) train::print_precision(trainer.precision(), std::cout);
    // With --logits, one pass gives both the logits and the accuracy.
    double accuracy = 0;
    if (!args.logits.empty()) {
      const auto [logits, labels] = trainer.test_logits();
      accuracy = logits.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
      c10::impl::GenericDict out(c10::StringType::get(), c10::TensorType::get());
      out.insert("logits", logits);
      out.insert("labels", labels);
      write_torch_file(out, args.logits);
      std::cout << "[memcnn-train] test logits " << logits.sizes() << " and labels: " << args.logits << std::endl;
    } else {
      accuracy = trainer.evaluate();
    }
    if (rank0) {
      std::cout << "[memcnn-train] " << args.model << " on " << args.dataset << ", " << evaluated << ": test accuracy "
                << std::fixed << std::setprecision(2) << 100 * accuracy << "%"
                << (group ? " (" + std::to_string(group->size()) + " ranks)" : std::string()) << std::endl;
    }
    return 0;
  }

  if (!args.weights.empty()) {
    // Fine-tuning starts a run: a run with checkpoints resumes from them instead.
    const train::Checkpointer checkpoints(results.string());
    if (fs::exists(checkpoints.latest_path()) || fs::exists(checkpoints.previous_path())) {
      std::cerr << "memcnn-train: " << results.string() << " holds checkpoints of an earlier run; add --fresh to "
                << "start over from " << args.weights << ", or leave out --weights to resume that run" << std::endl;
      return 2;
    }
    load_weights(trainer, args, key_map);
  }

  if (args.memory_budget_mib > 0) apply_memory_budget(trainer, args, results, device, config.autocast, rank0);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  const auto summary = trainer.run();
  if (summary.interrupted) return 130;
  if (!rank0) return 0;

  std::cout << std::fixed << std::setprecision(2) << "\n[memcnn-train] done: " << args.model << " on "
            << args.dataset << ", iterations " << summary.start_iteration << " -> " << summary.final_iteration
            << " in " << summary.seconds / 60 << " min (" << 100 * summary.data_wait_fraction
            << "% of it waiting for data";
  if (group) {
    std::cout << "; " << summary.world_size << " ranks, " << 100 * summary.communication_wait_fraction
              << "% waiting for gradient allreduce";
  }
  std::cout << ")" << train::total_minutes_note(summary.start_iteration, summary.total_seconds) << "; test accuracy "
            << 100 * summary.test_accuracy << "%\n";
  if (config.model_options.value("exact", false)) {
    std::cout << "[memcnn-train] exact couplings: " << exact_rebuild_fallbacks()
              << " wrapped calls kept their input because a value left the fixed-point grid's exact range "
                 "(0: every activation was rebuilt bit for bit)\n";
  }
  const int64_t rank_batch = config.batch_size / summary.world_size;
  std::cout << "[memcnn-train] activation memory per training step (batch " << rank_batch
            << (group ? " per rank" : "") << "): "
            << args.model << " " << format_mib(summary.activation_bytes, 2);
  const std::string other = counterpart(args.model);
  if (!other.empty()) {
    auto other_config = config;
    other_config.model = other;
    other_config.model_options = train::Json::object();
    if (models::is_transformer(other)) {
      // The same shape, dropout and stochastic depth; not RevViT's own options.
      for (const char* key : {"patch_size", "dim", "depth", "heads", "mlp_dim", "pooling", "dropout",
                              "attention_dropout", "drop_path", "layer_norm_eps"}) {
        if (config.model_options.contains(key)) other_config.model_options[key] = config.model_options[key];
      }
    }
    torch::manual_seed(0);
    auto other_model = train::build_classifier(other_config);
    other_model->to(device);
    const auto batch = trainer.training_batch(0);
    const auto bytes = train::measure_activation_bytes(other_model, batch.images.to(device), batch.labels.to(device),
                                                       summary.autocast);
    std::cout << ", " << other << " " << format_mib(bytes, 2) << " (measured in this run, same batch)";
  }
  std::cout << "\n[memcnn-train] metrics: " << (results / "metrics.csv").string() << ", plot: "
            << (results / "metrics.svg").string() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  enable_cpu_memory_tracking();  // the trainer reports each step's activation memory
  CLI::App app{"Train MemCNN's ResNet/RevNet experiments, ViT/RevViT, the 3-D iUNet and the RevGANs (memcnn, C++)"};
  Arguments args;
  auto model_names = models::model_names();
  for (const auto& name : models::transformer_names()) model_names.push_back(name);
  model_names.push_back("iunet3d");  // segmentation (train_segmentation.h)
  for (const char* name : {"revgan2d", "revgan3d", "convgan2d", "convgan3d"}) model_names.push_back(name);  // train_gan.h
  std::string model_list;
  for (const auto& name : model_names) model_list += (model_list.empty() ? "" : ", ") + name;
  app.add_option("MODEL", args.model, model_list)->required()->check(CLI::IsMember(model_names));
  app.add_option("DATASET", args.dataset,
                 "cifar10, cifar100, fashion-mnist; brain-extraction (for iunet3d); ch2-superresolution (for revgan3d "
                 "and convgan3d), fashion-edges and fashion-edges-unpaired (for revgan2d and convgan2d)")
      ->required()
      ->check(CLI::IsMember({"cifar10", "cifar100", "fashion-mnist", "brain-extraction", "ch2-superresolution",
                             "fashion-edges", "fashion-edges-unpaired"}));
  app.add_flag("--fresh", args.fresh, "remove earlier results (checkpoints, metrics) of this experiment");
  app.add_flag("--no-cuda", args.no_cuda, "train on the CPU even when CUDA is available");
  app.add_option("--data-dir", args.data_dir,
                 "where the datasets are (CIFAR is downloaded there when missing); default: datasets/, "
                 "/usr/share/datasets/fashion-mnist for Fashion-MNIST and its edges, mricron-data's folder for the "
                 "volumes");
  app.add_option("--results-dir", args.results_dir, "where checkpoints and metrics go (default: results)");
  app.add_option("--experiments-file", args.experiments_file, "a JSON file of experiments (default: the shipped one)");
  app.add_option("--max-iterations", args.max_iterations, "stop after this many iterations")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", args.batch_size, "override the experiment's batch size")->check(CLI::PositiveNumber);
  app.add_option("--autocast", args.autocast,
                 "mixed precision: auto (bfloat16 where the device computes it natively: CUDA, a CPU with "
                 "AVX512_BF16 or AMX; else float32), bfloat16, or float32 (off); overrides the experiment's. A "
                 "resumed run under auto keeps its checkpoint's precision");
  app.add_option("--memory-budget", args.memory_budget_mib,
                 "activation memory budget per training step in MiB: profile the model's memory-saving blocks, "
                 "choose per block keep / recompute / rebuild for the fastest step under it, and record the plan "
                 "(memory_plan.json in the results folder; a resumed run uses it)")
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", args.threads, "LibTorch intra-op threads (default: all cores)")->check(CLI::PositiveNumber);
  app.add_flag("--exact", args.exact,
               "bit-exact reversible couplings (fixed point): gradients with memory saving equal the plain "
               "computation's; same parameters, so it may be switched on or off between runs");
  app.add_option("--fraction-bits", args.fraction_bits,
                 "fraction bits of --exact's fixed-point grid (default 16: resolution 2^-16, range +-256 in float32)")
      ->check(CLI::Range(0, 23));
  app.add_option("--anchor-every", args.anchor_every,
                 "keep the input of every K-th reversible block of a stage (bounds rounding drift of "
                 "couplings that are not exact; costs one activation per anchor)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--allow-recipe-change", args.allow_recipe_change,
               "resume from a checkpoint trained under a different recipe (the changed fields are printed); "
               "without it such a resume is refused");
  auto* evaluate = app.add_flag("--evaluate", args.evaluate,
                                "report the test accuracy of the saved checkpoint (or of --weights) and exit");
  auto* weights = app.add_option("--weights", args.weights,
                                 "a torch.save'd state_dict with the names of the model's Python twin (MemCNN's "
                                 "memcnn.models.resnet for the ResNets and RevNets): evaluated with --evaluate, "
                                 "else training starts from it (fine-tuning; a new run)")
                      ->check(CLI::ExistingFile);
  app.add_option("--optimizer-state", args.optimizer_state,
                 "with --weights: the optimizer's state saved with them (torch.save(optimizer.state_dict()), "
                 "MemCNN's state/optimizer/N.pt; SGD or Adam/AdamW as the recipe)")
      ->check(CLI::ExistingFile)
      ->needs(weights)
      ->excludes(evaluate);
  app.add_option("--logits", args.logits, "with --evaluate: also write the test set's logits and labels (torch.save "
                                          "file of a dict: 'logits' [N, classes], 'labels' [N])")
      ->needs(evaluate);
  app.add_option("--inputs", args.inputs,
                 "how images are prepared, overriding the experiment's: unit (pixels/255 minus the training mean "
                 "image; memcnn-train's) or memcnn (pixels 0..255 minus the mean of training and test images, as "
                 "MemCNN's own trainer: for weights trained with it)")
      ->check(CLI::IsMember({"unit", "memcnn"}));
  app.add_option("--export-weights", args.export_weights,
                 "write the last checkpoint's weights as a torch.save'd state_dict with the Python twin's names "
                 "(for torch.load and load_state_dict) and exit")
      ->excludes(evaluate)
      ->excludes(weights);
  app.add_option("--nproc", args.nproc,
                 "data-parallel: start N ranks on this machine (each on batch/N of every batch); under torchrun "
                 "or a scheduler, which set WORLD_SIZE and RANK, leave it out")
      ->check(CLI::Range(1, 1024));
  app.add_option("--dist-timeout", args.dist_timeout,
                 "data-parallel: seconds a rank waits for the others (rendezvous, every collective) before it "
                 "stops with an error (default 120)")
      ->check(CLI::PositiveNumber);
  app.add_option("--dist-backend", args.dist_backend, "data-parallel: auto (NCCL on CUDA, else Gloo), gloo or nccl")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}));
  app.add_option("--max-test", args.max_test,
                 "GANs on fashion-edges: evaluate on the first N of the 10,000 test images (default: all)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  const bool gan = train::is_gan_model(args.model);
  const bool gan_dataset = args.dataset == "ch2-superresolution" || args.dataset.rfind("fashion-edges", 0) == 0;
  if (gan != gan_dataset) {
    std::cerr << "memcnn-train: " << args.model << " cannot train on " << args.dataset
              << ": the GANs revgan2d and convgan2d go with the datasets fashion-edges and fashion-edges-unpaired, "
                 "revgan3d and convgan3d with ch2-superresolution; the classifiers with cifar10, cifar100 and "
                 "fashion-mnist" << std::endl;
    return 2;
  }
  if (gan) {
    if (args.nproc > 1 || !args.weights.empty() || !args.export_weights.empty() || !args.optimizer_state.empty() ||
        !args.logits.empty() || args.exact || args.memory_budget_mib > 0 || !args.autocast.empty()) {
      std::cerr << "memcnn-train: the GANs take --evaluate, --max-iterations, --batch-size, --max-test, --threads, "
                   "--data-dir, --fresh and --allow-recipe-change; --nproc, --weights, --export-weights, "
                   "--optimizer-state, --logits, --exact, --memory-budget and --autocast are for the classifiers"
                << std::endl;
      return 2;
    }
    GANRun run_options;
    run_options.model = args.model;
    run_options.dataset = args.dataset;
    run_options.data_dir = args.data_dir;
    run_options.results_dir = args.results_dir;
    run_options.experiments_file = args.experiments_file;
    run_options.fresh = args.fresh;
    run_options.evaluate = args.evaluate;
    run_options.no_cuda = args.no_cuda;
    run_options.allow_recipe_change = args.allow_recipe_change;
    run_options.max_iterations = args.max_iterations;
    run_options.batch_size = args.batch_size;
    run_options.threads = args.threads;
    run_options.max_test = args.max_test;
    std::signal(SIGINT, on_signal);  // Ctrl-C: checkpoint after the current step and stop
    std::signal(SIGTERM, on_signal);
    try {
      return run_gan(run_options);
    } catch (const c10::Error& e) {
      std::cerr << "memcnn-train: " << e.what_without_backtrace() << std::endl;
    } catch (const std::exception& e) {
      std::cerr << "memcnn-train: " << e.what() << std::endl;
    }
    return 1;
  }
  const bool segmentation = train::is_segmentation_model(args.model);
  if (segmentation != (args.dataset == "brain-extraction")) {
    std::cerr << "memcnn-train: " << args.model << " cannot train on " << args.dataset
              << ": the segmentation model iunet3d goes with the dataset brain-extraction, the classifiers with "
                 "cifar10, cifar100 and fashion-mnist" << std::endl;
    return 2;
  }
  if (segmentation && args.nproc > 1) {
    std::cerr << "memcnn-train: --nproc is not supported for iunet3d (one volume, one process)" << std::endl;
    return 2;
  }
  if (args.data_dir.empty() && args.dataset != "fashion-mnist" && !segmentation) args.data_dir = "datasets";
  try {
    // --nproc N: this process launches N ranks of itself and waits (the ranks see WORLD_SIZE).
    if (args.nproc > 1 && std::getenv("WORLD_SIZE") == nullptr) {
      distributed::LaunchOptions launch;
      launch.nproc = static_cast<int>(args.nproc);
      std::vector<std::string> command{distributed::current_executable()};
      command.insert(command.end(), argv + 1, argv + argc);
      return distributed::launch_local_ranks(command, launch);
    }
    // A rank (of --nproc's launcher, of torchrun): stop when the launcher is gone.
    if (std::getenv("WORLD_SIZE") != nullptr) distributed::stop_when_parent_exits(&train::Trainer::request_stop);
    if (segmentation) {
      SegmentationRun run_options;
      run_options.model = args.model;
      run_options.dataset = args.dataset;
      run_options.data_dir = args.data_dir;
      run_options.results_dir = args.results_dir;
      run_options.experiments_file = args.experiments_file;
      run_options.fresh = args.fresh;
      run_options.evaluate = args.evaluate;
      run_options.no_cuda = args.no_cuda;
      run_options.max_iterations = args.max_iterations;
      run_options.batch_size = args.batch_size;
      run_options.threads = args.threads;
      run_options.allow_recipe_change = args.allow_recipe_change;
      run_options.weights = args.weights;
      run_options.export_weights = args.export_weights;
      if (!args.optimizer_state.empty() || !args.logits.empty()) {
        std::cerr << "memcnn-train: --optimizer-state and --logits are for the classifiers; iunet3d takes --weights "
                     "and --export-weights" << std::endl;
        return 2;
      }
      return run_segmentation(run_options);
    }
    return run(args);
  } catch (const distributed::CollectiveError& e) {
    // Leave at once: tearing down a process group whose peer is gone may wait for it again.
    std::cerr << "memcnn-train: " << e.what() << std::endl;
    std::_Exit(1);
  } catch (const c10::Error& e) {
    std::cerr << "memcnn-train: " << e.what_without_backtrace() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "memcnn-train: " << e.what() << std::endl;
  }
  return 1;
}
