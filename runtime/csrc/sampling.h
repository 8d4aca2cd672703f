// The one bilinear sampling convention used by both the image resize and the mask paste (the same as
// PyTorch's interpolate(mode="bilinear", align_corners=False) and runtime/reference.py):
// destination pixel i has its centre at (i + 0.5) in destination pixels; it samples the source at
// src = (i + 0.5) * src_per_dst - 0.5 (source pixel centres at integers), clamped to [0, n - 1].
#pragma once

#include <cmath>
#include <cstdint>

namespace boxseg {

struct AxisTap {
  int64_t i0;  // lower source index
  int64_t i1;  // upper source index (== i0 at the border)
  float w1;    // weight of i1; i0 gets 1 - w1
};

inline AxisTap axis_tap(double src, int64_t n) {
  if (!(src > 0.0)) src = 0.0;  // also maps NaN to 0
  int64_t i0 = static_cast<int64_t>(std::floor(src));
  if (i0 >= n - 1) return {n - 1, n - 1, 0.f};
  return {i0, i0 + 1, static_cast<float>(src - static_cast<double>(i0))};
}

// Tap for destination index `i` when one destination pixel spans `src_per_dst` source pixels.
inline AxisTap resize_tap(int64_t i, double src_per_dst, int64_t n) {
  return axis_tap((static_cast<double>(i) + 0.5) * src_per_dst - 0.5, n);
}

}  // namespace boxseg
