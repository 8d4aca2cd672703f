// Argument checks shared by the CPU and CUDA bindings; errors name the op, the argument and what was expected.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace boxseg {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "boxseg.ops.", op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_dims(const at::Tensor& t, int64_t dims, const char* op, const char* name, const char* shape) {
  TORCH_CHECK(t.dim() == dims, "boxseg.ops.", op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
}

inline void check_boxes(const at::Tensor& t, int64_t n, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == 4, "boxseg.ops.", op, ": ", name,
              " must have shape (", n, ", 4), got ", t.sizes());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name) {
  TORCH_CHECK(a.device() == b.device(), "boxseg.ops.", op, ": ", name, " is on ", b.device(),
              " but the first input is on ", a.device());
}

}  // namespace boxseg
