// memcnn._C: the reversible GANs of memcnn::models (revgan.h) for memcnn.models.revgan: the RevGAN
// generator, the conventional generator and pair, the PatchGAN discriminator. The C++ network
// computes; the Python module owns the parameters (module_binding.h).

#include "module_binding.h"

#include <memcnn/memory_plan.h>
#include <memcnn/models/revgan.h>

#include <torch/csrc/utils/pybind.h>
#include <torch/torch.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <sstream>
#include <string>

namespace py = pybind11;

namespace {

namespace models = memcnn::models;

// One network of revgan.h and which it is: "revgan", "convgan", "convgan_pair" or "patchgan".
struct GANNetwork {
  std::string kind;
  std::shared_ptr<torch::nn::Module> module;

  template <typename Impl>
  Impl& as(const char* who) const {
    auto* network = dynamic_cast<Impl*>(module.get());
    if (network == nullptr) throw py::type_error(std::string(who) + " is not available on a " + kind);
    return *network;
  }
};

// A key of the options that is there and not None.
bool given(const py::dict& options, const char* key) { return options.contains(key) && !options[key].is_none(); }

template <typename T>
T option(const py::dict& options, const char* key, T fallback) {
  return given(options, key) ? options[key].cast<T>() : fallback;
}

models::GANBlock block_from(const std::string& name) {
  if (name == "post_norm") return models::GANBlock::post_norm;
  if (name == "pre_norm_zero_init") return models::GANBlock::pre_norm_zero_init;
  throw py::value_error("block must be 'post_norm' (2-D, CVPR 2019) or 'pre_norm_zero_init' (3-D, MIDL 2019), got '" +
                        name + "'");
}

models::GANPadding padding_from(const std::string& name) {
  if (name == "reflect") return models::GANPadding::reflect;
  if (name == "replicate") return models::GANPadding::replicate;
  if (name == "zeros") return models::GANPadding::zeros;
  throw py::value_error("padding must be 'reflect', 'replicate' or 'zeros', got '" + name + "'");
}

// The generator options: RevGANOptions(dims)'s defaults, overridden by what the dictionary gives.
models::RevGANOptions generator_options(const py::dict& o) {
  models::RevGANOptions options(option<int64_t>(o, "dims", 2));
  options.channels_a(option<int64_t>(o, "channels_a", options.channels_a()))
      .channels_b(option<int64_t>(o, "channels_b", options.channels_b()))
      .ngf(option<int64_t>(o, "ngf", options.ngf()))
      .downsamplings(option<int64_t>(o, "downsamplings", options.downsamplings()))
      .stem_kernel(option<int64_t>(o, "stem_kernel", options.stem_kernel()))
      .depth(option<int64_t>(o, "depth", options.depth()))
      .pad_to_stride(option<bool>(o, "pad_to_stride", options.pad_to_stride()))
      .add_input(option<bool>(o, "add_input", options.add_input()))
      .memory_saving(option<bool>(o, "memory_saving", options.memory_saving()))
      .init_std(option<double>(o, "init_std", options.init_std()));
  if (given(o, "block")) options.block(block_from(o["block"].cast<std::string>()));
  if (given(o, "padding")) options.padding(padding_from(o["padding"].cast<std::string>()));
  return options;
}

models::PatchGANOptions discriminator_options(const py::dict& o) {
  const int64_t dims = option<int64_t>(o, "dims", 2);
  models::PatchGANOptions options(dims, option<int64_t>(o, "in_channels", 3));
  return options.ndf(option<int64_t>(o, "ndf", options.ndf()))
      .layers(option<int64_t>(o, "layers", options.layers()))
      .instance_norm(option<bool>(o, "instance_norm", options.instance_norm()))
      .init_std(option<double>(o, "init_std", options.init_std()));
}

std::shared_ptr<GANNetwork> make_network(const std::string& kind, const py::dict& o) {
  std::shared_ptr<torch::nn::Module> module;
  if (kind == "revgan") {
    module = std::make_shared<models::RevGANGeneratorImpl>(generator_options(o));
  } else if (kind == "convgan") {
    module = std::make_shared<models::ConvGANGeneratorImpl>(generator_options(o));
  } else if (kind == "convgan_pair") {
    module = std::make_shared<models::ConvGANPairImpl>(generator_options(o));
  } else if (kind == "patchgan") {
    module = std::make_shared<models::PatchGANImpl>(discriminator_options(o));
  } else {
    throw py::value_error("unknown GAN network '" + kind + "': revgan, convgan, convgan_pair or patchgan");
  }
  return std::make_shared<GANNetwork>(GANNetwork{kind, module});
}

// The network's sizes after its defaults were applied (what Python shows and rebuilds from).
py::dict resolved_options(const GANNetwork& network) {
  py::dict d;
  if (network.kind == "patchgan") {
    const auto& o = network.as<models::PatchGANImpl>("options").options;
    d["dims"] = o.dims();
    d["in_channels"] = o.in_channels();
    d["ndf"] = o.ndf();
    d["layers"] = o.layers();
    d["instance_norm"] = o.instance_norm();
    d["init_std"] = o.init_std();
    return d;
  }
  models::RevGANOptions o(2);
  if (network.kind == "revgan") o = network.as<models::RevGANGeneratorImpl>("options").options;
  if (network.kind == "convgan") o = network.as<models::ConvGANGeneratorImpl>("options").options;
  if (network.kind == "convgan_pair") o = network.as<models::ConvGANPairImpl>("options").options;
  d["dims"] = o.dims();
  d["channels_a"] = o.channels_a();
  d["channels_b"] = o.channels_b();
  d["ngf"] = o.ngf();
  d["downsamplings"] = o.downsamplings();
  d["stem_kernel"] = o.stem_kernel();
  d["depth"] = o.depth();
  d["block"] = o.block() == models::GANBlock::post_norm ? "post_norm" : "pre_norm_zero_init";
  d["padding"] = o.padding() == models::GANPadding::reflect     ? "reflect"
                 : o.padding() == models::GANPadding::replicate ? "replicate"
                                                                : "zeros";
  d["pad_to_stride"] = o.pad_to_stride();
  d["add_input"] = o.add_input();
  d["memory_saving"] = o.memory_saving();
  d["init_std"] = o.init_std();
  return d;
}

// Runs one of the network's computations: "forward" (every kind; a pair's A to B), "inverse" (the
// RevGAN generator's B to A, a pair's B to A), "core_forward" and "core_inverse" (the RevGAN
// generator's invertible core alone).
torch::Tensor call(const GANNetwork& network, const std::string& method, const torch::Tensor& x) {
  if (network.kind == "revgan") {
    auto& generator = network.as<models::RevGANGeneratorImpl>(method.c_str());
    if (method == "forward") return generator.forward(x);
    if (method == "inverse") return generator.inverse(x);
    if (method == "core_forward") return generator.core->forward(x);
    if (method == "core_inverse") return generator.core->inverse(x);
  } else if (network.kind == "convgan_pair") {
    auto& pair = network.as<models::ConvGANPairImpl>(method.c_str());
    if (method == "forward") return pair.a_to_b(x);
    if (method == "inverse") return pair.b_to_a(x);
  } else if (method == "forward") {
    if (network.kind == "convgan") return network.as<models::ConvGANGeneratorImpl>("forward").forward(x);
    return network.as<models::PatchGANImpl>("forward").forward(x);
  }
  throw py::value_error("a " + network.kind + " has no computation '" + method + "'");
}

}  // namespace

void bind_revgan(py::module_& m) {
  py::class_<GANNetwork, std::shared_ptr<GANNetwork>>(m, "GANNetwork",
                                                       "A memcnn::models GAN network built in C++ (revgan.h)")
      .def_readonly("kind", &GANNetwork::kind)
      .def("__repr__", [](const GANNetwork& network) {
        std::ostringstream text;
        network.module->pretty_print(text);
        return text.str();
      });
  m.def("gan_network", &make_network, py::arg("kind"), py::arg("options"));
  m.def("gan_options", &resolved_options, py::arg("network"));
  m.def("gan_plannable_blocks", [](const GANNetwork& network) { return memcnn::plannable_blocks(*network.module); },
        py::arg("network"));
  m.def("gan_parameters", [](const GANNetwork& network) { return memcnn::python::named_parameter_list(*network.module); },
        py::arg("network"));
  m.def("bind_gan",
        [](const GANNetwork& network, const std::map<std::string, torch::Tensor>& tensors, bool training) {
          memcnn::python::bind_module_parameters(*network.module, tensors, training, network.kind.c_str());
        },
        py::arg("network"), py::arg("tensors"), py::arg("training"));
  m.def("gan_call", &call, py::arg("network"), py::arg("method"), py::arg("x"),
        py::call_guard<py::gil_scoped_release>());
  m.def("gan_set_memory_saving",
        [](const GANNetwork& network, bool on) {
          network.as<models::RevGANGeneratorImpl>("set_memory_saving").set_memory_saving(on);
        },
        py::arg("network"), py::arg("on"));
  m.def("gan_receptive_field",
        [](const GANNetwork& network) { return network.as<models::PatchGANImpl>("receptive_field").receptive_field(); },
        py::arg("network"));
}
