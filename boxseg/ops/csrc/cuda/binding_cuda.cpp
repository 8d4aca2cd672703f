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

at::Tensor color_similarity_cuda(const at::Tensor& images, int64_t kernel_size, int64_t dilation, double theta) {
  const char* op = "color_similarity";
  check_color_inputs(images, kernel_size, dilation);
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

std::tuple<at::Tensor, at::Tensor> pairwise_forward_cuda(const at::Tensor& logits, const at::Tensor& sim,
                                                         const at::Tensor& img_idx, const at::Tensor& boxes,
                                                         double tau, int64_t dilation) {
  const char* op = "pairwise_affinity_loss";
  c10::cuda::CUDAGuard guard(logits.device());
  PairwiseInputs in = check_pairwise_inputs(logits, sim, img_idx, boxes, dilation, op);
  const int64_t n = in.logits.size(0), h = in.logits.size(1), w = in.logits.size(2);
  if (n == 0 || h * w == 0)
    return {at::zeros({}, logits.options().dtype(at::kDouble)), at::zeros({}, logits.options().dtype(at::kLong))};
  const int64_t slots = cuda::grid_y(n) * cuda::pairwise_blocks_x(h, w);
  at::Tensor sums = at::empty({slots}, logits.options().dtype(at::kDouble));
  at::Tensor counts = at::empty({slots}, logits.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "pairwise_forward_cuda", [&] {
    check_cuda(cuda::pairwise_forward<scalar_t>(
                   in.logits.data_ptr<scalar_t>(), in.sim.data_ptr<scalar_t>(), in.img.data_ptr<int64_t>(),
                   in.boxes.data_ptr<double>(), n, h, w, in.kernel_size, static_cast<int>(dilation),
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
  PairwiseInputs in = check_pairwise_inputs(logits, sim, img_idx, boxes, dilation, op);
  const int64_t n = in.logits.size(0), h = in.logits.size(1), w = in.logits.size(2);
  at::Tensor grad = at::empty(in.logits.sizes(), in.logits.options());
  if (n == 0 || h * w == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "pairwise_backward_cuda", [&] {
    check_cuda(cuda::pairwise_backward<scalar_t>(in.logits.data_ptr<scalar_t>(), in.sim.data_ptr<scalar_t>(),
                                                 in.img.data_ptr<int64_t>(), in.boxes.data_ptr<double>(), n, h, w,
                                                 in.kernel_size, static_cast<int>(dilation), static_cast<scalar_t>(tau),
                                                 grad.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream()),
               op);
  });
  return grad;
}

// Loss and gradient for autograd's forward (the CPU kernel does both in one pass; here the two kernels run in turn).
std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_forward_backward_cuda(const at::Tensor& logits,
                                                                              const at::Tensor& sim,
                                                                              const at::Tensor& img_idx,
                                                                              const at::Tensor& boxes, double tau,
                                                                              int64_t dilation) {
  auto loss = pairwise_forward_cuda(logits, sim, img_idx, boxes, tau, dilation);
  at::Tensor grad = pairwise_backward_cuda(logits, sim, img_idx, boxes, tau, dilation);
  return {std::get<0>(loss), std::get<1>(loss), grad};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fuse_masks_cuda(const at::Tensor& probs, const at::Tensor& gt_idx,
                                                               const at::Tensor& scores, const at::Tensor& ious,
                                                               const at::Tensor& gt_boxes, double tau_m) {
  const char* op = "fuse_candidate_masks";
  c10::cuda::CUDAGuard guard(probs.device());
  FusionInputs in = check_fusion_inputs(probs, gt_idx, scores, ious, gt_boxes);
  const int64_t m = in.m, g = in.g, h = in.h, w = in.w;
  const at::Tensor &p = in.probs, &idx = in.gt_idx, &s = in.scores, &u = in.ious, &gb = in.gt_boxes;
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
  check_nms_inputs(boxes, scores, classes);
  const int64_t n = boxes.size(0);
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
  m.impl("pairwise_forward_backward", &boxseg::pairwise_forward_backward_cuda);
  m.impl("fuse_masks", &boxseg::fuse_masks_cuda);
  m.impl("batched_nms", &boxseg::batched_nms_cuda);
}
