// CUDA suppression mask for class-aware NMS over boxes already sorted by rank: a 64 x 64 tile per block, with the
// column boxes staged in shared memory. The caller scans the mask greedily on the host.
#include "../common.h"
#include "../nms_kernels.h"
#include "launchers.h"

namespace boxseg {
namespace cuda {
namespace {

template <typename T>
__global__ void nms_mask_kernel(const T* boxes, const int64_t* classes, int64_t n, T thr, unsigned long long* mask) {
  const int64_t row_block = blockIdx.y, col_block = blockIdx.x;
  if (col_block < row_block) return;  // only j > i matters
  const int64_t words = nms_words(n);
  const int64_t rows_left = n - row_block * 64, cols_left = n - col_block * 64;
  const int rows = rows_left < 64 ? static_cast<int>(rows_left) : 64;
  const int cols = cols_left < 64 ? static_cast<int>(cols_left) : 64;
  __shared__ T s_boxes[64 * 4];
  __shared__ int64_t s_cls[64];
  if (threadIdx.x < cols) {
    const int64_t j = col_block * 64 + threadIdx.x;
    for (int c = 0; c < 4; ++c) s_boxes[threadIdx.x * 4 + c] = boxes[j * 4 + c];
    s_cls[threadIdx.x] = classes[j];
  }
  __syncthreads();
  if (threadIdx.x >= rows) return;
  const int64_t i = row_block * 64 + threadIdx.x;
  const T* bi = boxes + i * 4;
  const int64_t ci = classes[i];
  unsigned long long bits = 0;
  const int first = col_block == row_block ? static_cast<int>(threadIdx.x) + 1 : 0;
  for (int c = first; c < cols; ++c)
    if (s_cls[c] == ci && box_iou_pair(bi, s_boxes + c * 4) > thr) bits |= 1ULL << c;
  mask[i * words + col_block] = bits;
}

}  // namespace

template <typename T>
cudaError_t nms_mask(const T* boxes, const int64_t* classes, int64_t n, T thr, unsigned long long* mask,
                     cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t words = nms_words(n);
  cudaError_t err = cudaMemsetAsync(mask, 0, sizeof(unsigned long long) * n * words, stream);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(words), static_cast<unsigned>(words));
  nms_mask_kernel<T><<<grid, 64, 0, stream>>>(boxes, classes, n, thr, mask);
  return cudaGetLastError();
}

template cudaError_t nms_mask<float>(const float*, const int64_t*, int64_t, float, unsigned long long*, cudaStream_t);
template cudaError_t nms_mask<double>(const double*, const int64_t*, int64_t, double, unsigned long long*,
                                      cudaStream_t);

}  // namespace cuda
}  // namespace boxseg
