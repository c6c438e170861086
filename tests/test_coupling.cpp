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

}  // namespace
