// Block-wide sum of one double and one 64-bit count (blockDim.x == kThreads, a power of two).
#pragma once

#include "launchers.h"

namespace boxseg {
namespace cuda {

__device__ __forceinline__ void block_sum(double& sum, long long& count) {
  __shared__ double s_sum[kThreads];
  __shared__ long long s_cnt[kThreads];
  s_sum[threadIdx.x] = sum;
  s_cnt[threadIdx.x] = count;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      s_sum[threadIdx.x] += s_sum[threadIdx.x + stride];
      s_cnt[threadIdx.x] += s_cnt[threadIdx.x + stride];
    }
    __syncthreads();
  }
  sum = s_sum[0];
  count = s_cnt[0];
  __syncthreads();
}

}  // namespace cuda
}  // namespace boxseg
