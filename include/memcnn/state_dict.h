#pragma once
/// @file
/// Weights across Python and C++: PyTorch's torch.save files read and written without Python.
///
/// A PyTorch state_dict saved with torch.save (the zip format PyTorch has written by default since
/// 1.6, the same family in 1.x and 2.x) is read by read_state_dict() and loaded into a C++ module by
/// name with load_state_dict(); write_state_dict() writes a file that Python opens with
/// torch.load(path) (weights_only=True too) and passes to Module.load_state_dict. Names may differ
/// between a C++ model and its Python twin: a KeyMap gives, for each C++ name, the Python one
/// (memcnn::models::python_key_map gives it for memcnn's models).
///
/// LibTorch's own torch::pickle_load cannot read a real state_dict (it turns the OrderedDict into
/// None), and torch::load reads only LibTorch's archives; this reader takes the subset of Python's
/// pickle that torch.save writes for tensors, dicts, lists and numbers, and refuses anything else
/// with an error naming the file and what it found, never running code from the file.

#include <torch/nn/module.h>
#include <torch/ordered_dict.h>
#include <torch/types.h>

#include <ATen/core/ivalue.h>

#include <functional>
#include <string>
#include <vector>

namespace memcnn {

/// Named tensors in the order of the file or of the module, as PyTorch's `state_dict()`.
using StateDict = torch::OrderedDict<std::string, torch::Tensor>;

/// For a C++ parameter or buffer name, the name it has in the file (Python's). A map that returns
/// an empty name says that the file does not hold that tensor (one Python rebuilds from options
/// rather than saving it): it is neither written nor expected. An empty KeyMap: the same names.
using KeyMap = std::function<std::string(const std::string& cpp_name)>;

/// Reads what torch.save wrote (zip format): tensors, dicts (ordered as written), lists, tuples,
/// strings, numbers, booleans and None, as an IValue (a tuple becomes a Tuple, a dict a GenericDict).
/// Tensors are on the CPU and own their memory; views sharing a storage in Python share it here.
/// Throws c10::Error naming `path` for a file that is missing, damaged, truncated, in PyTorch's
/// legacy (pre-1.6) format, a TorchScript archive, or a pickle of anything else.
c10::IValue read_torch_file(const std::string& path);

/// read_torch_file() of a file holding a dict from names to tensors (a state_dict).
StateDict read_state_dict(const std::string& path);

/// Writes `value` (tensors, dicts with string or int keys, lists, tuples, strings, numbers,
/// booleans, None) as torch.save does, atomically: a temporary file renamed over `path`.
void write_torch_file(const c10::IValue& value, const std::string& path);

/// Writes named tensors as a state_dict that Python's torch.load and load_state_dict take.
void write_state_dict(const StateDict& tensors, const std::string& path);

/// The module's parameters and buffers (persistent ones, as Python's state_dict holds) by their
/// names, renamed by `key_map` when one is given; detached, sharing the module's memory.
StateDict module_state_dict(const torch::nn::Module& module, const KeyMap& key_map = {});

/// How load_state_dict matches a file to a module.
struct LoadStateDictOptions {
  /// Every parameter and buffer must be found with its shape and nothing else may be in the file;
  /// otherwise the load throws, naming the missing, unexpected and misshapen keys. When false,
  /// what matches is loaded and the rest reported in the result.
  TORCH_ARG(bool, strict) = true;
  /// C++ name to file name; empty: the names are the same.
  TORCH_ARG(KeyMap, key_map);
  /// What the tensors came from (a path), named in errors.
  TORCH_ARG(std::string, source) = "the state dict";
};

/// What load_state_dict found: names are the file's (after the key map).
struct LoadStateDictResult {
  std::vector<std::string> missing;     ///< the module's, not in the file
  std::vector<std::string> unexpected;  ///< in the file, not the module's
  std::vector<std::string> mismatched;  ///< in both, another shape (with both shapes)
  int64_t loaded = 0;                   ///< tensors copied into the module
  /// Nothing missing, unexpected or mismatched.
  bool complete() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /// The lists above as one message (empty when complete).
  std::string describe() const;
};

/// Copies `tensors` into the module's parameters and buffers by name (converting the dtype to the
/// module's, keeping the module's device), without recording gradients. In strict mode nothing is
/// copied unless everything matches.
LoadStateDictResult load_state_dict(torch::nn::Module& module, const StateDict& tensors,
                                    const LoadStateDictOptions& options = {});

/// read_state_dict(path), then load_state_dict with `path` as the source named in errors.
LoadStateDictResult load_state_dict(torch::nn::Module& module, const std::string& path,
                                    LoadStateDictOptions options = {});

}  // namespace memcnn
