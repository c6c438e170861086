#pragma once
// Internal: freeing a tensor's storage in forward and refilling it in backward, the only place
// memcnn reaches below LibTorch's public tensor API. The assumptions it rests on (LibTorch 1.13
// and 2.x alike) are written beside the code in storage.cpp.

#include <c10/core/Storage.h>
#include <c10/core/TensorImpl.h>
#include <torch/types.h>

namespace memcnn {
namespace detail {

// The tensor is the only view of its storage: offset 0, dense, exactly its bytes.
bool owns_whole_storage(const torch::Tensor& t);

bool same_storage(const torch::Tensor& a, const torch::Tensor& b);

// Freeing in two steps, so that a call freeing several inputs can prepare them all (the part
// that allocates and may throw) before freeing any (the part that cannot fail): an exception
// then leaves every input as it was.
class PreparedFree {
 public:
  // Allocates the storage-less stand-in; nothing changes yet. `t` must own its whole storage.
  explicit PreparedFree(const torch::Tensor& t);
  // Detaches the tensor from its storage (every alias of the storage sees it empty) and returns
  // the storage for refill_storage. Does not throw.
  c10::Storage commit() noexcept;

 private:
  torch::Tensor tensor_;
  c10::intrusive_ptr<c10::TensorImpl> storageless_;
};

// Puts `rebuilt`'s values into the freed storage and the storage back under `freed`, without
// bumping its version counter (autograd nodes that saved the tensor before it was freed still
// accept it). `rebuilt` must already have been checked against `freed`'s shape and type.
void refill_storage(const torch::Tensor& freed, const c10::Storage& storage, torch::Tensor rebuilt);

}  // namespace detail
}  // namespace memcnn
