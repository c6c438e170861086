#pragma once
// Internal: lets the memory planner (memory_plan.cpp) see the memory-saving blocks of a training
// step as they run, in order, without hooks in the model: InvertibleModuleWrapper and
// Checkpointed report their forward's start and end to the calling thread's observer, whatever
// their options (a disabled block too), when they run in training with grad mode on.

#include "memcnn/memory_plan.h"

#include <torch/nn/module.h>
#include <torch/types.h>

#include <vector>

namespace memcnn {
namespace detail {

class BlockObserver {
 public:
  virtual ~BlockObserver() = default;
  // `key` identifies the block (a C++ block: its module's address; see PlannableBlock::key).
  virtual void forward_begin(const void* key, const std::vector<torch::Tensor>& inputs) = 0;
  virtual void forward_end(const void* key, const std::vector<torch::Tensor>& outputs) = 0;
};

// The calling thread's observer (nullptr: none, the usual case).
BlockObserver* block_observer();
// Sets it for the calling thread; returns the previous one.
BlockObserver* set_block_observer(BlockObserver* observer);

// Reports a block's forward to the thread's observer, if any, around `run`
// (report_block_forward_begin/_end of memory_plan.h, which decide whether it is reported).
template <typename Run>
std::vector<torch::Tensor> observed_forward(torch::nn::Module& block, const std::vector<torch::Tensor>& inputs,
                                            Run&& run) {
  if (!report_block_forward_begin(&block, inputs, block.is_training())) return run();
  auto outputs = run();
  report_block_forward_end(&block, outputs);
  return outputs;
}

}  // namespace detail
}  // namespace memcnn
