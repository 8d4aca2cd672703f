// Argument checks shared by the CPU and CUDA bindings: one function per op, called by both, so the two devices
// accept and reject exactly the same inputs. Errors name the op, the argument and what was expected.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace boxseg {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "boxseg.ops.", op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_dims(const at::Tensor& t, int64_t dims, const char* op, const char* name, const char* shape) {
  TORCH_CHECK(t.dim() == dims, "boxseg.ops.", op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
}

inline void check_boxes(const at::Tensor& t, int64_t n, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == 4, "boxseg.ops.", op, ": ", name,
              " must have shape (", n, ", 4), got ", t.sizes());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name) {
  TORCH_CHECK(a.device() == b.device(), "boxseg.ops.", op, ": ", name, " is on ", b.device(),
              " but the first input is on ", a.device());
}

// Every entry of the int64 tensor `idx` lies in [0, limit); runs on the tensor's own device.
inline void check_index_range(const at::Tensor& idx, int64_t limit, const char* op, const char* name,
                              const char* what) {
  if (idx.numel() == 0) return;
  const bool bad = idx.lt(0).logical_or_(idx.ge(limit)).any().item<bool>();
  TORCH_CHECK(!bad, "boxseg.ops.", op, ": every ", name, " entry must lie in [0, ", limit, ") (", what, ")");
}

inline void check_dilation(int64_t dilation, const char* op) {
  TORCH_CHECK(dilation >= 1, "boxseg.ops.", op, ": dilation must be >= 1, got ", dilation);
}

// --- color_similarity ------------------------------------------------------------------------------------------
inline void check_color_inputs(const at::Tensor& images, int64_t kernel_size, int64_t dilation) {
  const char* op = "color_similarity";
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "boxseg.ops.", op,
              ": images must have shape (B, 3, H, W), got ", images.sizes());
  check_float(images, op, "images");
  TORCH_CHECK(kernel_size >= 3 && kernel_size % 2 == 1, "boxseg.ops.", op,
              ": kernel_size must be an odd integer >= 3, got ", kernel_size);
  check_dilation(dilation, op);
}

// --- pairwise_affinity_loss ------------------------------------------------------------------------------------
struct PairwiseInputs {
  at::Tensor logits, sim, img, boxes;  // contiguous; sim in the logits' dtype, img int64, boxes float64
  int kernel_size;                     // k, from sim's k*k-1 channels
};

inline PairwiseInputs check_pairwise_inputs(const at::Tensor& logits, const at::Tensor& sim,
                                            const at::Tensor& img_idx, const at::Tensor& boxes, int64_t dilation,
                                            const char* op) {
  check_dims(logits, 3, op, "mask_logits", "(N, H, W)");
  check_float(logits, op, "mask_logits");
  check_dims(sim, 4, op, "color_sim", "(B, K*K-1, H, W)");
  check_boxes(boxes, logits.size(0), op, "boxes");
  check_same_device(logits, sim, op, "color_sim");
  check_same_device(logits, img_idx, op, "img_idx");
  check_same_device(logits, boxes, op, "boxes");
  TORCH_CHECK(img_idx.dim() == 1 && img_idx.size(0) == logits.size(0), "boxseg.ops.", op, ": img_idx must have ",
              logits.size(0), " entries (one per instance), got ", img_idx.sizes());
  TORCH_CHECK(sim.size(2) == logits.size(1) && sim.size(3) == logits.size(2), "boxseg.ops.", op,
              ": color_sim spatial size ", sim.sizes(), " does not match mask_logits ", logits.sizes());
  check_dilation(dilation, op);
  PairwiseInputs in;
  in.kernel_size = 3;
  while (in.kernel_size * in.kernel_size - 1 < sim.size(1)) in.kernel_size += 2;
  TORCH_CHECK(in.kernel_size * in.kernel_size - 1 == sim.size(1), "boxseg.ops.", op,
              ": color_sim must have k*k-1 channels for an odd k >= 3 (8 for a 3x3 kernel), got ", sim.size(1));
  in.logits = logits.contiguous();
  in.sim = sim.to(logits.scalar_type()).contiguous();
  in.img = img_idx.to(at::kLong).contiguous();
  in.boxes = boxes.to(at::kDouble).contiguous();
  check_index_range(in.img, sim.size(0), op, "img_idx", "an image of color_sim");
  return in;
}

// --- fuse_candidate_masks --------------------------------------------------------------------------------------
struct FusionInputs {
  at::Tensor probs, gt_idx, scores, ious, gt_boxes;  // contiguous; gt_idx int64, scores/ious in probs' dtype
  int64_t m, g, h, w;                                // candidates, GTs, grid
};

inline FusionInputs check_fusion_inputs(const at::Tensor& probs, const at::Tensor& gt_idx, const at::Tensor& scores,
                                        const at::Tensor& ious, const at::Tensor& gt_boxes) {
  const char* op = "fuse_candidate_masks";
  check_dims(probs, 3, op, "cand_probs", "(M, H, W)");
  check_float(probs, op, "cand_probs");
  FusionInputs in;
  in.m = probs.size(0);
  in.h = probs.size(1);
  in.w = probs.size(2);
  TORCH_CHECK(gt_boxes.dim() == 2 && gt_boxes.size(1) == 4, "boxseg.ops.", op,
              ": gt_boxes must have shape (G, 4), got ", gt_boxes.sizes());
  in.g = gt_boxes.size(0);
  TORCH_CHECK(gt_idx.dim() == 1 && gt_idx.size(0) == in.m, "boxseg.ops.", op, ": gt_idx must have shape (", in.m,
              ",), got ", gt_idx.sizes());
  TORCH_CHECK(scores.numel() == in.m && ious.numel() == in.m, "boxseg.ops.", op,
              ": box_scores and box_ious must have ", in.m, " entries (one per candidate), got ", scores.numel(),
              " and ", ious.numel());
  check_same_device(probs, gt_idx, op, "gt_idx");
  check_same_device(probs, scores, op, "box_scores");
  check_same_device(probs, ious, op, "box_ious");
  check_same_device(probs, gt_boxes, op, "gt_boxes");
  in.probs = probs.contiguous();
  in.gt_idx = gt_idx.to(at::kLong).contiguous();
  check_index_range(in.gt_idx, in.g, op, "gt_idx", "a row of gt_boxes");
  in.scores = scores.to(probs.scalar_type()).contiguous();
  in.ious = ious.to(probs.scalar_type()).contiguous();
  in.gt_boxes = gt_boxes.to(at::kDouble).contiguous();
  return in;
}

// --- batched_nms -----------------------------------------------------------------------------------------------
inline void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& classes) {
  const char* op = "batched_nms";
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "boxseg.ops.", op, ": boxes must have shape (N, 4), got ",
              boxes.sizes());
  check_float(boxes, op, "boxes");
  const int64_t n = boxes.size(0);
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == n, "boxseg.ops.", op, ": scores must have shape (", n,
              ",), got ", scores.sizes());
  TORCH_CHECK(classes.dim() == 1 && classes.size(0) == n, "boxseg.ops.", op, ": classes must have shape (", n,
              ",), got ", classes.sizes());
  check_same_device(boxes, scores, op, "scores");
  check_same_device(boxes, classes, op, "classes");
}

}  // namespace boxseg
