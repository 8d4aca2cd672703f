// Torch-free math of the BoxInst pairwise affinity loss (docs/method.md "Box-supervised mask loss"), shared by the
// CPU and CUDA kernels.
//
// For logits a, b with p = sigmoid(.), q = sigmoid(-.):
//   P_same = p_a p_b + q_a q_b,   loss = -log P_same,
//   d loss / d a = p_a q_a (q_b - p_b) / P_same      (no cancellation: every factor is computed directly).
// Both products are positive, so P_same has a relative error of a few ulp and -log P_same is accurate to a few ulp
// in absolute terms. Only when P_same underflows (|a|, |b| large with opposite signs) do we switch to the
// log-space form -logaddexp(logsig(a) + logsig(b), logsig(-a) + logsig(-b)), as the reference computes it.
#pragma once

#include "common.h"

namespace boxseg {

template <typename T>
struct PairwiseTraits;
template <>
struct PairwiseTraits<float> {
  static constexpr float tiny = 1e-30f;  // below this P_same may have lost precision to (sub)normal underflow
};
template <>
struct PairwiseTraits<double> {
  static constexpr double tiny = 1e-290;
};

// sigmoid(z) and sigmoid(-z), each without cancellation.
template <typename T>
BOXSEG_HD void sigmoid_pair(T z, T& p, T& q) {
  const T e = bx_exp(-(z >= T(0) ? z : -z));
  const T big = T(1) / (T(1) + e);
  const T small = e * big;
  p = z >= T(0) ? big : small;
  q = z >= T(0) ? small : big;
}

template <typename T>
BOXSEG_HD T log_sigmoid(T z) {
  const T m = z < T(0) ? z : T(0);
  return m - bx_log1p(bx_exp(-(z >= T(0) ? z : -z)));
}

// -log P_same(a, b) from the logits and their sigmoid pairs.
template <typename T>
BOXSEG_HD T pair_loss(T za, T pa, T qa, T zb, T pb, T qb) {
  const T same = pa * pb + qa * qb;
  if (same > PairwiseTraits<T>::tiny) return -bx_log(same);
  const T u = log_sigmoid(za) + log_sigmoid(zb);
  const T v = log_sigmoid(-za) + log_sigmoid(-zb);
  const T hi = u > v ? u : v;
  const T d = u > v ? v - u : u - v;
  return -(hi + bx_log1p(bx_exp(d)));
}

// d(-log P_same(a, b)) / d a.
template <typename T>
BOXSEG_HD T pair_grad(T za, T pa, T qa, T zb, T pb, T qb) {
  const T same = pa * pb + qa * qb;
  if (same > PairwiseTraits<T>::tiny) return pa * qa * (qb - pb) / same;
  // Underflow regime: d/da = sigmoid(a) - sigmoid(a + b).
  T ps, qs;
  sigmoid_pair(za + zb, ps, qs);
  return pa - ps;
}

}  // namespace boxseg
