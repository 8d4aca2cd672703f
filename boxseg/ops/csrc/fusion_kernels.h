// Torch-free math of Quality-aware Masks Fusion (BoxSeg Eq. 2) and Mask-Quality Scoring (BoxSeg Eq. 5).
#pragma once

#include "common.h"

namespace boxseg {

// Box-quality gate g = 1[s > tau_m] * sqrt(s * u) (Eq. 2). Negative products (invalid IoU) count as 0.
template <typename T>
BOXSEG_HD T fusion_gate(T score, T iou, T tau_m) {
  const T su = score * iou;
  return score > tau_m && su > T(0) ? bx_sqrt(su) : T(0);
}

// Per-GT summary of its candidates, computed before the per-pixel pass.
template <typename T>
struct FusionGt {
  T gate_sum;     // sum of gates; the GT is invalid when it is 0
  T score_mean;   // s_hat: mean of the scores above tau_m
};

// w = sqrt(s_hat * m_hat) with m_hat the mean fused probability over confident in-box pixels (Eq. 5).
template <typename T>
BOXSEG_HD bool fusion_weight(const FusionGt<T>& gt, double conf_sum, long long conf_count, T& w) {
  if (!(gt.gate_sum > T(0)) || conf_count <= 0) {
    w = T(0);
    return false;
  }
  const T m_hat = static_cast<T>(conf_sum / static_cast<double>(conf_count));
  w = bx_sqrt(gt.score_mean * m_hat);
  return true;
}

}  // namespace boxseg
