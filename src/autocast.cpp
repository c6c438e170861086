#include "memcnn/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/autograd.h>

#include <ATen/Context.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>

namespace memcnn {
namespace {

// The settings the innermost ForwardAutocastScope began with; null outside any.
thread_local const compat::AutocastState* settings_at_backward = nullptr;

// The current settings with autocast on for `device` in `dtype`, after checking that autocast
// can do that.
compat::AutocastState enabled_for(c10::DeviceType device, c10::ScalarType dtype) {
  TORCH_CHECK(device == c10::DeviceType::CPU || device == c10::DeviceType::CUDA,
              "memcnn::Autocast: autocast is for CPU or CUDA, not ", device);
  TORCH_CHECK(dtype == c10::ScalarType::BFloat16 || (device == c10::DeviceType::CUDA && dtype == c10::ScalarType::Half),
              "memcnn::Autocast: ", dtype, " is not a lower precision autocast supports on ", device,
              "; use BFloat16", device == c10::DeviceType::CUDA ? " or Half" : "");
  auto settings = compat::AutocastState::current();
  if (device == c10::DeviceType::CPU) {
    settings.cpu_enabled = true;
    settings.cpu_dtype = dtype;
  } else {
    settings.cuda_enabled = true;
    settings.cuda_dtype = dtype;
  }
  return settings;
}

compat::AutocastState disabled() {
  auto settings = compat::AutocastState::current();
  settings.cpu_enabled = false;
  settings.cuda_enabled = false;
  return settings;
}

}  // namespace

namespace detail {

AutocastSwitch::AutocastSwitch(const compat::AutocastState& target) : previous_(compat::AutocastState::current()) {
  target.apply();
}

AutocastSwitch::~AutocastSwitch() { previous_.apply(); }

}  // namespace detail

Autocast::Autocast(c10::DeviceType device, c10::ScalarType dtype) : switch_(enabled_for(device, dtype)) {
  at::autocast::increment_nesting();
}

Autocast::~Autocast() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}

AutocastDisabled::AutocastDisabled() : switch_(disabled()) {}

AutocastCacheOff::AutocastCacheOff() : was_enabled_(at::autocast::is_autocast_cache_enabled()) {
  at::autocast::set_autocast_cache_enabled(false);
}

AutocastCacheOff::~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_enabled_); }

ForwardAutocastScope::ForwardAutocastScope(const compat::AutocastState& at_forward)
    : to_forward_(at_forward), outer_at_backward_(settings_at_backward) {
  settings_at_backward = &to_forward_.previous();
}

ForwardAutocastScope::~ForwardAutocastScope() { settings_at_backward = outer_at_backward_; }

std::vector<torch::Tensor> differentiate(const std::vector<torch::Tensor>& roots, const std::vector<torch::Tensor>& wrt,
                                         const std::vector<torch::Tensor>& grad_roots) {
  std::optional<detail::AutocastSwitch> as_at_backward;
  if (settings_at_backward != nullptr) as_at_backward.emplace(*settings_at_backward);
  return torch::autograd::grad(roots, wrt, grad_roots, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/true);
}

}  // namespace memcnn

namespace memcnn {

CpuBfloat16Support cpu_bfloat16_support(const std::string& cpu_flags, bool onednn) {
  std::set<std::string> flags;
  std::istringstream words(cpu_flags);
  for (std::string word; words >> word;) flags.insert(word);
  CpuBfloat16Support support;
  support.onednn = onednn;
  support.avx512_core = flags.count("avx512bw") && flags.count("avx512vl") && flags.count("avx512dq");
  support.native_bfloat16 = flags.count("avx512_bf16") || flags.count("amx_bf16");
  return support;
}

namespace {

// oneDNN's instruction-set cap (ONEDNN_MAX_CPU_ISA, formerly DNNL_MAX_CPU_ISA): a CPU capped below
// AVX-512 runs oneDNN as an AVX2 machine would, and below AVX512_CORE_BF16 without native bfloat16,
// whatever /proc/cpuinfo says. Values as oneDNN spells them, e.g. AVX2, AVX512_CORE, ALL.
CpuBfloat16Support capped_by_onednn_isa(CpuBfloat16Support support) {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (cap == nullptr || *cap == '\0') cap = std::getenv("DNNL_MAX_CPU_ISA");
  if (cap == nullptr || *cap == '\0') return support;
  std::string isa(cap);
  std::transform(isa.begin(), isa.end(), isa.begin(), [](unsigned char c) { return std::toupper(c); });
  const bool below_avx512 = isa.rfind("SSE", 0) == 0 || isa.rfind("AVX2", 0) == 0 || isa == "AVX";
  const bool below_native = below_avx512 || isa == "AVX512_CORE" || isa == "AVX512_CORE_VNNI";
  if (below_avx512) support.avx512_core = false;
  if (below_native) support.native_bfloat16 = false;
  return support;
}

}  // namespace

CpuBfloat16Support cpu_bfloat16_support() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      flags = line.substr(line.find(':') + 1);
      break;
    }
  }
  return capped_by_onednn_isa(cpu_bfloat16_support(flags, at::hasMKLDNN()));
}

std::optional<std::string> cpu_bfloat16_warning(const CpuBfloat16Support& support) {
  if (support.onednn && support.native_bfloat16) return std::nullopt;
  if (!support.onednn || !support.avx512_core) {
    return std::string(support.onednn ? "this CPU lacks the AVX-512 instructions (BW, VL, DQ) that oneDNN needs for "
                                        "bfloat16 convolutions"
                                      : "this LibTorch has no oneDNN") +
           ": under bfloat16 autocast expect training steps many times slower than in float32 (27x measured on an "
           "AVX2-only AMD EPYC), for half the activation memory. Train in float32 (--autocast float32) unless "
           "memory is what limits you.";
  }
  return std::string("this CPU has no native bfloat16 instructions (AVX512_BF16 or AMX): oneDNN emulates them with "
                     "AVX-512, so expect bfloat16 steps about as fast as float32 or slower, for half the activation "
                     "memory (docs/results.md's figures were taken with native bfloat16).");
}

}  // namespace memcnn
