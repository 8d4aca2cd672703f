// CPU kernel of Quality-aware Masks Fusion + Mask-Quality Scoring for all GTs of a batch at once. Candidates are
// grouped by GT (stable, so sums run in candidate order as in the reference); each task fuses a block of rows of
// one GT's box, accumulating gate-weighted probabilities row by row, and reduces the confident-pixel statistics.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../binding_checks.h"
#include "../fusion_kernels.h"
#include "parallel.h"

namespace boxseg {
namespace {

struct FuseTask {
  int g, ya, yb;
};

template <typename T>
void fuse_impl(const T* probs, const int64_t* gt_idx, const T* scores, const T* ious, const double* gt_boxes,
               int64_t m, int64_t g, int64_t h, int64_t w, T tau_m, T* fused, T* weight, bool* valid) {
  const int64_t plane = h * w;
  // Group candidates by GT (counting sort keeps candidate order inside a group).
  std::vector<int64_t> start(g + 1, 0), order(m);
  for (int64_t i = 0; i < m; ++i) ++start[gt_idx[i] + 1];
  for (int64_t i = 0; i < g; ++i) start[i + 1] += start[i];
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < m; ++i) order[fill[gt_idx[i]]++] = i;
  }
  std::vector<FusionGt<T>> info(g);
  std::vector<T> gates(m);
  std::vector<PixelBox> box(g);
  std::vector<FuseTask> tasks;
  constexpr int64_t kTaskPixels = 8192;
  int64_t work = 0;  // in-box pixels x candidates
  for (int64_t i = 0; i < g; ++i) {
    double gsum = 0.0, ssum = 0.0;
    int64_t above = 0;
    for (int64_t c = start[i]; c < start[i + 1]; ++c) {
      const int64_t cand = order[c];
      gates[c] = fusion_gate(scores[cand], ious[cand], tau_m);
      gsum += gates[c];
      if (scores[cand] > tau_m) {
        ssum += scores[cand];
        ++above;
      }
    }
    info[i].gate_sum = static_cast<T>(gsum);
    info[i].score_mean = above > 0 ? static_cast<T>(ssum / static_cast<double>(above)) : T(0);
    box[i] = pixel_box(gt_boxes + 4 * i, static_cast<int>(h), static_cast<int>(w));
    if (!(info[i].gate_sum > T(0)) || box[i].empty()) continue;
    work += static_cast<int64_t>(box[i].y1 - box[i].y0) * (box[i].x1 - box[i].x0) * (start[i + 1] - start[i]);
    const int rows = static_cast<int>(std::max<int64_t>(1, kTaskPixels / (box[i].x1 - box[i].x0)));
    for (int y = box[i].y0; y < box[i].y1; y += rows)
      tasks.push_back({static_cast<int>(i), y, std::min(box[i].y1, y + rows)});
  }
  std::vector<double> conf_sum(tasks.size(), 0.0);
  std::vector<int64_t> conf_cnt(tasks.size(), 0);
  parallel_tasks(static_cast<int64_t>(tasks.size()), work, [&](int64_t begin, int64_t end) {
    std::vector<T> acc;
    for (int64_t t = begin; t < end; ++t) {
      const FuseTask& task = tasks[t];
      const PixelBox& b = box[task.g];
      const int cols = b.x1 - b.x0;
      const T gsum = info[task.g].gate_sum;
      acc.resize(cols);
      double csum = 0.0;
      int64_t ccnt = 0;
      for (int y = task.ya; y < task.yb; ++y) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t c = start[task.g]; c < start[task.g + 1]; ++c) {
          const T gate = gates[c];
          if (gate == T(0)) continue;
          const T* src = probs + order[c] * plane + y * w + b.x0;
          for (int x = 0; x < cols; ++x) acc[x] += gate * src[x];
        }
        T* dst = fused + task.g * plane + y * w + b.x0;
        for (int x = 0; x < cols; ++x) {
          const T v = acc[x] / gsum;
          dst[x] = v;
          if (v > tau_m) {
            csum += v;
            ++ccnt;
          }
        }
      }
      conf_sum[t] = csum;
      conf_cnt[t] = ccnt;
    }
  });
  std::vector<double> gsum_conf(g, 0.0);
  std::vector<int64_t> gcnt_conf(g, 0);
  for (size_t t = 0; t < tasks.size(); ++t) {
    gsum_conf[tasks[t].g] += conf_sum[t];
    gcnt_conf[tasks[t].g] += conf_cnt[t];
  }
  for (int64_t i = 0; i < g; ++i) {
    valid[i] = fusion_weight(info[i], gsum_conf[i], static_cast<long long>(gcnt_conf[i]), weight[i]);
    if (!valid[i] && info[i].gate_sum > T(0) && !box[i].empty()) {
      // Fused but no confident pixel in the box: the GT is invalid and its mask must read as zeros.
      for (int y = box[i].y0; y < box[i].y1; ++y)
        std::fill(fused + i * plane + y * w + box[i].x0, fused + i * plane + y * w + box[i].x1, T(0));
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fuse_masks_cpu(const at::Tensor& probs, const at::Tensor& gt_idx,
                                                              const at::Tensor& scores, const at::Tensor& ious,
                                                              const at::Tensor& gt_boxes, double tau_m) {
  FusionInputs in = check_fusion_inputs(probs, gt_idx, scores, ious, gt_boxes);
  const int64_t m = in.m, g = in.g, h = in.h, w = in.w;
  const at::Tensor &p = in.probs, &s = in.scores, &u = in.ious, &gb = in.gt_boxes;
  const int64_t* ip = in.gt_idx.data_ptr<int64_t>();
  at::Tensor fused = at::zeros({g, h, w}, p.options());
  at::Tensor weight = at::zeros({g}, p.options());
  at::Tensor valid = at::zeros({g}, p.options().dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "fuse_masks_cpu", [&] {
    fuse_impl<scalar_t>(p.data_ptr<scalar_t>(), ip, s.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                        gb.data_ptr<double>(), m, g, h, w, static_cast<scalar_t>(tau_m),
                        fused.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), valid.data_ptr<bool>());
  });
  return {fused, weight, valid};
}

}  // namespace
}  // namespace boxseg

TORCH_LIBRARY_IMPL(boxseg_ext, CPU, m) { m.impl("fuse_masks", &boxseg::fuse_masks_cpu); }
