// The memory-saving mechanism, in one place.
//
// Forward runs the block without an autograd graph, then frees the storage of each input that
// can be rebuilt exactly (every alias of it sees the storage go). Backward rebuilds those
// inputs from the saved outputs through the opposite direction of the block, refills the
// original storage in place (so aliases and earlier nodes that saved the input see the values
// again, without a version bump), recomputes the block with a graph and differentiates it.
//
// What makes this safe:
// - Only tensors that own their whole dense storage, shared with no other tensor, are freed;
//   views, and outputs that another operation saved for its backward, are kept. The caller's
//   handle is detached from its storage too, so using a freed input again in forward raises
//   "Cannot access data pointer of Tensor that doesn't have storage" instead of reading freed
//   memory.
// - Exact zeros are remembered (one bit per element) and restored as soon as the input is
//   rebuilt, before the block is differentiated: an operation that saved the input (a leaky
//   ReLU, say) masks on x > 0 in its backward, and a rebuilt +1e-17 instead of 0 would flip it.
// - Buffers (BatchNorm running statistics) are restored after the rebuild and recompute, so
//   they end as after one plain forward.
// - With preserve_rng_state the random numbers of forward are replayed, per sub-module.
// - The block runs again under forward's autocast (mixed precision) settings; gradients are
//   taken under backward's (autocast.h).
//
// Blocks that implement FusedBackward (couplings) rebuild and differentiate in one pass
// instead: each sub-module runs once in backward, with its graph, rather than twice.
//
// With drift_tolerance set, backward also checks each rebuild (one more forward) and warns.
//
// Blocks that rebuild exactly (exact couplings, fixed_point.h) are held to it: forward runs them
// under an ExactRebuildCheck and keeps the input of a call whose steps could not all be undone
// bit for bit (values beyond the grid's range, inputs off the grid), so that call's gradients
// come from a plain recompute; backward compares each rebuilt input's bit checksum with the
// freed one's and raises on a difference (F or G did not recompute deterministically), instead
// of differentiating at wrong values. Their exact zeros need no remembering.

#include "describe.h"
#include "invertible_function.h"

#include "memcnn/autocast.h"
#include "memcnn/compat.h"
#include "memcnn/fixed_point.h"
#include "memcnn/log.h"
#include "memcnn/rng.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <optional>
#include <sstream>

namespace memcnn {
namespace detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What one memory-saving call keeps between forward and backward.
struct SavedCall : torch::CustomClassHolder {
  std::shared_ptr<InvertibleModule> fn;
  SavingOptions options;
  int64_t passes_left = 0;
  std::vector<torch::Tensor> inputs;   // the caller's tensors; freed ones hold no bytes
  std::vector<c10::Storage> freed_storage;  // per input: the storage emptied by forward, if any
  std::vector<torch::Tensor> zero_masks;     // per freed input with exact zeros: their positions, packed
  bool exact = false;                        // fn rebuilds exactly: freed inputs are checksummed
  std::vector<int64_t> checksums;            // per freed input of an exact block: bit_checksum
  std::vector<bool> input_requires_grad;
  std::vector<torch::Tensor> outputs;  // detached aliases of what the caller received
  std::unique_ptr<RngTape> rng_tape;
  compat::AutocastState autocast;  // forward's; backward reruns the block under it

  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& xs, bool inverse_direction) {
    RngTapeScope scope(rng_tape.get());
    return inverse_direction ? fn->inverse_multi(xs) : fn->forward_multi(xs);
  }

  void release() {
    inputs.clear();
    outputs.clear();
    freed_storage.clear();
    zero_masks.clear();
    checksums.clear();
    rng_tape.reset();
  }
};

bool owns_whole_storage(const torch::Tensor& t) {
  return t.has_storage() && t.storage_offset() == 0 && t.is_non_overlapping_and_dense() &&
         t.storage().nbytes() == static_cast<size_t>(t.numel()) * t.element_size();
}

bool same_storage(const torch::Tensor& a, const torch::Tensor& b) {
  return a.has_storage() && b.has_storage() && a.storage().is_alias_of(b.storage());
}

// Why input i must be kept, or nullptr when freeing it is safe. `own_aliases` counts the
// aliases of its storage that memcnn itself holds (the saved output of the block before).
const char* reason_to_keep(std::size_t i, const std::vector<torch::Tensor>& inputs,
                           const std::vector<torch::Tensor>& outputs, long own_aliases) {
  const auto& x = inputs[i];
  if (!x.defined() || x.numel() == 0) return "it is empty";
  if (!owns_whole_storage(x)) return "it is a view or does not own its whole storage";
  if (static_cast<long>(x.storage().use_count()) > 1 + own_aliases) {
    return "another tensor shares its storage (a view of it, or an operation that saved it for "
           "its backward)";
  }
  for (std::size_t j = 0; j < inputs.size(); ++j) {
    if (j != i && inputs[j].defined() && same_storage(x, inputs[j])) return "it shares storage with another input";
  }
  for (const auto& y : outputs) {
    if (y.defined() && same_storage(x, y)) return "the block returned an alias of it";
  }
  return nullptr;
}

// What a freed tensor is until its refill: no storage, and asking for it (tensor.storage(), as
// Python code does to check for freed inputs) raises instead of handing out a null storage.
struct FreedTensorImpl : c10::TensorImpl {
  FreedTensorImpl(c10::DispatchKeySet keys, const caffe2::TypeMeta dtype, c10::optional<c10::Device> device)
      : c10::TensorImpl(keys, dtype, device) {
    set_storage_access_should_throw();
  }
};

// Empties the storage and detaches the tensor from it; returns the storage for refilling.
c10::Storage free_storage(const torch::Tensor& t) {
  c10::Storage storage = t.storage();
  storage.unsafeGetStorageImpl()->set_data_ptr_noswap(c10::DataPtr(nullptr, t.device()));
  storage.unsafeGetStorageImpl()->set_nbytes(0);
  auto storageless = c10::make_intrusive<FreedTensorImpl>(t.key_set(), t.dtype(), t.device());
  storageless->set_sizes_and_strides(t.sizes(), t.strides());
  t.set_data(torch::Tensor::wrap_tensor_impl(std::move(storageless)));
  return storage;
}

// Puts the rebuilt values into the freed storage, and the storage back under the tensor,
// without bumping its version counter.
void refill_storage(const torch::Tensor& freed, const c10::Storage& storage, torch::Tensor rebuilt) {
  TORCH_CHECK(rebuilt.sizes() == freed.sizes() && rebuilt.scalar_type() == freed.scalar_type() &&
                  rebuilt.device() == freed.device(),
              "InvertibleModuleWrapper: the rebuilt input has shape ", rebuilt.sizes(), " ",
              rebuilt.scalar_type(), " on ", rebuilt.device(), ", but the freed input had shape ",
              freed.sizes(), " ", freed.scalar_type(), " on ", freed.device(),
              "; the module's inverse does not match its forward");
  const bool can_steal = rebuilt.strides() == freed.strides() && owns_whole_storage(rebuilt) &&
                         rebuilt.storage().use_count() == 1;
  if (!can_steal) {
    torch::NoGradGuard no_grad;
    rebuilt = torch::empty_strided(freed.sizes(), freed.strides(), freed.options()).copy_(rebuilt);
  }
  auto* source = rebuilt.storage().unsafeGetStorageImpl();
  auto* target = storage.unsafeGetStorageImpl();
  target->set_data_ptr_noswap(compat::take_data_ptr(source));
  target->set_nbytes(static_cast<size_t>(freed.numel()) * freed.element_size());
  source->set_nbytes(0);
  torch::Tensor restored = torch::empty({0}, freed.options());
  restored.set_(storage, /*storage_offset=*/0, freed.sizes(), freed.strides());
  freed.set_data(restored);
}

// Positions of exact zeros, one bit each, in the tensor's logical order; undefined without any.
torch::Tensor pack_zero_positions(const torch::Tensor& x) {
  if (x.count_nonzero().item<int64_t>() == x.numel()) return {};
  auto bits = x.eq(0).reshape(-1).to(torch::kUInt8);
  const int64_t n = bits.numel(), padded = (n + 7) / 8 * 8;
  if (padded != n) bits = torch::cat({bits, torch::zeros({padded - n}, bits.options())});
  const auto weights = torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, bits.options());
  return (bits.view({-1, 8}) * weights).sum(1).to(torch::kUInt8);
}

torch::Tensor unpack_zero_positions(const torch::Tensor& packed, torch::IntArrayRef sizes) {
  const auto weights = torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, packed.options());
  const int64_t n = c10::multiply_integers(sizes);
  return packed.unsqueeze(1).bitwise_and(weights).ne(0).view(-1).narrow(0, 0, n).view(sizes);
}

std::atomic<int64_t>& exact_fallback_count() {
  static std::atomic<int64_t> count{0};
  return count;
}

using detail::describe;

// Restores buffers (BatchNorm running statistics) to their values at construction.
class BufferSnapshot {
 public:
  explicit BufferSnapshot(torch::nn::Module& module) {
    torch::NoGradGuard no_grad;
    for (auto& buffer : module.buffers()) {
      if (buffer.defined()) saved_.emplace_back(buffer, buffer.clone());
    }
  }
  void restore() {
    torch::NoGradGuard no_grad;
    for (auto& entry : saved_) entry.first.copy_(entry.second);
  }

 private:
  std::vector<std::pair<torch::Tensor, torch::Tensor>> saved_;
};

class InvertibleFunction : public torch::autograd::Function<InvertibleFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<SavedCall> call,
                               torch::TensorList inputs, torch::TensorList /*parameters*/) {
    call->inputs = inputs.vec();
    call->autocast = compat::AutocastState::current();
    for (const auto& x : call->inputs) call->input_requires_grad.push_back(x.defined() && x.requires_grad());
    if (call->options.preserve_rng_state) {
      call->rng_tape = std::make_unique<RngTape>(cuda_devices_of(call->inputs));
      call->rng_tape->begin_recording();
    }
    call->exact = call->fn->rebuilds_exactly() && !call->options.keep_input;
    std::vector<torch::Tensor> outputs;
    std::optional<std::string> inexact_step;
    {
      AutocastCacheOff no_cache;  // this run has no graph
      std::optional<ExactRebuildCheck> check;
      if (call->exact) check.emplace();
      outputs = call->run(call->inputs, call->options.inverse_direction);
      if (check && !check->all_exact()) inexact_step = check->first_failure();
    }
    for (const auto& y : outputs) call->outputs.push_back(y.defined() ? y.detach() : y);
    if (inexact_step) {
      keep_inexact_call(*call, *inexact_step);
    } else if (!call->options.keep_input) {
      free_inputs(*call, outputs);
    }
    ctx->saved_data["call"] = c10::IValue::make_capsule(call);
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto call = c10::static_intrusive_pointer_cast<SavedCall>(ctx->saved_data["call"].toCapsule());
    const auto& options = call->options;
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "InvertibleModuleWrapper does not support double backward (create_graph=true); "
                "construct the wrapper with .disable(true) to differentiate twice");
    TORCH_CHECK(call->passes_left > 0,
                "InvertibleModuleWrapper: backward ran through this block more often than "
                "num_bwd_passes=", options.num_bwd_passes, " allows. Construct the wrapper with "
                "InvertibleModuleWrapperOptions().num_bwd_passes(", options.num_bwd_passes + 1,
                ") (or more) to backpropagate through the same graph several times");
    for (std::size_t i = 0; i < call->outputs.size(); ++i) {
      TORCH_CHECK(!is_freed(call->outputs[i]),
                  "InvertibleModuleWrapper: output ", i, " of this block was freed by the block "
                  "that consumed it and was never rebuilt; that consumer must take part in the "
                  "same backward pass (or keep its input)");
    }
    --call->passes_left;

    const auto devices = cuda_devices_of(call->inputs);
    ForwardAutocastScope autocast(call->autocast);
    RngStateGuard surrounding_rng(options.preserve_rng_state, devices);
    BufferSnapshot buffers(*call->fn);
    auto* fused = options.fused_backward ? dynamic_cast<FusedBackward*>(call->fn.get()) : nullptr;
    variable_list grads;
    const bool rebuilds = any_freed(*call);
    if (fused != nullptr && rebuilds) {
      grads = rebuild_and_differentiate(*call, *fused, grad_outputs);
    } else {
      rebuild_freed_inputs(*call);
      grads = recompute_and_differentiate(*call, grad_outputs);
    }
    if (rebuilds && options.drift_tolerance > 0) check_drift(*call);
    buffers.restore();
    if (call->passes_left == 0) call->release();

    variable_list result{torch::Tensor()};  // for the SavedCall argument
    result.insert(result.end(), grads.begin(), grads.end());
    return result;
  }

 private:
  static void free_inputs(SavedCall& call, const std::vector<torch::Tensor>& outputs) {
    call.freed_storage.resize(call.inputs.size());
    call.zero_masks.resize(call.inputs.size());
    for (std::size_t i = 0; i < call.inputs.size(); ++i) {
      const auto& x = call.inputs[i];
      const bool from_memcnn =
          x.defined() && dynamic_cast<torch::autograd::CppNode<InvertibleFunction>*>(x.grad_fn().get()) != nullptr;
      if (const char* reason = reason_to_keep(i, call.inputs, outputs, from_memcnn ? 1 : 0)) {
        std::ostringstream message;
        message << "InvertibleModuleWrapper keeps input " << i << " (shape "
                << call.inputs[i].sizes() << "): " << reason;
        log(LogLevel::Debug, message.str());
        continue;
      }
      if (call.exact) {
        call.checksums.resize(call.inputs.size());
        call.checksums[i] = bit_checksum(x);
      } else {
        call.zero_masks[i] = pack_zero_positions(x);
      }
      call.freed_storage[i] = free_storage(x);
    }
  }

  // An exact block whose steps could not all be undone bit for bit: its input stays, so this
  // call's backward recomputes from it and its gradients stay right.
  static void keep_inexact_call(SavedCall& call, const std::string& step) {
    call.exact = false;
    const int64_t count = ++exact_fallback_count();
    if (count > 1 && count != 10 && count != 100 && count % 1000 != 0) return;
    std::ostringstream message;
    message << "InvertibleModuleWrapper: the exact block ";
    call.fn->pretty_print(message);
    message << " could not be undone bit for bit in " << step << "; values beyond the grid's exact range "
            << "or an input off the grid (put FixedPointQuantize before the first exact coupling). Kept its input "
            << "for this call (no memory saving there; gradients stay right). Use fewer fraction_bits for a "
               "wider range. Calls kept so far: " << count;
    log(LogLevel::Warning, message.str());
  }

  // Refills freed input i with its rebuilt values; for an exact block they must have the freed
  // input's bits.
  static void restore_input(SavedCall& call, std::size_t i, const torch::Tensor& rebuilt) {
    refill_storage(call.inputs[i], call.freed_storage[i], rebuilt);
    if (!call.exact || i >= call.checksums.size()) return;
    TORCH_CHECK(bit_checksum(call.inputs[i]) == call.checksums[i], "InvertibleModuleWrapper: the exact block ",
                describe(*call.fn), " rebuilt input ", i, " with other bits than forward freed. Its "
                "sub-modules did not recompute what they computed in forward: random layers (dropout) need "
                "InvertibleModuleWrapperOptions().preserve_rng_state(true), CUDA needs deterministic "
                "algorithms (torch::globalContext().setDeterministicAlgorithms(true, false)), and "
                "parameters must not change between forward and backward. The gradients would be wrong, so "
                "this backward stops here; keep_input(true) avoids the rebuild");
  }


  // The remembered zero positions of each input, unpacked (undefined where there are none).
  static std::vector<torch::Tensor> unpacked_zero_masks(const SavedCall& call) {
    std::vector<torch::Tensor> masks;
    for (std::size_t i = 0; i < call.zero_masks.size(); ++i) {
      const auto& packed = call.zero_masks[i];
      masks.push_back(packed.defined() ? unpack_zero_positions(packed, call.inputs[i].sizes()) : torch::Tensor());
    }
    return masks;
  }

  static bool any_freed(const SavedCall& call) {
    for (const auto& x : call.inputs) {
      if (is_freed(x)) return true;
    }
    return false;
  }

  static void rebuild_freed_inputs(SavedCall& call) {
    if (!any_freed(call)) return;
    if (call.rng_tape) call.rng_tape->begin_replay();
    std::vector<torch::Tensor> rebuilt;
    {
      torch::NoGradGuard no_grad;
      rebuilt = call.run(call.outputs, !call.options.inverse_direction);
      detail::zero_where(rebuilt, unpacked_zero_masks(call));
    }
    TORCH_CHECK(rebuilt.size() == call.inputs.size(), "InvertibleModuleWrapper: the inverse returned ",
                rebuilt.size(), " tensors, but the block took ", call.inputs.size());
    for (std::size_t i = 0; i < rebuilt.size(); ++i) {
      if (is_freed(call.inputs[i])) restore_input(call, i, rebuilt[i]);
    }
  }

  // Debug aid: one more forward on the rebuilt inputs; a rebuild that lost precision (a block
  // that is numerically hard to invert) shows as outputs that stray from the saved ones.
  static void check_drift(SavedCall& call) {
    std::vector<torch::Tensor> outputs;
    {
      torch::NoGradGuard no_grad;
      if (call.rng_tape) call.rng_tape->begin_replay();
      outputs = call.run(call.inputs, call.options.inverse_direction);
    }
    double worst = 0;
    for (std::size_t i = 0; i < outputs.size() && i < call.outputs.size(); ++i) {
      const auto& saved = call.outputs[i];
      if (!outputs[i].defined() || !saved.defined() || !saved.is_floating_point()) continue;
      const double scale = saved.abs().max().item<double>();
      const double error = (outputs[i] - saved).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
      worst = std::max(worst, std::isnan(error) ? INFINITY : error);
    }
    if (worst <= call.options.drift_tolerance) return;
    std::ostringstream message;
    message << "InvertibleModuleWrapper: block ";
    call.fn->pretty_print(message);
    message << " reproduces its saved output from the rebuilt input only to relative error " << worst
            << " (drift_tolerance " << call.options.drift_tolerance << "); its inverse loses precision, "
            << "so gradients through it may be inaccurate (keep its input, or use float64)";
    log(LogLevel::Warning, message.str());
  }

  // The fused path; gradients as recompute_and_differentiate returns them.
  static variable_list rebuild_and_differentiate(SavedCall& call, FusedBackward& fused,
                                                 const variable_list& grad_outputs) {
    if (call.rng_tape) call.rng_tape->begin_replay();
    RngTapeScope scope(call.rng_tape.get());
    auto result =
        fused.rebuild_and_differentiate(call.outputs, grad_outputs, call.options.inverse_direction, unpacked_zero_masks(call));
    TORCH_CHECK(result.inputs.size() == call.inputs.size() && result.input_grads.size() == call.inputs.size(),
                "InvertibleModuleWrapper: the fused backward rebuilt ", result.inputs.size(),
                " inputs, but the block took ", call.inputs.size());
    variable_list grads;
    for (std::size_t i = 0; i < call.inputs.size(); ++i) {
      if (is_freed(call.inputs[i])) restore_input(call, i, result.inputs[i]);
      grads.push_back(call.input_requires_grad[i] ? result.input_grads[i] : torch::Tensor());
    }
    grads.insert(grads.end(), result.parameter_grads.begin(), result.parameter_grads.end());
    return grads;
  }

  // Gradients for every input, then every parameter (undefined where none flows).
  static variable_list recompute_and_differentiate(SavedCall& call, const variable_list& grad_outputs) {
    torch::AutoGradMode grad_mode(true);
    std::vector<torch::Tensor> detached;
    for (std::size_t i = 0; i < call.inputs.size(); ++i) {
      const auto& x = call.inputs[i];
      detached.push_back(x.defined() ? x.detach().requires_grad_(call.input_requires_grad[i]) : x);
    }
    if (call.rng_tape) call.rng_tape->begin_replay();
    const auto outputs = call.run(detached, call.options.inverse_direction);
    TORCH_CHECK(outputs.size() == grad_outputs.size(), "InvertibleModuleWrapper: the recomputed block "
                "returned ", outputs.size(), " tensors, but forward returned ", grad_outputs.size());

    variable_list roots, root_grads, wrt;
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      if (grad_outputs[i].defined() && outputs[i].defined() && outputs[i].requires_grad()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grad_outputs[i]);
      }
    }
    const auto parameters = unique_parameters(*call.fn);
    std::vector<int64_t> slot;  // index into wrt, or -1
    for (std::size_t i = 0; i < detached.size(); ++i) {
      slot.push_back(call.input_requires_grad[i] ? static_cast<int64_t>(wrt.size()) : -1);
      if (call.input_requires_grad[i]) wrt.push_back(detached[i]);
    }
    for (const auto& p : parameters) {
      slot.push_back(p.requires_grad() ? static_cast<int64_t>(wrt.size()) : -1);
      if (p.requires_grad()) wrt.push_back(p);
    }
    variable_list grads;
    if (!roots.empty() && !wrt.empty()) {
      grads = differentiate(roots, wrt, root_grads);
    }
    variable_list result;
    for (const auto index : slot) {
      result.push_back(index >= 0 && !grads.empty() ? grads[index] : torch::Tensor());
    }
    return result;
  }
};

}  // namespace

}  // namespace detail

namespace detail {

void zero_where(std::vector<torch::Tensor>& tensors, const std::vector<torch::Tensor>& masks) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < tensors.size() && i < masks.size(); ++i) {
    if (masks[i].defined() && tensors[i].defined()) tensors[i].masked_fill_(masks[i], 0);
  }
}

}  // namespace detail

int64_t exact_rebuild_fallbacks() { return detail::exact_fallback_count().load(); }

bool is_freed(const torch::Tensor& tensor) {
  return tensor.defined() && tensor.numel() > 0 &&
         (!tensor.has_storage() || tensor.storage().data() == nullptr);
}

namespace detail {

std::vector<torch::Tensor> apply_memory_saving(const std::shared_ptr<InvertibleModule>& fn,
                                               const std::vector<torch::Tensor>& inputs,
                                               const SavingOptions& options) {
  TORCH_CHECK(options.num_bwd_passes >= 1, "InvertibleModuleWrapper: num_bwd_passes must be at least 1, got ",
              options.num_bwd_passes);
  auto call = c10::make_intrusive<SavedCall>();
  call->fn = fn;
  call->options = options;
  call->passes_left = options.num_bwd_passes;
  const auto parameters = unique_parameters(*fn);
  return InvertibleFunction::apply(call, torch::TensorList(inputs), torch::TensorList(parameters));
}

}  // namespace detail
}  // namespace memcnn
