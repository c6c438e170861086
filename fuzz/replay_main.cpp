// The fuzz targets' main in builds without libFuzzer: runs the target over every file of the
// folders (or the files) named on the command line, as libFuzzer does when given files, and
// fails naming the input when the target throws. Registered with ctest, so the seed corpus and
// every input that once failed are replayed by the default test run.

#include "targets/fuzz_target.h"

#include <algorithm>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> inputs_in(const fs::path& place) {
  std::vector<fs::path> inputs;
  if (fs::is_directory(place)) {
    for (const auto& entry : fs::directory_iterator(place))
      if (entry.is_regular_file() && entry.path().filename().string()[0] != '.') inputs.push_back(entry.path());
    std::sort(inputs.begin(), inputs.end());
  } else if (fs::is_regular_file(place)) {
    inputs.push_back(place);
  } else {
    throw std::runtime_error(place.string() + " is neither a folder nor a file");
  }
  return inputs;
}

std::vector<uint8_t> contents(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " FOLDER_OR_FILE...: runs this fuzz target over each input\n";
    return 2;
  }
  int replayed = 0;
  int failed = 0;
  for (int a = 1; a < argc; ++a) {
    for (const fs::path& input : inputs_in(argv[a])) {
      const std::vector<uint8_t> bytes = contents(input);
      try {
        LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      } catch (const std::exception& e) {
        std::cerr << "FAILED " << input.string() << ": " << e.what() << "\n";
        ++failed;
      } catch (...) {
        std::cerr << "FAILED " << input.string() << ": an exception of unknown type\n";
        ++failed;
      }
      ++replayed;
    }
  }
  std::cout << "replayed " << replayed << " inputs, " << failed << " failed\n";
  return failed == 0 && replayed > 0 ? 0 : 1;
}
