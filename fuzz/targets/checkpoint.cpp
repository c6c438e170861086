// resume() on any checkpoint.pt, as a trainer resumes a run: Checkpointer::load (the archive, its
// iteration, training time and recipe, the model's parameters and buffers, the optimizer's state),
// then the recipe check. Each input is resumed twice, under SGD with momentum and under AdamW. A
// corrupt checkpoint is reported and skipped (no resume); a checkpoint that resumes must leave a
// model of the same shapes and an optimizer that can take a step.

#include "fuzz_target.h"
#include "checkpoint.h"

#include <memcnn/train/resume.h>

#include <torch/autograd.h>

#include <filesystem>
#include <sstream>

namespace {

using memcnn::fuzz::checkpoint_model;

void check_trainable(torch::nn::Sequential& model, torch::optim::Optimizer& optimizer) {
  const auto reference = checkpoint_model();
  const auto want = reference->named_parameters(), got = model->named_parameters();
  const auto want_buffers = reference->named_buffers(), got_buffers = model->named_buffers();
  for (const auto& [expected, loaded] : {std::pair{&want, &got}, std::pair{&want_buffers, &got_buffers}}) {
    for (const auto& item : *expected) {
      const torch::Tensor* tensor = loaded->find(item.key());
      if (tensor == nullptr || tensor->sizes() != item.value().sizes() || tensor->dtype() != item.value().dtype())
        throw std::logic_error("a resumed checkpoint changed the shape or dtype of " + item.key());
    }
  }
  try {
    model->train();
    optimizer.zero_grad();
    model->forward(torch::ones({4, 3})).sum().backward();
    optimizer.step();
  } catch (const std::exception& e) {
    throw std::logic_error(std::string("a resumed checkpoint cannot train: ") + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = memcnn::fuzz;
  namespace train = memcnn::train;
  const std::string& dir = fuzz::scratch_dir();
  const train::Checkpointer checkpointer(dir);
  fuzz::write_input(checkpointer.latest_path(), data, size);
  for (const bool adamw : {false, true}) {
    auto model = checkpoint_model();
    auto optimizer = fuzz::checkpoint_optimizer(model, adamw);
    std::ostringstream log;
    train::ResumePoint point;
    fuzz::refusing_clearly([&] {
      point = train::resume(checkpointer, *model, *optimizer, torch::kCPU, fuzz::checkpoint_recipe(adamw),
                            train::TrainConfig::resume_rules(false), dir, log);
    });
    if (point.resumed) check_trainable(model, *optimizer);
  }
  std::filesystem::remove(checkpointer.latest_path());
  return 0;
}
