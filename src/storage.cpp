// Freeing and refilling storage. What this relies on, checked on LibTorch 1.13 and the 2.x API:
// - Tensor::set_() does not free memory another alias still holds, so freeing happens at the
//   storage: StorageImpl::set_data_ptr_noswap with an empty DataPtr and set_nbytes(0), which
//   every alias of the storage sees at once (MemCNN's storage().resize_(0)).
// - Tensor::set_data() swaps a tensor's metadata (storage, sizes, strides) but keeps its autograd
//   metadata and version counter; for data of the same type, device and layout it performs no
//   check that can fail, so committing a prepared free does not throw.
// - A TensorImpl with set_storage_access_should_throw() raises on tensor.storage(), so a freed
//   tensor used again by mistake raises instead of reading freed memory.
// - Moving the rebuilt DataPtr into the original StorageImpl refills it for every alias without
//   touching version counters (an in-place copy_ would bump them and make autograd nodes that
//   saved the tensor reject it).
// - compat::take_data_ptr hides the one call whose name differs between versions.

#include "storage.h"

#include "memcnn/compat.h"

#include <torch/torch.h>

namespace memcnn {
namespace detail {
namespace {

// What a freed tensor is until its refill: no storage, and asking for it (tensor.storage(), as
// Python code does to check for freed inputs) raises instead of handing out a null storage.
struct FreedTensorImpl : c10::TensorImpl {
  FreedTensorImpl(c10::DispatchKeySet keys, const caffe2::TypeMeta dtype, c10::optional<c10::Device> device)
      : c10::TensorImpl(keys, dtype, device) {
    set_storage_access_should_throw();
  }
};

}  // namespace

bool owns_whole_storage(const torch::Tensor& t) {
  return t.has_storage() && t.storage_offset() == 0 && t.is_non_overlapping_and_dense() &&
         t.storage().nbytes() == static_cast<size_t>(t.numel()) * t.element_size();
}

bool same_storage(const torch::Tensor& a, const torch::Tensor& b) {
  return a.has_storage() && b.has_storage() && a.storage().is_alias_of(b.storage());
}

PreparedFree::PreparedFree(const torch::Tensor& t) : tensor_(t) {
  TORCH_CHECK(owns_whole_storage(t), "memcnn internal: only a tensor that owns its whole storage can be freed");
  auto storageless = c10::make_intrusive<FreedTensorImpl>(t.key_set(), t.dtype(), t.device());
  storageless->set_sizes_and_strides(t.sizes(), t.strides());
  storageless_ = std::move(storageless);
}

c10::Storage PreparedFree::commit() noexcept {
  c10::Storage storage = tensor_.storage();
  tensor_.set_data(torch::Tensor::wrap_tensor_impl(std::move(storageless_)));
  storage.unsafeGetStorageImpl()->set_data_ptr_noswap(c10::DataPtr(nullptr, storage.device()));
  storage.unsafeGetStorageImpl()->set_nbytes(0);
  return storage;
}

void refill_storage(const torch::Tensor& freed, const c10::Storage& storage, torch::Tensor rebuilt) {
  const bool can_steal = rebuilt.strides() == freed.strides() && owns_whole_storage(rebuilt) &&
                         rebuilt.storage().use_count() == 1;
  if (!can_steal) {
    torch::NoGradGuard no_grad;
    rebuilt = torch::empty_strided(freed.sizes(), freed.strides(), freed.options()).copy_(rebuilt);
  }
  torch::Tensor restored = torch::empty({0}, freed.options());
  auto* source = rebuilt.storage().unsafeGetStorageImpl();
  auto* target = storage.unsafeGetStorageImpl();
  target->set_data_ptr_noswap(compat::take_data_ptr(source));
  target->set_nbytes(static_cast<size_t>(freed.numel()) * freed.element_size());
  source->set_nbytes(0);
  restored.set_(storage, /*storage_offset=*/0, freed.sizes(), freed.strides());
  freed.set_data(restored);
}

}  // namespace detail

bool is_freed(const torch::Tensor& tensor) {
  return tensor.defined() && tensor.numel() > 0 && (!tensor.has_storage() || tensor.storage().data() == nullptr);
}

}  // namespace memcnn
