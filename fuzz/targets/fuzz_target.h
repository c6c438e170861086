#pragma once
// What the fuzz targets share. Each target is a libFuzzer entry point, LLVMFuzzerTestOneInput,
// that hands its input to a reader through the entry point users call. A reader may refuse an
// input only with an error that explains itself: c10::Error (TORCH_CHECK), std::invalid_argument
// or std::runtime_error (std::filesystem::filesystem_error included) with a message. Those are
// caught here; anything else (another exception, an empty message, a crash, a sanitizer report,
// a leak, a hang, an allocation over the fuzzer's limit) escapes and is a finding.
//
// Built twice: with -DMEMCNN_FUZZ=ON under libFuzzer, AddressSanitizer and UBSan (scripts/fuzz.sh),
// and in the default build with replay_main.cpp, which runs the target over its seed corpus and
// every input that once failed (fuzz/corpus/<target>, fuzz/regressions/<target>) under ctest.

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace memcnn::fuzz {

// A folder of the target's own for the files it writes (most readers take paths; each target
// removes its files after each input): under $MEMCNN_FUZZ_SCRATCH when set, else /dev/shm when
// present (no disk write per execution), else the system's temporary folder. Made on first use,
// removed at a normal exit; libFuzzer ends with _Exit, which leaves it (empty), so scripts/fuzz.sh
// runs the targets in a folder of its own that it removes.
const std::string& scratch_dir();

// Writes bytes to path (replacing it); throws std::runtime_error when it cannot.
void write_input(const std::string& path, const uint8_t* data, size_t size);

// True when bytes starts with the gzip magic (1f 8b): the targets name such inputs .gz.
bool looks_gzipped(const uint8_t* data, size_t size);

// The bytes gzip'd (zlib, fastest level). Targets of gzip'd formats compress inputs that are not
// gzip'd already, so that the fuzzer's mutations of the contents reach the reader intact (a
// mutated gzip stream rarely inflates).
std::vector<uint8_t> gzip(const uint8_t* data, size_t size);

// Throws std::logic_error saying that a reader refused an input with an empty message.
[[noreturn]] void unclear_refusal(const char* exception_type);

// Runs body, catching the errors a reader may refuse an input with; one with an empty message
// becomes a finding (unclear_refusal), and any other exception escapes.
template <typename Body>
void refusing_clearly(Body&& body) {
  try {
    body();
  } catch (const c10::Error& e) {
    if (e.what_without_backtrace()[0] == '\0') unclear_refusal("c10::Error");
  } catch (const std::invalid_argument& e) {
    if (e.what()[0] == '\0') unclear_refusal("std::invalid_argument");
  } catch (const std::runtime_error& e) {
    if (e.what()[0] == '\0') unclear_refusal("std::runtime_error");
  }
}

}  // namespace memcnn::fuzz
