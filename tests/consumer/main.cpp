#include <memcnn/memcnn.h>

#include <torch/torch.h>

int main() {
  memcnn::AdditiveCoupling coupling(torch::nn::Linear(2, 2));
  return memcnn::is_invertible_module(coupling, {3, 4}) ? 0 : 1;
}
