// memcnn-bench-distributed: data-parallel RevNet-38 training steps on one machine, with the same
// global batch as one process: 1 process x T threads against N ranks x T/N threads (Gloo over
// loopback), in one run. Per rank it reports the step time, the share of it spent waiting for the
// gradient allreduce and the allreduces' own duration, and the bytes the rank wrote to its
// sockets per step (from /proc/self/io) against the gradient bytes (a ring allreduce sends
// 2(N-1)/N of them). Writes docs/benchmarks-distributed.md (or --output).
//
// The program launches its own ranks (launch_local_ranks); a rank is the same program with
// WORLD_SIZE set, writing its figures to MEMCNN_BENCH_RESULT.

#include <memcnn/distributed/data_parallel.h>
#include <memcnn/distributed/launch.h>
#include <memcnn/memcnn.h>
#include <memcnn/models/resnet.h>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include <malloc.h>
#include <unistd.h>

using namespace memcnn;
namespace dist = memcnn::distributed;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string model = "revnet38";
  int64_t batch = 128, steps = 10, threads = 0, nproc = 2, image = 32;
  std::string output = "docs/benchmarks-distributed.md";
  bool cuda = false, quick = false;
};

// Bytes this process has written through write-like system calls (sockets included).
int64_t bytes_written() {
  std::ifstream io("/proc/self/io");
  std::string key;
  int64_t value = 0;
  while (io >> key >> value)
    if (key == "wchar:") return value;
  return -1;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0 : values[values.size() / 2];
}

struct Step {
  models::ResNet model;
  std::unique_ptr<torch::optim::SGD> optimizer;
  torch::Device device;

  Step(const Args& args, torch::Device device) : model(nullptr), device(device) {
    torch::manual_seed(0);  // the same initial weights in every configuration
    model = models::ResNet(models::model_options(args.model));
    model->to(device);
    model->train();
    optimizer = std::make_unique<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  }
  double run(const torch::Tensor& images, const torch::Tensor& labels) {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    const auto start = Clock::now();
    optimizer->zero_grad();
    torch::nn::functional::cross_entropy(model->forward(images), labels).backward();
    optimizer->step();
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    return std::chrono::duration<double>(Clock::now() - start).count();
  }
};

std::pair<torch::Tensor, torch::Tensor> batch_of(const Args& args, int64_t first, int64_t count, torch::Device device) {
  torch::manual_seed(1);
  auto images = torch::randn({args.batch, 3, args.image, args.image});
  auto labels = torch::randint(0, 10, {args.batch});
  return {images.narrow(0, first, count).contiguous().to(device), labels.narrow(0, first, count).to(device)};
}

// A rank: its shard of every global batch, gradients averaged by DataParallel.
int run_rank(const Args& args) {
  auto env = dist::Environment::from_environment();
  const torch::Device device = args.cuda ? torch::Device(torch::kCUDA, static_cast<int>(env->local_rank % std::max<int64_t>(1, torch::cuda::device_count())))
                                         : torch::Device(torch::kCPU);
  auto group = dist::ProcessGroup::connect(*env, dist::ProcessGroupOptions().device(device).timeout(std::chrono::seconds(120)));
  Step step(args, device);
  dist::DataParallel parallel(step.model.ptr(), group);
  const int64_t share = args.batch / group->size();
  const auto [images, labels] = batch_of(args, group->rank() * share, share, device);
  step.run(images, labels);  // warm-up
  group->barrier();
  parallel.reset_stats();
  std::vector<double> times;
  const int64_t written_before = bytes_written();
  for (int64_t s = 0; s < args.steps; ++s) times.push_back(step.run(images, labels));
  const int64_t written = bytes_written() - written_before;
  const auto stats = parallel.stats();
  int64_t parameter_bytes = 0;
  for (const auto& p : step.model->parameters()) parameter_bytes += p.numel() * static_cast<int64_t>(p.element_size());
  double total = 0;
  for (double t : times) total += t;
  if (const char* path = std::getenv("MEMCNN_BENCH_RESULT")) {
    std::ofstream out(std::string(path) + ".rank" + std::to_string(group->rank()));
    out << std::setprecision(9) << "median_step " << median(times) << "\nwait_share " << stats.wait_seconds / total
        << "\nallreduce_share " << stats.allreduce_seconds / total << "\nbytes_sent_per_step "
        << static_cast<double>(written) / args.steps << "\ngradient_bytes_per_step "
        << static_cast<double>(stats.bytes_reduced) / std::max<int64_t>(1, stats.synchronized_backwards)
        << "\nparameter_bytes " << parameter_bytes << "\nbuckets " << parallel.bucket_indices().size()
        << "\nbackend " << group->backend() << "\n";
  }
  return 0;
}

std::map<std::string, std::string> read_figures(const std::string& path) {
  std::map<std::string, std::string> figures;
  std::ifstream in(path);
  std::string key, value;
  while (in >> key >> value) figures[key] = value;
  if (figures.empty()) throw std::runtime_error("no figures in " + path + ": a rank failed (see above)");
  return figures;
}

std::string fixed(double value, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << value;
  return s.str();
}

std::string mib(double bytes) { return fixed(bytes / kBytesPerMiB, 2); }

int run_launcher(const Args& args, int argc, char** argv) {
  const int64_t threads = args.threads > 0 ? args.threads : std::max(1u, std::thread::hardware_concurrency());
  if (args.batch % args.nproc != 0) throw std::invalid_argument("--batch must be a multiple of --nproc");
  const torch::Device device = args.cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);

  // One process with all the threads, on the whole batch.
  torch::set_num_threads(static_cast<int>(threads));
  double single = 0;
  {
    Step step(args, device);
    const auto [images, labels] = batch_of(args, 0, args.batch, device);
    step.run(images, labels);
    std::vector<double> times;
    for (int64_t s = 0; s < args.steps; ++s) times.push_back(step.run(images, labels));
    single = median(times);
  }

  // N ranks sharing the threads, each on batch/N.
  const auto scratch = std::string("/tmp/memcnn-bench-distributed-") + std::to_string(::getpid());
  dist::LaunchOptions launch;
  launch.nproc = static_cast<int>(args.nproc);
  launch.environment["MEMCNN_BENCH_RESULT"] = scratch;
  launch.environment["MEMCNN_BENCH_THREADS"] = std::to_string(std::max<int64_t>(1, threads / args.nproc));
  std::vector<std::string> command{dist::current_executable()};
  command.insert(command.end(), argv + 1, argv + argc);
  if (const int status = dist::launch_local_ranks(command, launch); status != 0) return status;
  std::vector<std::map<std::string, std::string>> ranks;
  for (int64_t r = 0; r < args.nproc; ++r) {
    ranks.push_back(read_figures(scratch + ".rank" + std::to_string(r)));
    std::remove((scratch + ".rank" + std::to_string(r)).c_str());
  }
  double slowest = 0;
  for (const auto& r : ranks) slowest = std::max(slowest, std::stod(r.at("median_step")));
  const auto& r0 = ranks.front();
  const double parameter_bytes = std::stod(r0.at("parameter_bytes"));
  const double ring = 2.0 * (args.nproc - 1) / args.nproc;

  std::ostringstream md;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  md << "# Data-parallel benchmark (memcnn-bench-distributed)\n\n"
     << "Measured " << date << " with `build/bench/memcnn-bench-distributed";
  for (int i = 1; i < argc; ++i) md << " " << argv[i];
  md << "`, " << (args.cuda ? "CUDA" : "CPU") << ", " << std::thread::hardware_concurrency() << " cores, LibTorch "
     << TORCH_VERSION << ". " << args.model << " training steps (forward, backward, SGD) on the same global batch of "
     << args.batch << " (" << args.image << "x" << args.image << "x3), median of " << args.steps
     << " steps after a warm-up; ranks on 127.0.0.1 (" << r0.at("backend") << ").\n\n"
     << "| configuration | step s | vs 1 process | waiting for allreduce | allreduce in flight | sent per step MiB | gradient MiB | sent / gradient (ring: " << fixed(ring, 2) << ") | buckets |\n"
     << "|---|---|---|---|---|---|---|---|---|\n"
     << "| 1 process x " << threads << " threads, batch " << args.batch << " | " << fixed(single, 3) << " | 1.00 | | | | | | |\n";
  for (int64_t r = 0; r < args.nproc; ++r) {
    const auto& f = ranks[r];
    md << "| rank " << r << " of " << args.nproc << " x " << std::max<int64_t>(1, threads / args.nproc)
       << " thread(s), batch " << args.batch / args.nproc << " | " << fixed(std::stod(f.at("median_step")), 3) << " | "
       << fixed(std::stod(f.at("median_step")) / single, 2) << " | " << fixed(100 * std::stod(f.at("wait_share")), 1)
       << "% | " << fixed(100 * std::stod(f.at("allreduce_share")), 1) << "% | " << mib(std::stod(f.at("bytes_sent_per_step")))
       << " | " << mib(std::stod(f.at("gradient_bytes_per_step"))) << " | "
       << fixed(std::stod(f.at("bytes_sent_per_step")) / std::stod(f.at("gradient_bytes_per_step")), 3) << " | "
       << f.at("buckets") << " |\n";
  }
  md << "\nStep time of the job: its slowest rank, " << fixed(slowest, 3) << " s (" << fixed(slowest / single, 2)
     << "x one process). \"waiting\": backward blocked on allreduces that compute did not hide; \"in flight\": "
        "the buckets' allreduce durations summed (they overlap backward). Bytes sent: what the rank wrote to its "
        "sockets (/proc/self/io wchar) per step, against the gradient bytes handed to allreduce ("
     << mib(parameter_bytes) << " MiB of parameters); MiB = 2^20 bytes.\n";
  std::cout << md.str();
  if (!args.output.empty()) {
    std::ofstream(args.output) << md.str();
    std::cout << "wrote " << args.output << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"memcnn data-parallel benchmark: 1 process against N local ranks, same global batch"};
  Args args;
  app.add_option("--model", args.model, "a model of memcnn-train (default revnet38)");
  app.add_option("--batch", args.batch, "global batch size")->check(CLI::PositiveNumber);
  app.add_option("--steps", args.steps, "timed steps (median)")->check(CLI::PositiveNumber);
  app.add_option("--threads", args.threads, "threads of the single process, shared by the ranks (default: all cores)");
  app.add_option("--nproc", args.nproc, "ranks")->check(CLI::Range(1, 64));
  app.add_option("--image", args.image, "image side")->check(CLI::PositiveNumber);
  app.add_option("--output", args.output, "markdown report to write ('' for none)");
  app.add_flag("--cuda", args.cuda, "CUDA (NCCL): one GPU per rank");
  app.add_flag("--quick", args.quick, "tiny sizes: checks that the program works, figures mean nothing");
  CLI11_PARSE(app, argc, argv);
  // As memcnn-bench: keep freed large blocks in the process (glibc would return them to the OS
  // and fault them back in every step, which can double CPU step times).
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (args.quick) {
    args.batch = 8;
    args.steps = 2;
    args.image = 16;
  }
  try {
    if (std::getenv("WORLD_SIZE") != nullptr) {
      if (const char* threads = std::getenv("MEMCNN_BENCH_THREADS")) torch::set_num_threads(std::atoi(threads));
      return run_rank(args);
    }
    return run_launcher(args, argc, argv);
  } catch (const c10::Error& e) {
    std::cerr << "memcnn-bench-distributed: " << e.what_without_backtrace() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "memcnn-bench-distributed: " << e.what() << std::endl;
  }
  return 1;
}
