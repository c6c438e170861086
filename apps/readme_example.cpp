// The MemCNN README example, in C++: make a Conv-BN-ReLU operation invertible with an
// additive coupling, check it, wrap it for memory saving, and train one step.

#include <memcnn/memcnn.h>

#include <torch/torch.h>

#include <iostream>

// Relu o BatchNorm2d o Conv2d, keeping the number of channels.
struct ExampleOperationImpl : torch::nn::Cloneable<ExampleOperationImpl> {
  explicit ExampleOperationImpl(int64_t channels) : channels(channels) { reset(); }
  void reset() override {
    seq = register_module("seq", torch::nn::Sequential(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)),
        torch::nn::BatchNorm2d(channels), torch::nn::ReLU()));
  }
  torch::Tensor forward(const torch::Tensor& x) { return seq->forward(x); }
  int64_t channels;
  torch::nn::Sequential seq{nullptr};
};
TORCH_MODULE(ExampleOperation);

int main() {
  memcnn::enable_cpu_memory_tracking();
  torch::manual_seed(0);

  // random input data (batch_size, num_channels, y_elements, x_elements)
  const torch::Tensor X = torch::rand({2, 10, 8, 8});

  // the operation the normal way
  ExampleOperation model_normal(10);
  const torch::Tensor Y = model_normal->forward(X);

  // make it invertible with an additive coupling, and check that it is
  auto invertible_module = memcnn::AdditiveCoupling(ExampleOperation(10 / 2), ExampleOperation(10 / 2));
  TORCH_CHECK(memcnn::is_invertible_module(invertible_module, {2, 10, 8, 8}));

  // wrap it for memory saving; keep the inputs here since X is used again below
  auto wrapper = memcnn::InvertibleModuleWrapper(invertible_module,
      memcnn::InvertibleModuleWrapperOptions().keep_input(true).keep_input_inverse(true));
  TORCH_CHECK(memcnn::is_invertible_module(wrapper, {2, 10, 8, 8}));

  // forward and inverse in evaluation mode
  wrapper->eval();
  const torch::Tensor Y2 = wrapper->forward(X);
  const torch::Tensor X2 = wrapper->inverse(Y2);
  TORCH_CHECK(torch::allclose(X, X2, /*rtol=*/1e-5, /*atol=*/1e-6), "inverse(forward(X)) differs from X");
  std::cout << "inverse(forward(X)) == X: max |X - X2| = " << (X - X2).abs().max().item<double>() << "\n";

  // training: the wrapper frees the input of forward and rebuilds it in backward
  wrapper->train();
  wrapper->options.keep_input(false);
  torch::Tensor x = X.clone().requires_grad_();
  torch::Tensor y = wrapper->forward(x);
  std::cout << "input freed after forward in training: " << std::boolalpha << memcnn::is_freed(x) << "\n";
  y.pow(2).mean().backward();
  std::cout << "input rebuilt in backward: max |x - X| = " << (x - X).abs().max().item<double>()
            << "; gradient norm " << x.grad().norm().item<double>() << "\n";
  std::cout << "peak CPU bytes so far: " << memcnn::memory_stats().peak_bytes << "\n";
  return 0;
}
