// vtc_deploy._resample: the Text4Vis test-time preprocessing of libvtc (runtimes/cpp/src/rules/resize.cpp, the one
// C++ implementation of the rule) for the Python runtime. Optional: built at install when a C++ compiler is there;
// without it vtc_deploy.preprocess uses Pillow, whose bytes it equals (tests/test_preprocess.py compares them).
//
//   preprocess(frame, resize, size, crops, out) -> None
//     frame: C-contiguous uint8 buffer of shape [H, W, 3]; out: writable C-contiguous buffer of crops*size*size*3
//     bytes, filled with uint8 [crops, size, size, 3]. The GIL is released while it runs.
//   uses_avx2() -> bool: whether the resampling passes run with AVX2 on this CPU.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "rules/resize.h"

namespace {

// Releases a Py_buffer when it goes out of scope.
struct Buffer {
  Py_buffer view{};
  bool held = false;
  ~Buffer() {
    if (held) PyBuffer_Release(&view);
  }
};

PyObject* preprocess(PyObject*, PyObject* args) {
  PyObject *frame_obj = nullptr, *out_obj = nullptr;
  int resize = 0, size = 0, crops = 0;
  if (!PyArg_ParseTuple(args, "OiiiO:preprocess", &frame_obj, &resize, &size, &crops, &out_obj)) return nullptr;
  Buffer frame, out;
  if (PyObject_GetBuffer(frame_obj, &frame.view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) != 0) return nullptr;
  frame.held = true;
  if (frame.view.ndim != 3 || frame.view.itemsize != 1 || frame.view.shape[2] != 3 ||
      (frame.view.format != nullptr && std::strcmp(frame.view.format, "B") != 0)) {
    PyErr_SetString(PyExc_ValueError, "preprocess: expected a C-contiguous uint8 [H, W, 3] frame");
    return nullptr;
  }
  if (PyObject_GetBuffer(out_obj, &out.view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) != 0) return nullptr;
  out.held = true;
  const Py_ssize_t h = frame.view.shape[0], w = frame.view.shape[1];
  if (h < 1 || w < 1 || h > (1 << 20) || w > (1 << 20) || crops < 1 || size < 1 || size > (1 << 14) ||
      out.view.len != static_cast<Py_ssize_t>(crops) * size * size * 3) {
    PyErr_SetString(PyExc_ValueError, "preprocess: frame or output size out of range");
    return nullptr;
  }
  std::vector<uint8_t> views;
  const char* error = nullptr;
  PyObject* error_type = PyExc_ValueError;
  std::string message;
  Py_BEGIN_ALLOW_THREADS
  try {
    views = vtc::rules::preprocess(static_cast<const uint8_t*>(frame.view.buf), static_cast<int>(h),
                                   static_cast<int>(w), resize, size, crops);
  } catch (const std::bad_alloc&) {
    error_type = PyExc_MemoryError;
    error = "preprocess: out of memory";
  } catch (const std::exception& e) {
    message = e.what();
    error = message.c_str();
  }
  Py_END_ALLOW_THREADS
  if (error != nullptr) {
    PyErr_SetString(error_type, error);
    return nullptr;
  }
  if (static_cast<Py_ssize_t>(views.size()) != out.view.len) {
    PyErr_SetString(PyExc_RuntimeError, "preprocess: unexpected output size");
    return nullptr;
  }
  std::memcpy(out.view.buf, views.data(), views.size());
  Py_RETURN_NONE;
}

PyObject* uses_avx2(PyObject*, PyObject*) { return PyBool_FromLong(vtc::rules::detail::resize_uses_avx2() ? 1 : 0); }

PyMethodDef methods[] = {
    {"preprocess", preprocess, METH_VARARGS, "Shorter side to resize (bicubic), then 1 or 3 crops: fills out."},
    {"uses_avx2", uses_avx2, METH_NOARGS, "Whether the resampling passes run with AVX2 on this CPU."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_resample", nullptr, -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__resample(void) { return PyModule_Create(&module); }
