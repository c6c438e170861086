#pragma once
/// @file
/// Everything that differs between LibTorch 1.13 (Debian 12) and LibTorch 2.x lives here
/// (namespace memcnn::compat), so the rest of the code base is written once against the stable
/// API.
///
/// Two ways of telling the versions apart, by what can be detected:
/// - class shapes (the allocator's interface, below) are detected from the declarations
///   themselves, since a version guess is wrong for some release in between;
/// - functions that were renamed or added (autocast's device-generic API in 2.4,
///   scaled_dot_product_attention in 2.0) cannot be detected that way without naming them, so
///   src/compat.cpp picks them by TORCH_VERSION_MAJOR / TORCH_VERSION_MINOR (`torch/version.h`),
///   out of the headers, where only compat.cpp has to be right about it.

#include <c10/core/Allocator.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/core/StorageImpl.h>

#include <cstddef>
#include <cstring>
#include <type_traits>

namespace at {
class Tensor;
}  // namespace at

namespace memcnn {
/// What differs between LibTorch versions, written once for all of them (compat.h).
namespace compat {
namespace detail {

// LibTorch up to 2.2 declares `DataPtr allocate(size_t) const`; 2.3 dropped the const.
template <typename Allocator>
constexpr bool allocate_is_const =
    std::is_same_v<decltype(&Allocator::allocate), c10::DataPtr (Allocator::*)(std::size_t) const>;

// LibTorch 2.3 added the pure virtual `void copy_data(void*, const void*, size_t) const`.
template <typename Allocator, typename = void>
struct declares_copy_data : std::false_type {};
template <typename Allocator>
struct declares_copy_data<Allocator, std::void_t<decltype(&Allocator::copy_data)>> : std::true_type {};

template <typename Base, bool AllocateIsConst>
struct AllocateWithBaseConstness;

template <typename Base>
struct AllocateWithBaseConstness<Base, true> : Base {
  c10::DataPtr allocate(std::size_t nbytes) const override { return allocate_bytes(nbytes); }
  virtual c10::DataPtr allocate_bytes(std::size_t nbytes) const = 0;
};

template <typename Base>
struct AllocateWithBaseConstness<Base, false> : Base {
  c10::DataPtr allocate(std::size_t nbytes) override { return allocate_bytes(nbytes); }
  virtual c10::DataPtr allocate_bytes(std::size_t nbytes) const = 0;
};

template <typename Base, bool DeclaresCopyData>
struct WithHostCopyData : AllocateWithBaseConstness<Base, allocate_is_const<Base>> {};

template <typename Base>
struct WithHostCopyData<Base, true> : AllocateWithBaseConstness<Base, allocate_is_const<Base>> {
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

}  // namespace detail

/// Base class of an allocator of host (CPU) memory, written once for every LibTorch version:
/// implement `c10::DataPtr allocate_bytes(std::size_t) const override`; allocate() is declared
/// with whatever constness c10::Allocator has, and copy_data() is provided (memcpy) where
/// c10::Allocator declares it. `Base` is only ever changed by the test that checks both shapes.
template <typename Base = c10::Allocator>
using HostAllocatorBase = detail::WithHostCopyData<Base, detail::declares_copy_data<Base>::value>;

/// Moves the memory out of a storage, leaving it empty (a null pointer on the same device).
/// (2.x made StorageImpl::data_ptr() const and added mutable_data_ptr(); set_data_ptr, which
/// swaps, exists in both.)
inline c10::DataPtr take_data_ptr(c10::StorageImpl* storage) {
  return storage->set_data_ptr(c10::DataPtr(nullptr, storage->device()));
}

/// This thread's autocast (mixed precision) settings for CPU and CUDA. LibTorch 2.4 replaced
/// the per-device functions (is_cpu_enabled, get_autocast_gpu_dtype, ...) with device-generic
/// ones taking a DeviceType; src/compat.cpp calls whichever this LibTorch has.
struct AutocastState {
  bool cpu_enabled = false;                                ///< autocast on for CPU
  c10::ScalarType cpu_dtype = c10::ScalarType::BFloat16;  ///< CPU's lower precision
  bool cuda_enabled = false;                               ///< autocast on for CUDA
  c10::ScalarType cuda_dtype = c10::ScalarType::Half;     ///< CUDA's lower precision

  /// This thread's settings now.
  static AutocastState current();
  /// Makes these the thread's settings.
  void apply() const;
};

/// Multi-head attention weights applied to values: softmax(q k^T / sqrt(d)) v over the last two
/// dimensions of q, k, v ([..., tokens, d], d = q.size(-1)), with dropout of probability
/// `dropout_p` on the attention weights (pass 0 outside training). LibTorch 2.x computes it with
/// at::scaled_dot_product_attention (its fused kernels where the device has them); 1.13, which has
/// none, with the explicit formula. Either draws its dropout from the default generator of the
/// tensors' device, which memory-saving wrappers replay (preserve_rng_state).
at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        double dropout_p);

}  // namespace compat
}  // namespace memcnn
