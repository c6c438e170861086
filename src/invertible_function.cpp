// The memory-saving mechanism, in one place.
//
// Forward runs the block without an autograd graph, then frees the storage of each input that
// can be rebuilt exactly (every alias of it sees the storage go). Backward rebuilds those
// inputs from the saved outputs through the opposite direction of the block, refills the
// original storage in place (so aliases and earlier nodes that saved the input see the values
// again, without a version bump), recomputes the block with a graph and differentiates it.
//
// What makes this safe:
// - Forward records the version of every output, input and parameter; backward raises, as
//   autograd does, when a tensor it needs was modified in place since (a ReLU(inplace) after the
//   block would otherwise make it rebuild its input from the modified output, an optimizer step
//   between two backward passes make it run the block with other weights: silently wrong
//   gradients).
// - Everything that can fail is done before the first input is freed, and buffers are restored
//   through guards: a forward or backward that throws leaves inputs, buffers and (with
//   preserve_rng_state) the random state as they were.
// - No host-device synchronisation in forward or backward: checks computed on a CUDA device
//   stay there and are read once the backward pass has finished (device_checks.h).
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
// of differentiating at wrong values. Their exact zeros need no remembering. On a CUDA device
// neither outcome can be read without stalling the stream: the input is freed, and a step that
// was not exact, or a rebuild with other bits, makes the backward pass raise once it finishes.

#include "describe.h"
#include "device_checks.h"
#include "invertible_function.h"
#include "recompute.h"
#include "storage.h"

#include "memcnn/autocast.h"
#include "memcnn/compat.h"
#include "memcnn/fixed_point.h"
#include "memcnn/log.h"
#include "memcnn/rng.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <optional>
#include <sstream>

namespace memcnn {
namespace detail {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Tests only, but read on every forward, which several threads may run at once: the flag keeps
// that read to one atomic load, the mutex guards the function while a test sets it.
struct FreePreparationHook {
  std::atomic<bool> installed{false};
  std::mutex mutex;
  std::function<void(std::size_t)> function;
};

FreePreparationHook& free_preparation_hook() {
  static FreePreparationHook hook;
  return hook;
}

void call_free_preparation_hook(std::size_t input_index) {
  auto& hook = free_preparation_hook();
  if (!hook.installed.load(std::memory_order_acquire)) return;
  std::function<void(std::size_t)> function;
  {
    std::lock_guard<std::mutex> lock(hook.mutex);
    function = hook.function;
  }
  if (function) function(input_index);
}

// What one memory-saving call keeps between forward and backward.
struct SavedCall : torch::CustomClassHolder {
  std::shared_ptr<InvertibleModule> fn;
  SavingOptions options;
  int64_t passes_left = 0;
  std::vector<torch::Tensor> inputs;         // the caller's tensors; freed ones hold no bytes
  std::vector<uint32_t> input_versions;      // at the end of forward
  std::vector<c10::Storage> freed_storage;   // per input: the storage emptied by forward, if any
  std::vector<torch::Tensor> zero_masks;     // per freed input that may hold exact zeros: their positions, packed
  bool exact = false;                        // fn rebuilds exactly: freed inputs are checksummed
  std::vector<torch::Tensor> checksums;      // per freed input of an exact block: bit_checksum
  torch::Tensor inexact_on_device;           // an exact step forward could not verify on the host failed
  std::vector<bool> input_requires_grad;
  std::vector<torch::Tensor> outputs;        // detached aliases of what the caller received
  std::vector<uint32_t> output_versions;     // at the end of forward
  ParameterVersions parameter_versions;      // at the end of forward
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
    inexact_on_device = torch::Tensor();
    parameter_versions = ParameterVersions();
    rng_tape.reset();
  }
};

std::vector<uint32_t> versions_of(const std::vector<torch::Tensor>& tensors) {
  std::vector<uint32_t> versions;
  versions.reserve(tensors.size());
  for (const auto& t : tensors) versions.push_back(t.defined() ? t._version() : 0);
  return versions;
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

// 1, 2, 4, ..., 128 on the device of `options`, made there (a host tensor copied over would
// synchronise).
torch::Tensor bit_weights(const torch::TensorOptions& options) {
  return torch::ones({8}, options).__lshift__(torch::arange(8, options));
}

// Positions of exact zeros, one bit each, in the tensor's logical order. Undefined when the
// host can tell, without a device synchronisation, that there are none; on a device the mask is
// kept either way (1/32 of a float32 input).
torch::Tensor pack_zero_positions(const torch::Tensor& x) {
  if (readable_without_sync(x) && *read_count_without_sync(x.count_nonzero()) == x.numel()) return {};
  auto bits = x.eq(0).reshape(-1).to(torch::kUInt8);
  const int64_t n = bits.numel(), padded = (n + 7) / 8 * 8;
  if (padded != n) bits = torch::cat({bits, torch::zeros({padded - n}, bits.options())});
  return (bits.view({-1, 8}) * bit_weights(bits.options())).sum(1).to(torch::kUInt8);
}

torch::Tensor unpack_zero_positions(const torch::Tensor& packed, torch::IntArrayRef sizes) {
  const int64_t n = c10::multiply_integers(sizes);
  return packed.unsqueeze(1).bitwise_and(bit_weights(packed.options())).ne(0).view(-1).narrow(0, 0, n).view(sizes);
}

std::atomic<int64_t>& exact_fallback_count() {
  static std::atomic<int64_t> count{0};
  return count;
}

// An input ready to be freed: everything that can fail has been done.
struct PendingFree {
  std::size_t index;
  PreparedFree prepared;
  torch::Tensor zero_mask;
  torch::Tensor checksum;
};

class InvertibleFunction : public torch::autograd::Function<InvertibleFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, c10::intrusive_ptr<SavedCall> call,
                               torch::TensorList inputs, torch::TensorList parameters) {
    call->inputs = inputs.vec();
    call->autocast = compat::AutocastState::current();
    for (const auto& x : call->inputs) call->input_requires_grad.push_back(x.defined() && x.requires_grad());
    if (call->options.preserve_rng_state) {
      call->rng_tape = std::make_unique<RngTape>(cuda_devices_of(call->inputs));
      call->rng_tape->begin_recording();
    }
    const BufferSnapshot buffers_before(*call->fn);
    RestoreBuffersOnExit restore_buffers_on_failure(buffers_before);
    try {
      auto outputs = run_and_free(*call);
      call->parameter_versions = ParameterVersions(parameters.vec());
      restore_buffers_on_failure.dismiss();
      ctx->saved_data["call"] = c10::IValue::make_capsule(call);
      return outputs;
    } catch (...) {
      // The random numbers forward drew are drawn again by the caller's retry, as if the
      // failed call had not happened.
      if (call->rng_tape) call->rng_tape->begin_replay();
      throw;
    }
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
    call->parameter_versions.check_unchanged(
        call->fn.get(), [&call] { return "the memory-saving block " + describe(*call->fn); }, "The block");
    auto* fused = options.fused_backward ? dynamic_cast<FusedBackward*>(call->fn.get()) : nullptr;
    const bool rebuilds = any_freed(*call);
    const bool fused_rebuild = fused != nullptr && rebuilds;
    check_unmodified(*call, /*outputs_needed=*/rebuilds, /*inputs_needed=*/!fused_rebuild);

    const auto devices = cuda_devices_of(call->inputs);
    ForwardAutocastScope autocast(call->autocast);
    RngStateGuard surrounding_rng(options.preserve_rng_state, devices);
    // The rebuild and recompute update BatchNorm's statistics again; they end as after forward,
    // also when this backward throws.
    const BufferSnapshot buffers(*call->fn);
    RestoreBuffersOnExit restore_buffers(buffers);
    variable_list grads;
    if (fused_rebuild) {
      grads = rebuild_and_differentiate(*call, *fused, grad_outputs);
    } else {
      rebuild_freed_inputs(*call);
      grads = recompute_and_differentiate(*call, grad_outputs);
    }
    if (rebuilds && options.drift_tolerance > 0) check_drift(*call);
    if (--call->passes_left == 0) call->release();

    variable_list result{torch::Tensor()};  // for the SavedCall argument
    result.insert(result.end(), grads.begin(), grads.end());
    return result;
  }

 private:
  static std::vector<torch::Tensor> run_and_free(SavedCall& call) {
    std::vector<torch::Tensor> outputs;
    std::optional<std::string> inexact_step;
    call.exact = call.fn->rebuilds_exactly() && !call.options.keep_input;
    {
      AutocastCacheOff no_cache;  // this run has no graph
      std::optional<ExactRebuildCheck> check;
      if (call.exact) check.emplace();
      outputs = call.run(call.inputs, call.options.inverse_direction);
      if (check && !check->all_exact()) inexact_step = check->first_failure();
      if (check) call.inexact_on_device = check->pending();
    }
    for (const auto& y : outputs) call.outputs.push_back(y.defined() ? y.detach() : y);
    if (inexact_step) {
      keep_inexact_call(call, *inexact_step);
    } else if (!call.options.keep_input) {
      free_inputs(call, outputs);
    }
    call.output_versions = versions_of(call.outputs);
    call.input_versions = versions_of(call.inputs);
    return outputs;
  }

  // Prepares every input that can be freed (masks, checksums, the storage-less stand-ins: all
  // that allocates or may throw), then frees them all with code that cannot throw.
  static void free_inputs(SavedCall& call, const std::vector<torch::Tensor>& outputs) {
    std::vector<PendingFree> pending;
    for (std::size_t i = 0; i < call.inputs.size(); ++i) {
      const auto& x = call.inputs[i];
      const bool from_memcnn =
          x.defined() && dynamic_cast<torch::autograd::CppNode<InvertibleFunction>*>(x.grad_fn().get()) != nullptr;
      if (const char* reason = reason_to_keep(i, call.inputs, outputs, from_memcnn ? 1 : 0)) {
        std::ostringstream message;
        message << "InvertibleModuleWrapper keeps input " << i << " (shape " << x.sizes() << "): " << reason;
        log(LogLevel::Debug, message.str());
        continue;
      }
      call_free_preparation_hook(i);
      pending.push_back({i, PreparedFree(x), call.exact ? torch::Tensor() : pack_zero_positions(x),
                         call.exact ? bit_checksum(x) : torch::Tensor()});
    }
    call.freed_storage.resize(call.inputs.size());
    call.zero_masks.resize(call.inputs.size());
    call.checksums.resize(call.inputs.size());
    for (auto& p : pending) {
      call.zero_masks[p.index] = std::move(p.zero_mask);
      call.checksums[p.index] = std::move(p.checksum);
      call.freed_storage[p.index] = p.prepared.commit();
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

  enum class Saved { input, output };

  // Autograd's check for saved tensors, for what memcnn saved itself: the outputs a rebuild
  // starts from, and the inputs a recompute starts from. A tensor backward does not read may
  // change freely (the gradients do not depend on it).
  static void check_unmodified(const SavedCall& call, bool outputs_needed, bool inputs_needed) {
    if (outputs_needed) {
      for (std::size_t i = 0; i < call.outputs.size(); ++i) {
        check_version(call, call.outputs[i], call.output_versions[i], Saved::output, i);
      }
    }
    if (inputs_needed) {
      for (std::size_t i = 0; i < call.inputs.size(); ++i) {
        if (!is_freed(call.inputs[i])) check_version(call, call.inputs[i], call.input_versions[i], Saved::input, i);
      }
    }
  }

  static void check_version(const SavedCall& call, const torch::Tensor& t, uint32_t expected, Saved which,
                            std::size_t index) {
    if (!t.defined() || t._version() == expected) return;
    const bool output = which == Saved::output;
    const char* keep = call.options.inverse_direction ? "keep_input_inverse(true)" : "keep_input(true)";
    TORCH_CHECK(false, "one of the variables needed for gradient computation has been modified by an inplace "
                "operation: ", output ? "output " : "input ", index, " of the memory-saving block ", describe(*call.fn), " (shape ",
                t.sizes(), ", ", t.scalar_type(), ") is at version ", t._version(), "; expected version ", expected,
                " instead. ",
                output ? "The block freed its input in forward and rebuilds it from this output in backward, so its "
                         "gradients would be computed at the modified values. Use the out-of-place operation instead "
                         "(y = y.relu() rather than y.relu_(), torch::nn::ReLU without inplace), or construct the "
                         "InvertibleModuleWrapper with "
                       : "The block recomputes itself from this input in backward, so its gradients would be "
                         "computed at the modified values. Use the out-of-place operation instead, or clone the "
                         "input before modifying it",
                output ? keep : "", output ? " so that backward recomputes from the kept input" : "");
  }

  // The rebuilt inputs, checked against what forward freed before any of them is written back:
  // a failed check leaves every input as it was.
  static void restore_inputs(SavedCall& call, const std::vector<torch::Tensor>& rebuilt) {
    TORCH_CHECK(rebuilt.size() == call.inputs.size(), "InvertibleModuleWrapper: the inverse of ",
                describe(*call.fn), " returned ", rebuilt.size(), " tensors, but the block took ", call.inputs.size());
    std::vector<std::size_t> freed;
    for (std::size_t i = 0; i < rebuilt.size(); ++i) {
      if (!is_freed(call.inputs[i])) continue;
      check_rebuilt_shape(call, i, rebuilt[i]);
      if (call.exact) check_rebuilt_bits(call, i, rebuilt[i]);
      freed.push_back(i);
    }
    for (const auto i : freed) refill_storage(call.inputs[i], call.freed_storage[i], rebuilt[i]);
  }

  static void check_rebuilt_shape(const SavedCall& call, std::size_t i, const torch::Tensor& rebuilt) {
    const auto& freed = call.inputs[i];
    TORCH_CHECK(rebuilt.defined() && rebuilt.sizes() == freed.sizes() && rebuilt.scalar_type() == freed.scalar_type() &&
                    rebuilt.device() == freed.device(),
                "InvertibleModuleWrapper: the inverse of ", describe(*call.fn), " rebuilt input ", i, " as ",
                rebuilt.defined() ? rebuilt.sizes() : torch::IntArrayRef{}, " ",
                rebuilt.defined() ? rebuilt.scalar_type() : freed.scalar_type(), ", but the freed input had shape ",
                freed.sizes(), " ", freed.scalar_type(), " on ", freed.device(),
                "; the module's inverse does not match its forward");
  }

  // An exact block must rebuild the freed bits. Read at once on the CPU, so backward stops before
  // differentiating at wrong values; on a device, read after the backward pass (it then raises).
  static void check_rebuilt_bits(const SavedCall& call, std::size_t i, const torch::Tensor& rebuilt) {
    const auto& saved = call.checksums[i];
    if (!saved.defined()) return;
    auto differs = bit_checksum(rebuilt).ne(saved);
    const auto known = read_flag_without_sync(differs);
    TORCH_CHECK(!known || !*known, rebuilt_other_bits_message(call, i));
    if (known) return;
    if (call.inexact_on_device.defined()) differs = differs.logical_or(call.inexact_on_device);
    check_after_backward(differs, [message = rebuilt_other_bits_message(call, i)] { return message; });
  }

  static std::string rebuilt_other_bits_message(const SavedCall& call, std::size_t i) {
    std::ostringstream message;
    message << "InvertibleModuleWrapper: the exact block " << describe(*call.fn) << " rebuilt input " << i
            << " with other bits than forward freed. Either a step of forward could not be undone bit for bit "
               "(values beyond the grid's exact range, or an input off the grid: use fewer fraction_bits, or put "
               "FixedPointQuantize before the first exact coupling), or its sub-modules did not recompute what they "
               "computed in forward: random layers (dropout) need InvertibleModuleWrapperOptions()"
               ".preserve_rng_state(true), CUDA needs deterministic algorithms (torch::globalContext()"
               ".setDeterministicAlgorithms(true, false)), and parameters must not change between forward and "
               "backward. The gradients would be wrong, so this backward stops (on a CUDA device: once it has "
               "finished; discard its gradients); keep_input(true) avoids the rebuild";
    return message.str();
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
    restore_inputs(call, rebuilt);
  }

  // Debug aid: one more forward on the rebuilt inputs; a rebuild that lost precision (a block
  // that is numerically hard to invert) shows as outputs that stray from the saved ones. Reads
  // the errors on the host: a synchronisation per block, which only this opt-in check pays.
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
    TORCH_CHECK(result.input_grads.size() == call.inputs.size(), "InvertibleModuleWrapper: the fused backward of ",
                describe(*call.fn), " returned ", result.input_grads.size(), " input gradients, but the block took ",
                call.inputs.size());
    restore_inputs(call, result.inputs);
    variable_list grads;
    for (std::size_t i = 0; i < call.inputs.size(); ++i) {
      grads.push_back(call.input_requires_grad[i] ? result.input_grads[i] : torch::Tensor());
    }
    grads.insert(grads.end(), result.parameter_grads.begin(), result.parameter_grads.end());
    return grads;
  }

  // Gradients for every input, then every parameter (undefined where none flows).
  static variable_list recompute_and_differentiate(SavedCall& call, const variable_list& grad_outputs) {
    auto run = [&call](const std::vector<torch::Tensor>& leaves) {
      if (call.rng_tape) call.rng_tape->begin_replay();
      return call.run(leaves, call.options.inverse_direction);
    };
    auto grads = detail::recompute_and_differentiate(run, call.inputs, call.input_requires_grad,
                                                     unique_parameters(*call.fn), grad_outputs,
                                                     "InvertibleModuleWrapper");
    variable_list result = std::move(grads.inputs);
    result.insert(result.end(), grads.parameters.begin(), grads.parameters.end());
    return result;
  }
};

}  // namespace

void set_free_preparation_hook_for_testing(std::function<void(std::size_t)> hook) {
  auto& installed = free_preparation_hook();
  std::lock_guard<std::mutex> lock(installed.mutex);
  installed.function = std::move(hook);
  installed.installed.store(static_cast<bool>(installed.function), std::memory_order_release);
}

void zero_where(std::vector<torch::Tensor>& tensors, const std::vector<torch::Tensor>& masks) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < tensors.size() && i < masks.size(); ++i) {
    if (masks[i].defined() && tensors[i].defined()) tensors[i].masked_fill_(masks[i], 0);
  }
}

std::vector<torch::Tensor> apply_memory_saving(const std::shared_ptr<InvertibleModule>& fn,
                                               const std::vector<torch::Tensor>& inputs,
                                               const SavingOptions& options) {
  TORCH_CHECK_VALUE(options.num_bwd_passes >= 1, "InvertibleModuleWrapper: num_bwd_passes must be at least 1, got ",
              options.num_bwd_passes);
  auto call = c10::make_intrusive<SavedCall>();
  call->fn = fn;
  call->options = options;
  call->passes_left = options.num_bwd_passes;
  const auto parameters = unique_parameters(*fn);
  return InvertibleFunction::apply(call, torch::TensorList(inputs), torch::TensorList(parameters));
}

}  // namespace detail

int64_t exact_rebuild_fallbacks() { return detail::exact_fallback_count().load(); }

}  // namespace memcnn
