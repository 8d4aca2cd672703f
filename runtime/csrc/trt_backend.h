// TensorRT backend (compiled only with -DBOXSEG_WITH_TENSORRT=ON). Runs a serialized engine built from the
// exported ONNX graph; the engine has no ONNX metadata, so the `boxseg.*` keys come from a JSON file next to
// it: `<engine path>.json`, a flat object with the same keys and string values as the ONNX metadata.
#pragma once

#include <memory>

#include "backend.h"

namespace boxseg {

std::unique_ptr<Backend> make_trt_backend(const BackendConfig& config);

}  // namespace boxseg
