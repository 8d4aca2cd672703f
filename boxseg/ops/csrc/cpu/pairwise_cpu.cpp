// CPU kernels of the fused pairwise affinity loss (docs/method.md "Box-supervised mask loss"). Nothing of size
// N x 8 x H x W is ever allocated. Work is split into (instance, block of rows) tasks over the instance's box dilated
// by the neighbourhood radius (outside it every weight is 0). A task
// - computes p = sigmoid(z), q = sigmoid(-z) and p*q once per pixel of its rows plus the rows above within the radius;
// - visits every unordered neighbour pair {a, b} once: b = a + off_j for the kk/2 offsets pointing up or left, with
//   weight (a in box, S_j(a) >= tau) + (b in box, S_opposite(b) >= tau), the number of loss terms that use the pair;
// - runs the pair loop over contiguous columns with no branches (weights are compare/selects against per-column
//   thresholds, NaN meaning "never"), so that the compiler vectorises it; pairs whose P_same underflows are skipped
//   there, flagged, and redone by a scalar pass with the log-space formulas of pairwise_kernels.h;
// - adds the gradient of a pair to both ends: rows of the task go straight to the output, the rows above it (which
//   the previous task owns) to a per-task halo buffer that a second pass adds in task order, so results do not
//   depend on the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../binding_checks.h"
#include "../pairwise_kernels.h"
#include "parallel.h"
#include "vec_math.h"

namespace boxseg {
namespace {

struct Task {
  int n;         // instance
  int ya, yb;    // rows [ya, yb) of the region whose pairs (as the lower/right end) this task owns
  int64_t halo;  // offset of this task's halo rows [max(region.y0, ya - radius), ya) in the halo buffer
};

struct Problem {
  int64_t n, h, w, b, k, kk;  // instances, height, width, images, kernel size, neighbours (k*k - 1)
  int dilation, radius;       // radius = (k / 2) * dilation
  std::vector<PixelBox> box;     // pixels inside each instance's box
  std::vector<PixelBox> region;  // box dilated by the radius, clipped to the image
  std::vector<Task> tasks;
  int64_t work = 0;       // region pixels over all instances
  int64_t halo_size = 0;  // elements of the halo buffer
  std::vector<int> dy, dx;
};

// Splits the work into tasks of roughly equal pixel count (at::parallel_for hands each thread one contiguous chunk
// of tasks, so equal-size tasks balance the load). A task has at least `radius` rows, so its halo lies inside the
// previous task alone and the halos of different tasks never overlap.
Problem make_problem(const PairwiseInputs& in, int64_t dilation) {
  Problem p;
  p.n = in.logits.size(0);
  p.h = in.logits.size(1);
  p.w = in.logits.size(2);
  p.b = in.sim.size(0);
  p.kk = in.sim.size(1);
  p.k = in.kernel_size;
  p.dilation = static_cast<int>(dilation);
  p.radius = static_cast<int>(p.k / 2) * p.dilation;
  for (int j = 0; j < p.kk; ++j) {
    int oy, ox;
    neighbour_offset(j, static_cast<int>(p.k), p.dilation, oy, ox);
    p.dy.push_back(oy);
    p.dx.push_back(ox);
  }
  const double* bx = in.boxes.data_ptr<double>();
  constexpr int64_t kTaskPixels = 4096;
  for (int64_t i = 0; i < p.n; ++i) {
    PixelBox box = pixel_box(bx + 4 * i, static_cast<int>(p.h), static_cast<int>(p.w));
    PixelBox reg{0, 0, 0, 0};
    if (!box.empty()) {
      reg.y0 = std::max(0, box.y0 - p.radius);
      reg.y1 = std::min(static_cast<int>(p.h), box.y1 + p.radius);
      reg.x0 = std::max(0, box.x0 - p.radius);
      reg.x1 = std::min(static_cast<int>(p.w), box.x1 + p.radius);
      const int cols = reg.x1 - reg.x0;
      p.work += static_cast<int64_t>(reg.y1 - reg.y0) * cols;
      const int rows = static_cast<int>(std::max<int64_t>(std::max(1, p.radius), kTaskPixels / cols));
      for (int y = reg.y0; y < reg.y1; y += rows) {
        const int halo_rows = y - std::max(reg.y0, y - p.radius);
        p.tasks.push_back({static_cast<int>(i), y, std::min(reg.y1, y + rows), p.halo_size});
        p.halo_size += static_cast<int64_t>(halo_rows) * cols;
      }
    }
    p.box.push_back(box);
    p.region.push_back(reg);
  }
  return p;
}

// Per-thread scratch; every buffer is row-major over the region's columns.
template <typename T>
struct Scratch {
  std::vector<T> p, q, pq;  // sigmoid(z), sigmoid(-z), their product; rows [r0, yb)
  std::vector<T> thr_in, thr_never;  // per-column thresholds: tau inside the box's columns, NaN elsewhere / always
  std::vector<T> loss;               // per-column loss of the current row
  std::vector<T> ga, gb;  // gradient at the lower/right end of pairs (rows [ya, yb)) and the upper/left end ([r0, yb))
};

// p = sigmoid(z), q = sigmoid(-z), p*q for one row: sigmoid_pair (pairwise_kernels.h) with an exp that vectorises.
template <typename T>
BOXSEG_SIMD_CLONES void fill_sigmoids(const T* __restrict z, int cols, T* __restrict p, T* __restrict q,
                                      T* __restrict pq) {
  for (int x = 0; x < cols; ++x) {
    const T zv = z[x];
    const bool pos = zv >= T(0);
    const T e = fast_exp_nonpositive(pos ? -zv : zv);
    const T big = T(1) / (T(1) + e);
    const T small = e * big;
    p[x] = pos ? big : small;
    q[x] = pos ? small : big;
    pq[x] = big * small;
  }
}

template <typename T>
struct Pointers {  // one span of pairs; a-side arrays are indexed by a's column x, b-side ones by x too (pre-shifted)
  const T *sa, *ta, *sb, *tb, *pa, *qa, *pqa, *pb, *qb, *pqb;
  T *loss, *ga, *gb;
};

// The vectorised pair loop over columns [x0, x1). Returns whether some weighted pair underflowed (left out here).
// Not inlined: inside run_task's loop nest gcc kept only a scalar copy of this loop on the path actually taken.
template <typename T, bool kLoss, bool kGrad>
BOXSEG_SIMD_CLONES bool pair_span(int x0, int x1, const Pointers<T>& P, int64_t& count) {
  const T* __restrict sa = P.sa;
  const T* __restrict ta = P.ta;
  const T* __restrict sb = P.sb;
  const T* __restrict tb = P.tb;
  const T* __restrict pa = P.pa;
  const T* __restrict qa = P.qa;
  const T* __restrict pqa = P.pqa;
  const T* __restrict pb = P.pb;
  const T* __restrict qb = P.qb;
  const T* __restrict pqb = P.pqb;
  T* __restrict loss = P.loss;
  T* __restrict ga = P.ga;
  T* __restrict gb = P.gb;
  const T tiny = PairwiseTraits<T>::tiny;
  // Counts in T lanes are exact (small integers); `omp simd` lets the compiler split the reductions across lanes.
  T bad = 0, cnt = 0;
#pragma omp simd reduction(+ : bad, cnt)
  for (int x = x0; x < x1; ++x) {
    const T wgt = (sa[x] >= ta[x] ? T(1) : T(0)) + (sb[x] >= tb[x] ? T(1) : T(0));
    const T same = pa[x] * pb[x] + qa[x] * qb[x];
    const bool ok = same > tiny;
    const T w_ok = ok ? wgt : T(0);
    cnt += wgt;
    bad += wgt - w_ok;
    const T r = w_ok / (ok ? same : T(1));
    if (kLoss) loss[x] -= w_ok * fast_log(ok ? same : T(1));
    if (kGrad) {
      ga[x] += pqa[x] * (qb[x] - pb[x]) * r;
      gb[x] += pqb[x] * (qa[x] - pa[x]) * r;
    }
  }
  count += static_cast<int64_t>(cnt);
  return bad != T(0);
}

// The pairs pair_span left out (P_same <= tiny), in the log-space form (pairwise_kernels.h).
template <typename T, bool kLoss, bool kGrad>
void underflow_span(int x0, int x1, const Pointers<T>& P, const T* za, const T* zb) {
  const T tiny = PairwiseTraits<T>::tiny;
  for (int x = x0; x < x1; ++x) {
    const T wgt = (P.sa[x] >= P.ta[x] ? T(1) : T(0)) + (P.sb[x] >= P.tb[x] ? T(1) : T(0));
    const T same = P.pa[x] * P.pb[x] + P.qa[x] * P.qb[x];
    if (same > tiny || wgt == T(0)) continue;
    if (kLoss) P.loss[x] += wgt * pair_loss(za[x], P.pa[x], P.qa[x], zb[x], P.pb[x], P.qb[x]);
    if (kGrad) {
      P.ga[x] += wgt * pair_grad(za[x], P.pa[x], P.qa[x], zb[x], P.pb[x], P.qb[x]);
      P.gb[x] += wgt * pair_grad(zb[x], P.pb[x], P.qb[x], za[x], P.pa[x], P.qa[x]);
    }
  }
}

template <typename T, bool kLoss, bool kGrad>
void run_task(const Problem& pb, const Task& task, const T* logits, const T* sim, const int64_t* img, T tau,
              Scratch<T>& sc, double& loss_sum, int64_t& count, T* grad, T* halo) {
  const int64_t plane = pb.h * pb.w;
  const PixelBox& box = pb.box[task.n];
  const PixelBox& reg = pb.region[task.n];
  const T* z = logits + task.n * plane;
  const T* s = sim + img[task.n] * pb.kk * plane;
  const int cols = reg.x1 - reg.x0;
  const int r0 = std::max(reg.y0, task.ya - pb.radius);
  const size_t rows_all = static_cast<size_t>(task.yb - r0), rows_own = static_cast<size_t>(task.yb - task.ya);
  sc.p.resize(rows_all * cols);
  sc.q.resize(rows_all * cols);
  sc.pq.resize(rows_all * cols);
  for (int y = r0; y < task.yb; ++y) {
    const size_t o = static_cast<size_t>(y - r0) * cols;
    fill_sigmoids(z + y * pb.w + reg.x0, cols, sc.p.data() + o, sc.q.data() + o, sc.pq.data() + o);
  }
  const T never = std::numeric_limits<T>::quiet_NaN();  // x >= NaN is false
  sc.thr_never.assign(cols, never);
  sc.thr_in.assign(cols, never);
  std::fill(sc.thr_in.begin() + (box.x0 - reg.x0), sc.thr_in.begin() + (box.x1 - reg.x0), tau);
  if (kLoss) sc.loss.assign(cols, T(0));
  if (kGrad) {
    sc.ga.assign(rows_own * cols, T(0));
    sc.gb.assign(rows_all * cols, T(0));
  }
  // Scratch row pointers, shifted so that an absolute column indexes them.
  auto at = [&](std::vector<T>& v, int y) { return v.data() + static_cast<ptrdiff_t>(y - r0) * cols - reg.x0; };
  const T* thr_in = sc.thr_in.data() - reg.x0;
  const T* thr_never = sc.thr_never.data() - reg.x0;
  const int half = static_cast<int>(pb.kk / 2);  // offsets j < half point up or left; j and kk-1-j are opposite
  for (int y = task.ya; y < task.yb; ++y) {
    const bool row_a_in = y >= box.y0 && y < box.y1;
    for (int j = 0; j < half; ++j) {
      const int ny = y + pb.dy[j], ox = pb.dx[j];
      if (ny < reg.y0) continue;
      const bool row_b_in = ny >= box.y0 && ny < box.y1;
      if (!row_a_in && !row_b_in) continue;
      // Columns where both ends are in the region and at least one end's column is inside the box.
      const int x0 = std::max({reg.x0, reg.x0 - ox, std::min(box.x0, box.x0 - ox)});
      const int x1 = std::min({reg.x1, reg.x1 - ox, std::max(box.x1, box.x1 - ox)});
      if (x0 >= x1) continue;
      Pointers<T> P;
      P.sa = s + j * plane + y * pb.w;
      P.ta = row_a_in ? thr_in : thr_never;
      P.sb = s + (pb.kk - 1 - j) * plane + ny * pb.w + ox;
      P.tb = (row_b_in ? thr_in : thr_never) + ox;
      P.pa = at(sc.p, y);
      P.qa = at(sc.q, y);
      P.pqa = at(sc.pq, y);
      P.pb = at(sc.p, ny) + ox;
      P.qb = at(sc.q, ny) + ox;
      P.pqb = at(sc.pq, ny) + ox;
      P.loss = kLoss ? sc.loss.data() - reg.x0 : nullptr;
      P.ga = kGrad ? sc.ga.data() + static_cast<ptrdiff_t>(y - task.ya) * cols - reg.x0 : nullptr;
      P.gb = kGrad ? at(sc.gb, ny) + ox : nullptr;
      if (pair_span<T, kLoss, kGrad>(x0, x1, P, count)) {
        underflow_span<T, kLoss, kGrad>(x0, x1, P, z + y * pb.w, z + ny * pb.w + ox);
      }
    }
    if (kLoss) {
      double row = 0.0;
      for (int x = 0; x < cols; ++x) row += static_cast<double>(sc.loss[x]);
      loss_sum += row;
      std::fill(sc.loss.begin(), sc.loss.end(), T(0));
    }
  }
  if (kGrad) {
    // The output is allocated uninitialised: a task writes every pixel of its rows, the first and last task of an
    // instance also the rows above and below its region (one pass over the plane instead of zero-fill + write).
    T* g = grad + task.n * plane;
    if (task.ya == reg.y0) std::fill(g, g + reg.y0 * pb.w, T(0));
    if (task.yb == reg.y1) std::fill(g + reg.y1 * pb.w, g + plane, T(0));
    for (int y = task.ya; y < task.yb; ++y) {
      const T* a = sc.ga.data() + static_cast<size_t>(y - task.ya) * cols;
      const T* b = sc.gb.data() + static_cast<size_t>(y - r0) * cols;
      T* row = g + y * pb.w;
      std::fill(row, row + reg.x0, T(0));
      std::fill(row + reg.x1, row + pb.w, T(0));
      T* out = row + reg.x0;
      for (int x = 0; x < cols; ++x) out[x] = a[x] + b[x];
    }
    std::copy(sc.gb.data(), sc.gb.data() + static_cast<size_t>(task.ya - r0) * cols, halo + task.halo);
  }
}

// Runs every task; `loss_sum`/`count` get one entry per task, summed afterwards in task order.
template <typename T, bool kLoss, bool kGrad>
void run_all(const Problem& pb, const PairwiseInputs& in, T tau, double* task_sum, int64_t* task_cnt, T* grad) {
  std::vector<T> halo(kGrad ? static_cast<size_t>(pb.halo_size) : 0);
  const T* logits = in.logits.data_ptr<T>();
  const T* sim = in.sim.data_ptr<T>();
  const int64_t* img = in.img.data_ptr<int64_t>();
  if (kGrad) {  // instances with no task (empty box): all zero
    for (int64_t i = 0; i < pb.n; ++i)
      if (pb.box[i].empty()) std::fill(grad + i * pb.h * pb.w, grad + (i + 1) * pb.h * pb.w, T(0));
  }
  parallel_tasks(static_cast<int64_t>(pb.tasks.size()), pb.work, [&](int64_t begin, int64_t end) {
    Scratch<T> sc;
    for (int64_t t = begin; t < end; ++t) {
      double sum = 0.0;
      int64_t cnt = 0;
      run_task<T, kLoss, kGrad>(pb, pb.tasks[t], logits, sim, img, tau, sc, sum, cnt, grad, halo.data());
      if (task_sum) task_sum[t] = sum;
      if (task_cnt) task_cnt[t] = cnt;
    }
  });
  if (!kGrad) return;
  // Halo rows belong to the previous task of the same instance, which has finished: add them (disjoint writes).
  const int64_t plane = pb.h * pb.w;
  parallel_tasks(static_cast<int64_t>(pb.tasks.size()), pb.halo_size, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const Task& task = pb.tasks[t];
      const PixelBox& reg = pb.region[task.n];
      const int cols = reg.x1 - reg.x0;
      const int r0 = std::max(reg.y0, task.ya - pb.radius);
      for (int y = r0; y < task.ya; ++y) {
        const T* h = halo.data() + task.halo + static_cast<size_t>(y - r0) * cols;
        T* out = grad + task.n * plane + y * pb.w + reg.x0;
        for (int x = 0; x < cols; ++x) out[x] += h[x];
      }
    }
  });
}

// Loss sum and count (always) and the unnormalised gradient (when `with_grad`), in one pass over the pairs.
template <bool kLoss, bool kGrad>
std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_cpu(const at::Tensor& logits, const at::Tensor& sim,
                                                            const at::Tensor& img_idx, const at::Tensor& boxes,
                                                            double tau, int64_t dilation, const char* op) {
  PairwiseInputs in = check_pairwise_inputs(logits, sim, img_idx, boxes, dilation, op);
  Problem pb = make_problem(in, dilation);
  std::vector<double> sums(pb.tasks.size(), 0.0);
  std::vector<int64_t> cnts(pb.tasks.size(), 0);
  at::Tensor grad = at::empty(kGrad ? in.logits.sizes() : at::IntArrayRef{0}, in.logits.options());
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "pairwise_cpu", [&] {
    run_all<scalar_t, kLoss, kGrad>(pb, in, static_cast<scalar_t>(tau), sums.data(), cnts.data(),
                                    kGrad ? grad.data_ptr<scalar_t>() : nullptr);
  });
  double total = 0.0;  // summed in task order: the result does not depend on the number of threads
  int64_t count = 0;
  for (size_t t = 0; t < sums.size(); ++t) {
    total += sums[t];
    count += cnts[t];
  }
  at::Tensor loss_sum = at::empty({}, logits.options().dtype(at::kDouble));
  at::Tensor cnt = at::empty({}, logits.options().dtype(at::kLong));
  loss_sum.fill_(total);
  cnt.fill_(count);
  return {loss_sum, cnt, grad};
}

std::tuple<at::Tensor, at::Tensor> pairwise_forward_cpu(const at::Tensor& logits, const at::Tensor& sim,
                                                        const at::Tensor& img_idx, const at::Tensor& boxes,
                                                        double tau, int64_t dilation) {
  auto out = pairwise_cpu<true, false>(logits, sim, img_idx, boxes, tau, dilation, "pairwise_affinity_loss");
  return {std::get<0>(out), std::get<1>(out)};
}

at::Tensor pairwise_backward_cpu(const at::Tensor& logits, const at::Tensor& sim, const at::Tensor& img_idx,
                                 const at::Tensor& boxes, double tau, int64_t dilation) {
  return std::get<2>(pairwise_cpu<false, true>(logits, sim, img_idx, boxes, tau, dilation,
                                               "pairwise_affinity_loss (backward)"));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_forward_backward_cpu(const at::Tensor& logits,
                                                                             const at::Tensor& sim,
                                                                             const at::Tensor& img_idx,
                                                                             const at::Tensor& boxes, double tau,
                                                                             int64_t dilation) {
  return pairwise_cpu<true, true>(logits, sim, img_idx, boxes, tau, dilation, "pairwise_affinity_loss");
}

}  // namespace
}  // namespace boxseg

TORCH_LIBRARY_IMPL(boxseg_ext, CPU, m) {
  m.impl("pairwise_forward", &boxseg::pairwise_forward_cpu);
  m.impl("pairwise_backward", &boxseg::pairwise_backward_cpu);
  m.impl("pairwise_forward_backward", &boxseg::pairwise_forward_backward_cpu);
}
