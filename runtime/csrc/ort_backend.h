// ONNX Runtime backend. The library is never linked: it is dlopen-ed at run time from the installed
// `onnxruntime` / `onnxruntime-gpu` wheel (the Python side passes the path; the C++ example takes it as an
// argument or from BOXSEG_ORT_LIBRARY), and used through its versioned, append-only C API.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.h"

namespace boxseg {

// Loads the ONNX Runtime shared library once per process and returns its version. Calling it again with
// the same path is a no-op; a different path throws (two copies of ORT in one process would not share state).
std::string load_onnxruntime(const std::string& library_path);

// The C API version this runtime was compiled against (ORT_API_VERSION of the headers).
int onnxruntime_api_version_built();

// True after a successful load_onnxruntime().
bool onnxruntime_loaded();

// Version of the loaded library; throws if none is loaded.
std::string onnxruntime_version();

// Execution providers the loaded library offers, e.g. {"CUDAExecutionProvider", "CPUExecutionProvider"}.
std::vector<std::string> onnxruntime_providers();

std::unique_ptr<Backend> make_ort_backend(const BackendConfig& config);

}  // namespace boxseg
