// Pre-processing: resize keeping the aspect ratio, pad to the size divisor, batch, write the graph input
// (float32 0..255, float32 normalised, or uint8), NCHW RGB.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "backend.h"
#include "thread_pool.h"

namespace boxseg {

// A uint8 RGB image of shape (height, width, 3) with arbitrary (non-negative) element strides, so that
// non-contiguous numpy views need no copy.
struct ImageView {
  const uint8_t* data = nullptr;
  int64_t height = 0;
  int64_t width = 0;
  int64_t stride_y = 0;
  int64_t stride_x = 3;
  int64_t stride_c = 1;
};

// How one image is resized. scale_y / scale_x map original pixels to input (resized) pixels.
struct ResizePlan {
  int64_t src_h = 0, src_w = 0;
  int64_t dst_h = 0, dst_w = 0;
  double scale_y() const { return double(dst_h) / double(src_h); }
  double scale_x() const { return double(dst_w) / double(src_w); }
};

// Aspect-preserving size: scale = min(min_size / shorter side, max_size / longer side), each term used only
// when its size is > 0; both <= 0 keeps the original size. Sizes are rounded half up and at least 1.
ResizePlan plan_resize(int64_t height, int64_t width, int64_t min_size, int64_t max_size);

// The padded batch size: the largest resized height/width rounded up to a multiple of `size_divisor`.
std::array<int64_t, 2> padded_size(const std::vector<ResizePlan>& plans, int64_t size_divisor);

struct InputSpec {
  InputType type = InputType::Float32;
  bool normalize = false;                       // write (x - mean) / std instead of x
  std::array<float, 3> mean{{0.f, 0.f, 0.f}};  // 0..255 scale
  std::array<float, 3> std{{1.f, 1.f, 1.f}};
};

// Writes the (batch, 3, padded_h, padded_w) input tensor to `dst` (float or uint8 per spec.type).
// Padding is 0 in the tensor's own space. Rows are spread over the pool.
void preprocess_batch(const std::vector<ImageView>& images, const std::vector<ResizePlan>& plans,
                      int64_t padded_h, int64_t padded_w, const InputSpec& spec, void* dst, ThreadPool& pool);

}  // namespace boxseg
