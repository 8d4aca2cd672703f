// Schemas of the low-level kernels (namespace boxseg_ext). The public ops, with autograd and fake
// implementations, are torch.library custom ops in boxseg/ops/library.py that call these.
#include <torch/library.h>

TORCH_LIBRARY(boxseg_ext, m) {
  m.def("color_similarity(Tensor images, int kernel_size, int dilation, float theta) -> Tensor");
  m.def(
      "pairwise_forward(Tensor logits, Tensor sim, Tensor img_idx, Tensor boxes, float tau, int dilation)"
      " -> (Tensor, Tensor)");
  m.def(
      "pairwise_backward(Tensor logits, Tensor sim, Tensor img_idx, Tensor boxes, float tau, int dilation)"
      " -> Tensor");
  m.def(
      "pairwise_forward_backward(Tensor logits, Tensor sim, Tensor img_idx, Tensor boxes, float tau, int dilation)"
      " -> (Tensor, Tensor, Tensor)");
  m.def(
      "fuse_masks(Tensor probs, Tensor gt_idx, Tensor scores, Tensor ious, Tensor gt_boxes, float tau_m)"
      " -> (Tensor, Tensor, Tensor)");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor classes, float iou_threshold) -> Tensor");
}
