// memcnn._C: the C++ core behind the Python package.
//
// Python modules (F and G of a coupling, any module with forward and inverse) are wrapped in
// small C++ modules that call back into Python. Those adapters register the Python module's
// parameters and buffers (the very same tensors), so the core's memory-saving autograd function,
// its fused coupling backward, zero masks, buffer restore and RNG replay all work on them
// unchanged. The Python classes build a fresh adapter tree for every call, so it always sees the
// module as it is now (after .to(), load_state_dict, a replaced sub-module).
//
// The GIL: the core runs without it (the calls from Python release it), and an adapter takes it
// only for the Python call itself. Backward runs on an autograd engine thread that does not hold
// the GIL either: the adapter takes it for F or G and lets go before the core differentiates
// (torch::autograd::grad), so no thread ever waits for autograd work while holding the GIL.

#include "gil_object.h"

#include <memcnn/memcnn.h>
#include <memcnn/models/resnet.h>

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/torch.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using Tensors = std::vector<torch::Tensor>;

// Turns the pending Python error into torch's python_error, as torch's own Python functions do:
// the autograd engine carries it across threads and torch's handlers restore it unchanged (type,
// message, traceback).
[[noreturn]] void throw_current_python_error() {
  python_error error;
  error.persist();
  throw error;
}

// Python result -> tensors: a tensor, or a tuple/list of tensors.
Tensors to_tensors(const py::handle& result, const std::string& who) {
  Tensors tensors;
  if (THPVariable_Check(result.ptr())) {
    tensors.push_back(THPVariable_Unpack(result.ptr()));
    return tensors;
  }
  if (py::isinstance<py::tuple>(result) || py::isinstance<py::list>(result)) {
    for (const auto& item : result) {
      if (!THPVariable_Check(item.ptr())) {
        throw py::type_error(who + " returned a sequence with an element of type " +
                             std::string(py::str(item.get_type().attr("__name__"))) +
                             "; it must return a tensor or a tuple of tensors");
      }
      tensors.push_back(THPVariable_Unpack(item.ptr()));
    }
    return tensors;
  }
  throw py::type_error(who + " returned an object of type " +
                       std::string(py::str(result.get_type().attr("__name__"))) +
                       "; it must return a tensor or a tuple of tensors");
}

// A C++ module standing for a Python torch.nn.Module: its parameters and buffers are the Python
// module's own tensors, its calls go to Python.
class PyModuleBase : public virtual torch::nn::Module {
 public:
  explicit PyModuleBase(py::object module, std::string role) : module_(std::move(module)), role_(std::move(role)) {
    // Under their Python names (LibTorch forbids the dots: "0.weight" becomes "0/weight"), so that
    // the core's errors name them as the user knows them.
    for (const auto& item : module_.attr("named_parameters")()) {
      auto pair = item.cast<py::tuple>();
      if (pair[1].is_none()) continue;
      auto p = THPVariable_Unpack(pair[1].ptr());
      register_parameter(registrable_name(pair[0].cast<std::string>()), p, p.requires_grad());
    }
    for (const auto& item : module_.attr("named_buffers")()) {
      auto pair = item.cast<py::tuple>();
      if (pair[1].is_none()) continue;
      register_buffer(registrable_name(pair[0].cast<std::string>()), THPVariable_Unpack(pair[1].ptr()));
    }
    train(module_.attr("training").cast<bool>());
  }

  // Python's name with its dots replaced; a numbered one where that is taken or empty.
  std::string registrable_name(std::string name) const {
    std::replace(name.begin(), name.end(), '.', '/');
    if (name.empty() || named_parameters(false).contains(name) || named_buffers(false).contains(name) ||
        named_children().contains(name)) {
      name = "tensor" + std::to_string(parameters(false).size() + buffers(false).size());
    }
    return name;
  }

  ~PyModuleBase() override {
    // The last reference may go on an autograd thread without the GIL.
    if (Py_IsInitialized()) {
      py::gil_scoped_acquire gil;
      module_ = py::object();
    } else {
      module_.release();
    }
  }

  void pretty_print(std::ostream& stream) const override {
    py::gil_scoped_acquire gil;
    stream << role_ << "=" << std::string(py::str(module_.get_type().attr("__name__")));
  }

 protected:
  // module(*xs), or module.<method>(*xs); with the GIL, Python errors rethrown as Python errors.
  Tensors call(const char* method, const Tensors& xs) const {
    py::gil_scoped_acquire gil;
    try {
      py::tuple args(xs.size());
      for (std::size_t i = 0; i < xs.size(); ++i) args[i] = py::reinterpret_steal<py::object>(THPVariable_Wrap(xs[i]));
      py::object result = method == nullptr ? module_(*args) : module_.attr(method)(*args);
      return to_tensors(result, role_ + (method == nullptr ? "" : std::string(".") + method));
    } catch (py::error_already_set& error) {
      // As torch's own Python functions do: the exception travels as python_error, which the
      // autograd engine and torch's handlers restore unchanged (type, message, traceback).
      error.restore();
      throw_current_python_error();
    } catch (py::builtin_exception& error) {
      error.set_error();
      throw_current_python_error();
    }
  }

  py::object module_;
  std::string role_;
};

// F or G of a coupling, for one tensor and for several.
class PyTensorFnImpl : public PyModuleBase {
 public:
  using PyModuleBase::PyModuleBase;
  torch::Tensor forward(torch::Tensor x) {
    auto out = call(nullptr, {x});
    TORCH_CHECK_VALUE(out.size() == 1, role_, " returned ", out.size(), " tensors for one input tensor");
    return out.front();
  }
};

class PyTensorsFnImpl : public PyModuleBase {
 public:
  using PyModuleBase::PyModuleBase;
  Tensors forward(Tensors xs) { return call(nullptr, xs); }
};

// Any Python module with forward and inverse.
class PyInvertibleImpl : public PyModuleBase, public memcnn::InvertibleModule {
 public:
  using PyModuleBase::PyModuleBase;
  Tensors forward_multi(const Tensors& xs) override { return call(nullptr, xs); }
  Tensors inverse_multi(const Tensors& ys) override { return call("inverse", ys); }
};

using Handle = std::shared_ptr<memcnn::InvertibleModule>;

using memcnn::python::GilObject;

torch::nn::AnyModule python_fn(py::object module, const std::string& role, std::size_t n_tensors) {
  if (n_tensors == 1) return torch::nn::AnyModule(std::make_shared<PyTensorFnImpl>(std::move(module), role));
  return torch::nn::AnyModule(std::make_shared<PyTensorsFnImpl>(std::move(module), role));
}

Handle make_coupling(const std::string& kind, py::object F, py::object G, int64_t split_dim, std::size_t n_tensors,
                     bool training, bool exact, int64_t fraction_bits) {
  Handle coupling;
  auto f = python_fn(std::move(F), "Fm", n_tensors), g = python_fn(std::move(G), "Gm", n_tensors);
  if (kind == "additive") {
    coupling = std::make_shared<memcnn::AdditiveCouplingImpl>(
        f, g, memcnn::AdditiveCouplingOptions().split_dim(split_dim).exact(exact).fraction_bits(fraction_bits));
  } else {
    TORCH_CHECK_VALUE(!exact, "exact=True is for additive couplings only; an affine coupling's scaling cannot be "
                      "undone bit for bit");
    const auto adapter = kind == "sigmoid" ? memcnn::AffineAdapter::sigmoid : memcnn::AffineAdapter::naive;
    TORCH_CHECK_VALUE(kind == "sigmoid" || kind == "naive", "unknown coupling kind ", kind);
    coupling = std::make_shared<memcnn::AffineCouplingImpl>(
        f, g, memcnn::AffineCouplingOptions().split_dim(split_dim).adapter(adapter));
  }
  coupling->train(training);
  return coupling;
}

Tensors run(const Handle& fn, const Tensors& xs, bool inverse) {
  return inverse ? fn->inverse_multi(xs) : fn->forward_multi(xs);
}

Tensors run_wrapped(const Handle& fn, const Tensors& xs, bool inverse, bool training, bool keep_input,
                    bool keep_input_inverse, int64_t num_bwd_passes, bool disable, bool preserve_rng_state,
                    bool fused_backward) {
  auto options = memcnn::InvertibleModuleWrapperOptions()
                     .keep_input(keep_input)
                     .keep_input_inverse(keep_input_inverse)
                     .num_bwd_passes(num_bwd_passes)
                     .disable(disable)
                     .preserve_rng_state(preserve_rng_state)
                     .fused_backward(fused_backward);
  auto wrapper = std::make_shared<memcnn::InvertibleModuleWrapperImpl>(fn, options);
  wrapper->train(training);
  return inverse ? wrapper->inverse_multi(xs) : wrapper->forward_multi(xs);
}

Handle make_sequential(const std::vector<Handle>& members, bool training) {
  auto chain = std::make_shared<memcnn::InvertibleSequentialImpl>();
  for (const auto& m : members) chain->push_back(m);
  chain->train(training);
  return chain;
}

torch::Device device_of(const std::string& device) { return torch::Device(device); }

// The invertible layers (layers.h) keep their tensors in public members and in the module's
// parameter and buffer dictionaries. The Python classes own the tensors (nn.Parameter, buffers);
// before each call the C++ layer is pointed at them: parameters replaced in the member and the
// dictionary (so gradients reach the Python parameters), buffers made to share the Python
// buffers' storage (so ActNorm's initialisation is seen on both sides).
struct ModuleAccess : torch::nn::Module {
  static torch::OrderedDict<std::string, torch::Tensor>& parameters_of(torch::nn::Module& m) {
    return m.*(&ModuleAccess::parameters_);
  }
};

std::vector<std::pair<std::string, torch::Tensor*>> layer_members(torch::nn::Module& m) {
  if (auto* c = dynamic_cast<memcnn::InvertibleConv1x1Impl*>(&m)) {
    return {{"weight", &c->weight}, {"lower", &c->lower}, {"upper", &c->upper}, {"log_s", &c->log_s},
            {"permutation", &c->permutation}, {"sign_s", &c->sign_s}};
  }
  if (auto* a = dynamic_cast<memcnn::ActNormImpl*>(&m)) {
    return {{"bias", &a->bias}, {"log_scale", &a->log_scale}, {"initialized", &a->initialized}};
  }
  if (auto* p = dynamic_cast<memcnn::ChannelPermutationImpl*>(&m)) {
    return {{"permutation", &p->permutation}, {"inverse_permutation", &p->inverse_permutation}};
  }
  if (auto* r = dynamic_cast<memcnn::detail::OrthogonalResamplingBase*>(&m)) {
    return {{"free", &r->free}, {"base_pattern", &r->base_pattern}};
  }
  if (auto* c = dynamic_cast<memcnn::OrthogonalChannelMixingImpl*>(&m)) return {{"free", &c->free}};
  return {};
}

Handle make_layer(const std::string& kind, int64_t channels, int64_t block_size, uint64_t seed, bool reverse, bool lu,
                  double eps) {
  if (kind == "downsampling") {
    return std::make_shared<memcnn::InvertibleDownsamplingImpl>(memcnn::InvertibleDownsamplingOptions().block_size(block_size));
  }
  if (kind == "upsampling") {
    return std::make_shared<memcnn::InvertibleUpsamplingImpl>(
        memcnn::InvertibleUpsamplingOptions().block_size(block_size));
  }
  if (kind == "permutation") {
    return std::make_shared<memcnn::ChannelPermutationImpl>(
        memcnn::ChannelPermutationOptions(channels).seed(seed).reverse(reverse));
  }
  if (kind == "conv1x1") {
    return std::make_shared<memcnn::InvertibleConv1x1Impl>(memcnn::InvertibleConv1x1Options(channels).lu(lu));
  }
  if (kind == "actnorm") return std::make_shared<memcnn::ActNormImpl>(memcnn::ActNormOptions(channels).eps(eps));
  throw py::value_error("unknown layer kind '" + kind + "'");
}

std::vector<std::pair<std::string, torch::Tensor>> layer_tensors(const Handle& layer) {
  auto& m = dynamic_cast<torch::nn::Module&>(*layer);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : m.named_parameters(false)) tensors.emplace_back(item.key(), item.value());
  for (const auto& item : m.named_buffers(false)) tensors.emplace_back(item.key(), item.value());
  return tensors;
}

void bind_layer(const Handle& layer, const std::map<std::string, torch::Tensor>& tensors, bool training) {
  auto& m = dynamic_cast<torch::nn::Module&>(*layer);
  auto& parameters = ModuleAccess::parameters_of(m);
  for (auto& [name, member] : layer_members(m)) {
    auto found = tensors.find(name);
    if (found == tensors.end() || !member->defined()) continue;
    if (auto* slot = parameters.find(name)) {
      // Written only when Python's tensor is another one: threads that share the layer and run it
      // without the GIL read these handles.
      if (slot->unsafeGetTensorImpl() != found->second.unsafeGetTensorImpl()) *slot = found->second;
      if (member->unsafeGetTensorImpl() != found->second.unsafeGetTensorImpl()) *member = found->second;
    } else if (member->unsafeGetTensorImpl() != found->second.unsafeGetTensorImpl()) {
      member->set_data(found->second);  // a buffer: the same impl stays in the dictionary
    }
  }
  m.train(training);
}

// A model of memcnn::models built in C++ (F and G C++ modules), for the benchmark's comparison with
// the same network built in Python.
struct CppModel {
  memcnn::models::ResNet model{nullptr};
  CppModel(const std::string& name, bool fused_backward) {
    auto options = memcnn::models::model_options(name);
    options.wrapper(memcnn::InvertibleModuleWrapperOptions().fused_backward(fused_backward));
    model = memcnn::models::ResNet(options);
  }
  // One training step: forward, cross-entropy, backward; returns the loss.
  double step(const torch::Tensor& x, const torch::Tensor& target) {
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), target);
    loss.backward();
    return loss.item<double>();
  }
  void zero_grad() { memcnn::zero_gradients_in_place(model->parameters()); }
  int64_t parameter_count() const { return memcnn::models::count_parameters(*model); }
};

}  // namespace

// bind_resampling.cpp: the orthogonal resampling, channel mixing and channel split layers.
void bind_resampling(py::module_& m);
// bind_vit.cpp: the vision transformers of memcnn::models (ViT, RevViT).
void bind_vit(py::module_& m);
// bind_revgan.cpp: the reversible GANs of memcnn::models (RevGAN generator, conventional pair, PatchGAN).
void bind_revgan(py::module_& m);
// bind_memory_plan.cpp: the memory planner (memory_plan.h) for memcnn.memory_plan.
void bind_memory_plan(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "memcnn's C++ core (LibTorch) behind the Python package";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (python_error& e) {
      e.restore();
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

  py::class_<memcnn::InvertibleModule, Handle>(m, "Invertible",
                                                "A C++ invertible block (built per call by the Python classes)");

  m.def("python_invertible",
        [](py::object module, bool training) -> Handle {
          auto h = std::make_shared<PyInvertibleImpl>(std::move(module), "fn");
          h->train(training);
          return h;
        },
        py::arg("module"), py::arg("training"));
  m.def("coupling", &make_coupling, py::arg("kind"), py::arg("Fm"), py::arg("Gm"), py::arg("split_dim"),
        py::arg("n_tensors"), py::arg("training"), py::arg("exact") = false,
        py::arg("fraction_bits") = memcnn::kDefaultFractionBits);
  m.def("quantize_to_grid", &memcnn::quantize_to_grid, py::arg("x"), py::arg("fraction_bits"));
  // The option's rule (memcnn::check_fraction_bits), for the Python classes to fail when built.
  m.def("check_fraction_bits",
        [](const std::string& who, int64_t fraction_bits) { memcnn::check_fraction_bits(who.c_str(), fraction_bits); },
        py::arg("who"), py::arg("fraction_bits"));
  m.def("exact_rebuild_fallbacks", &memcnn::exact_rebuild_fallbacks);
  m.def("sequential", &make_sequential, py::arg("members"), py::arg("training"));
  // The core runs without the GIL; the adapters take it around each Python call.
  using release_gil = py::call_guard<py::gil_scoped_release>;
  m.def("run", &run, py::arg("fn"), py::arg("inputs"), py::arg("inverse"), release_gil());
  m.def("run_wrapped", &run_wrapped, py::arg("fn"), py::arg("inputs"), py::arg("inverse"), py::arg("training"),
        py::arg("keep_input"), py::arg("keep_input_inverse"), py::arg("num_bwd_passes"), py::arg("disable"),
        py::arg("preserve_rng_state"), py::arg("fused_backward"), release_gil());
  m.def("log_det",
        [](const Handle& fn, const Tensors& xs) {
          auto* l = dynamic_cast<memcnn::LogDetModule*>(fn.get());
          TORCH_CHECK_VALUE(l != nullptr, "log_det: this module has no log-determinant");
          return l->log_det(xs);
        },
        py::arg("fn"), py::arg("inputs"), release_gil());
  m.def("is_invertible",
        [](const Handle& fn, const std::vector<std::vector<int64_t>>& shapes, const torch::Tensor& dtype_of,
           double atol, uint64_t seed) {
          return memcnn::is_invertible_module(std::dynamic_pointer_cast<torch::nn::Module>(fn),
                                              memcnn::InputShapes(shapes), dtype_of.scalar_type(), atol, seed);
        },
        py::arg("fn"), py::arg("shapes"), py::arg("dtype_of"), py::arg("atol"), py::arg("seed"), release_gil());
  m.def("is_freed", &memcnn::is_freed, py::arg("tensor"));

  m.def("checkpoint",
        [](py::object fn, const Tensors& inputs, const Tensors& parameters, py::object stateful,
           bool preserve_rng_state, int64_t num_bwd_passes) {
          // The callable and the module travel with the autograd node: a shared adapter keeps them.
          std::shared_ptr<PyModuleBase> state;
          if (!stateful.is_none()) state = std::make_shared<PyTensorsFnImpl>(stateful, "stateful");
          auto callable = std::make_shared<GilObject>(std::move(fn));
          auto call = [callable, state](const Tensors& xs) -> Tensors {
            py::gil_scoped_acquire gil;
            try {
              py::tuple args(xs.size());
              for (std::size_t i = 0; i < xs.size(); ++i) args[i] = py::reinterpret_steal<py::object>(THPVariable_Wrap(xs[i]));
              return to_tensors(callable->object(*args), "checkpoint function");
            } catch (py::error_already_set& error) {
              error.restore();
              throw_current_python_error();
            }
          };
          py::gil_scoped_release no_gil;
          return memcnn::checkpoint(call, inputs, parameters, state.get(),
                                    memcnn::CheckpointOptions().preserve_rng_state(preserve_rng_state).num_bwd_passes(num_bwd_passes));
        },
        py::arg("fn"), py::arg("inputs"), py::arg("parameters"), py::arg("stateful"), py::arg("preserve_rng_state"),
        py::arg("num_bwd_passes"));

  m.def("layer", &make_layer, py::arg("kind"), py::arg("channels") = 0, py::arg("block_size") = 2,
        py::arg("seed") = 0, py::arg("reverse") = false, py::arg("lu") = false, py::arg("eps") = 1e-6);
  m.def("layer_tensors", &layer_tensors, py::arg("layer"));
  m.def("bind_layer", &bind_layer, py::arg("layer"), py::arg("tensors"), py::arg("training"));
  bind_resampling(m);
  bind_vit(m);
  bind_revgan(m);
  bind_memory_plan(m);

  py::class_<CppModel>(m, "CppModel", "A memcnn::models network built in C++ (benchmark comparison)")
      .def(py::init<const std::string&, bool>(), py::arg("name"), py::arg("fused_backward") = true)
      .def("step", &CppModel::step, py::arg("x"), py::arg("target"), py::call_guard<py::gil_scoped_release>())
      .def("zero_grad", &CppModel::zero_grad)
      .def("parameter_count", &CppModel::parameter_count)
      .def("train", [](CppModel& m, bool on) { m.model->train(on); }, py::arg("mode") = true);

  m.def("enable_cpu_memory_tracking", &memcnn::enable_cpu_memory_tracking);
  m.def("cpu_memory_tracking_enabled", &memcnn::cpu_memory_tracking_enabled);
  py::class_<memcnn::MemoryProbe>(m, "MemoryProbe", "memcnn::MemoryProbe: bytes above those live when it was made")
      .def(py::init([](const std::string& device) { return std::make_unique<memcnn::MemoryProbe>(device_of(device)); }),
           py::arg("device") = "cpu")
      .def("peak_above_start", &memcnn::MemoryProbe::peak_above_start)
      .def("current_above_start", &memcnn::MemoryProbe::current_above_start);
  m.def("memory_stats",
        [](const std::string& device) {
          auto s = memcnn::memory_stats(device_of(device));
          return py::make_tuple(s.current_bytes, s.peak_bytes);
        },
        py::arg("device") = "cpu");
  m.def("reset_peak_memory", [](const std::string& device) { memcnn::reset_peak_memory(device_of(device)); },
        py::arg("device") = "cpu");
  m.def("set_log_level", [](const std::string& level) {
    if (level == "debug") memcnn::set_log_level(memcnn::LogLevel::Debug);
    else if (level == "info") memcnn::set_log_level(memcnn::LogLevel::Info);
    else if (level == "warning") memcnn::set_log_level(memcnn::LogLevel::Warning);
    else throw py::value_error("set_log_level: level must be 'debug', 'info' or 'warning', got '" + level + "'");
  });
}
