// memcnn._C: the memory planner (memcnn/memory_plan.h) for memcnn.memory_plan. Python models hold
// two kinds of memory-saving blocks: the package's InvertibleModuleWrapper modules (Python objects,
// described here with a Python setter and reporting their forwards through
// report_block_forward_begin/end) and the wrappers inside networks built in C++ (RevViT, RevGAN:
// memcnn::plannable_blocks of the C++ network). The planner sees both alike.

#include "gil_object.h"

#include <memcnn/memory_plan.h>

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/torch.h>

#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using memcnn::BlockChoice;
using memcnn::MemoryPlan;
using memcnn::MemoryProfile;
using memcnn::PlannableBlock;
using Blocks = std::vector<PlannableBlock>;

using memcnn::python::GilObject;

// A block owned by Python: `owner` is its identity (its report_block_forward_* calls pass it),
// `set_choice` a callable taking "keep", "recompute" or "rebuild".
PlannableBlock python_block(const py::object& owner, const std::string& name, const std::string& kind,
                            const std::vector<bool>& allowed, py::function set_choice) {
  if (allowed.size() != memcnn::kBlockChoices) {
    throw py::value_error("PlannableBlock: allowed needs 3 flags (keep, recompute, rebuild), got " +
                          std::to_string(allowed.size()));
  }
  PlannableBlock block;
  block.key = owner.ptr();
  block.name = name;
  block.kind = kind;
  for (std::size_t i = 0; i < allowed.size(); ++i) block.allowed[i] = allowed[i];
  auto setter = std::make_shared<GilObject>(std::move(set_choice));
  // The owner too: its address is the key, so it must outlive the block.
  auto keep_owner = std::make_shared<GilObject>(owner);
  block.set_choice = [setter, keep_owner](BlockChoice choice) {
    py::gil_scoped_acquire gil;
    setter->object(memcnn::to_string(choice));
  };
  return block;
}

std::vector<std::string> choice_names(const std::vector<BlockChoice>& choices) {
  std::vector<std::string> names;
  for (const auto c : choices) names.emplace_back(memcnn::to_string(c));
  return names;
}

std::vector<BlockChoice> choices_from(const std::vector<std::string>& names) {
  std::vector<BlockChoice> choices;
  for (const auto& n : names) choices.push_back(memcnn::block_choice_from_string(n));
  return choices;
}

std::vector<torch::Tensor> tensors_of(const py::sequence& values) {
  std::vector<torch::Tensor> tensors;
  for (const auto& v : values) {
    if (THPVariable_Check(v.ptr())) tensors.push_back(THPVariable_Unpack(v.ptr()));
  }
  return tensors;
}

memcnn::ProfileOptions profile_options(const std::string& device, int64_t steps) {
  return memcnn::ProfileOptions().device(torch::Device(device)).steps(steps);
}

}  // namespace

void bind_memory_plan(py::module_& m) {
  py::class_<PlannableBlock>(m, "PlannableBlock", "memcnn::PlannableBlock: a block the memory planner sets")
      .def(py::init(&python_block), py::arg("owner"), py::arg("name"), py::arg("kind"), py::arg("allowed"),
           py::arg("set_choice"))
      .def_readwrite("name", &PlannableBlock::name, "its name in the model, as plans name it")
      .def_readonly("kind", &PlannableBlock::kind, "what it is (InvertibleModuleWrapper, Checkpointed)")
      .def_property_readonly(
          "allowed", [](const PlannableBlock& b) { return std::vector<bool>(b.allowed.begin(), b.allowed.end()); },
          "whether it offers keep, recompute, rebuild");

  py::class_<MemoryProfile>(m, "MemoryProfile", "memcnn::MemoryProfile: what profile_memory measured")
      .def_property_readonly("block_names",
                             [](const MemoryProfile& p) {
                               std::vector<std::string> names;
                               for (const auto& b : p.blocks) names.push_back(b.name);
                               return names;
                             },
                             "the blocks' names, in the order the forward runs them")
      .def_property_readonly("measured_peak_bytes",
                             [](const MemoryProfile& p) {
                               return std::vector<int64_t>(p.measured_peak_bytes.begin(), p.measured_peak_bytes.end());
                             },
                             "peak bytes above the step's start with every block at keep, recompute, rebuild")
      .def_property_readonly("measured_seconds", [](const MemoryProfile& p) {
        return std::vector<double>(p.measured_seconds.begin(), p.measured_seconds.end());
      }, "fastest step time (seconds) with every block at keep, recompute, rebuild");

  py::class_<MemoryPlan>(m, "MemoryPlan", "memcnn::MemoryPlan: a choice per block and its figures")
      .def(py::init<>(), "An empty plan (load_memory_plan fills one from a file).")
      .def_readwrite("block_names", &MemoryPlan::block_names, "the blocks' names, in forward order")
      .def_property(
          "choices", [](const MemoryPlan& p) { return choice_names(p.choices); },
          [](MemoryPlan& p, const std::vector<std::string>& names) { p.choices = choices_from(names); },
          "one per block: 'keep', 'recompute' or 'rebuild'")
      .def_readwrite("budget_bytes", &MemoryPlan::budget_bytes, "the budget planned for, in bytes")
      .def_readwrite("predicted_peak_bytes", &MemoryPlan::predicted_peak_bytes,
                     "the profile's activation peak for the plan, bytes above the step's start")
      .def_readwrite("predicted_seconds", &MemoryPlan::predicted_seconds, "the profile's step time, seconds")
      .def_readwrite("measured_peak_bytes", &MemoryPlan::measured_peak_bytes,
                     "the measured peak above the step's start, bytes (-1: not measured)")
      .def_readwrite("measured_seconds", &MemoryPlan::measured_seconds,
                     "the measured step time, seconds (-1: not measured)")
      .def("__str__", [](const MemoryPlan& p) {
        std::ostringstream text;
        memcnn::print_memory_plan(text, p);
        return text.str();
      }, "One line per block and the figures, in MiB (memcnn::print_memory_plan).");

  m.def("report_block_forward_begin",
        [](const py::object& owner, const py::sequence& inputs, bool training) {
          return memcnn::report_block_forward_begin(owner.ptr(), tensors_of(inputs), training);
        },
        py::arg("owner"), py::arg("inputs"), py::arg("training"));
  m.def("report_block_forward_end",
        [](const py::object& owner, const py::sequence& outputs) {
          memcnn::report_block_forward_end(owner.ptr(), tensors_of(outputs));
        },
        py::arg("owner"), py::arg("outputs"));
  // The GIL stays held: the step is Python, and the planner calls the blocks' Python setters.
  m.def("profile_memory",
        [](const Blocks& blocks, const std::function<void()>& step, const std::string& device, int64_t steps) {
          return memcnn::profile_memory(blocks, step, profile_options(device, steps));
        },
        py::arg("blocks"), py::arg("step"), py::arg("device"), py::arg("steps"));
  m.def("plan_memory",
        [](const MemoryProfile& profile, int64_t budget_bytes) { return memcnn::plan_memory(profile, budget_bytes); },
        py::arg("profile"), py::arg("budget_bytes"));
  m.def("minimum_budget_bytes", &memcnn::minimum_budget_bytes, py::arg("profile"));
  m.def("apply_memory_plan", py::overload_cast<const Blocks&, const MemoryPlan&>(&memcnn::apply_memory_plan),
        py::arg("blocks"), py::arg("plan"));
  m.def("fit_memory_plan",
        [](const Blocks& blocks, const std::function<void()>& step, int64_t budget_bytes, const std::string& device,
           int64_t steps, int retries) {
          MemoryProfile profile;
          auto plan = memcnn::fit_memory_plan(blocks, step, budget_bytes, profile_options(device, steps), retries,
                                              &profile);
          return std::make_pair(plan, profile);
        },
        py::arg("blocks"), py::arg("step"), py::arg("budget_bytes"), py::arg("device"), py::arg("steps"),
        py::arg("retries"));
}
