// CUDA kernels of Quality-aware Masks Fusion + Mask-Quality Scoring. One fusion launch covers every GT of the batch
// (grid y = GT); small per-GT kernels compute the gates before and the weights after.
#include "../common.h"
#include "../fusion_kernels.h"
#include "launchers.h"
#include "reduce.cuh"

namespace boxseg {
namespace cuda {
namespace {

// One thread per GT: gates of its candidates (in group order), gate sum and mean above-threshold score.
template <typename T>
__global__ void gates_kernel(const int64_t* order, const int64_t* start, const T* scores, const T* ious, int64_t g,
                             T tau_m, T* gates, T* gt_info) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g) return;
  double gsum = 0.0, ssum = 0.0;
  long long above = 0;
  for (int64_t c = start[i]; c < start[i + 1]; ++c) {
    const int64_t cand = order[c];
    gates[c] = fusion_gate(scores[cand], ious[cand], tau_m);
    gsum += gates[c];
    if (scores[cand] > tau_m) {
      ssum += scores[cand];
      ++above;
    }
  }
  gt_info[2 * i] = static_cast<T>(gsum);
  gt_info[2 * i + 1] = above > 0 ? static_cast<T>(ssum / static_cast<double>(above)) : T(0);
}

template <typename T>
__global__ void fuse_kernel(const T* probs, const int64_t* order, const int64_t* start, const T* gates,
                            const T* gt_info, const double* gt_boxes, int64_t g, int h, int w, T tau_m,
                            double* conf_sum, unsigned long long* conf_count, T* fused) {
  const int64_t plane = static_cast<int64_t>(h) * w;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = blockIdx.y; i < g; i += gridDim.y) {
    double csum = 0.0;
    long long ccnt = 0;
    const T gsum = gt_info[2 * i];
    const PixelBox box = pixel_box(gt_boxes + 4 * i, h, w);
    if (pix < plane && gsum > T(0)) {
      const int y = static_cast<int>(pix / w), x = static_cast<int>(pix % w);
      if (box.contains(y, x)) {
        T acc = T(0);
        for (int64_t c = start[i]; c < start[i + 1]; ++c) acc += gates[c] * probs[order[c] * plane + pix];
        const T v = acc / gsum;
        fused[i * plane + pix] = v;
        if (v > tau_m) {
          csum = v;
          ccnt = 1;
        }
      }
    }
    block_sum(csum, ccnt);  // every thread of the block reaches this for the same i
    if (threadIdx.x == 0 && ccnt > 0) {
      atomicAdd(conf_sum + i, csum);
      atomicAdd(conf_count + i, static_cast<unsigned long long>(ccnt));
    }
  }
}

template <typename T>
__global__ void weights_kernel(const T* gt_info, const double* conf_sum, const unsigned long long* conf_count,
                               int64_t g, T* weight, bool* valid) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= g) return;
  FusionGt<T> info{gt_info[2 * i], gt_info[2 * i + 1]};
  T wv;
  valid[i] = fusion_weight(info, conf_sum[i], static_cast<long long>(conf_count[i]), wv);
  weight[i] = wv;
}

// Invalid GTs read as zeros even when their box was fused.
template <typename T>
__global__ void clear_invalid_kernel(const bool* valid, int64_t g, int64_t plane, T* fused) {
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= plane) return;
  for (int64_t i = blockIdx.y; i < g; i += gridDim.y)
    if (!valid[i]) fused[i * plane + pix] = T(0);
}

}  // namespace

template <typename T>
cudaError_t fuse_masks(const T* probs, const int64_t* order, const int64_t* start, const T* scores, const T* ious,
                       const double* gt_boxes, int64_t g, int64_t h, int64_t w, T tau_m, T* gates, T* gt_info,
                       double* conf_sum, unsigned long long* conf_count, T* fused, T* weight, bool* valid,
                       cudaStream_t stream) {
  if (g == 0) return cudaSuccess;
  const unsigned gt_blocks = static_cast<unsigned>((g + kThreads - 1) / kThreads);
  gates_kernel<T><<<gt_blocks, kThreads, 0, stream>>>(order, start, scores, ious, g, tau_m, gates, gt_info);
  const int64_t plane = h * w;
  if (plane > 0) {
    const dim3 grid(static_cast<unsigned>((plane + kThreads - 1) / kThreads), static_cast<unsigned>(grid_y(g)));
    fuse_kernel<T><<<grid, kThreads, 0, stream>>>(probs, order, start, gates, gt_info, gt_boxes, g,
                                                  static_cast<int>(h), static_cast<int>(w), tau_m, conf_sum,
                                                  conf_count, fused);
  }
  weights_kernel<T><<<gt_blocks, kThreads, 0, stream>>>(gt_info, conf_sum, conf_count, g, weight, valid);
  if (plane > 0) {
    const dim3 grid(static_cast<unsigned>((plane + kThreads - 1) / kThreads), static_cast<unsigned>(grid_y(g)));
    clear_invalid_kernel<T><<<grid, kThreads, 0, stream>>>(valid, g, plane, fused);
  }
  return cudaGetLastError();
}

template cudaError_t fuse_masks<float>(const float*, const int64_t*, const int64_t*, const float*, const float*,
                                       const double*, int64_t, int64_t, int64_t, float, float*, float*, double*,
                                       unsigned long long*, float*, float*, bool*, cudaStream_t);
template cudaError_t fuse_masks<double>(const double*, const int64_t*, const int64_t*, const double*, const double*,
                                        const double*, int64_t, int64_t, int64_t, double, double*, double*, double*,
                                        unsigned long long*, double*, double*, bool*, cudaStream_t);

}  // namespace cuda
}  // namespace boxseg
