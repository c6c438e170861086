// Data-parallel training on c10d: ranks are separate processes on 127.0.0.1 (started by our
// launcher on a port the kernel picks), compared with one process doing the same work.

#include "scenarios.h"

#include <memcnn/distributed/data_parallel.h>
#include <memcnn/distributed/launch.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace memcnn_dist_test;
namespace dist = memcnn::distributed;
namespace fs = std::filesystem;

namespace {

// A port nobody listens on right now (bound to 127.0.0.1 by the kernel's choice, then released).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

fs::path scratch(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("memcnn-dist-" + std::to_string(::getpid())) / name;
  fs::create_directories(dir);
  return dir;
}

int run_ranks(const std::vector<std::string>& args, int nproc = 2, int timeout_seconds = 60) {
  dist::LaunchOptions options;
  options.nproc = nproc;
  options.grace = std::chrono::seconds(timeout_seconds + 30);
  options.environment["MEMCNN_DIST_TIMEOUT"] = std::to_string(timeout_seconds);
  std::vector<std::string> command{MEMCNN_TEST_RANK_PROGRAM};
  command.insert(command.end(), args.begin(), args.end());
  return dist::launch_local_ranks(command, options);
}

std::vector<torch::Tensor> load_tensors(const fs::path& path) {
  std::vector<torch::Tensor> tensors;
  torch::load(tensors, path.string());
  return tensors;
}

// Worst over the tensors of max|a - b| / max|b|.
double worst_relative_error(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double scale = std::max(b[i].abs().max().item<double>(), 1e-30);
    worst = std::max(worst, (a[i].to(torch::kFloat64) - b[i].to(torch::kFloat64)).abs().max().item<double>() / scale);
  }
  return worst;
}

std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::function<std::optional<std::string>(const std::string&)> lookup(std::map<std::string, std::string> values) {
  return [values](const std::string& name) -> std::optional<std::string> {
    const auto found = values.find(name);
    if (found == values.end()) return std::nullopt;
    return found->second;
  };
}

// ---- The environment: what torchrun and schedulers set, and clear errors for what is wrong ----

TEST(Environment, ReadsTorchrunsVariables) {
  const auto env = dist::Environment::from_environment(lookup({{"WORLD_SIZE", "4"}, {"RANK", "3"}, {"LOCAL_RANK", "1"},
      {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29400"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
      {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->world_size, 4);
  EXPECT_EQ(env->rank, 3);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->master_port, 29400);
  EXPECT_TRUE(env->launcher_hosts_store);
  EXPECT_EQ(env->store_prefix, "/worker/attempt_2");
  EXPECT_FALSE(dist::Environment::from_environment(lookup({})).has_value());
}

TEST(Environment, BadVariablesAreNamed) {
  const std::map<std::string, std::string> good{{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_ADDR", "127.0.0.1"},
                                                {"MASTER_PORT", "29400"}};
  auto with = [&](std::map<std::string, std::string> changes, const std::vector<std::string>& removed = {}) {
    auto values = good;
    for (const auto& [k, v] : changes) values[k] = v;
    for (const auto& k : removed) values.erase(k);
    return error_message([&] { dist::Environment::from_environment(lookup(values)); });
  };
  EXPECT_NE(with({}, {"RANK"}).find("WORLD_SIZE=2 is set but RANK is not"), std::string::npos) << with({}, {"RANK"});
  EXPECT_NE(with({{"RANK", "2"}}).find("RANK=2 is not below WORLD_SIZE=2"), std::string::npos) << with({{"RANK", "2"}});
  EXPECT_NE(with({{"RANK", "x"}}).find("RANK=\"x\" is not valid"), std::string::npos);
  EXPECT_NE(with({{"MASTER_PORT", "70000"}}).find("MASTER_PORT=\"70000\""), std::string::npos);
  EXPECT_NE(with({}, {"MASTER_ADDR"}).find("MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(with({}, {"WORLD_SIZE"}).find("RANK is set but WORLD_SIZE is not"), std::string::npos);
  EXPECT_EQ(with({}), "");
}

// ---- Connecting: every failure is an error within the timeout, never a hang ----

dist::Environment local_job(int rank, int world, int port) {
  dist::Environment env;
  env.rank = rank;
  env.world_size = world;
  env.master_addr = "127.0.0.1";
  env.master_port = port;
  return env;
}

dist::ProcessGroupOptions short_timeout() { return dist::ProcessGroupOptions().timeout(std::chrono::seconds(3)); }

TEST(Connect, PortInUseIsReported) {
  auto first = dist::ProcessGroup::connect(local_job(0, 1, free_port()), short_timeout());
  // A second job whose rank 0 wants to serve its store on a port that is taken.
  dist::Environment env = local_job(0, 1, 0);
  const int port = free_port();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  env.master_port = port;
  const auto message = error_message([&] { dist::ProcessGroup::connect(env, short_timeout()); });
  ::close(fd);
  EXPECT_NE(message.find("port " + std::to_string(port) + ": the port is in use"), std::string::npos) << message;
}

TEST(Connect, UnreachableMasterIsReportedWithinTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto message = error_message([&] { dist::ProcessGroup::connect(local_job(1, 2, free_port()), short_timeout()); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(message.find("cannot reach the rendezvous store at 127.0.0.1:"), std::string::npos) << message;
  EXPECT_LT(seconds, 30);
}

TEST(Connect, RankThatNeverJoinsIsReportedWithinTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto message = error_message([&] { dist::ProcessGroup::connect(local_job(0, 2, free_port()), short_timeout()); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(message.find("not every rank joined"), std::string::npos) << message;
  EXPECT_LT(seconds, 30);
}

TEST(Connect, UnknownBackendIsRefused) {
  const auto message = error_message(
      [&] { dist::ProcessGroup::connect(local_job(0, 1, free_port()), short_timeout().backend("mpi")); });
  EXPECT_NE(message.find("backend \"mpi\" is not known"), std::string::npos) << message;
}

// ---- One process: buckets, and averaging over one rank changes nothing ----

TEST(DataParallel, BucketsCoverEveryParameterOnceWithASmallFirstBucket) {
  auto group = dist::ProcessGroup::connect(local_job(0, 1, free_port()), short_timeout());
  auto model = make_model("revnet", torch::kFloat32);
  dist::DataParallel parallel(model.module, group,
                              dist::DataParallelOptions().first_bucket_cap_bytes(4096).bucket_cap_bytes(64 << 10));
  const auto buckets = parallel.bucket_indices();
  const auto parameters = model.module->parameters();
  std::vector<int> seen(parameters.size(), 0);
  for (const auto& bucket : buckets)
    for (int64_t i : bucket) ++seen[i];
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 1) << "parameter " << i;
  EXPECT_GT(buckets.size(), 2u);
  EXPECT_EQ(buckets.front().front(), static_cast<int64_t>(parameters.size()) - 1);  // the last parameter first
  int64_t first_bytes = 0;
  for (int64_t i : buckets.front()) first_bytes += parameters[i].numel() * 4;
  EXPECT_TRUE(first_bytes <= 4096 || buckets.front().size() == 1u) << first_bytes;

  auto reference = make_model("revnet", torch::kFloat32);
  const auto batch = global_batch(0, torch::kFloat32);
  loss_of(reference, batch).backward();
  loss_of(model, batch).backward();
  EXPECT_EQ(worst_relative_error(gradients_of(model), gradients_of(reference)), 0.0);
  EXPECT_EQ(parallel.stats().synchronized_backwards, 1);
  EXPECT_EQ(parallel.stats().buckets_reduced, static_cast<int64_t>(buckets.size()));
  // Only the bucket holding the stem (the last gradients to arrive) waits for the end of backward.
  EXPECT_GE(parallel.stats().buckets_started_during_backward, static_cast<int64_t>(buckets.size()) - 1);
}

// A backward that throws midway leaves DataParallel and the parameters as usable as before.
TEST(DataParallel, ABackwardThatThrowsLeavesItUsableAndItsDestructionLeavesTheParametersLocal) {
  auto group = dist::ProcessGroup::connect(local_job(0, 1, free_port()), short_timeout());
  GatedMlp model, reference;
  auto parallel = std::make_unique<dist::DataParallel>(
      model.ptr(), group, dist::DataParallelOptions().first_bucket_cap_bytes(1).bucket_cap_bytes(1));
  const auto message = error_message([&] { mlp_loss(model, mlp_batch(0), true).backward(); });
  EXPECT_NE(message.find("fails midway"), std::string::npos) << message;
  EXPECT_GE(parallel->stats().buckets_started_during_backward, 1);

  model->zero_grad();
  mlp_loss(model, mlp_batch(1)).backward();
  mlp_loss(reference, mlp_batch(1)).backward();
  EXPECT_EQ(worst_relative_error(gradients_of(*model), gradients_of(*reference)), 0.0);
  EXPECT_EQ(parallel->stats().synchronized_backwards, 1);

  EXPECT_THROW(mlp_loss(model, mlp_batch(0), true).backward(), std::exception);
  parallel.reset();
  model->zero_grad();
  reference->zero_grad();
  mlp_loss(model, mlp_batch(2)).backward();  // the hooks went with the DataParallel
  mlp_loss(reference, mlp_batch(2)).backward();
  EXPECT_EQ(worst_relative_error(gradients_of(*model), gradients_of(*reference)), 0.0);
}

TEST(PendingCollective, WaitingForNothingIsAnError) {
  dist::PendingCollective nothing;
  EXPECT_NE(error_message([&] { nothing.wait(); }).find("nothing in flight"), std::string::npos);
  EXPECT_THROW(nothing.wait_for(std::chrono::milliseconds(1)), c10::Error);
}

// ---- Two ranks, each on half of the batch, against one process averaging the halves ----

struct GradientCase {
  std::string model, precision;
  double tolerance;
};

std::string describe(const GradientCase& c) { return c.model + "_" + c.precision; }

std::string gradient_case_name(const testing::TestParamInfo<GradientCase>& info) { return describe(info.param); }

// What GoogleTest (and so ctest's test names) print for a case: its name, not its bytes.
void PrintTo(const GradientCase& c, std::ostream* os) { *os << describe(c); }

class TwoRanks : public testing::TestWithParam<GradientCase> {};

// The gradients equal those of one process averaging the two halves' gradients.
TEST_P(TwoRanks, GradientsEqualAveragedHalves) {
  const auto& c = GetParam();
  const auto out = scratch("gradients_" + describe(c)) / "grads";
  ASSERT_EQ(run_ranks({"gradients", c.model, c.precision, out.string()}), 0);

  const auto dtype = c.precision == "f64" ? torch::kFloat64 : torch::kFloat32;
  auto reference = make_model(c.model, dtype);
  std::vector<torch::Tensor> average;
  for (int half = 0; half < 2; ++half) {
    memcnn::zero_gradients_in_place(reference.module->parameters());
    loss_of(reference, shard(global_batch(0, dtype), half, 2), c.precision == "bf16").backward();
    const auto grads = gradients_of(reference);
    if (average.empty()) {
      for (const auto& g : grads) average.push_back(g / 2);
    } else {
      for (size_t i = 0; i < grads.size(); ++i) average[i] += grads[i] / 2;
    }
  }
  for (int rank = 0; rank < 2; ++rank) {
    const auto grads = load_tensors(out.string() + ".rank" + std::to_string(rank));
    const double error = worst_relative_error(grads, average);
    std::cout << "[figure] " << c.model << " " << c.precision << " rank " << rank
              << ": worst relative gradient error vs one process " << error << std::endl;
    EXPECT_LE(error, c.tolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, TwoRanks,
                         testing::Values(GradientCase{"resnet", "f64", 1e-10}, GradientCase{"revnet", "f64", 1e-10},
                                         GradientCase{"revnet_checkpointed", "f64", 1e-10},
                                         GradientCase{"chain", "f64", 1e-10}, GradientCase{"revnet", "f32", 1e-5},
                                         GradientCase{"revnet", "bf16", 1e-5}),
                         gradient_case_name);

TEST(TwoRanksNoSync, AccumulatesLocallyThenAveragesTheSums) {
  const auto out = scratch("accumulate") / "grads";
  ASSERT_EQ(run_ranks({"accumulate", "revnet", out.string()}), 0);
  auto reference = make_model("revnet", torch::kFloat64);
  for (int rank = 0; rank < 2; ++rank)
    for (int step = 0; step < 2; ++step) loss_of(reference, shard(global_batch(step, torch::kFloat64), rank, 2)).backward();
  auto expected = gradients_of(reference);
  for (auto& g : expected) g /= 2;
  for (int rank = 0; rank < 2; ++rank) {
    auto result = load_tensors(out.string() + ".rank" + std::to_string(rank));
    const auto counts = result.back();
    result.pop_back();
    EXPECT_EQ(counts[0].item<int64_t>(), 0) << "no_sync communicated";
    EXPECT_EQ(counts[1].item<int64_t>(), 1);
    EXPECT_LE(worst_relative_error(result, expected), 1e-10);
  }
}

TEST(TwoRanksSgd, ParametersAreBitwiseIdenticalAfterTwentySteps) {
  const auto out = scratch("sgd") / "state";
  ASSERT_EQ(run_ranks({"sgd", "revnet", "20", out.string()}), 0);
  const auto rank0 = load_tensors(out.string() + ".rank0");
  const auto rank1 = load_tensors(out.string() + ".rank1");
  ASSERT_EQ(rank0.size(), rank1.size());
  auto initial = make_model("revnet", torch::kFloat32);
  const auto initial_parameters = initial.module->parameters();
  for (size_t i = 0; i < rank0.size(); ++i) EXPECT_TRUE(torch::equal(rank0[i], rank1[i])) << "tensor " << i;
  EXPECT_FALSE(torch::equal(rank0[0], initial_parameters[0])) << "training changed nothing";
}

// ---- Faults ----

TEST(TwoRanksFaults, ADeadRankMakesTheOtherStopWithAMessage) {
  const auto out = scratch("die") / "message";
  const auto start = std::chrono::steady_clock::now();
  const int status = run_ranks({"die", "3", out.string()}, 2, 20);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(status, 0);
  std::ifstream file(out.string() + ".rank0");
  std::stringstream text;
  text << file.rdbuf();
  EXPECT_NE(text.str().find("rank 0 of 2: allreduce failed"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("Another rank exited"), std::string::npos) << text.str();
  EXPECT_LT(seconds, 20 + 30) << "the surviving rank did not stop within its timeout";
  std::cout << "[figure] surviving rank stopped " << seconds << " s after the start (timeout 20 s)" << std::endl;
}

// ---- A backward that throws midway, with allreduces started; the objects destroyed after it ----

// Each rank's local gradients of a step's shard, or their average over the two ranks.
std::vector<torch::Tensor> mlp_gradients(int64_t step, int rank) {
  GatedMlp model;
  mlp_loss(model, shard(mlp_batch(step), rank, 2)).backward();
  return gradients_of(*model);
}

std::vector<torch::Tensor> mlp_averaged_gradients(int64_t step) {
  auto average = mlp_gradients(step, 0);
  const auto other = mlp_gradients(step, 1);
  for (size_t i = 0; i < average.size(); ++i) average[i] = (average[i] + other[i]) / 2;
  return average;
}

// What `abandon MODE` wrote: per rank, the counts and the gradients of the steps after the failure.
void check_abandoned_backward(const std::string& mode) {
  const auto out = scratch("abandon_" + mode) / "result";
  ASSERT_EQ(run_ranks({"abandon", mode, out.string()}), 0);
  for (int rank = 0; rank < 2; ++rank) {
    const auto base = out.string() + ".rank" + std::to_string(rank);
    torch::Tensor counts;
    torch::load(counts, base + ".counts");
    EXPECT_GE(counts[0].item<int64_t>(), 1) << "rank " << rank << ": no allreduce started before the failure";
    if (mode == "in_flight" && rank == 0) {
      EXPECT_EQ(counts[1].item<int64_t>(), 0) << "an allreduce had finished";
    }
    EXPECT_EQ(counts[2].item<int64_t>(), 1) << "rank " << rank;
    if (mode != "keep") {
      EXPECT_EQ(worst_relative_error(load_tensors(base + ".local"), mlp_gradients(1, rank)), 0.0);
    }
    EXPECT_LE(worst_relative_error(load_tensors(base + ".synced"), mlp_averaged_gradients(2)), 1e-12);
  }
}

TEST(TwoRanksAbandonedBackward, DestroyedRightAfterTheFailureThenANewOneTrains) { check_abandoned_backward("destroy"); }

TEST(TwoRanksAbandonedBackward, DestroyedWithItsAllreducesInFlight) { check_abandoned_backward("in_flight"); }

TEST(TwoRanksAbandonedBackward, KeptItAveragesTheNextBackward) { check_abandoned_backward("keep"); }

std::string read_text(const fs::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(TwoRanksReleasedGroup, AnAllreduceInFlightFinishesAfterTheGroupIsReleased) {
  const auto out = scratch("release_group_alive") / "outcome";
  ASSERT_EQ(run_ranks({"release_group", "alive", out.string()}, 2, 20), 0);
  EXPECT_EQ(read_text(out.string() + ".rank0"), "finished early: no, sum 12, completion callback ran");
}

TEST(TwoRanksReleasedGroup, AFailureAfterTheGroupIsReleasedStillNamesTheRank) {
  const auto out = scratch("release_group_dead") / "outcome";
  EXPECT_NE(run_ranks({"release_group", "dead", out.string()}, 2, 20), 0);  // rank 1 exits on purpose
  const auto text = read_text(out.string() + ".rank0");
  EXPECT_NE(text.find("rank 0 of 2: allreduce failed"), std::string::npos) << text;
}

}  // namespace
