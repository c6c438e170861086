// One rank of a distributed test: test_distributed starts several of these through
// launch_local_ranks and compares what they write with a single-process reference.
//   distributed_test_rank gradients MODEL f64|f32|bf16 OUT   one step on this rank's shard; OUT.rankR: gradients
//   distributed_test_rank accumulate MODEL OUT               no_sync micro-batch, then a synchronised one
//   distributed_test_rank sgd MODEL STEPS OUT                SGD steps; OUT.rankR: parameters, then buffers
//   distributed_test_rank die AFTER OUT                      rank 1 exits after AFTER steps; the others must fail
//   distributed_test_rank abandon destroy|in_flight|keep OUT
//       a backward throws midway, after it started allreduces; the DataParallel is then destroyed
//       (in_flight: while rank 0's allreduces cannot have finished, rank 1 holding back) and a
//       local backward run on the same parameters, or it is kept; then one synchronised step.
//       OUT.rankR.counts: started, reduced before the destruction, synchronised after;
//       OUT.rankR.local: the local gradients (not with keep); OUT.rankR.synced: the step's
//   distributed_test_rank release_group alive|dead OUT
//       rank 0 starts an allreduce, releases its ProcessGroup, then waits for the allreduce; rank 1
//       takes part once rank 0 has started it (alive) or exits before (dead). OUT.rank0: the
//       outcome, or the error message

#include "scenarios.h"

#include <memcnn/distributed/data_parallel.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

using namespace memcnn_dist_test;
namespace dist = memcnn::distributed;

namespace {

std::shared_ptr<dist::ProcessGroup> connect() {
  const char* timeout = std::getenv("MEMCNN_DIST_TIMEOUT");
  dist::ProcessGroupOptions options;
  options.timeout(std::chrono::seconds(timeout ? std::atoi(timeout) : 60));
  auto group = dist::ProcessGroup::from_environment(options);
  if (!group) throw std::invalid_argument("distributed_test_rank: WORLD_SIZE is not set; start it through a launcher");
  return group;
}

std::string output_for(const std::string& base, const dist::ProcessGroup& group) {
  return base + ".rank" + std::to_string(group.rank());
}

torch::Dtype dtype_of(const std::string& name) { return name == "f64" ? torch::kFloat64 : torch::kFloat32; }

int gradients(const std::string& model_name, const std::string& precision, const std::string& out) {
  auto group = connect();
  auto model = make_model(model_name, dtype_of(precision));
  dist::DataParallel parallel(model.module, group);
  auto batch = shard(global_batch(0, dtype_of(precision)), group->rank(), group->size());
  loss_of(model, batch, precision == "bf16").backward();
  torch::save(gradients_of(model), output_for(out, *group));
  return 0;
}

int accumulate(const std::string& model_name, const std::string& out) {
  auto group = connect();
  auto model = make_model(model_name, torch::kFloat64);
  dist::DataParallel parallel(model.module, group);
  {
    auto local_only = parallel.no_sync();
    loss_of(model, shard(global_batch(0, torch::kFloat64), group->rank(), group->size())).backward();
  }
  const auto after_local = parallel.stats().synchronized_backwards;
  loss_of(model, shard(global_batch(1, torch::kFloat64), group->rank(), group->size())).backward();
  auto result = gradients_of(model);
  result.push_back(torch::tensor({after_local, parallel.stats().synchronized_backwards}));
  torch::save(result, output_for(out, *group));
  return 0;
}

int sgd(const std::string& model_name, int steps, const std::string& out) {
  auto group = connect();
  auto model = make_model(model_name, torch::kFloat32);
  dist::DataParallel parallel(model.module, group);
  torch::optim::SGD optimizer(model.module->parameters(),
                              torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(2e-4));
  for (int step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    loss_of(model, shard(global_batch(step, torch::kFloat32), group->rank(), group->size())).backward();
    optimizer.step();
  }
  auto state = model.module->parameters();
  parallel.broadcast_buffers();
  for (const auto& b : model.module->buffers()) state.push_back(b);
  torch::save(state, output_for(out, *group));
  return 0;
}

int die(int after, const std::string& out) {
  auto group = connect();
  auto model = make_model("revnet", torch::kFloat32);
  dist::DataParallel parallel(model.module, group);
  for (int step = 0; step < 100000; ++step) {
    if (group->rank() == 1 && step == after) std::_Exit(3);  // as a crash would: no goodbye to the peers
    try {
      loss_of(model, shard(global_batch(step % 4, torch::kFloat32), group->rank(), group->size())).backward();
    } catch (const std::exception& e) {
      std::ofstream(output_for(out, *group)) << e.what();
      std::cerr << "rank " << group->rank() << " stops: " << e.what() << std::endl;
      std::_Exit(2);  // the process group may still wait for the dead peer while being destroyed
    }
  }
  return 0;
}

// An order between ranks that involves no collective: one creates a file, another waits for it.
void create_file(const std::string& path) { std::ofstream(path) << "here"; }

void wait_for_file(const std::string& path, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!std::filesystem::exists(path)) {
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("waited in vain for " + path);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int abandon(const std::string& mode, const std::string& out) {
  if (mode != "destroy" && mode != "in_flight" && mode != "keep") throw std::invalid_argument("abandon: mode " + mode);
  auto group = connect();
  const auto rank = group->rank(), size = group->size();
  const auto rank_failed = out + ".rank0_failed";
  GatedMlp model;
  // One bucket per parameter: the layers above the failure start theirs before it.
  const auto per_parameter = dist::DataParallelOptions().first_bucket_cap_bytes(1).bucket_cap_bytes(1);
  auto parallel = std::make_unique<dist::DataParallel>(model.ptr(), group, per_parameter);
  if (mode == "in_flight" && rank == 1) wait_for_file(rank_failed, group->timeout() / 2);

  std::string failure;
  try {
    mlp_loss(model, shard(mlp_batch(0), rank, size), /*fail_in_backward=*/true).backward();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (failure.find("fails midway") == std::string::npos) throw std::runtime_error("backward did not fail: " + failure);
  const auto before = parallel->stats();
  if (mode == "in_flight" && rank == 0) create_file(rank_failed);

  const auto output = output_for(out, *group);
  if (mode != "keep") {
    parallel.reset();
    model->zero_grad();
    mlp_loss(model, shard(mlp_batch(1), rank, size)).backward();
    torch::save(gradients_of(*model), output + ".local");
    parallel = std::make_unique<dist::DataParallel>(model.ptr(), group, per_parameter);
  }
  model->zero_grad();
  mlp_loss(model, shard(mlp_batch(2), rank, size)).backward();
  torch::save(gradients_of(*model), output + ".synced");
  torch::save(torch::tensor({before.buckets_started_during_backward, before.buckets_reduced,
                             parallel->stats().synchronized_backwards}),
              output + ".counts");
  return 0;
}

int release_group(const std::string& peer, const std::string& out) {
  if (peer != "alive" && peer != "dead") throw std::invalid_argument("release_group: peer " + peer);
  auto group = connect();
  group->barrier();  // every rank fully connected before one leaves
  const auto started = out + ".started";
  if (group->rank() == 1) {
    if (peer == "dead") std::_Exit(3);
    wait_for_file(started, group->timeout() / 2);
    auto two = torch::full({4}, 2.0);
    group->allreduce_sum(two);
    return 0;
  }
  const auto output = output_for(out, *group);
  auto tensor = torch::ones({4});
  auto completed = std::make_shared<std::atomic<bool>>(false);
  auto pending = group->allreduce_sum_async(tensor, [completed] { *completed = true; });
  const bool finished_early = pending.wait_for(std::chrono::milliseconds(1));  // rank 1 has not begun
  create_file(started);
  group.reset();  // c10d's group finishes (or fails) the allreduce in flight as it goes
  std::ofstream file(output);
  try {
    pending.wait();
    file << "finished early: " << (finished_early ? "yes" : "no") << ", sum " << tensor.sum().item<double>()
         << ", completion callback " << (*completed ? "ran" : "did not run");
  } catch (const dist::CollectiveError& e) {
    file << e.what();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  torch::set_num_threads(1);
  try {
    if (args.size() == 4 && args[0] == "gradients") return gradients(args[1], args[2], args[3]);
    if (args.size() == 3 && args[0] == "accumulate") return accumulate(args[1], args[2]);
    if (args.size() == 4 && args[0] == "sgd") return sgd(args[1], std::stoi(args[2]), args[3]);
    if (args.size() == 3 && args[0] == "die") return die(std::stoi(args[1]), args[2]);
    if (args.size() == 3 && args[0] == "abandon") return abandon(args[1], args[2]);
    if (args.size() == 3 && args[0] == "release_group") return release_group(args[1], args[2]);
    std::cerr << "usage: see the comment at the top of distributed/tests/rank_main.cpp" << std::endl;
    return 64;
  } catch (const std::exception& e) {
    std::cerr << "distributed_test_rank: " << e.what() << std::endl;
    return 1;
  }
}
