// compat.h against both shapes of c10::Allocator: the one this LibTorch has, and stand-ins
// declaring the 1.13-2.2 and the 2.3+ interfaces, so the branch a CI machine never compiles
// (it has one LibTorch) is compiled and run here too.

#include <memcnn/compat.h>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

// c10::Allocator as LibTorch 1.13 to 2.2 declare it.
struct AllocatorUpTo22 {
  virtual ~AllocatorUpTo22() = default;
  virtual c10::DataPtr allocate(std::size_t n) const = 0;
};

// c10::Allocator as LibTorch 2.3 and later declare it.
struct AllocatorFrom23 {
  virtual ~AllocatorFrom23() = default;
  virtual c10::DataPtr allocate(std::size_t n) = 0;
  virtual void copy_data(void* dest, const void* src, std::size_t count) const = 0;
};

void free_block(void* p) { std::free(p); }

template <typename Base>
struct MallocAllocator final : memcnn::compat::HostAllocatorBase<Base> {
  c10::DataPtr allocate_bytes(std::size_t n) const override {
    void* p = std::malloc(n);
    return c10::DataPtr(p, p, &free_block, c10::Device(c10::kCPU));
  }
};

static_assert(memcnn::compat::detail::allocate_is_const<AllocatorUpTo22>);
static_assert(!memcnn::compat::detail::allocate_is_const<AllocatorFrom23>);
static_assert(!memcnn::compat::detail::declares_copy_data<AllocatorUpTo22>::value);
static_assert(memcnn::compat::detail::declares_copy_data<AllocatorFrom23>::value);
// Not abstract: every pure virtual of each interface is overridden.
static_assert(!std::is_abstract_v<MallocAllocator<AllocatorUpTo22>>);
static_assert(!std::is_abstract_v<MallocAllocator<AllocatorFrom23>>);
static_assert(!std::is_abstract_v<MallocAllocator<c10::Allocator>>);

TEST(Compat, AllocatorWrittenOnceServesTheOldInterface) {
  MallocAllocator<AllocatorUpTo22> allocator;
  const AllocatorUpTo22& as_base = allocator;
  c10::DataPtr block = as_base.allocate(16);
  ASSERT_NE(block.get(), nullptr);
  EXPECT_EQ(block.get(), block.get_context());
}

TEST(Compat, AllocatorWrittenOnceServesTheNewInterface) {
  MallocAllocator<AllocatorFrom23> allocator;
  AllocatorFrom23& as_base = allocator;
  c10::DataPtr from = as_base.allocate(4 * sizeof(int));
  c10::DataPtr to = as_base.allocate(4 * sizeof(int));
  const std::vector<int> values{1, 2, 3, 4};
  std::memcpy(from.get(), values.data(), 4 * sizeof(int));
  as_base.copy_data(to.get(), from.get(), 4 * sizeof(int));
  EXPECT_EQ(std::memcmp(to.get(), values.data(), 4 * sizeof(int)), 0);
}

TEST(Compat, AllocatorWrittenOnceServesThisLibTorch) {
  MallocAllocator<c10::Allocator> allocator;
  c10::Allocator& as_base = allocator;
  c10::DataPtr block = as_base.allocate(8);
  ASSERT_NE(block.get(), nullptr);
  EXPECT_EQ(as_base.raw_deleter(), nullptr);
}

TEST(Compat, TakeDataPtrEmptiesTheStorage) {
  auto t = torch::arange(6, torch::kFloat32);
  auto* storage = t.storage().unsafeGetStorageImpl();
  const void* data = t.data_ptr();
  c10::DataPtr taken = memcnn::compat::take_data_ptr(storage);
  EXPECT_EQ(taken.get(), data);
  EXPECT_EQ(static_cast<const float*>(taken.get())[5], 5.0f);
  EXPECT_FALSE(static_cast<bool>(t.storage().data_ptr()));
}

}  // namespace
