// read_torch_file on any file, as memcnn-train --weights and memcnn::load_state_dict read what
// PyTorch wrote. What it reads is written back with write_torch_file and read again, and must come
// back the same; a state dict is also loaded, not strictly, into a small module.

#include "fuzz_target.h"

#include <memcnn/state_dict.h>

#include <torch/torch.h>

#include <filesystem>

namespace {

// Structural equality of what was read and what was read back (tensors by type, shape and values).
bool same(const c10::IValue& a, const c10::IValue& b) {
  if (a.tagKind() != b.tagKind()) return false;
  if (a.isTensor()) {
    const auto& x = a.toTensor();
    const auto& y = b.toTensor();
    return x.scalar_type() == y.scalar_type() && x.sizes() == y.sizes() &&
           (x.numel() == 0 || torch::equal(x.view(torch::kByte).flatten().contiguous(),
                                           y.view(torch::kByte).flatten().contiguous()) ||
            x.scalar_type() == torch::kBool);
  }
  if (a.isTuple() || a.isList()) {
    const auto x = a.isTuple() ? a.toTupleRef().elements().vec() : a.toListRef().vec();
    const auto y = b.isTuple() ? b.toTupleRef().elements().vec() : b.toListRef().vec();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!same(x[i], y[i])) return false;
    return true;
  }
  if (a.isGenericDict()) {
    const auto x = a.toGenericDict(), y = b.toGenericDict();
    if (x.size() != y.size()) return false;
    auto i = x.begin();
    auto j = y.begin();
    for (; i != x.end(); ++i, ++j)
      if (!same(i->key(), j->key()) || !same(i->value(), j->value())) return false;
    return true;
  }
  if (a.isDouble()) return a.toDouble() == b.toDouble() || (std::isnan(a.toDouble()) && std::isnan(b.toDouble()));
  return a == b;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = memcnn::fuzz;
  const std::string path = fuzz::scratch_dir() + "/input.pt";
  const std::string again = fuzz::scratch_dir() + "/again.pt";
  fuzz::write_input(path, data, size);
  fuzz::refusing_clearly([&] {
    const c10::IValue value = memcnn::read_torch_file(path);
    try {
      memcnn::write_torch_file(value, again);
    } catch (const c10::Error&) {
      return;  // dict keys of other types (None, floats) are read but not written
    }
    if (!same(value, memcnn::read_torch_file(again)))
      throw std::logic_error("a torch.save file read, written and read again changed");
    if (value.isGenericDict()) {
      torch::nn::Linear module(2, 3);
      memcnn::load_state_dict(*module, memcnn::read_state_dict(path), memcnn::LoadStateDictOptions().strict(false));
    }
  });
  std::filesystem::remove(path);
  std::filesystem::remove(again);
  return 0;
}
