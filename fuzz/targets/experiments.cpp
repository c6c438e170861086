// The experiments file and the recipe on any text: load_experiments, every entry resolved (bases
// merged), read as a TrainConfig and written back, its learning-rate schedule evaluated, and the
// entry compared as a checkpoint's recipe with the recipe it reads as (check_resume), as a resumed
// run compares them. Entries that read must read back to themselves.

#include "fuzz_target.h"

#include <memcnn/train/config.h>

#include <filesystem>
#include <sstream>

namespace {

namespace train = memcnn::train;

// At most this many entries per input are resolved, so that one input stays fast.
constexpr size_t kEntries = 16;

void try_entry(const train::Json& experiments, const std::string& name) {
  memcnn::fuzz::refusing_clearly([&] {
    const train::Json entry = train::resolve_experiment(experiments, name);
    const train::TrainConfig config = train::TrainConfig::from_json(entry);
    const train::Json written = config.to_json();
    if (train::TrainConfig::from_json(written).to_json() != written)
      throw std::logic_error("entry '" + name + "' does not read back as it was written");
    for (const int64_t iteration : {int64_t{0}, config.warmup_iterations, config.max_iterations / 2,
                                    config.max_iterations - 1}) {
      const double lr = config.lr_at(iteration);
      if (!(lr >= 0)) throw std::logic_error("entry '" + name + "' has learning rate " + std::to_string(lr));
    }
    std::ostringstream log;
    train::check_resume(train::CheckpointInfo(1, 2.0, entry), written, train::TrainConfig::resume_rules(false),
                        "results", log);
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = memcnn::fuzz;
  const std::string path = fuzz::scratch_dir() + "/experiments.json";
  fuzz::write_input(path, data, size);
  train::Json experiments;
  bool loaded = false;
  fuzz::refusing_clearly([&] {
    experiments = train::load_experiments(path);
    loaded = true;
  });
  if (loaded) {
    size_t tried = 0;
    for (auto it = experiments.begin(); it != experiments.end() && tried < kEntries; ++it, ++tried)
      try_entry(experiments, it.key());
    fuzz::refusing_clearly([&] { (void)train::experiment_for(experiments, "resnet32", "cifar10"); });
  }
  std::filesystem::remove(path);
  return 0;
}
