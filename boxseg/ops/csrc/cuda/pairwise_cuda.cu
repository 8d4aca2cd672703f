// CUDA kernels of the fused pairwise affinity loss: one thread per (instance, pixel); nothing of size
// N x 8 x H x W is allocated. Forward: each pixel a visits the pairs {a, a + off_j} for the half of the offsets that
// point up/left, weighted by the number of triples using the pair; blocks write partial sums (summed by the caller
// in a fixed order). Backward: gather form, each pixel sums the gradient of every triple it belongs to.
#include "../common.h"
#include "../pairwise_kernels.h"
#include "launchers.h"
#include "reduce.cuh"

namespace boxseg {
namespace cuda {
namespace {

struct Geometry {
  PixelBox box, region;
};

__device__ __forceinline__ Geometry instance_geometry(const double* xyxy, int h, int w, int radius) {
  Geometry g;
  g.box = pixel_box(xyxy, h, w);
  g.region = PixelBox{0, 0, 0, 0};
  if (!g.box.empty()) {
    g.region.y0 = max(0, g.box.y0 - radius);
    g.region.y1 = min(h, g.box.y1 + radius);
    g.region.x0 = max(0, g.box.x0 - radius);
    g.region.x1 = min(w, g.box.x1 + radius);
  }
  return g;
}

template <typename T>
__global__ void forward_kernel(const T* logits, const T* sim, const int64_t* img_idx, const double* boxes,
                               int64_t n, int h, int w, int k, int dilation, T tau, double* block_sums,
                               long long* block_counts) {
  const int kk = k * k - 1, half = kk / 2, radius = (k / 2) * dilation;
  const int64_t plane = static_cast<int64_t>(h) * w;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double sum = 0.0;
  long long count = 0;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    if (pix >= plane) break;
    const Geometry g = instance_geometry(boxes + 4 * i, h, w, radius);
    const int y = static_cast<int>(pix / w), x = static_cast<int>(pix % w);
    if (!g.region.contains(y, x)) continue;
    const T* z = logits + i * plane;
    const T* s = sim + img_idx[i] * kk * plane;
    const T za = z[pix];
    T pa, qa;
    sigmoid_pair(za, pa, qa);
    const bool a_in = g.box.contains(y, x);
    for (int j = 0; j < half; ++j) {
      int dy, dx;
      neighbour_offset(j, k, dilation, dy, dx);
      const int ny = y + dy, nx = x + dx;
      if (!g.region.contains(ny, nx)) continue;
      const int64_t q = static_cast<int64_t>(ny) * w + nx;
      const int wgt = (a_in && s[j * plane + pix] >= tau) + (g.box.contains(ny, nx) && s[(kk - 1 - j) * plane + q] >= tau);
      if (wgt == 0) continue;
      T pb, qb;
      sigmoid_pair(z[q], pb, qb);
      sum += wgt * static_cast<double>(pair_loss(za, pa, qa, z[q], pb, qb));
      count += wgt;
    }
  }
  block_sum(sum, count);
  if (threadIdx.x == 0) {
    const int64_t slot = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
    block_sums[slot] = sum;
    block_counts[slot] = count;
  }
}

template <typename T>
__global__ void backward_kernel(const T* logits, const T* sim, const int64_t* img_idx, const double* boxes,
                                int64_t n, int h, int w, int k, int dilation, T tau, T* grad) {
  const int kk = k * k - 1, radius = (k / 2) * dilation;
  const int64_t plane = static_cast<int64_t>(h) * w;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= plane) return;
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const Geometry g = instance_geometry(boxes + 4 * i, h, w, radius);
    const int y = static_cast<int>(pix / w), x = static_cast<int>(pix % w);
    T* out = grad + i * plane + pix;
    if (!g.region.contains(y, x)) {
      *out = T(0);
      continue;
    }
    const T* z = logits + i * plane;
    const T* s = sim + img_idx[i] * kk * plane;
    const T zc = z[pix];
    T pc, qc;
    sigmoid_pair(zc, pc, qc);
    const bool c_in = g.box.contains(y, x);
    double acc = 0.0;
    for (int j = 0; j < kk; ++j) {
      int dy, dx;
      neighbour_offset(j, k, dilation, dy, dx);
      const int ny = y + dy, nx = x + dx;
      if (!g.region.contains(ny, nx)) continue;
      const int64_t q = static_cast<int64_t>(ny) * w + nx;
      const int wgt = (c_in && s[j * plane + pix] >= tau) + (g.box.contains(ny, nx) && s[(kk - 1 - j) * plane + q] >= tau);
      if (wgt == 0) continue;
      T pn, qn;
      sigmoid_pair(z[q], pn, qn);
      acc += wgt * static_cast<double>(pair_grad(zc, pc, qc, z[q], pn, qn));
    }
    *out = static_cast<T>(acc);
  }
}

}  // namespace

template <typename T>
cudaError_t pairwise_forward(const T* logits, const T* sim, const int64_t* img_idx, const double* boxes, int64_t n,
                             int64_t h, int64_t w, int kernel_size, int dilation, T tau, double* block_sums,
                             long long* block_counts, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(pairwise_blocks_x(h, w)), static_cast<unsigned>(grid_y(n)));
  forward_kernel<T><<<grid, kThreads, 0, stream>>>(logits, sim, img_idx, boxes, n, static_cast<int>(h),
                                                   static_cast<int>(w), kernel_size, dilation, tau, block_sums,
                                                   block_counts);
  return cudaGetLastError();
}

template <typename T>
cudaError_t pairwise_backward(const T* logits, const T* sim, const int64_t* img_idx, const double* boxes, int64_t n,
                              int64_t h, int64_t w, int kernel_size, int dilation, T tau, T* grad,
                              cudaStream_t stream) {
  if (n == 0 || h * w == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(pairwise_blocks_x(h, w)), static_cast<unsigned>(grid_y(n)));
  backward_kernel<T><<<grid, kThreads, 0, stream>>>(logits, sim, img_idx, boxes, n, static_cast<int>(h),
                                                    static_cast<int>(w), kernel_size, dilation, tau, grad);
  return cudaGetLastError();
}

template cudaError_t pairwise_forward<float>(const float*, const float*, const int64_t*, const double*, int64_t,
                                             int64_t, int64_t, int, int, float, double*, long long*, cudaStream_t);
template cudaError_t pairwise_forward<double>(const double*, const double*, const int64_t*, const double*, int64_t,
                                              int64_t, int64_t, int, int, double, double*, long long*,
                                              cudaStream_t);
template cudaError_t pairwise_backward<float>(const float*, const float*, const int64_t*, const double*, int64_t,
                                              int64_t, int64_t, int, int, float, float*, cudaStream_t);
template cudaError_t pairwise_backward<double>(const double*, const double*, const int64_t*, const double*, int64_t,
                                               int64_t, int64_t, int, int, double, double*, cudaStream_t);

}  // namespace cuda
}  // namespace boxseg
