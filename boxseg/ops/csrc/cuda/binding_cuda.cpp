// Thin torch binding of the CUDA kernels (compiled only where torch is a CUDA build). Validation, allocation and
// the few whole-tensor steps (grouping candidates by GT, ranking boxes) use ATen; the kernels live in the .cu files.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../binding_checks.h"
#include "launchers.h"

namespace boxseg {
namespace {

void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "boxseg.ops.", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

void check_index_range(const at::Tensor& idx, int64_t limit, const char* op, const char* name, const char* what) {
  if (idx.numel() == 0) return;
  const bool bad = at::logical_or(idx < 0, idx >= limit).any().item<bool>();
  TORCH_CHECK(!bad, "boxseg.ops.", op, ": every ", name, " entry must lie in [0, ", limit, ") (", what, ")");
}

at::Tensor color_similarity_cuda(const at::Tensor& images, int64_t kernel_size, int64_t dilation, double theta) {
  const char* op = "color_similarity";
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "boxseg.ops.", op,
              ": images must have shape (B, 3, H, W), got ", images.sizes());
  check_float(images, op, "images");
  TORCH_CHECK(kernel_size >= 3 && kernel_size % 2 == 1, "boxseg.ops.", op,
              ": kernel_size must be an odd integer >= 3, got ", kernel_size);
  TORCH_CHECK(dilation >= 1, "boxseg.ops.", op, ": dilation must be >= 1, got ", dilation);
  c10::cuda::CUDAGuard guard(images.device());
  at::Tensor img = images.contiguous();
  const int64_t b = img.size(0), h = img.size(2), w = img.size(3);
  at::Tensor lab = at::empty({b, 3, h, w}, img.options());
  at::Tensor out = at::empty({b, kernel_size * kernel_size - 1, h, w}, img.options());
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "color_similarity_cuda", [&] {
    check_cuda(cuda::color_similarity<scalar_t>(img.data_ptr<scalar_t>(), lab.data_ptr<scalar_t>(),
                                                out.data_ptr<scalar_t>(), b, h, w, static_cast<int>(kernel_size),
                                                static_cast<int>(dilation), static_cast<scalar_t>(theta),
                                                c10::cuda::getCurrentCUDAStream()),
               op);
  });
  return out;
}

struct PairwiseInputs {
  at::Tensor logits, sim, img, boxes;
  int k;
};

PairwiseInputs pairwise_inputs(const at::Tensor& logits, const at::Tensor& sim, const at::Tensor& img_idx,
                               const at::Tensor& boxes, int64_t dilation, const char* op) {
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
  TORCH_CHECK(dilation >= 1, "boxseg.ops.", op, ": dilation must be >= 1, got ", dilation);
  PairwiseInputs in;
  in.k = 3;
  while (in.k * in.k - 1 < sim.size(1)) in.k += 2;
  TORCH_CHECK(in.k * in.k - 1 == sim.size(1), "boxseg.ops.", op,
              ": color_sim must have k*k-1 channels for an odd k >= 3 (8 for a 3x3 kernel), got ", sim.size(1));
  in.logits = logits.contiguous();
  in.sim = sim.to(logits.scalar_type()).contiguous();
  in.img = img_idx.to(at::kLong).contiguous();
  in.boxes = boxes.to(at::kDouble).contiguous();
  check_index_range(in.img, sim.size(0), op, "img_idx", "an image of color_sim");
  return in;
}

std::tuple<at::Tensor, at::Tensor> pairwise_forward_cuda(const at::Tensor& logits, const at::Tensor& sim,
                                                         const at::Tensor& img_idx, const at::Tensor& boxes,
                                                         double tau, int64_t dilation) {
  const char* op = "pairwise_affinity_loss";
  c10::cuda::CUDAGuard guard(logits.device());
  PairwiseInputs in = pairwise_inputs(logits, sim, img_idx, boxes, dilation, op);
  const int64_t n = in.logits.size(0), h = in.logits.size(1), w = in.logits.size(2);
  if (n == 0 || h * w == 0)
    return {at::zeros({}, logits.options().dtype(at::kDouble)), at::zeros({}, logits.options().dtype(at::kLong))};
  const int64_t slots = cuda::grid_y(n) * cuda::pairwise_blocks_x(h, w);
  at::Tensor sums = at::empty({slots}, logits.options().dtype(at::kDouble));
  at::Tensor counts = at::empty({slots}, logits.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "pairwise_forward_cuda", [&] {
    check_cuda(cuda::pairwise_forward<scalar_t>(
                   in.logits.data_ptr<scalar_t>(), in.sim.data_ptr<scalar_t>(), in.img.data_ptr<int64_t>(),
                   in.boxes.data_ptr<double>(), n, h, w, in.k, static_cast<int>(dilation),
                   static_cast<scalar_t>(tau), sums.data_ptr<double>(),
                   reinterpret_cast<long long*>(counts.data_ptr<int64_t>()), c10::cuda::getCurrentCUDAStream()),
               op);
  });
  return {sums.sum(), counts.sum()};
}

at::Tensor pairwise_backward_cuda(const at::Tensor& logits, const at::Tensor& sim, const at::Tensor& img_idx,
                                  const at::Tensor& boxes, double tau, int64_t dilation) {
  const char* op = "pairwise_affinity_loss (backward)";
  c10::cuda::CUDAGuard guard(logits.device());
  PairwiseInputs in = pairwise_inputs(logits, sim, img_idx, boxes, dilation, op);
  const int64_t n = in.logits.size(0), h = in.logits.size(1), w = in.logits.size(2);
  at::Tensor grad = at::empty(in.logits.sizes(), in.logits.options());
  if (n == 0 || h * w == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "pairwise_backward_cuda", [&] {
    check_cuda(cuda::pairwise_backward<scalar_t>(in.logits.data_ptr<scalar_t>(), in.sim.data_ptr<scalar_t>(),
                                                 in.img.data_ptr<int64_t>(), in.boxes.data_ptr<double>(), n, h, w,
                                                 in.k, static_cast<int>(dilation), static_cast<scalar_t>(tau),
                                                 grad.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream()),
               op);
  });
  return grad;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fuse_masks_cuda(const at::Tensor& probs, const at::Tensor& gt_idx,
                                                               const at::Tensor& scores, const at::Tensor& ious,
                                                               const at::Tensor& gt_boxes, double tau_m) {
  const char* op = "fuse_candidate_masks";
  check_dims(probs, 3, op, "cand_probs", "(M, H, W)");
  check_float(probs, op, "cand_probs");
  const int64_t m = probs.size(0), h = probs.size(1), w = probs.size(2);
  TORCH_CHECK(gt_boxes.dim() == 2 && gt_boxes.size(1) == 4, "boxseg.ops.", op,
              ": gt_boxes must have shape (G, 4), got ", gt_boxes.sizes());
  const int64_t g = gt_boxes.size(0);
  TORCH_CHECK(gt_idx.dim() == 1 && gt_idx.size(0) == m, "boxseg.ops.", op, ": gt_idx must have shape (", m,
              ",), got ", gt_idx.sizes());
  TORCH_CHECK(scores.numel() == m && ious.numel() == m, "boxseg.ops.", op, ": box_scores and box_ious must have ",
              m, " entries (one per candidate), got ", scores.numel(), " and ", ious.numel());
  check_same_device(probs, gt_idx, op, "gt_idx");
  check_same_device(probs, gt_boxes, op, "gt_boxes");
  c10::cuda::CUDAGuard guard(probs.device());
  at::Tensor p = probs.contiguous();
  at::Tensor idx = gt_idx.to(at::kLong).contiguous();
  check_index_range(idx, g, op, "gt_idx", "a row of gt_boxes");
  at::Tensor s = scores.to(probs.scalar_type()).contiguous();
  at::Tensor u = ious.to(probs.scalar_type()).contiguous();
  at::Tensor gb = gt_boxes.to(at::kDouble).contiguous();
  // Group candidates by GT, keeping candidate order inside a group (as the reference's per-GT selection does).
  at::Tensor order = std::get<1>(at::sort(idx, /*stable=*/true, /*dim=*/0, /*descending=*/false)).contiguous();
  at::Tensor start = at::zeros({g + 1}, idx.options());
  if (m > 0) start.narrow(0, 1, g).copy_(at::cumsum(at::bincount(idx, {}, g), 0));
  at::Tensor fused = at::zeros({g, h, w}, p.options());
  at::Tensor weight = at::empty({g}, p.options());
  at::Tensor valid = at::empty({g}, p.options().dtype(at::kBool));
  at::Tensor gates = at::empty({m}, p.options());
  at::Tensor info = at::empty({2 * g}, p.options());
  at::Tensor conf_sum = at::zeros({g}, p.options().dtype(at::kDouble));
  at::Tensor conf_count = at::zeros({g}, p.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fuse_masks_cuda", [&] {
    check_cuda(cuda::fuse_masks<scalar_t>(
                   p.data_ptr<scalar_t>(), order.data_ptr<int64_t>(), start.data_ptr<int64_t>(),
                   s.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), gb.data_ptr<double>(), g, h, w,
                   static_cast<scalar_t>(tau_m), gates.data_ptr<scalar_t>(), info.data_ptr<scalar_t>(),
                   conf_sum.data_ptr<double>(), reinterpret_cast<unsigned long long*>(conf_count.data_ptr<int64_t>()),
                   fused.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), valid.data_ptr<bool>(),
                   c10::cuda::getCurrentCUDAStream()),
               op);
  });
  return {fused, weight, valid};
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& classes,
                            double iou_threshold) {
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
  c10::cuda::CUDAGuard guard(boxes.device());
  if (n == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  at::Tensor b = boxes.index_select(0, order).contiguous();
  at::Tensor c = classes.to(at::kLong).index_select(0, order).contiguous();
  const int64_t words = cuda::nms_words(n);
  at::Tensor mask = at::empty({n, words}, boxes.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "batched_nms_cuda", [&] {
    check_cuda(cuda::nms_mask<scalar_t>(b.data_ptr<scalar_t>(), c.data_ptr<int64_t>(), n,
                                        static_cast<scalar_t>(iou_threshold),
                                        reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>()),
                                        c10::cuda::getCurrentCUDAStream()),
               op);
  });
  at::Tensor host = mask.cpu();
  const auto* bits = reinterpret_cast<const unsigned long long*>(host.data_ptr<int64_t>());
  std::vector<unsigned long long> removed(words, 0);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < n; ++i) {
    if (removed[i / 64] >> (i % 64) & 1ULL) continue;
    kept.push_back(i);
    for (int64_t j = i / 64; j < words; ++j) removed[j] |= bits[i * words + j];
  }
  at::Tensor pos = at::empty({static_cast<int64_t>(kept.size())}, host.options());
  std::copy(kept.begin(), kept.end(), pos.data_ptr<int64_t>());
  return order.index_select(0, pos.to(boxes.device()));
}

}  // namespace
}  // namespace boxseg

TORCH_LIBRARY_IMPL(boxseg_ext, CUDA, m) {
  m.impl("color_similarity", &boxseg::color_similarity_cuda);
  m.impl("pairwise_forward", &boxseg::pairwise_forward_cuda);
  m.impl("pairwise_backward", &boxseg::pairwise_backward_cuda);
  m.impl("fuse_masks", &boxseg::fuse_masks_cuda);
  m.impl("batched_nms", &boxseg::batched_nms_cuda);
}
