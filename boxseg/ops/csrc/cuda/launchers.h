// Torch-free host entry points of the CUDA kernels (raw device pointers + stream). binding_cuda.cpp calls them
// from torch; the .cu files that define them include no torch header, so nvcc can compile-check them anywhere.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common.h"

namespace boxseg {
namespace cuda {

constexpr int kThreads = 256;

// Blocks per instance (grid x) used by pairwise_forward; the partial buffers hold n_blocks_y * this many entries.
BOXSEG_HD int64_t pairwise_blocks_x(int64_t h, int64_t w) { return (h * w + kThreads - 1) / kThreads; }
BOXSEG_HD int64_t grid_y(int64_t n) { return n < 65535 ? (n > 0 ? n : 1) : 65535; }

// img (B,3,H,W) -> lab scratch (B,3,H,W) and out (B,k*k-1,H,W).
template <typename T>
cudaError_t color_similarity(const T* img, T* lab, T* out, int64_t b, int64_t h, int64_t w, int kernel_size,
                             int dilation, T theta, cudaStream_t stream);

// Partial sums per block: block_sums/block_counts have grid_y(n) * pairwise_blocks_x(h, w) entries.
template <typename T>
cudaError_t pairwise_forward(const T* logits, const T* sim, const int64_t* img_idx, const double* boxes, int64_t n,
                             int64_t h, int64_t w, int kernel_size, int dilation, T tau, double* block_sums,
                             long long* block_counts, cudaStream_t stream);

// grad (N,H,W): unnormalised gradient, every element written.
template <typename T>
cudaError_t pairwise_backward(const T* logits, const T* sim, const int64_t* img_idx, const double* boxes, int64_t n,
                              int64_t h, int64_t w, int kernel_size, int dilation, T tau, T* grad,
                              cudaStream_t stream);

// Candidates grouped by GT: order (M,) candidate ids sorted by GT (stable), start (G+1,) offsets into order.
// Scratch: gates (M,), gt_info (2*G,), conf_sum (G,) and conf_count (G,) zero-initialised by the caller.
// fused (G,H,W) must be zero-initialised; weight (G,), valid (G,) are written.
template <typename T>
cudaError_t fuse_masks(const T* probs, const int64_t* order, const int64_t* start, const T* scores, const T* ious,
                       const double* gt_boxes, int64_t g, int64_t h, int64_t w, T tau_m, T* gates, T* gt_info,
                       double* conf_sum, unsigned long long* conf_count, T* fused, T* weight, bool* valid,
                       cudaStream_t stream);

// Boxes (N,4) and classes (N,) already sorted by rank. mask (N, ceil(N/64)) 64-bit words: bit j of row i set when
// j > i, same class and IoU(i, j) > thr.
BOXSEG_HD int64_t nms_words(int64_t n) { return (n + 63) / 64; }
template <typename T>
cudaError_t nms_mask(const T* boxes, const int64_t* classes, int64_t n, T thr, unsigned long long* mask,
                     cudaStream_t stream);

}  // namespace cuda
}  // namespace boxseg
