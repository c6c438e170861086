// A reversible block trained in Python, run in C++: the weights of
//   memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(Fm=Branch(c), Gm=Branch(c)))
// (memcnn's Python package; Branch: Conv2d(c, c, 3, padding=1), BatchNorm2d(c), ReLU in a Sequential
// called seq), saved with torch.save(block.state_dict(), BLOCK.pt), are loaded by name into the same
// block built in C++, which then computes what Python computed.
//
//   memcnn-example-weights-from-python BLOCK.pt IO.pt [OUT.pt]
//
// IO.pt: a dict with 'x' (an input of 2c channels) and 'y' (Python's output for it in eval mode).
// Prints the relative differences (max |C++ - Python| / max |Python|) of the forward (C++ on x
// against y) and of the inverse (C++ on y against x); OUT.pt, when given, receives C++'s 'y' and
// 'x' (a torch.save file). Exit status 1 when a difference exceeds 1e-5.
// examples/weights_from_python.py writes BLOCK.pt and IO.pt, runs this program and checks OUT.pt.

#include <memcnn/memcnn.h>
#include <memcnn/state_dict.h>

#include <torch/torch.h>

#include <exception>
#include <iostream>
#include <string>
#include <utility>

namespace {

// Conv-BN-ReLU keeping the number of channels: the F and G of the coupling.
struct BranchImpl : torch::nn::Cloneable<BranchImpl> {
  explicit BranchImpl(int64_t channels) : channels(channels) { reset(); }
  void reset() override {
    seq = register_module("seq", torch::nn::Sequential(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)),
        torch::nn::BatchNorm2d(channels), torch::nn::ReLU()));
  }
  torch::Tensor forward(const torch::Tensor& x) { return seq->forward(x); }
  int64_t channels;
  torch::nn::Sequential seq{nullptr};
};
TORCH_MODULE(Branch);

// The names differ above F and G only: the C++ wrapper registers its block as "fn" and the
// coupling its functions as "F" and "G"; Python's are "_fn", "Fm" and "Gm". Below them (the
// Sequential's "seq.0.weight", "seq.1.running_mean", ...) both frontends use the same names.
std::string python_name(const std::string& cpp_name) {
  for (const auto& [cpp_prefix, python_prefix] : {std::pair<std::string, std::string>{"fn.F.", "_fn.Fm."},
                                                  std::pair<std::string, std::string>{"fn.G.", "_fn.Gm."}}) {
    if (cpp_name.rfind(cpp_prefix, 0) == 0) return python_prefix + cpp_name.substr(cpp_prefix.size());
  }
  return cpp_name;
}

double relative_difference(const torch::Tensor& cpp, const torch::Tensor& python) {
  return (cpp - python).abs().max().item<double>() / std::max(python.abs().max().item<double>(), 1e-30);
}

torch::Tensor entry(const memcnn::StateDict& io, const std::string& key, const std::string& path) {
  const torch::Tensor* tensor = io.find(key);
  TORCH_CHECK(tensor != nullptr, "'", path, "' has no '", key, "'; examples/weights_from_python.py writes it");
  return *tensor;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 3 || argc > 4) {
    std::cerr << "usage: " << argv[0] << " BLOCK.pt IO.pt [OUT.pt]\n"
              << "  BLOCK.pt: state_dict of the Python block; IO.pt: {'x': input, 'y': Python's output}\n";
    return 2;
  }
  const std::string block_path = argv[1], io_path = argv[2];
  const auto io = memcnn::read_state_dict(io_path);
  const torch::Tensor x = entry(io, "x", io_path), y_python = entry(io, "y", io_path);
  TORCH_CHECK(x.dim() == 4 && x.size(1) % 2 == 0, "'", io_path, "': x must be [N, 2c, H, W], got ", x.sizes());

  const int64_t half = x.size(1) / 2;
  memcnn::InvertibleModuleWrapper block{memcnn::AdditiveCoupling(Branch(half), Branch(half))};
  const auto loaded =
      memcnn::load_state_dict(*block, block_path, memcnn::LoadStateDictOptions().key_map(python_name));
  std::cout << "loaded " << loaded.loaded << " tensors from " << block_path << "\n";

  block->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor y = block->forward(x);
  const torch::Tensor x_rebuilt = block->inverse(y_python);
  const double forward_difference = relative_difference(y, y_python);
  const double inverse_difference = relative_difference(x_rebuilt, x);
  std::cout << "forward: relative difference to Python's output " << forward_difference << "\n"
            << "inverse of Python's output: relative difference to the input " << inverse_difference << "\n";
  if (argc == 4) {
    c10::Dict<std::string, torch::Tensor> out;
    out.insert("y", y);
    out.insert("x", x_rebuilt);
    memcnn::write_torch_file(out, argv[3]);
  }
  constexpr double kTolerance = 1e-5;
  const bool agree = forward_difference <= kTolerance && inverse_difference <= kTolerance;
  std::cout << (agree ? "C++ and Python agree" : "C++ and Python DIFFER") << " (tolerance " << kTolerance << ")\n";
  return agree ? 0 : 1;
} catch (const std::exception& error) {
  std::cerr << "memcnn-example-weights-from-python: " << error.what() << "\n";
  return 1;
}
