// Every misuse gets an error that says what is wrong and how to fix it, of the c10::Error family
// member that Python maps to the fitting exception: c10::ValueError (ValueError) for a bad option
// or argument, c10::IndexError (IndexError) for a dimension out of range, c10::TypeError
// (TypeError) for a tensor type the operation cannot take, c10::Error (RuntimeError) otherwise.

#include "test_util.h"

#include <c10/util/Type.h>

#include <typeinfo>

using namespace memcnn_test;

namespace {

void expect_error(const std::string& message, const std::string& expected) {
  EXPECT_NE(message.find(expected), std::string::npos) << "message was: " << message;
}

// `body` throws exactly `Error` (not a subclass: c10::Error must not be a ValueError) with a message
// containing `expected`.
template <typename Error, typename Body>
void expect_error_of_type(Body&& body, const std::string& expected) {
  try {
    body();
  } catch (const c10::Error& error) {
    EXPECT_EQ(typeid(error), typeid(Error)) << "threw " << c10::demangle(typeid(error).name()) << ": "
                                            << error.what_without_backtrace();
    expect_error(error.what_without_backtrace(), expected);
    return;
  } catch (const std::exception& error) {
    ADD_FAILURE() << "threw " << c10::demangle(typeid(error).name()) << ", not a c10::Error: " << error.what();
    return;
  }
  ADD_FAILURE() << "threw nothing; expected an error saying: " << expected;
}

TEST(Errors, OddChannelCount) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2));
  expect_error_of_type<c10::Error>([&] { coupling->forward(torch::rand({2, 5, 4, 4})); },
                                   "has odd size 5, which cannot be split into two equal halves");
}

TEST(Errors, SplitDimOutOfRange) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2), memcnn::AdditiveCouplingOptions().split_dim(4));
  expect_error_of_type<c10::IndexError>([&] { coupling->forward(torch::rand({2, 4, 4, 4})); },
                                        "split_dim 4 is out of range");
}

TEST(Errors, MismatchedShapeFromF) {
  memcnn::AdditiveCoupling coupling(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 1)),
                                    torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 2, 1)));
  expect_error_of_type<c10::Error>(
      [&] { coupling->forward(torch::rand({2, 4, 4, 4})); },
      "F returned a tensor of shape [2, 3, 4, 4] for output 0, but the coupling needs shape [2, 2, 4, 4]");
}

TEST(Errors, MismatchedShapeForSigmoidAdapter) {
  memcnn::AffineCoupling coupling(ConvBnRelu(2), ConvBnRelu(2),
                                  memcnn::AffineCouplingOptions().adapter(memcnn::AffineAdapter::sigmoid));
  expect_error_of_type<c10::Error>([&] { coupling->forward(torch::rand({2, 4, 4, 4})); }, "sigmoid adapter needs");
}

TEST(Errors, FractionBitsOutOfRangeFailWhenTheModuleIsBuilt) {
  expect_error_of_type<c10::ValueError>(
      [] { memcnn::AdditiveCoupling(ConvBnRelu(2), memcnn::AdditiveCouplingOptions().exact(true).fraction_bits(53)); },
      "AdditiveCoupling: fraction_bits must lie in [0, 52] (at most 23 for float32 activations, 52 for float64), "
      "got 53; 16 is the default");
  expect_error_of_type<c10::ValueError>(
      [] { memcnn::FixedPointQuantize(memcnn::FixedPointQuantizeOptions().fraction_bits(-1)); },
      "FixedPointQuantize: fraction_bits must lie in [0, 52]");
}

TEST(Errors, FractionBitsBeyondTheActivationTypeFailWhenTheModuleRuns) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2), memcnn::AdditiveCouplingOptions().exact(true).fraction_bits(24));
  expect_error_of_type<c10::ValueError>([&] { coupling->forward(torch::zeros({1, 4, 2, 2})); },
                                        "AdditiveCoupling: fraction_bits must lie in [0, 23] for Float activations");
  expect_error_of_type<c10::ValueError>([] { memcnn::quantize_to_grid(torch::zeros({3}), 24); },
                                        "quantize_to_grid: fraction_bits must lie in [0, 23]");
}

TEST(Errors, ExactCouplingOnUnsupportedActivationTypeIsATypeError) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2), memcnn::AdditiveCouplingOptions().exact(true));
  coupling->to(torch::kBFloat16);
  expect_error_of_type<c10::TypeError>([&] { coupling->forward(torch::zeros({1, 4, 2, 2}, torch::kBFloat16)); },
                                       "need float32 or float64 activations, got BFloat16");
  expect_error_of_type<c10::TypeError>([] { memcnn::quantize_to_grid(torch::zeros({3}, torch::kInt), 8); },
                                       "need float32 or float64 activations, got Int");
}

TEST(Errors, InvalidLayerOptionsAreValueErrors) {
  expect_error_of_type<c10::ValueError>([] { memcnn::ChannelPermutation(0); },
                                        "ChannelPermutation: channels must be at least 1, got 0");
  expect_error_of_type<c10::ValueError>(
      [] { memcnn::InvertibleUpsampling(memcnn::InvertibleUpsamplingOptions().block_size(0)); },
      "InvertibleUpsampling: block_size must be at least 1, got 0");
}

TEST(Errors, LayerGivenTheWrongShapeIsARuntimeError) {
  expect_error_of_type<c10::Error>([] { memcnn::InvertibleConv1x1(4)->forward(torch::rand({1, 3, 2, 2})); },
                                   "expects 4 channels");
  expect_error_of_type<c10::Error>([] { memcnn::ActNorm(3)->forward(torch::rand({3})); }, "4 dimensions");
}

TEST(Errors, SingleTensorModuleGivenSeveralTensors) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(2));
  expect_error_of_type<c10::Error>(
      [&] { coupling->forward_multi({torch::rand({2, 4, 4, 4}), torch::rand({2, 4, 4, 4})}); },
      "F has the wrong forward signature for 2 input tensor(s)");
}

TEST(Errors, GCannotBeCopiedFromAnUncloneableF) {
  struct PlainImpl : torch::nn::Module {
    torch::Tensor forward(const torch::Tensor& x) { return x; }
  };
  TORCH_MODULE(Plain);
  expect_error_of_type<c10::Error>([] { memcnn::AdditiveCoupling coupling(Plain{}); },
                                   "G defaults to a deep copy of F, but F could not be cloned");
}

TEST(Errors, SameModuleAsFAndGIsAValueError) {
  torch::nn::Linear shared(2, 2);
  expect_error_of_type<c10::ValueError>([&] { memcnn::AdditiveCoupling coupling(shared, shared); },
                                        "F and G are the same module object");
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
  expect_error_of_type<c10::ValueError>(
      [] {
        memcnn::InvertibleModuleWrapper wrapper(make_coupling(Coupling::additive, 4),
                                                memcnn::InvertibleModuleWrapperOptions().num_bwd_passes(0));
      },
      "num_bwd_passes must be at least 1");
  // Options changed after construction: reset() checks them, and so does the next call.
  memcnn::InvertibleModuleWrapper wrapper(make_coupling(Coupling::additive, 4));
  wrapper->options.num_bwd_passes(0);
  expect_error_of_type<c10::ValueError>([&] { wrapper->reset(); }, "num_bwd_passes must be at least 1");
  expect_error_of_type<c10::ValueError>([&] { wrapper->forward(torch::rand({2, 4, 4, 4}).requires_grad_()); },
                                        "num_bwd_passes must be at least 1");
  expect_error_of_type<c10::ValueError>(
      [] { memcnn::Checkpointed(torch::nn::Linear(2, 2), memcnn::CheckpointOptions().num_bwd_passes(0)); },
      "num_bwd_passes must be at least 1");
}

TEST(Errors, CloneKeepsEveryModuleItsOwnTrainingMode) {
  memcnn::InvertibleModuleWrapper wrapper(make_coupling(Coupling::additive, 4));
  memcnn::Checkpointed checkpointed(torch::nn::Linear(2, 2));
  memcnn::InvertibleSequential chain(make_coupling(Coupling::additive, 4));
  for (torch::nn::Module* module : std::initializer_list<torch::nn::Module*>{wrapper.ptr().get(), checkpointed.ptr().get(), chain.ptr().get()}) {
    module->eval();
    module->children().front()->train();  // a training-mode block inside an eval container
    const auto copy = module->clone();
    EXPECT_FALSE(copy->is_training()) << module->name();
    EXPECT_TRUE(copy->children().front()->is_training()) << module->name();
  }
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
