// memcnn._C: the layers of resampling.h, channel_mixing.h and channel_split.h, and the helpers of
// orthogonal.h. The Python classes (memcnn.layers) own the layers' tensors, as for the layers of
// layers.h: bindings.cpp's layer_tensors / bind_layer point the C++ layer at them before each
// call (layer_members names the `free` member of the orthogonal layers).

#include <memcnn/channel_mixing.h>
#include <memcnn/channel_split.h>
#include <memcnn/invertible_module.h>
#include <memcnn/orthogonal.h>
#include <memcnn/resampling.h>

#include <torch/csrc/utils/pybind.h>
#include <torch/torch.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using Handle = std::shared_ptr<memcnn::InvertibleModule>;

memcnn::OrthogonalMethod parse_method(const std::string& method) {
  if (method == "cayley") return memcnn::OrthogonalMethod::cayley;
  if (method == "exp") return memcnn::OrthogonalMethod::exp;
  throw py::value_error("method must be 'cayley' or 'exp', got '" + method + "'");
}

memcnn::ResamplingInit parse_init(const std::string& init) {
  if (init == "haar") return memcnn::ResamplingInit::haar;
  if (init == "squeeze") return memcnn::ResamplingInit::squeeze;
  throw py::value_error("init must be 'haar' or 'squeeze', got '" + init + "'");
}

// kind: "downsampling", "upsampling" (channels: the fine resolution's, stride: 1 to 3 entries) or
// "mixing" (channels; stride and init unused).
Handle make_orthogonal_layer(const std::string& kind, int64_t channels, const std::vector<int64_t>& stride,
                             const std::string& method, const std::string& init, bool learnable, bool random_init) {
  const auto parsed_method = parse_method(method);
  if (kind == "mixing") {
    return std::make_shared<memcnn::OrthogonalChannelMixingImpl>(memcnn::OrthogonalChannelMixingOptions(channels)
                                                                     .method(parsed_method)
                                                                     .learnable(learnable)
                                                                     .random_init(random_init));
  }
  const auto options = memcnn::OrthogonalResamplingOptions(channels, stride)
                           .method(parsed_method)
                           .init(parse_init(init))
                           .learnable(learnable);
  if (kind == "downsampling") return std::make_shared<memcnn::OrthogonalDownsamplingImpl>(options);
  if (kind == "upsampling") return std::make_shared<memcnn::OrthogonalUpsamplingImpl>(options);
  throw py::value_error("unknown orthogonal layer kind '" + kind + "'");
}

Handle make_split_layer(const std::string& kind, int64_t first_channels, int64_t dim) {
  const auto options = memcnn::ChannelSplitOptions(first_channels).dim(dim);
  if (kind == "split") return std::make_shared<memcnn::ChannelSplitImpl>(options);
  if (kind == "concat") return std::make_shared<memcnn::ChannelConcatImpl>(options);
  throw py::value_error("unknown split layer kind '" + kind + "'");
}

// The orthogonal matrices a layer computes with, in its precision: [channels, B, B] for
// resampling, [C, C] for channel mixing. Differentiable in the layer's free parameter.
torch::Tensor layer_matrices(const Handle& layer) {
  if (auto* r = dynamic_cast<memcnn::detail::OrthogonalResamplingBase*>(layer.get())) return r->matrices();
  if (auto* c = dynamic_cast<memcnn::OrthogonalChannelMixingImpl*>(layer.get())) return c->matrix();
  throw py::type_error("orthogonal_layer_matrices: not an orthogonal resampling or channel mixing layer");
}

}  // namespace

void bind_resampling(py::module_& m) {
  using release_gil = py::call_guard<py::gil_scoped_release>;
  m.def("orthogonal_layer", &make_orthogonal_layer, py::arg("kind"), py::arg("channels"),
        py::arg("stride") = std::vector<int64_t>{}, py::arg("method") = "cayley", py::arg("init") = "haar",
        py::arg("learnable") = true, py::arg("random_init") = true);
  m.def("split_layer", &make_split_layer, py::arg("kind"), py::arg("first_channels"), py::arg("dim") = 1);
  m.def("orthogonal_layer_matrices", &layer_matrices, py::arg("layer"), release_gil());
  m.def("orthogonal_matrices",
        [](const c10::optional<torch::Tensor>& free, const torch::Tensor& base, const std::string& method) {
          return memcnn::orthogonal_matrices(free.value_or(torch::Tensor()), base, parse_method(method));
        },
        py::arg("free"), py::arg("base"), py::arg("method") = "cayley");
  m.def("haar_matrix", &memcnn::haar_matrix, py::arg("stride"));
  m.def("orthogonality_error", &memcnn::orthogonality_error, py::arg("matrices"), release_gil());
}
