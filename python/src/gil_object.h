#pragma once
// memcnn._C: a Python object held by C++ (a callback, an autograd node's module) whose last
// reference may be dropped on a thread without the GIL: released with the GIL held.

#include <pybind11/pybind11.h>

#include <utility>

namespace memcnn {
namespace python {

struct GilObject {
  pybind11::object object;
  explicit GilObject(pybind11::object o) : object(std::move(o)) {}
  ~GilObject() {
    if (Py_IsInitialized()) {
      pybind11::gil_scoped_acquire gil;
      object = pybind11::object();
    } else {
      object.release();
    }
  }
};

}  // namespace python
}  // namespace memcnn
