// Torch-free per-pixel math of color_similarity: sRGB [0,255] -> CIE-LAB (D65), and the neighbour similarity.
// Constants and formulas match boxseg/ops/reference.py (rgb_to_lab, color_similarity).
#pragma once

#include "common.h"

namespace boxseg {

template <typename T>
BOXSEG_HD T srgb_to_linear(T v) {
  const T c = v / T(255);
  return c > T(0.04045) ? bx_pow((c + T(0.055)) / T(1.055), T(2.4)) : c / T(12.92);
}

template <typename T>
BOXSEG_HD T lab_f(T t) {
  return t > T(0.008856) ? bx_pow(t, T(1.0 / 3.0)) : T(7.787) * t + T(16.0 / 116.0);
}

// rgb: three values in [0,255]; writes L, a, b.
template <typename T>
BOXSEG_HD void rgb_to_lab_pixel(T r, T g, T b, T* lab) {
  const T lr = srgb_to_linear(r), lg = srgb_to_linear(g), lb = srgb_to_linear(b);
  const T x = (T(0.412453) * lr + T(0.357580) * lg + T(0.180423) * lb) / T(0.95047);
  const T y = (T(0.212671) * lr + T(0.715160) * lg + T(0.072169) * lb) / T(1.0);
  const T z = (T(0.019334) * lr + T(0.119193) * lg + T(0.950227) * lb) / T(1.08883);
  const T fx = lab_f(x), fy = lab_f(y), fz = lab_f(z);
  lab[0] = T(116) * fy - T(16);
  lab[1] = T(500) * (fx - fy);
  lab[2] = T(200) * (fy - fz);
}

// exp(-||p - q|| / theta) for two LAB vectors.
template <typename T>
BOXSEG_HD T lab_similarity(T l0, T a0, T b0, T l1, T a1, T b1, T theta) {
  const T dl = l0 - l1, da = a0 - a1, db = b0 - b1;
  return bx_exp(-bx_sqrt(dl * dl + da * da + db * db) / theta);
}

}  // namespace boxseg
