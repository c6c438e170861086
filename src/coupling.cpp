#include "memcnn/coupling.h"

#include "memcnn/autocast.h"
#include "memcnn/fixed_point.h"
#include "memcnn/rng.h"

#include "fixed_point_step.h"
#include "recompute.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <unordered_set>

namespace memcnn {
namespace detail {

torch::Tensor only_tensor(const std::vector<torch::Tensor>& tensors, const char* who) {
  TORCH_CHECK(tensors.size() == 1, who, ": this module takes exactly one tensor, but got ",
              tensors.size(), "; use forward_multi/inverse_multi with a multi-tensor module");
  return tensors.front();
}

}  // namespace detail

std::vector<torch::Tensor> unique_parameters(const torch::nn::Module& module) {
  std::vector<torch::Tensor> unique;
  std::unordered_set<const void*> seen;
  for (const auto& p : module.parameters()) {
    if (seen.insert(p.unsafeGetTensorImpl()).second) unique.push_back(p);
  }
  return unique;
}

namespace detail {

torch::nn::AnyModule clone_for_G(const torch::nn::AnyModule& F, const char* coupling_name) {
  TORCH_CHECK_VALUE(!F.is_empty(), coupling_name, ": F is an empty module");
  try {
    return F.clone();
  } catch (const c10::Error& error) {
    TORCH_CHECK(false, coupling_name,
                ": G defaults to a deep copy of F, but F could not be cloned (derive its Impl from "
                "torch::nn::Cloneable<Impl> and build submodules in reset(), or pass G explicitly). "
                "Cause: ",
                error.what_without_backtrace());
  }
}

CouplingBase::CouplingBase(torch::nn::AnyModule F, torch::nn::AnyModule G, const char* name)
    : name_(name), F_(std::move(F)), G_(std::move(G)) {}

void CouplingBase::register_parts() {
  TORCH_CHECK_VALUE(!F_.is_empty() && !G_.is_empty(), name_, ": F and G must be non-empty modules");
  TORCH_CHECK_VALUE(F_.ptr() != G_.ptr(), name_,
                    ": F and G are the same module object; pass two modules, or only F to get G as a copy");
  detail::register_or_replace(*this, "F", F_.ptr());
  detail::register_or_replace(*this, "G", G_.ptr());
}

void CouplingBase::replace_parts_with_clones(const torch::optional<torch::Device>& device) {
  F_ = F_.clone(device);
  G_ = G_.clone(device);
  register_parts();
}

CouplingBase::Halves CouplingBase::split(const std::vector<torch::Tensor>& tensors) const {
  TORCH_CHECK_VALUE(!tensors.empty(), name_, ": needs at least one input tensor");
  const int64_t dim = split_dim();
  Halves halves;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& tensor = tensors[i];
    TORCH_CHECK(tensor.defined(), name_, ": input ", i, " is an undefined tensor");
    TORCH_CHECK_INDEX(dim >= -tensor.dim() && dim < tensor.dim(), name_, ": split_dim ", dim,
                      " is out of range for input ", i, " of shape ", tensor.sizes(),
                      "; set split_dim in the options to an existing dimension");
    const int64_t size = tensor.size(dim);
    TORCH_CHECK(size % 2 == 0, name_, ": dimension ", dim, " of input ", i, " (shape ",
                tensor.sizes(), ") has odd size ", size,
                ", which cannot be split into two equal halves; use an even number of channels "
                "or another split_dim");
    halves.first.push_back(tensor.narrow(dim, 0, size / 2));
    halves.second.push_back(tensor.narrow(dim, size / 2, size / 2));
  }
  return halves;
}

std::vector<torch::Tensor> CouplingBase::merge(const Halves& halves) const {
  std::vector<torch::Tensor> merged;
  merged.reserve(halves.first.size());
  for (std::size_t i = 0; i < halves.first.size(); ++i) {
    merged.push_back(torch::cat({halves.first[i], halves.second[i]}, split_dim()));
  }
  return merged;
}

std::vector<torch::Tensor> CouplingBase::call(torch::nn::AnyModule& module, const char* module_name,
                                              const std::vector<torch::Tensor>& halves,
                                              const std::vector<torch::Tensor>& shaped_like) const {
  rng_sync_point(module.ptr().get());
  std::vector<torch::Tensor> results;
  try {
    if (halves.size() == 1) {
      results.push_back(module.forward(halves.front()));
    } else {
      results = module.forward<std::vector<torch::Tensor>>(halves);
    }
  } catch (const c10::Error& error) {
    const std::string what = error.what_without_backtrace();
    if (what.find("Expected argument") == std::string::npos) throw;
    TORCH_CHECK(false, name_, ": ", module_name, " has the wrong forward signature for ",
                halves.size(), " input tensor(s): it must take ",
                halves.size() == 1 ? "a torch::Tensor" : "a std::vector<torch::Tensor>",
                " and return the same kind. Cause: ", what);
  }
  TORCH_CHECK(results.size() == shaped_like.size(), name_, ": ", module_name, " returned ",
              results.size(), " tensors for ", shaped_like.size(), " inputs");
  const int64_t factor = module_output_factor();
  const int64_t dim = split_dim();
  for (std::size_t i = 0; i < results.size(); ++i) {
    auto expected = shaped_like[i].sizes().vec();
    expected[dim < 0 ? dim + static_cast<int64_t>(expected.size()) : dim] *= factor;
    TORCH_CHECK(results[i].sizes() == torch::IntArrayRef(expected), name_, ": ", module_name,
                " returned a tensor of shape ", results[i].sizes(), " for output ", i,
                ", but the coupling needs shape ", torch::IntArrayRef(expected),
                factor == 1
                    ? " (the shape of the other half); F and G must preserve the shape of their input"
                    : " (the sigmoid adapter needs split_dim doubled: scales and shifts interleaved)");
  }
  return results;
}

std::vector<CouplingBase::HalfStep> CouplingBase::half_steps(bool inverse_direction) {
  const HalfStep f{0, &F_, "F", inverse_direction};
  const HalfStep g{1, &G_, "G", inverse_direction};
  if (inverse_direction) return {g, f};
  return {f, g};
}

std::vector<torch::Tensor> CouplingBase::terms(const std::vector<torch::Tensor>& h,
                                               const std::vector<torch::Tensor>& target) const {
  std::vector<torch::Tensor> out;
  out.reserve(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out.push_back(coupling_term(h[i], target[i]));
  return out;
}

std::vector<torch::Tensor> CouplingBase::apply(const HalfStep& step, const std::vector<torch::Tensor>& target,
                                               const std::vector<torch::Tensor>& term, bool invert) const {
  std::vector<torch::Tensor> out;
  out.reserve(target.size());
  const bool uncoupling = step.uncoupling != invert;
  for (std::size_t i = 0; i < target.size(); ++i) {
    out.push_back(uncoupling ? uncouple(target[i], term[i]) : couple(target[i], term[i]));
  }
  return out;
}

void CouplingBase::verify_exact(const HalfStep& step, const std::vector<torch::Tensor>& before,
                                const std::vector<torch::Tensor>& after, const std::vector<torch::Tensor>& term) const {
  auto* check = ExactRebuildCheck::current();
  if (check == nullptr) return;
  torch::NoGradGuard no_grad;
  const auto undone = apply(step, after, term, /*invert=*/true);
  for (std::size_t i = 0; i < before.size(); ++i) {
    check->compare(undone[i], before[i], [&] { return describe_inexact(step, i, before[i], after[i]); });
  }
}

void CouplingBase::report_inexact(const HalfStep& step, std::size_t i, const torch::Tensor& before,
                                  const torch::Tensor& after) const {
  auto* check = ExactRebuildCheck::current();
  if (check == nullptr) return;
  check->report(false, describe_inexact(step, i, before, after));
}

// Only for a failure, which the host already knows of: reading the maxima costs no extra stall.
std::string CouplingBase::describe_inexact(const HalfStep& step, std::size_t i, const torch::Tensor& before,
                                           const torch::Tensor& after) const {
  torch::NoGradGuard no_grad;
  std::ostringstream what;
  what << name_ << " (" << step.module_name << "'s half step, tensor " << i << "): max |input| "
       << before.abs().max().item<double>() << ", max |output| " << after.abs().max().item<double>();
  return what.str();
}

bool CouplingBase::half_step_in_one_pass(const HalfStep& step, const std::vector<torch::Tensor>& target,
                                         const std::vector<torch::Tensor>& h,
                                         const std::vector<torch::Tensor>& out) const {
  std::vector<std::size_t> inexact;
  for (std::size_t i = 0; i < target.size(); ++i) {
    const auto exact = step_in_one_pass(target[i], h[i], step.uncoupling, out[i]);
    if (!exact) return false;
    if (!*exact) inexact.push_back(i);
  }
  for (const auto i : inexact) report_inexact(step, i, target[i], out[i]);
  return true;
}

namespace {

std::vector<torch::Tensor> contiguous(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> result;
  for (const auto& t : tensors) result.push_back(t.contiguous());
  return result;
}

}  // namespace

std::vector<torch::Tensor> CouplingBase::run(const std::vector<torch::Tensor>& tensors, bool inverse_direction) {
  const bool exact = rebuilds_exactly();
  // An exact coupling's F and G must see their input in the same layout in forward, in the
  // fused backward and without memory saving (BatchNorm sums in another order for another
  // layout): always a contiguous tensor, which is also the layout F and G run fastest on (a
  // copy of a half costs less than BatchNorm and convolution lose on a strided one). Without a
  // graph the output halves are written into one whole tensor (no final cat).
  Halves state = split(tensors);
  const bool write_whole = exact && !torch::GradMode::is_enabled();
  std::vector<torch::Tensor> whole;
  Halves whole_halves;
  if (write_whole) {
    for (const auto& t : tensors) whole.push_back(torch::empty_like(t, torch::MemoryFormat::Contiguous));
    whole_halves = split(whole);
  }
  const auto steps = half_steps(inverse_direction);
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const auto& step = steps[k];
    const int source = 1 - step.target;
    const auto h = call(*step.module, step.module_name, exact ? contiguous(state[source]) : state[source],
                        state[step.target]);
    if (write_whole && half_step_in_one_pass(step, state[step.target], h, whole_halves[step.target])) {
      state[step.target] = whole_halves[step.target];
      continue;
    }
    const auto term = terms(h, state[step.target]);
    auto next = apply(step, state[step.target], term, /*invert=*/false);
    if (exact) verify_exact(step, state[step.target], next, term);
    if (write_whole) {
      for (std::size_t i = 0; i < next.size(); ++i) next[i] = whole_halves[step.target][i].copy_(next[i]);
    }
    state[step.target] = std::move(next);
  }
  return write_whole ? whole : merge(state);
}

std::vector<torch::Tensor> CouplingBase::forward_multi(const std::vector<torch::Tensor>& x) { return run(x, false); }

std::vector<torch::Tensor> CouplingBase::inverse_multi(const std::vector<torch::Tensor>& y) { return run(y, true); }

void CouplingBase::backward_half_step(const HalfStep& step, Halves& state, Halves& grads, const Halves& masks,
                                      ParameterGrads& parameter_grads) {
  const int target = step.target, source = 1 - target;
  std::vector<torch::Tensor> source_leaves;
  for (const auto& t : state[source]) {
    source_leaves.push_back((rebuilds_exactly() ? t.contiguous() : t).detach().requires_grad_());
  }
  const auto h = call(*step.module, step.module_name, source_leaves, state[target]);
  std::vector<torch::Tensor> rebuilt, grad_h;
  if (rule_passes_gradient_through()) {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> h_values;
    for (const auto& t : h) h_values.push_back(t.detach());
    rebuilt = apply(step, state[target], h_values, /*invert=*/true);
    zero_where(rebuilt, masks[target]);
    for (std::size_t i = 0; i < h.size(); ++i) {
      const auto& grad = grads[target][i];
      grad_h.push_back((step.uncoupling ? -grad : grad).to(h[i].scalar_type()));
    }
  } else {
    std::vector<torch::Tensor> h_leaves;
    for (const auto& t : h) h_leaves.push_back(t.detach().requires_grad_());
    // The term (h itself, or a rounded copy of it) and the rule's graph are gone before the
    // module's backward runs, which is where the memory peaks.
    const auto term = terms(h_leaves, state[target]);
    {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> term_values;
      for (const auto& t : term) term_values.push_back(t.detach());
      rebuilt = apply(step, state[target], term_values, /*invert=*/true);
      zero_where(rebuilt, masks[target]);
    }
    std::vector<torch::Tensor> wrt;
    for (const auto& t : rebuilt) wrt.push_back(t.detach().requires_grad_());
    const std::vector<torch::Tensor> rule_inputs(wrt);
    for (auto& t : h_leaves) wrt.push_back(t);
    const auto redone = apply(step, rule_inputs, term, /*invert=*/false);
    const auto g = differentiate(redone, wrt, grads[target]);
    const std::size_t n = rebuilt.size();
    for (std::size_t i = 0; i < n; ++i) {
      grads[target][i] = g[i].defined() ? g[i] : torch::zeros_like(rebuilt[i]);
      grad_h.push_back(g[n + i].defined() ? g[n + i] : torch::zeros_like(h[i]));
    }
  }

  const auto parameters = unique_parameters(*step.module->ptr());
  const auto g = differentiate_call(h, grad_h, source_leaves, parameters);
  for (std::size_t i = 0; i < source_leaves.size(); ++i) {
    if (g.inputs[i].defined()) grads[source][i] = grads[source][i] + g.inputs[i];
  }
  parameter_grads.add(parameters, g.parameters);
  state[target] = rebuilt;
}

RebuildAndGradients CouplingBase::rebuild_and_differentiate(const std::vector<torch::Tensor>& outputs,
                                                            const std::vector<torch::Tensor>& grad_outputs,
                                                            bool inverse_direction,
                                                            const std::vector<torch::Tensor>& zero_masks) {
  torch::AutoGradMode grad_mode(true);
  Halves state = split(outputs);
  Halves masks;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const bool masked = i < zero_masks.size() && zero_masks[i].defined();
    const int64_t half = outputs[i].size(split_dim()) / 2;
    masks.first.push_back(masked ? zero_masks[i].narrow(split_dim(), 0, half) : torch::Tensor());
    masks.second.push_back(masked ? zero_masks[i].narrow(split_dim(), half, half) : torch::Tensor());
  }
  std::vector<torch::Tensor> filled_grads;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    filled_grads.push_back(grad_outputs[i].defined() ? grad_outputs[i] : torch::zeros_like(outputs[i]));
  }
  Halves grads = split(filled_grads);
  for (auto* half : {&state.first, &state.second}) {
    for (auto& t : *half) t = t.detach();
  }
  ParameterGrads parameter_grads;
  const auto steps = half_steps(inverse_direction);
  for (auto step = steps.rbegin(); step != steps.rend(); ++step) {
    backward_half_step(*step, state, grads, masks, parameter_grads);
  }

  RebuildAndGradients result;
  {
    torch::NoGradGuard no_grad;
    result.inputs = merge(state);
    result.input_grads = merge(grads);
  }
  result.parameter_grads = parameter_grads.in_order_of(unique_parameters(*this));
  return result;
}

}  // namespace detail

// ---- AdditiveCoupling ----

void AdditiveCouplingImpl::check_options(const AdditiveCouplingOptions& options) {
  check_fraction_bits(kName, options.fraction_bits());
}

// Exact mode: h rounded to the grid, in the target's type (under autocast h may be bfloat16
// while the activations stay float32); adding and subtracting it is then exact.
torch::Tensor AdditiveCouplingImpl::coupling_term(const torch::Tensor& h, const torch::Tensor& target) const {
  if (!options.exact()) return h;
  check_fraction_bits(kName, options.fraction_bits(), target.scalar_type());
  return detail::round_to_grid(h.to(target.scalar_type()), options.fraction_bits());
}

std::optional<bool> AdditiveCouplingImpl::step_in_one_pass(const torch::Tensor& x, const torch::Tensor& h,
                                                          bool uncoupling, const torch::Tensor& out) const {
  if (!options.exact()) return std::nullopt;
  check_fraction_bits(kName, options.fraction_bits(), x.scalar_type());
  return detail::add_on_grid(x, h.to(x.scalar_type()), options.fraction_bits(), uncoupling, out);
}

torch::Tensor AdditiveCouplingImpl::couple(const torch::Tensor& x, const torch::Tensor& term) const { return x + term; }

torch::Tensor AdditiveCouplingImpl::uncouple(const torch::Tensor& y, const torch::Tensor& term) const { return y - term; }

void AdditiveCouplingImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::AdditiveCoupling(split_dim=" << options.split_dim();
  if (options.exact()) stream << ", exact, fraction_bits=" << options.fraction_bits();
  stream << ")";
}

// ---- AffineCoupling ----

std::pair<torch::Tensor, torch::Tensor> AffineCouplingImpl::scale_shift(const torch::Tensor& h) const {
  if (options.adapter() == AffineAdapter::sigmoid) {
    const int64_t n = h.size(split_dim());
    return {torch::sigmoid(h.slice(split_dim(), 1, n, 2) + 2.0), h.slice(split_dim(), 0, n, 2)};
  }
  return {torch::exp(h), h};
}

int64_t AffineCouplingImpl::module_output_factor() const {
  return options.adapter() == AffineAdapter::sigmoid ? 2 : 1;
}

torch::Tensor AffineCouplingImpl::couple(const torch::Tensor& x, const torch::Tensor& h) const {
  const auto st = scale_shift(h);
  return x * st.first + st.second;
}

torch::Tensor AffineCouplingImpl::uncouple(const torch::Tensor& y, const torch::Tensor& h) const {
  const auto st = scale_shift(h);
  return (y - st.second) / st.first;
}



void AffineCouplingImpl::pretty_print(std::ostream& stream) const {
  stream << "memcnn::AffineCoupling(split_dim=" << options.split_dim() << ", adapter="
         << (options.adapter() == AffineAdapter::sigmoid ? "sigmoid" : "naive") << ")";
}

}  // namespace memcnn
