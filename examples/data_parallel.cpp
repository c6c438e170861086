// Tutorial: data-parallel training with memcnn::distributed. The program starts two copies of
// itself (ranks) on this machine; each holds a replica of the model, trains on its half of every
// batch, and backward averages the gradients across the ranks (Gloo over 127.0.0.1 on CPU), so
// the replicas stay identical. The model contains a memory-saving coupling: its parameter
// gradients arrive from one autograd node, which memcnn's DataParallel handles.
//
//   memcnn-example-data-parallel
//
// The same program runs under torchrun, or on several machines: each rank reads RANK, WORLD_SIZE,
// MASTER_ADDR and MASTER_PORT from its environment.

#include <memcnn/checkpoint.h>  // memcnn::TensorSequential
#include <memcnn/coupling.h>
#include <memcnn/distributed/data_parallel.h>
#include <memcnn/distributed/launch.h>
#include <memcnn/distributed/process_group.h>
#include <memcnn/wrapper.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace dist = memcnn::distributed;

namespace {

constexpr int64_t kFeatures = 8, kWidth = 32, kClasses = 4, kGlobalBatch = 64, kSteps = 30;

// [model]
torch::nn::Sequential half_mlp() {
  return torch::nn::Sequential(torch::nn::Linear(kWidth / 2, kWidth / 2), torch::nn::Tanh());
}

// Linear -> an additive coupling in a memory-saving wrapper -> ReLU -> Linear.
torch::nn::Sequential make_model() {
  return torch::nn::Sequential(
      torch::nn::Linear(kFeatures, kWidth),
      memcnn::InvertibleModuleWrapper(memcnn::AdditiveCoupling(memcnn::TensorSequential(half_mlp()),
                                                               memcnn::TensorSequential(half_mlp()))),
      torch::nn::ReLU(), torch::nn::Linear(kWidth, kClasses));
}
// [model]

// [data]
// Global batch `step` of a synthetic task (the class is the largest of four fixed linear features),
// the same on every rank; each rank keeps its own contiguous part.
struct Batch {
  torch::Tensor inputs, labels;
};
Batch shard_of_batch(int64_t step, const dist::ProcessGroup& group) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(1000 + step);
  const auto teacher = torch::randn({kFeatures, kClasses}, at::make_generator<at::CPUGeneratorImpl>(7));
  const auto inputs = torch::randn({kGlobalBatch, kFeatures}, generator);
  const auto labels = inputs.matmul(teacher).argmax(1);
  const int64_t part = kGlobalBatch / group.size();
  return {inputs.narrow(0, group.rank() * part, part), labels.narrow(0, group.rank() * part, part)};
}
// [data]

// [rank]
int run_rank() {
  // A rank never outlives its launcher: should the launcher die, this process ends too.
  dist::stop_when_parent_exits([] {});
  torch::set_num_threads(1);  // two ranks on one machine: one thread each
  // Every wait (rendezvous, each allreduce) is bounded: a rank that dies makes the other fail
  // within 30 s instead of hanging.
  auto group = dist::ProcessGroup::from_environment(dist::ProcessGroupOptions().timeout(std::chrono::seconds(30)));
  const bool rank0 = group->rank() == 0;

  // Each rank draws different initial weights here; DataParallel makes them equal.
  torch::manual_seed(static_cast<uint64_t>(group->rank()));
  auto model = make_model();
  // Broadcasts rank 0's parameters (the replicas start equal) and hooks gradient averaging into
  // backward, in buckets that are all-reduced while the rest of backward runs.
  dist::DataParallel parallel(model.ptr(), group);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));

  double first_loss = 0, last_loss = 0;
  for (int64_t step = 0; step < kSteps; ++step) {
    const Batch batch = shard_of_batch(step, *group);
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(batch.inputs), batch.labels);
    loss.backward();  // the gradients are now averages over both ranks
    optimizer.step();
    // The loss of the global batch: the mean of the ranks' losses (equal shards).
    torch::Tensor global_loss = loss.detach().clone();
    group->allreduce_sum(global_loss);
    const double value = global_loss.item<double>() / static_cast<double>(group->size());
    if (step == 0) first_loss = value;
    last_loss = value;
    if (rank0 && (step % 10 == 0 || step + 1 == kSteps)) {
      std::cout << "step " << std::setw(2) << step << "  loss " << std::fixed << std::setprecision(4) << value
                << std::endl;
    }
  }
  // [rank]

  // [check]
  // The replicas must still be identical: the largest and the smallest of each parameter across
  // the ranks (allreduce max of p and of -p) must be equal.
  double spread = 0;
  for (const auto& p : model->parameters()) {
    torch::Tensor largest = p.detach().clone(), negated_smallest = -p.detach();
    group->allreduce_max(largest);
    group->allreduce_max(negated_smallest);
    spread = std::max(spread, (largest + negated_smallest).abs().max().item<double>());
  }
  const auto stats = parallel.stats();
  if (rank0) {
    std::cout << group->size() << " ranks (" << group->backend() << "): " << stats.synchronized_backwards
              << " synchronised backwards, " << stats.buckets_reduced << " buckets, " << stats.bytes_reduced
              << " gradient bytes all-reduced\n"
              << "loss " << first_loss << " -> " << last_loss << ": "
              << (last_loss < first_loss ? "loss decreased" : "loss did NOT decrease") << "\n"
              << "parameters across ranks differ by at most " << std::scientific << std::setprecision(1) << spread
              << (spread == 0 ? ": replicas identical" : ": replicas DIFFER") << std::endl;
  }
  return spread == 0 && last_loss < first_loss ? 0 : 1;
  // [check]
}

}  // namespace

// [launch]
int main() try {
  if (std::getenv("WORLD_SIZE") != nullptr) return run_rank();
  // Not started by a launcher: start two ranks of this program. The launcher hosts the rendezvous
  // store on 127.0.0.1 at a port the kernel picks free, sets RANK, WORLD_SIZE, MASTER_ADDR and
  // MASTER_PORT for each rank as torchrun does, and returns 0 when both succeed.
  dist::LaunchOptions options;
  options.nproc = 2;
  options.grace = std::chrono::seconds(5);  // after one rank fails, how long the other may take to stop
  std::cout << "starting " << options.nproc << " ranks" << std::endl;
  const int status = dist::launch_local_ranks({dist::current_executable()}, options);
  std::cout << (status == 0 ? "both ranks succeeded" : "a rank FAILED") << std::endl;
  return status;
} catch (const std::exception& error) {
  std::cerr << "memcnn-example-data-parallel: " << error.what() << "\n";
  return 1;
}
// [launch]
