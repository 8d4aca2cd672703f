#include "backend.h"

#include <stdexcept>

#include "ort_backend.h"
#ifdef BOXSEG_WITH_TENSORRT
#include "trt_backend.h"
#endif

namespace boxseg {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::unique_ptr<Backend> make_backend(const BackendConfig& config) {
  if (ends_with(config.model_path, ".engine") || ends_with(config.model_path, ".plan")) {
#ifdef BOXSEG_WITH_TENSORRT
    return make_trt_backend(config);
#else
    throw std::invalid_argument(config.model_path +
                                ": TensorRT engines need the TensorRT backend, which this build does not have "
                                "(rebuild with -DBOXSEG_WITH_TENSORRT=ON where TensorRT is installed)");
#endif
  }
  return make_ort_backend(config);
}

}  // namespace boxseg
