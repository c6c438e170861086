#pragma once
// Everything that differs between LibTorch 1.13 (Debian 12) and LibTorch 2.x lives here,
// so the rest of the code base is written once against the stable API.

#include <torch/version.h>

#include <c10/core/Allocator.h>
#include <c10/core/StorageImpl.h>

#include <cstddef>

namespace memcnn {
namespace compat {

#if TORCH_VERSION_MAJOR >= 2
// 2.x: Allocator::allocate is non-const and copy_data is a new pure virtual.
#define MEMCNN_ALLOCATE_CONST
inline constexpr bool kAllocatorNeedsCopyData = true;
#else
#define MEMCNN_ALLOCATE_CONST const
inline constexpr bool kAllocatorNeedsCopyData = false;
#endif

// Calls allocate() on an allocator whose const-ness depends on the version.
inline c10::DataPtr allocate(c10::Allocator* allocator, std::size_t nbytes) {
  return allocator->allocate(nbytes);
}

// Moves the memory out of a storage, leaving it empty. (2.x made StorageImpl::data_ptr() const;
// set_data_ptr, which swaps, exists in both.)
inline c10::DataPtr take_data_ptr(c10::StorageImpl* storage) {
  return storage->set_data_ptr(c10::DataPtr(nullptr, storage->device()));
}

}  // namespace compat
}  // namespace memcnn
