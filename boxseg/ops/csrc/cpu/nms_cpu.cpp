// CPU class-aware greedy NMS. Boxes are ranked by score (descending, ties by index), grouped by class keeping
// that rank order, and each class is suppressed independently (classes in parallel).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../binding_checks.h"
#include "../nms_kernels.h"
#include "parallel.h"

namespace boxseg {
namespace {

template <typename T>
void nms_impl(const T* boxes, const double* scores, const int64_t* classes, int64_t n, T thr,
              std::vector<int64_t>& kept) {
  std::vector<int64_t> rank(n);
  for (int64_t i = 0; i < n; ++i) rank[i] = i;
  // NaN scores rank first, as in torch.sort(descending=True).
  std::stable_sort(rank.begin(), rank.end(), [&](int64_t a, int64_t b) {
    const double sa = scores[a], sb = scores[b];
    if (std::isnan(sa) || std::isnan(sb)) return std::isnan(sa) && !std::isnan(sb);
    return sa > sb;
  });
  std::vector<int64_t> by_class(rank);
  std::stable_sort(by_class.begin(), by_class.end(), [&](int64_t a, int64_t b) { return classes[a] < classes[b]; });
  std::vector<int64_t> group_start;
  for (int64_t i = 0; i < n; ++i)
    if (i == 0 || classes[by_class[i]] != classes[by_class[i - 1]]) group_start.push_back(i);
  group_start.push_back(n);
  std::vector<char> keep(n, 0);
  const int64_t groups = static_cast<int64_t>(group_start.size()) - 1;
  // Work grows with the square of the class sizes; a few thousand boxes are worth two threads.
  parallel_tasks(groups, n * 16, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> survivors;
    for (int64_t gi = begin; gi < end; ++gi) {
      survivors.clear();
      for (int64_t i = group_start[gi]; i < group_start[gi + 1]; ++i) {
        const T* bi = boxes + 4 * by_class[i];
        bool suppressed = false;
        for (int64_t s : survivors) {
          if (box_iou_pair(boxes + 4 * s, bi) > thr) {
            suppressed = true;
            break;
          }
        }
        if (!suppressed) {
          survivors.push_back(by_class[i]);
          keep[by_class[i]] = 1;
        }
      }
    }
  });
  for (int64_t i : rank)
    if (keep[i]) kept.push_back(i);
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& classes,
                           double iou_threshold) {
  check_nms_inputs(boxes, scores, classes);
  const int64_t n = boxes.size(0);
  at::Tensor b = boxes.contiguous();
  at::Tensor s = scores.to(at::kDouble).contiguous();
  at::Tensor c = classes.to(at::kLong).contiguous();
  std::vector<int64_t> kept;
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "batched_nms_cpu", [&] {
    // The reference compares a scalar_t IoU with the threshold rounded to scalar_t; do the same.
    nms_impl<scalar_t>(b.data_ptr<scalar_t>(), s.data_ptr<double>(), c.data_ptr<int64_t>(), n,
                       static_cast<scalar_t>(iou_threshold), kept);
  });
  at::Tensor out = at::empty({static_cast<int64_t>(kept.size())}, boxes.options().dtype(at::kLong));
  std::copy(kept.begin(), kept.end(), out.data_ptr<int64_t>());
  return out;
}

}  // namespace
}  // namespace boxseg

TORCH_LIBRARY_IMPL(boxseg_ext, CPU, m) { m.impl("batched_nms", &boxseg::batched_nms_cpu); }
