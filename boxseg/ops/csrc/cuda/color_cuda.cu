// CUDA kernels of color_similarity: LAB per pixel, then the similarity to each dilated neighbour.
#include "../color_kernels.h"
#include "../common.h"
#include "launchers.h"

namespace boxseg {
namespace cuda {
namespace {

template <typename T>
__global__ void lab_kernel(const T* img, T* lab, int64_t b, int64_t plane) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= b * plane) return;
  const int64_t bi = i / plane, p = i % plane;
  const T* src = img + bi * 3 * plane + p;
  T* dst = lab + bi * 3 * plane + p;
  T v[3];
  rgb_to_lab_pixel(src[0], src[plane], src[2 * plane], v);
  dst[0] = v[0];
  dst[plane] = v[1];
  dst[2 * plane] = v[2];
}

template <typename T>
__global__ void similarity_kernel(const T* lab, T* out, int64_t b, int h, int w, int k, int dilation, T theta) {
  const int64_t plane = static_cast<int64_t>(h) * w;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= b * plane) return;
  const int kk = k * k - 1;
  const int64_t bi = i / plane, p = i % plane;
  const int y = static_cast<int>(p / w), x = static_cast<int>(p % w);
  const T* l = lab + bi * 3 * plane;
  T* o = out + bi * kk * plane + p;
  for (int j = 0; j < kk; ++j) {
    int dy, dx;
    neighbour_offset(j, k, dilation, dy, dx);
    const int ny = y + dy, nx = x + dx;
    if (ny < 0 || ny >= h || nx < 0 || nx >= w) {
      o[j * plane] = T(0);
      continue;
    }
    const int64_t q = static_cast<int64_t>(ny) * w + nx;
    o[j * plane] = lab_similarity(l[p], l[plane + p], l[2 * plane + p], l[q], l[plane + q], l[2 * plane + q], theta);
  }
}

}  // namespace

template <typename T>
cudaError_t color_similarity(const T* img, T* lab, T* out, int64_t b, int64_t h, int64_t w, int kernel_size,
                             int dilation, T theta, cudaStream_t stream) {
  const int64_t total = b * h * w;
  if (total == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((total + kThreads - 1) / kThreads);
  lab_kernel<T><<<blocks, kThreads, 0, stream>>>(img, lab, b, h * w);
  similarity_kernel<T><<<blocks, kThreads, 0, stream>>>(lab, out, b, static_cast<int>(h), static_cast<int>(w),
                                                        kernel_size, dilation, theta);
  return cudaGetLastError();
}

template cudaError_t color_similarity<float>(const float*, float*, float*, int64_t, int64_t, int64_t, int, int,
                                             float, cudaStream_t);
template cudaError_t color_similarity<double>(const double*, double*, double*, int64_t, int64_t, int64_t, int, int,
                                              double, cudaStream_t);

}  // namespace cuda
}  // namespace boxseg
