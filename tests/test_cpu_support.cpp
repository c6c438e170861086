// What a CPU offers bfloat16 autocast, read from /proc/cpuinfo's flags: a warning where oneDNN
// would run bfloat16 convolutions slowly (27x slower than float32 was measured on AVX2 only).

#include <memcnn/autocast.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace {

const char* kAvx2Only = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c bmi1 bmi2";
const char* kAvx512 = "sse4_2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl";
const char* kNative = "sse4_2 avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni";
const char* kAmx = "avx2 avx512f avx512dq avx512bw avx512vl amx_bf16 amx_tile amx_int8";

TEST(CpuBfloat16, Avx2OnlyIsWarnedAboutManyTimesSlowerSteps) {
  const auto support = memcnn::cpu_bfloat16_support(kAvx2Only, true);
  EXPECT_FALSE(support.avx512_core);
  EXPECT_FALSE(support.native_bfloat16);
  const auto warning = memcnn::cpu_bfloat16_warning(support);
  ASSERT_TRUE(warning.has_value());
  EXPECT_NE(warning->find("lacks the AVX-512 instructions"), std::string::npos) << *warning;
  EXPECT_NE(warning->find("many times slower"), std::string::npos) << *warning;
  EXPECT_NE(warning->find("--autocast float32"), std::string::npos) << *warning;
}

TEST(CpuBfloat16, Avx512WithoutNativeBfloat16IsEmulation) {
  const auto support = memcnn::cpu_bfloat16_support(kAvx512, true);
  EXPECT_TRUE(support.avx512_core);
  EXPECT_FALSE(support.native_bfloat16);
  const auto warning = memcnn::cpu_bfloat16_warning(support);
  ASSERT_TRUE(warning.has_value());
  EXPECT_NE(warning->find("emulates"), std::string::npos) << *warning;
}

TEST(CpuBfloat16, NativeBfloat16OrAmxNeedsNoWarning) {
  EXPECT_FALSE(memcnn::cpu_bfloat16_warning(memcnn::cpu_bfloat16_support(kNative, true)).has_value());
  EXPECT_FALSE(memcnn::cpu_bfloat16_warning(memcnn::cpu_bfloat16_support(kAmx, true)).has_value());
}

TEST(CpuBfloat16, WithoutOneDnnEvenNativeInstructionsDoNotHelp) {
  const auto warning = memcnn::cpu_bfloat16_warning(memcnn::cpu_bfloat16_support(kNative, false));
  ASSERT_TRUE(warning.has_value());
  EXPECT_NE(warning->find("no oneDNN"), std::string::npos) << *warning;
}

TEST(CpuBfloat16, ThisMachineIsRead) {
  const auto support = memcnn::cpu_bfloat16_support();
  std::cout << "[figure] this CPU: oneDNN " << support.onednn << ", AVX-512 core " << support.avx512_core
            << ", native bfloat16 " << support.native_bfloat16 << "; warning: "
            << memcnn::cpu_bfloat16_warning(support).value_or("none") << std::endl;
#if defined(__x86_64__)
  EXPECT_TRUE(support.onednn) << "Debian's LibTorch is built with oneDNN";
#endif
}

// oneDNN's ISA cap makes any CPU an AVX2 (or non-bfloat16 AVX-512) one for oneDNN: the support
// reported, and so autocast "auto" and the warning, follow the cap.
class OneDnnIsaCap {
 public:
  // nullptr: no cap.
  explicit OneDnnIsaCap(const char* isa) {
    if (const char* old = std::getenv("ONEDNN_MAX_CPU_ISA")) saved_ = old;
    if (isa != nullptr) {
      setenv("ONEDNN_MAX_CPU_ISA", isa, 1);
    } else {
      unsetenv("ONEDNN_MAX_CPU_ISA");
    }
  }
  ~OneDnnIsaCap() {
    if (saved_) {
      setenv("ONEDNN_MAX_CPU_ISA", saved_->c_str(), 1);
    } else {
      unsetenv("ONEDNN_MAX_CPU_ISA");
    }
  }

 private:
  std::optional<std::string> saved_;
};

TEST(CpuBfloat16, OneDnnIsaCapBelowAvx512ReadsAsAnAvx2Machine) {
  OneDnnIsaCap cap("avx2");
  const auto support = memcnn::cpu_bfloat16_support();
  EXPECT_FALSE(support.avx512_core);
  EXPECT_FALSE(support.native_bfloat16);
  const auto warning = memcnn::cpu_bfloat16_warning(support);
  ASSERT_TRUE(warning.has_value());
  EXPECT_NE(warning->find("AVX-512"), std::string::npos) << *warning;
}

// The machine without a cap, whatever the environment this test runs in sets.
memcnn::CpuBfloat16Support uncapped_support() {
  OneDnnIsaCap none(nullptr);
  return memcnn::cpu_bfloat16_support();
}

TEST(CpuBfloat16, OneDnnIsaCapAtAvx512CoreLeavesNoNativeBfloat16) {
  const auto uncapped = uncapped_support();
  OneDnnIsaCap cap("AVX512_CORE");
  const auto support = memcnn::cpu_bfloat16_support();
  EXPECT_EQ(support.avx512_core, uncapped.avx512_core);
  EXPECT_FALSE(support.native_bfloat16);
}

TEST(CpuBfloat16, OneDnnIsaCapAllChangesNothing) {
  const auto uncapped = uncapped_support();
  OneDnnIsaCap cap("ALL");
  const auto support = memcnn::cpu_bfloat16_support();
  EXPECT_EQ(support.avx512_core, uncapped.avx512_core);
  EXPECT_EQ(support.native_bfloat16, uncapped.native_bfloat16);
}

}  // namespace
