#pragma once
// memcnn._C: how a memcnn::models network built in C++ computes with parameters a Python module
// owns (memcnn.models.vit, memcnn.models.revgan). Python holds nn.Parameters under the C++ names;
// before each call bind_module_parameters points every registered tensor of the C++ network, and
// the member that holds it, at the Python tensor of the same name: so .to(), load_state_dict,
// optimizers and copies act on what the C++ network computes with, and gradients arrive on the
// Python tensors.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace memcnn {
namespace python {

// The C++ names and values of the network's parameters (Python copies them into its own).
std::vector<std::pair<std::string, torch::Tensor>> named_parameter_list(const torch::nn::Module& network);

// Points the network's parameters at `tensors` (by name; every parameter must be there) and sets
// its training mode. `what` names the network in errors. Writes only what changed: threads that
// share the network and run it without the GIL read these handles.
void bind_module_parameters(torch::nn::Module& network, const std::map<std::string, torch::Tensor>& tensors,
                            bool training, const char* what);

}  // namespace python
}  // namespace memcnn
