// Torch-free helpers shared by the CPU (.cpp) and CUDA (.cu) kernels.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define BOXSEG_HD __host__ __device__ __forceinline__
#else
#define BOXSEG_HD inline
#endif

namespace boxseg {

// Math wrappers: overloaded float/double versions on both host and device (no silent promotion to double).
#if defined(__CUDA_ARCH__)
BOXSEG_HD float bx_exp(float x) { return expf(x); }
BOXSEG_HD double bx_exp(double x) { return ::exp(x); }
BOXSEG_HD float bx_log(float x) { return logf(x); }
BOXSEG_HD double bx_log(double x) { return ::log(x); }
BOXSEG_HD float bx_log1p(float x) { return log1pf(x); }
BOXSEG_HD double bx_log1p(double x) { return ::log1p(x); }
BOXSEG_HD float bx_sqrt(float x) { return sqrtf(x); }
BOXSEG_HD double bx_sqrt(double x) { return ::sqrt(x); }
BOXSEG_HD float bx_pow(float x, float y) { return powf(x, y); }
BOXSEG_HD double bx_pow(double x, double y) { return ::pow(x, y); }
#else
template <typename T> inline T bx_exp(T x) { return std::exp(x); }
template <typename T> inline T bx_log(T x) { return std::log(x); }
template <typename T> inline T bx_log1p(T x) { return std::log1p(x); }
template <typename T> inline T bx_sqrt(T x) { return std::sqrt(x); }
template <typename T> inline T bx_pow(T x, T y) { return std::pow(x, y); }
#endif

// Pixels [start, end) of a grid of `size` cells whose centres (i + 0.5) lie in the closed interval [lo, hi].
// Same rule as reference.box_masks; NaN or inverted intervals give an empty range.
// lo - 0.5 and hi - 0.5 are exact for |lo|, |hi| < 2^22, so ceil/floor reproduce the centre comparison exactly.
template <typename T>
BOXSEG_HD void centre_range(T lo, T hi, int size, int& start, int& end) {
  start = 0;
  end = 0;
  if (!(lo <= hi) || size <= 0) return;
  T a = std::ceil(lo - T(0.5));
  T b = std::floor(hi - T(0.5));
  if (a < T(0)) a = T(0);
  if (a > T(size)) a = T(size);
  if (b < T(-1)) b = T(-1);
  if (b > T(size - 1)) b = T(size - 1);
  start = static_cast<int>(a);
  end = static_cast<int>(b) + 1;
  if (end < start) end = start;
}

// Integer box of instance pixels (rows [y0, y1), cols [x0, x1)); empty when y0 == y1 or x0 == x1.
struct PixelBox {
  int y0, y1, x0, x1;
  BOXSEG_HD bool contains(int y, int x) const { return y >= y0 && y < y1 && x >= x0 && x < x1; }
  BOXSEG_HD bool empty() const { return y0 >= y1 || x0 >= x1; }
};

template <typename T>
BOXSEG_HD PixelBox pixel_box(const T* xyxy, int height, int width) {
  PixelBox b;
  centre_range(xyxy[0], xyxy[2], width, b.x0, b.x1);
  centre_range(xyxy[1], xyxy[3], height, b.y0, b.y1);
  if (b.empty()) b.y0 = b.y1 = b.x0 = b.x1 = 0;
  return b;
}

// Neighbour j of a k x k window with dilation d, row-major with the centre removed (reference.neighbour_offsets).
// Neighbour j and neighbour (k*k - 2 - j) are opposite offsets.
BOXSEG_HD void neighbour_offset(int j, int kernel_size, int dilation, int& dy, int& dx) {
  const int centre = (kernel_size * kernel_size) / 2;
  const int flat = j < centre ? j : j + 1;
  const int r = kernel_size / 2;
  dy = (flat / kernel_size - r) * dilation;
  dx = (flat % kernel_size - r) * dilation;
}

}  // namespace boxseg
