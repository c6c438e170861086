#pragma once
// Everything that differs between LibTorch 1.13 (Debian 12) and LibTorch 2.x lives here,
// so the rest of the code base is written once against the stable API.

#include <torch/version.h>

#include <c10/core/Allocator.h>
#include <c10/core/StorageImpl.h>

#include <cstddef>

namespace memcnn {
namespace compat {

// For a class deriving c10::Allocator: 2.x made allocate() non-const and added copy_data()
// as a pure virtual. Write `allocate(size_t) MEMCNN_ALLOCATE_CONST override` and put
// MEMCNN_ALLOCATOR_COPY_DATA in the class body.
#if TORCH_VERSION_MAJOR >= 2
#define MEMCNN_ALLOCATE_CONST
#define MEMCNN_ALLOCATOR_COPY_DATA                                                   \
  void copy_data(void* dest, const void* src, std::size_t count) const override { \
    default_copy_data(dest, src, count);                                           \
  }
#else
#define MEMCNN_ALLOCATE_CONST const
#define MEMCNN_ALLOCATOR_COPY_DATA
#endif

// Moves the memory out of a storage, leaving it empty. (2.x made StorageImpl::data_ptr() const;
// set_data_ptr, which swaps, exists in both.)
inline c10::DataPtr take_data_ptr(c10::StorageImpl* storage) {
  return storage->set_data_ptr(c10::DataPtr(nullptr, storage->device()));
}

}  // namespace compat
}  // namespace memcnn
