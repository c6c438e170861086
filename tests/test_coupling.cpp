// Couplings: MemCNN's equations, invertibility, G as a copy of F, module behaviour.

#include "test_util.h"

using namespace memcnn_test;

namespace {

// F(x) = x * w + b elementwise (w, b per channel), simple enough to write the equations by hand.
struct ChannelAffineImpl : torch::nn::Cloneable<ChannelAffineImpl> {
  explicit ChannelAffineImpl(int64_t channels, int64_t out_factor = 1) : channels(channels), out_factor(out_factor) { reset(); }
  void reset() override {
    w = register_parameter("w", torch::randn({1, channels * out_factor, 1, 1}));
    b = register_parameter("b", torch::randn({1, channels * out_factor, 1, 1}));
  }
  torch::Tensor forward(const torch::Tensor& x) { return x.repeat({1, out_factor, 1, 1}) * w + b; }
  int64_t channels, out_factor;
  torch::Tensor w, b;
};
TORCH_MODULE(ChannelAffine);

TEST(Coupling, AdditiveFollowsMemcnnEquations) {
  torch::manual_seed(0);
  ChannelAffine F(3), G(3);
  memcnn::AdditiveCoupling coupling(F, G);
  auto x = torch::randn({2, 6, 4, 4});
  auto x1 = x.narrow(1, 0, 3), x2 = x.narrow(1, 3, 3);
  auto y1 = x1 + F->forward(x2);
  auto y2 = x2 + G->forward(y1);
  EXPECT_TRUE(torch::allclose(coupling->forward(x), torch::cat({y1, y2}, 1)));
  EXPECT_TRUE(torch::allclose(coupling->inverse(coupling->forward(x)), x, 1e-5, 1e-6));
}

TEST(Coupling, AffineFollowsMemcnnEquationsForBothAdapters) {
  torch::manual_seed(0);
  {
    ChannelAffine F(3), G(3);
    memcnn::AffineCoupling coupling(F, G);
    auto x = torch::randn({2, 6, 4, 4});
    auto x1 = x.narrow(1, 0, 3), x2 = x.narrow(1, 3, 3);
    auto t = F->forward(x2);
    auto y1 = x1 * torch::exp(t) + t;
    auto u = G->forward(y1);
    auto y2 = x2 * torch::exp(u) + u;
    EXPECT_TRUE(torch::allclose(coupling->forward(x), torch::cat({y1, y2}, 1)));
  }
  {
    ChannelAffine F(3, 2), G(3, 2);
    memcnn::AffineCoupling coupling(F, G, memcnn::AffineCouplingOptions().adapter(memcnn::AffineAdapter::sigmoid));
    auto x = torch::randn({2, 6, 4, 4});
    auto x1 = x.narrow(1, 0, 3), x2 = x.narrow(1, 3, 3);
    auto h = F->forward(x2);
    auto y1 = x1 * torch::sigmoid(h.slice(1, 1, 6, 2) + 2.0) + h.slice(1, 0, 6, 2);
    auto k = G->forward(y1);
    auto y2 = x2 * torch::sigmoid(k.slice(1, 1, 6, 2) + 2.0) + k.slice(1, 0, 6, 2);
    EXPECT_TRUE(torch::allclose(coupling->forward(x), torch::cat({y1, y2}, 1)));
    EXPECT_TRUE(memcnn::is_invertible_module(coupling, {2, 6, 4, 4}, torch::kFloat64, 1e-10));
  }
}

TEST(Coupling, SplitDimIsHonoured) {
  torch::manual_seed(0);
  memcnn::AdditiveCoupling coupling(torch::nn::Linear(3, 3), torch::nn::Linear(3, 3),
                                    memcnn::AdditiveCouplingOptions().split_dim(-1));
  auto x = torch::randn({5, 6});
  auto y = coupling->forward(x);
  EXPECT_TRUE(torch::equal(y.narrow(1, 0, 3), x.narrow(1, 0, 3) + coupling->F().forward(x.narrow(1, 3, 3))));
  EXPECT_TRUE(memcnn::is_invertible_module(coupling, {5, 6}));
}

TEST(Coupling, GDefaultsToAnIndependentCopyOfF) {
  memcnn::AdditiveCoupling coupling(ConvBnRelu(4));
  const auto F = coupling->F().ptr()->parameters();
  const auto G = coupling->G().ptr()->parameters();
  ASSERT_EQ(F.size(), G.size());
  for (std::size_t i = 0; i < F.size(); ++i) {
    EXPECT_TRUE(torch::equal(F[i], G[i]));
    EXPECT_NE(F[i].data_ptr(), G[i].data_ptr());
  }
  EXPECT_EQ(coupling->parameters().size(), 2 * F.size());
}

TEST(Coupling, AllKindsAreInvertible) {
  for (auto kind : {Coupling::additive, Coupling::affine}) {
    auto single = make_coupling(kind, 8);
    EXPECT_TRUE(memcnn::is_invertible_module(single, {{2, 8, 6, 6}})) << name_of(kind);
    auto multi = make_coupling(kind, 8, 2);
    EXPECT_TRUE(memcnn::is_invertible_module(multi, {{2, 8, 6, 6}, {2, 8, 6, 6}})) << name_of(kind);
  }
}

TEST(Coupling, IsInvertibleLeavesNoTrace) {
  torch::manual_seed(0);
  auto coupling = make_coupling(Coupling::additive, 8);
  std::vector<torch::Tensor> before;
  for (const auto& b : coupling->buffers()) before.push_back(b.clone());
  torch::manual_seed(7);
  EXPECT_TRUE(memcnn::is_invertible_module(coupling, {{2, 8, 6, 6}}));
  const auto next = torch::rand({1});
  torch::manual_seed(7);
  EXPECT_TRUE(torch::equal(next, torch::rand({1}))) << "random stream untouched";
  const auto after = coupling->buffers();
  for (std::size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i], after[i]));
}

TEST(Coupling, CloneMoveAndPrint) {
  memcnn::AffineCoupling coupling(ConvBnRelu(4), ConvBnRelu(4));
  auto copy = std::dynamic_pointer_cast<memcnn::AffineCouplingImpl>(coupling->clone());
  ASSERT_NE(copy, nullptr);
  EXPECT_NE(copy->F().ptr(), coupling->F().ptr());
  coupling->to(torch::kFloat64);
  for (const auto& p : coupling->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat64);
  std::ostringstream text;
  text << *coupling;
  EXPECT_NE(text.str().find("memcnn::AffineCoupling(split_dim=1, adapter=naive)"), std::string::npos) << text.str();
}

// Parameters equal to the original's but in their own memory.
void expect_parameters_copied(const torch::nn::Module& original, const torch::nn::Module& copy) {
  const auto a = original.named_parameters(), b = copy.named_parameters();
  ASSERT_EQ(a.keys(), b.keys());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].value(), b[i].value())) << a[i].key();
    EXPECT_NE(a[i].value().data_ptr(), b[i].value().data_ptr()) << a[i].key() << " is shared";
  }
}

// Options, training modes (the coupling's and each submodule's) and outputs carry over; the
// layer suite of test_layers.cpp checks parameters and buffers of every coupling kind too.
TEST(Coupling, CloneRoundTrips) {
  torch::manual_seed(0);
  memcnn::AdditiveCoupling additive(ConvBnRelu(2),
                                    memcnn::AdditiveCouplingOptions().split_dim(1).exact(true).fraction_bits(12));
  memcnn::AffineCoupling affine(ChannelAffine(2, 2), ChannelAffine(2, 2),
                                memcnn::AffineCouplingOptions().adapter(memcnn::AffineAdapter::sigmoid));
  const auto x = memcnn::quantize_to_grid(torch::randn({3, 4, 5, 5}), 12);
  additive->forward(x);  // BatchNorm's running statistics away from their initial values
  additive->eval();
  affine->G().ptr()->eval();  // a submodule in another mode than its coupling
  {
    auto copy = std::dynamic_pointer_cast<memcnn::AdditiveCouplingImpl>(additive->clone());
    ASSERT_NE(copy, nullptr);
    EXPECT_EQ(copy->options.split_dim(), 1);
    EXPECT_TRUE(copy->options.exact());
    EXPECT_EQ(copy->options.fraction_bits(), 12);
    EXPECT_FALSE(copy->is_training());
    EXPECT_FALSE(copy->F().ptr()->is_training());
    expect_parameters_copied(*additive, *copy);
    EXPECT_TRUE(torch::equal(copy->forward(x), additive->forward(x)));
  }
  {
    auto copy = std::dynamic_pointer_cast<memcnn::AffineCouplingImpl>(affine->clone());
    ASSERT_NE(copy, nullptr);
    EXPECT_EQ(copy->options.split_dim(), 1);
    EXPECT_EQ(copy->options.adapter(), memcnn::AffineAdapter::sigmoid);
    EXPECT_TRUE(copy->is_training());
    EXPECT_TRUE(copy->F().ptr()->is_training());
    EXPECT_FALSE(copy->G().ptr()->is_training());
    expect_parameters_copied(*affine, *copy);
    EXPECT_TRUE(torch::equal(copy->forward(x), affine->forward(x)));
    // Changing the copy leaves the original alone.
    copy->options.split_dim(2);
    EXPECT_EQ(affine->options.split_dim(), 1);
  }
}

// A Cloneable parent with LibTorch's own clone() builds a fresh coupling in reset() and copies
// the original into it (Cloneable::clone_, an assignment): the copy must not share F or G.
TEST(Coupling, CloneInsideACloneableParent) {
  struct ParentImpl : torch::nn::Cloneable<ParentImpl> {
    ParentImpl() { reset(); }
    void reset() override { coupling = register_module("coupling", memcnn::AdditiveCoupling(ConvBnRelu(2))); }
    memcnn::AdditiveCoupling coupling{nullptr};
  };
  TORCH_MODULE(Parent);
  torch::manual_seed(1);
  Parent parent;
  parent->eval();
  auto copy = std::dynamic_pointer_cast<ParentImpl>(parent->clone());
  ASSERT_NE(copy, nullptr);
  expect_parameters_copied(*parent, *copy);
  const auto x = torch::randn({2, 4, 3, 3});
  auto cloned_coupling = copy->named_children()["coupling"]->as<memcnn::AdditiveCouplingImpl>();
  ASSERT_NE(cloned_coupling, nullptr);
  EXPECT_TRUE(torch::equal(cloned_coupling->forward(x), parent->coupling->forward(x)));
  EXPECT_EQ(cloned_coupling->named_children()["F"], cloned_coupling->F().ptr()) << "F registered is F used";
}

// Options are read where they are used; reset() validates them and registers F and G again.
TEST(Coupling, ResetAfterChangingSplitDimSplitsOnTheNewDim) {
  torch::manual_seed(2);
  torch::nn::Linear F(3, 3), G(3, 3);
  memcnn::AdditiveCoupling coupling(F, G);
  const auto x = torch::randn({2, 4, 6});
  EXPECT_THROW(coupling->forward(x), c10::Error) << "halves of [2, 2, 6] on dim 1: F takes 3 features";
  coupling->options.split_dim(2);
  coupling->reset();
  EXPECT_EQ(coupling->split_dim(), 2);
  const auto x1 = x.narrow(2, 0, 3), x2 = x.narrow(2, 3, 3);
  const auto y1 = x1 + F->forward(x2);
  const auto y2 = x2 + G->forward(y1);
  EXPECT_TRUE(torch::allclose(coupling->forward(x), torch::cat({y1, y2}, 2)));
  EXPECT_TRUE(memcnn::is_invertible_module(coupling, {2, 4, 6}));
  EXPECT_EQ(coupling->F().ptr(), F.ptr()) << "reset() keeps the user's F";
  EXPECT_EQ(coupling->named_children()["F"], F.ptr());
  EXPECT_EQ(coupling->parameters().size(), 4u);
}

TEST(Coupling, ResetRegistersAReplacedFAndChecksTheOptions) {
  memcnn::AdditiveCoupling coupling(torch::nn::Linear(2, 2), torch::nn::Linear(2, 2));
  torch::nn::Linear other(2, 2);
  coupling->F() = torch::nn::AnyModule(other);
  coupling->reset();
  EXPECT_EQ(coupling->named_children()["F"], other.ptr());
  EXPECT_EQ(coupling->parameters().size(), 4u);
  coupling->options.fraction_bits(64);
  EXPECT_THROW(coupling->reset(), c10::ValueError);
  coupling->options.fraction_bits(16);
  coupling->G() = coupling->F();
  EXPECT_THROW(coupling->reset(), c10::ValueError) << "F and G the same module";
}

}  // namespace
