// Every misuse gets an error that says what is wrong and how to fix it.

#include "test_util.h"

using namespace memcnn_test;

namespace {

void expect_error(const std::string& message, const std::string& expected) {
  EXPECT_NE(message.find(expected), std::string::npos) << "message was: " << message;
}

TEST(Errors, OddChannelCount) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2));
  expect_error(error_message([&] { coupling->forward(torch::rand({2, 5, 4, 4})); }),
               "has odd size 5, which cannot be split into two equal halves");
}

TEST(Errors, SplitDimOutOfRange) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2), memcnn::AdditiveCouplingOptions().split_dim(4));
  expect_error(error_message([&] { coupling->forward(torch::rand({2, 4, 4, 4})); }),
               "split_dim 4 is out of range");
}

TEST(Errors, MismatchedShapeFromF) {
  memcnn::AdditiveCoupling coupling(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 1)),
                                    torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 2, 1)));
  expect_error(error_message([&] { coupling->forward(torch::rand({2, 4, 4, 4})); }),
               "F returned a tensor of shape [2, 3, 4, 4] for output 0, but the coupling needs shape [2, 2, 4, 4]");
}

TEST(Errors, MismatchedShapeForSigmoidAdapter) {
  memcnn::AffineCoupling coupling(ConvBnRelu(2), ConvBnRelu(2),
                                  memcnn::AffineCouplingOptions().adapter(memcnn::AffineAdapter::sigmoid));
  expect_error(error_message([&] { coupling->forward(torch::rand({2, 4, 4, 4})); }), "sigmoid adapter needs");
}

TEST(Errors, SingleTensorModuleGivenSeveralTensors) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2));
  expect_error(error_message([&] { coupling->forward_multi({torch::rand({2, 4, 4, 4}), torch::rand({2, 4, 4, 4})}); }),
               "F has the wrong forward signature for 2 input tensor(s)");
}

TEST(Errors, GCannotBeCopiedFromAnUncloneableF) {
  struct PlainImpl : torch::nn::Module {
    torch::Tensor forward(const torch::Tensor& x) { return x; }
  };
  TORCH_MODULE(Plain);
  expect_error(error_message([] { memcnn::AdditiveCoupling coupling(Plain{}); }),
               "G defaults to a deep copy of F, but F could not be cloned");
}

TEST(Errors, BackwardMoreOftenThanNumBwdPasses) {
  memcnn::InvertibleModuleWrapper wrapper(make_coupling(Coupling::additive, 4));
  auto x = torch::rand({2, 4, 4, 4}).requires_grad_();
  auto loss = wrapper->forward(x).sum();
  loss.backward({}, /*retain_graph=*/true);
  expect_error(error_message([&] { loss.backward(); }),
               "backward ran through this block more often than num_bwd_passes=1 allows. Construct the "
               "wrapper with InvertibleModuleWrapperOptions().num_bwd_passes(2)");
}

TEST(Errors, InvalidNumBwdPasses) {
  expect_error(error_message([] {
                 memcnn::InvertibleModuleWrapper wrapper(make_coupling(Coupling::additive, 4),
                                                         memcnn::InvertibleModuleWrapperOptions().num_bwd_passes(0));
               }),
               "num_bwd_passes must be at least 1");
}

TEST(Errors, DoubleBackward) {
  memcnn::InvertibleModuleWrapper wrapper(make_coupling(Coupling::additive, 4));
  auto x = torch::rand({2, 4, 4, 4}).requires_grad_();
  auto loss = wrapper->forward(x).pow(2).sum();
  expect_error(error_message([&] { torch::autograd::grad({loss}, {x}, {}, true, /*create_graph=*/true); }),
               "does not support double backward (create_graph=true)");
}

TEST(Errors, WrongInverseIsDetected) {
  struct BadInverseImpl : torch::nn::Cloneable<BadInverseImpl> {
    void reset() override {}
    torch::Tensor forward(const torch::Tensor& x) { return x * 2; }
    torch::Tensor inverse(const torch::Tensor& y) { return y / 3; }
  };
  TORCH_MODULE(BadInverse);
  EXPECT_FALSE(memcnn::is_invertible_module(BadInverse{}, {2, 3}));
  memcnn::InvertibleModuleWrapper wrapper(BadInverse{});
  EXPECT_FALSE(memcnn::is_invertible_module(wrapper, {2, 3}));
}

TEST(Errors, ModuleWithoutInverseIsNotInvertible) {
  EXPECT_FALSE(memcnn::is_invertible_module(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 2, 1)), {1, 2, 3, 3}));
  EXPECT_FALSE(memcnn::is_invertible_module(torch::nn::Linear(3, 3).ptr(), std::vector<int64_t>{2, 3}));
}

TEST(Errors, RebuiltInputOfWrongShape) {
  struct ShapeChangingImpl : torch::nn::Cloneable<ShapeChangingImpl> {
    ShapeChangingImpl() { reset(); }
    void reset() override { w = register_parameter("w", torch::ones({1})); }
    torch::Tensor forward(const torch::Tensor& x) { return x * w; }
    torch::Tensor inverse(const torch::Tensor& y) { return (y / w).narrow(0, 0, 1); }
    torch::Tensor w;
  };
  TORCH_MODULE(ShapeChanging);
  memcnn::InvertibleModuleWrapper wrapper(ShapeChanging{});
  auto x = torch::rand({2, 3}).requires_grad_();
  auto loss = wrapper->forward(x).sum();
  expect_error(error_message([&] { loss.backward(); }), "the module's inverse does not match its forward");
}

}  // namespace
