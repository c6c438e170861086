// The core from a subproject build: a wrapped coupling frees its input, and a probe sees it.
#include <memcnn/memcnn.h>

#include <torch/torch.h>

#include <iostream>

int main() {
  memcnn::enable_cpu_memory_tracking();
  auto wrapper = memcnn::InvertibleModuleWrapper(memcnn::AdditiveCoupling(torch::nn::Linear(2, 2)));
  auto x = torch::rand({3, 4}).requires_grad_();
  memcnn::MemoryProbe probe;
  auto y = wrapper->forward(x * 1.0);
  y.sum().backward();
  if (probe.peak_above_start() <= 0) return 1;
  std::cout << "memcnn as a subproject: core built, linked and ran" << std::endl;
  return 0;
}
