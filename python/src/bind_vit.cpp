// memcnn._C: the vision transformers of memcnn::models (vit.h) for memcnn.models.vit. The C++ model
// computes; the Python module owns the parameters (module_binding.h).

#include "module_binding.h"

#include <memcnn/models/resnet.h>
#include <memcnn/memory_plan.h>
#include <memcnn/models/vit.h>

#include <torch/csrc/utils/pybind.h>
#include <torch/torch.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

using memcnn::models::ClassifierImpl;
using Model = std::shared_ptr<ClassifierImpl>;

template <typename T>
T option(const py::dict& options, const char* key, T fallback) {
  return options.contains(key) ? options[key].cast<T>() : fallback;
}

memcnn::models::ViTOptions shape_from(const py::dict& o) {
  memcnn::models::ViTOptions shape;
  shape.image_size(option<int64_t>(o, "image_size", shape.image_size()))
      .in_channels(option<int64_t>(o, "in_channels", shape.in_channels()))
      .num_classes(option<int64_t>(o, "num_classes", shape.num_classes()))
      .patch_size(option<int64_t>(o, "patch_size", shape.patch_size()))
      .dim(option<int64_t>(o, "dim", shape.dim()))
      .depth(option<int64_t>(o, "depth", shape.depth()))
      .heads(option<int64_t>(o, "heads", shape.heads()))
      .mlp_dim(option<int64_t>(o, "mlp_dim", shape.mlp_dim()))
      .dropout(option<double>(o, "dropout", shape.dropout()))
      .attention_dropout(option<double>(o, "attention_dropout", shape.attention_dropout()))
      .drop_path(option<double>(o, "drop_path", shape.drop_path()))
      .layer_norm_eps(option<double>(o, "layer_norm_eps", shape.layer_norm_eps()));
  const auto pooling = option<std::string>(o, "pooling", "class_token");
  if (pooling != "class_token" && pooling != "mean") {
    throw py::value_error("pooling must be 'class_token' or 'mean', got '" + pooling + "'");
  }
  shape.pooling(pooling == "mean" ? memcnn::models::TokenPooling::mean : memcnn::models::TokenPooling::class_token);
  return shape;
}

Model make_transformer(bool reversible, const py::dict& o) {
  const auto shape = shape_from(o);
  if (!reversible) return std::make_shared<memcnn::models::ViTImpl>(shape);
  memcnn::models::RevViTOptions options(shape);
  const auto merge = option<std::string>(o, "merge", "concatenate");
  if (merge != "concatenate" && merge != "mean") {
    throw py::value_error("merge must be 'concatenate' or 'mean', got '" + merge + "'");
  }
  options.merge(merge == "mean" ? memcnn::models::StreamMerge::mean : memcnn::models::StreamMerge::concatenate)
      .exact(option<bool>(o, "exact", false))
      .fraction_bits(option<int64_t>(o, "fraction_bits", options.fraction_bits()))
      .single_node(option<bool>(o, "single_node", false));
  options.wrapper()
      .disable(!option<bool>(o, "memory_saving", true))
      .fused_backward(option<bool>(o, "fused_backward", true));
  return std::make_shared<memcnn::models::RevViTImpl>(options);
}

void bind_transformer(const Model& model, const std::map<std::string, torch::Tensor>& tensors, bool training) {
  memcnn::python::bind_module_parameters(*model, tensors, training, "transformer");
}

py::dict named_shape(const std::string& name, int64_t num_classes, int64_t in_channels, int64_t image_size) {
  const auto s = memcnn::models::transformer_options(name, num_classes, in_channels, image_size);
  py::dict d;
  d["image_size"] = s.image_size();
  d["in_channels"] = s.in_channels();
  d["num_classes"] = s.num_classes();
  d["patch_size"] = s.patch_size();
  d["dim"] = s.dim();
  d["depth"] = s.depth();
  d["heads"] = s.heads();
  d["mlp_dim"] = s.mlp_dim();
  d["pooling"] = s.pooling() == memcnn::models::TokenPooling::mean ? "mean" : "class_token";
  d["dropout"] = s.dropout();
  d["attention_dropout"] = s.attention_dropout();
  d["drop_path"] = s.drop_path();
  d["layer_norm_eps"] = s.layer_norm_eps();
  return d;
}

}  // namespace

void bind_vit(py::module_& m) {
  py::class_<ClassifierImpl, Model>(m, "Classifier", "A memcnn::models classifier built in C++ (ViT, RevViT)")
      .def("__repr__", [](const ClassifierImpl& model) {
        std::ostringstream text;
        model.pretty_print(text);
        return text.str();
      });
  m.def("transformer", &make_transformer, py::arg("reversible"), py::arg("options"));
  m.def("transformer_parameters", [](const Model& model) { return memcnn::python::named_parameter_list(*model); },
        py::arg("model"));
  m.def("bind_transformer", &bind_transformer, py::arg("model"), py::arg("tensors"), py::arg("training"));
  m.def("transformer_plannable_blocks", [](const Model& model) { return memcnn::plannable_blocks(*model); },
        py::arg("model"));
  m.def("transformer_forward", [](const Model& model, const torch::Tensor& images) { return model->forward(images); },
        py::arg("model"), py::arg("images"), py::call_guard<py::gil_scoped_release>());
  m.def("transformer_shape", &named_shape, py::arg("name"), py::arg("num_classes"), py::arg("in_channels"),
        py::arg("image_size"));
  m.def("transformer_names", &memcnn::models::transformer_names);
  m.def("is_reversible_transformer", &memcnn::models::is_reversible_transformer, py::arg("name"));
}
