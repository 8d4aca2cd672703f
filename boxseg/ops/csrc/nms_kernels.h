// Torch-free box IoU, evaluated in the same operation order as reference.box_iou so that NMS decisions at the
// threshold agree bit for bit (build with FP contraction off: no fused multiply-add).
#pragma once

#include "common.h"

namespace boxseg {

template <typename T>
BOXSEG_HD T box_area(const T* b) {
  const T w = b[2] - b[0], h = b[3] - b[1];
  return (w > T(0) ? w : T(0)) * (h > T(0) ? h : T(0));
}

template <typename T>
BOXSEG_HD T box_iou_pair(const T* a, const T* b) {
  const T left = a[0] > b[0] ? a[0] : b[0];
  const T top = a[1] > b[1] ? a[1] : b[1];
  const T right = a[2] < b[2] ? a[2] : b[2];
  const T bottom = a[3] < b[3] ? a[3] : b[3];
  T w = right - left, h = bottom - top;
  w = w > T(0) ? w : T(0);
  h = h > T(0) ? h : T(0);
  const T inter = w * h;
  const T uni = (box_area(a) + box_area(b)) - inter;
  return uni > T(0) ? inter / uni : T(0);
}

}  // namespace boxseg
