// CPU kernels of the fused pairwise affinity loss. Nothing of size N x 8 x H x W is ever allocated: work is split
// into (instance, block of rows) tasks over the instance's box dilated by the neighbourhood radius, each task keeps
// the sigmoids of its rows (plus a halo) in a small scratch buffer, and the forward reduces per task.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../binding_checks.h"
#include "../pairwise_kernels.h"
#include "parallel.h"

namespace boxseg {
namespace {

struct Task {
  int n;       // instance
  int ya, yb;  // rows [ya, yb) of the region
};

struct Problem {
  int64_t n, h, w, b, k, kk;  // instances, height, width, images, kernel size, neighbours (k*k - 1)
  int dilation, radius;       // radius = (k / 2) * dilation
  std::vector<PixelBox> box;     // pixels inside each instance's box
  std::vector<PixelBox> region;  // box dilated by the radius, clipped to the image
  std::vector<Task> tasks;
  int64_t work = 0;  // region pixels over all instances
  std::vector<int> dy, dx;
};

// Validates the inputs and splits the work into tasks of roughly equal pixel count (at::parallel_for hands each
// thread one contiguous chunk of tasks, so equal-size tasks balance the load).
Problem make_problem(const at::Tensor& logits, const at::Tensor& sim, const at::Tensor& img_idx,
                     const at::Tensor& boxes, int64_t dilation, const char* op) {
  check_dims(logits, 3, op, "mask_logits", "(N, H, W)");
  check_float(logits, op, "mask_logits");
  check_dims(sim, 4, op, "color_sim", "(B, K*K-1, H, W)");
  check_dims(img_idx, 1, op, "img_idx", "(N,)");
  check_boxes(boxes, logits.size(0), op, "boxes");
  TORCH_CHECK(img_idx.size(0) == logits.size(0), "boxseg.ops.", op, ": img_idx must have ", logits.size(0),
              " entries (one per instance), got ", img_idx.size(0));
  TORCH_CHECK(sim.size(2) == logits.size(1) && sim.size(3) == logits.size(2), "boxseg.ops.", op,
              ": color_sim spatial size ", sim.sizes(), " does not match mask_logits ", logits.sizes());
  TORCH_CHECK(dilation >= 1, "boxseg.ops.", op, ": dilation must be >= 1, got ", dilation);
  Problem p;
  p.n = logits.size(0);
  p.h = logits.size(1);
  p.w = logits.size(2);
  p.b = sim.size(0);
  p.kk = sim.size(1);
  p.k = 3;
  while (p.k * p.k - 1 < p.kk) p.k += 2;
  TORCH_CHECK(p.k * p.k - 1 == p.kk, "boxseg.ops.", op, ": color_sim must have k*k-1 channels for an odd k >= 3 ",
              "(8 for a 3x3 kernel), got ", p.kk);
  p.dilation = static_cast<int>(dilation);
  p.radius = static_cast<int>(p.k / 2) * p.dilation;
  for (int j = 0; j < p.kk; ++j) {
    int oy, ox;
    neighbour_offset(j, static_cast<int>(p.k), p.dilation, oy, ox);
    p.dy.push_back(oy);
    p.dx.push_back(ox);
  }
  const int64_t* idx = img_idx.data_ptr<int64_t>();
  const double* bx = boxes.data_ptr<double>();
  constexpr int64_t kTaskPixels = 4096;
  for (int64_t i = 0; i < p.n; ++i) {
    TORCH_CHECK(idx[i] >= 0 && idx[i] < p.b, "boxseg.ops.", op, ": img_idx[", i, "] = ", idx[i],
                " is out of range for color_sim with ", p.b, " images");
    PixelBox box = pixel_box(bx + 4 * i, static_cast<int>(p.h), static_cast<int>(p.w));
    PixelBox reg{0, 0, 0, 0};
    if (!box.empty()) {
      reg.y0 = std::max(0, box.y0 - p.radius);
      reg.y1 = std::min(static_cast<int>(p.h), box.y1 + p.radius);
      reg.x0 = std::max(0, box.x0 - p.radius);
      reg.x1 = std::min(static_cast<int>(p.w), box.x1 + p.radius);
      p.work += static_cast<int64_t>(reg.y1 - reg.y0) * (reg.x1 - reg.x0);
      const int rows = static_cast<int>(std::max<int64_t>(1, kTaskPixels / (reg.x1 - reg.x0)));
      for (int y = reg.y0; y < reg.y1; y += rows) p.tasks.push_back({static_cast<int>(i), y, std::min(reg.y1, y + rows)});
    }
    p.box.push_back(box);
    p.region.push_back(reg);
  }
  return p;
}

// Sigmoid pairs of region rows [r0, r1) of one instance into scratch (row-major over the region's columns).
template <typename T>
void fill_sigmoids(const T* z, const PixelBox& reg, int64_t w, int r0, int r1, std::vector<T>& p, std::vector<T>& q) {
  const int cols = reg.x1 - reg.x0;
  p.resize(static_cast<size_t>(r1 - r0) * cols);
  q.resize(p.size());
  for (int y = r0; y < r1; ++y) {
    const T* zr = z + y * w + reg.x0;
    T* pr = p.data() + static_cast<size_t>(y - r0) * cols;
    T* qr = q.data() + static_cast<size_t>(y - r0) * cols;
    for (int x = 0; x < cols; ++x) sigmoid_pair(zr[x], pr[x], qr[x]);
  }
}

template <typename T>
void forward_impl(const Problem& pb, const T* logits, const T* sim, const int64_t* img, T tau, double* task_sum,
                  int64_t* task_cnt) {
  const int64_t plane = pb.h * pb.w;
  const int half = static_cast<int>(pb.kk / 2);  // neighbours j < half point up/left; j and kk-1-j are opposite
  parallel_tasks(static_cast<int64_t>(pb.tasks.size()), pb.work, [&](int64_t begin, int64_t end) {
    std::vector<T> sp, sq;
    for (int64_t t = begin; t < end; ++t) {
      const Task& task = pb.tasks[t];
      const PixelBox& box = pb.box[task.n];
      const PixelBox& reg = pb.region[task.n];
      const T* z = logits + task.n * plane;
      const T* s = sim + img[task.n] * pb.kk * plane;
      const int r0 = std::max(reg.y0, task.ya - pb.radius);
      fill_sigmoids(z, reg, pb.w, r0, task.yb, sp, sq);
      const int cols = reg.x1 - reg.x0;
      double sum = 0.0;
      int64_t cnt = 0;
      // Each unordered pair {a, a + off_j} is visited once (j < half) and weighted by the number of triples that
      // use it: (a in box, S_j(a) >= tau) + (a + off_j in box, S_opposite(a + off_j) >= tau).
      for (int y = task.ya; y < task.yb; ++y) {
        const bool row_a_in = y >= box.y0 && y < box.y1;
        for (int j = 0; j < half; ++j) {
          const int ny = y + pb.dy[j], ox = pb.dx[j];
          if (ny < reg.y0) continue;
          const bool row_b_in = ny >= box.y0 && ny < box.y1;
          if (!row_a_in && !row_b_in) continue;
          const int xa = std::max(reg.x0, reg.x0 - ox), xb = std::min(reg.x1, reg.x1 - ox);
          const T* sa = s + j * plane + y * pb.w;
          const T* sb = s + (pb.kk - 1 - j) * plane + ny * pb.w;
          const T* za = z + y * pb.w;
          const T* zb = z + ny * pb.w;
          const T* pa = sp.data() + static_cast<size_t>(y - r0) * cols - reg.x0;
          const T* qa = sq.data() + static_cast<size_t>(y - r0) * cols - reg.x0;
          const T* pn = sp.data() + static_cast<size_t>(ny - r0) * cols - reg.x0;
          const T* qn = sq.data() + static_cast<size_t>(ny - r0) * cols - reg.x0;
          for (int x = xa; x < xb; ++x) {
            const int nx = x + ox;
            const int wgt = (row_a_in && x >= box.x0 && x < box.x1 && sa[x] >= tau) +
                            (row_b_in && nx >= box.x0 && nx < box.x1 && sb[nx] >= tau);
            if (wgt == 0) continue;
            sum += wgt * static_cast<double>(pair_loss(za[x], pa[x], qa[x], zb[nx], pn[nx], qn[nx]));
            cnt += wgt;
          }
        }
      }
      task_sum[t] = sum;
      task_cnt[t] = cnt;
    }
  });
}

template <typename T>
void backward_impl(const Problem& pb, const T* logits, const T* sim, const int64_t* img, T tau, T* grad) {
  const int64_t plane = pb.h * pb.w;
  parallel_tasks(static_cast<int64_t>(pb.tasks.size()), pb.work, [&](int64_t begin, int64_t end) {
    std::vector<T> sp, sq;
    std::vector<double> acc;
    for (int64_t t = begin; t < end; ++t) {
      const Task& task = pb.tasks[t];
      const PixelBox& box = pb.box[task.n];
      const PixelBox& reg = pb.region[task.n];
      const T* z = logits + task.n * plane;
      const T* s = sim + img[task.n] * pb.kk * plane;
      T* g = grad + task.n * plane;
      const int r0 = std::max(reg.y0, task.ya - pb.radius);
      const int r1 = std::min(reg.y1, task.yb + pb.radius);
      fill_sigmoids(z, reg, pb.w, r0, r1, sp, sq);
      const int cols = reg.x1 - reg.x0;
      acc.assign(cols, 0.0);
      // Gather form: pixel c collects the gradient of every triple it takes part in, as centre (S_j(c)) or as
      // the neighbour of c + off_j (S_opposite(c + off_j)); no two tasks write the same pixel.
      for (int y = task.ya; y < task.yb; ++y) {
        std::fill(acc.begin(), acc.end(), 0.0);
        const bool row_c_in = y >= box.y0 && y < box.y1;
        for (int j = 0; j < pb.kk; ++j) {
          const int ny = y + pb.dy[j], ox = pb.dx[j];
          if (ny < reg.y0 || ny >= reg.y1) continue;
          const bool row_n_in = ny >= box.y0 && ny < box.y1;
          if (!row_c_in && !row_n_in) continue;
          const int xa = std::max(reg.x0, reg.x0 - ox), xb = std::min(reg.x1, reg.x1 - ox);
          const T* sc = s + j * plane + y * pb.w;
          const T* sn = s + (pb.kk - 1 - j) * plane + ny * pb.w;
          const T* zc = z + y * pb.w;
          const T* zn = z + ny * pb.w;
          const T* pc = sp.data() + static_cast<size_t>(y - r0) * cols - reg.x0;
          const T* qc = sq.data() + static_cast<size_t>(y - r0) * cols - reg.x0;
          const T* pn = sp.data() + static_cast<size_t>(ny - r0) * cols - reg.x0;
          const T* qn = sq.data() + static_cast<size_t>(ny - r0) * cols - reg.x0;
          double* ac = acc.data() - reg.x0;
          for (int x = xa; x < xb; ++x) {
            const int nx = x + ox;
            const int wgt = (row_c_in && x >= box.x0 && x < box.x1 && sc[x] >= tau) +
                            (row_n_in && nx >= box.x0 && nx < box.x1 && sn[nx] >= tau);
            if (wgt == 0) continue;
            ac[x] += wgt * static_cast<double>(pair_grad(zc[x], pc[x], qc[x], zn[nx], pn[nx], qn[nx]));
          }
        }
        T* gr = g + y * pb.w;
        for (int x = reg.x0; x < reg.x1; ++x) gr[x] = static_cast<T>(acc[x - reg.x0]);
      }
    }
  });
}

struct Inputs {
  at::Tensor logits, sim, img, boxes;
};

Inputs prepare(const at::Tensor& logits, const at::Tensor& sim, const at::Tensor& img_idx, const at::Tensor& boxes,
               const char* op) {
  check_float(logits, op, "mask_logits");
  Inputs in;
  in.logits = logits.contiguous();
  in.sim = sim.to(logits.scalar_type()).contiguous();
  in.img = img_idx.to(at::kLong).contiguous();
  in.boxes = boxes.to(at::kDouble).contiguous();
  return in;
}

std::tuple<at::Tensor, at::Tensor> pairwise_forward_cpu(const at::Tensor& logits, const at::Tensor& sim,
                                                        const at::Tensor& img_idx, const at::Tensor& boxes,
                                                        double tau, int64_t dilation) {
  const char* op = "pairwise_affinity_loss";
  Inputs in = prepare(logits, sim, img_idx, boxes, op);
  Problem pb = make_problem(in.logits, in.sim, in.img, in.boxes, dilation, op);
  std::vector<double> sums(pb.tasks.size(), 0.0);
  std::vector<int64_t> cnts(pb.tasks.size(), 0);
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "pairwise_forward_cpu", [&] {
    forward_impl<scalar_t>(pb, in.logits.data_ptr<scalar_t>(), in.sim.data_ptr<scalar_t>(),
                           in.img.data_ptr<int64_t>(), static_cast<scalar_t>(tau), sums.data(), cnts.data());
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
  return {loss_sum, cnt};
}

at::Tensor pairwise_backward_cpu(const at::Tensor& logits, const at::Tensor& sim, const at::Tensor& img_idx,
                                 const at::Tensor& boxes, double tau, int64_t dilation) {
  const char* op = "pairwise_affinity_loss (backward)";
  Inputs in = prepare(logits, sim, img_idx, boxes, op);
  Problem pb = make_problem(in.logits, in.sim, in.img, in.boxes, dilation, op);
  at::Tensor grad = at::zeros(in.logits.sizes(), in.logits.options());
  AT_DISPATCH_FLOATING_TYPES(in.logits.scalar_type(), "pairwise_backward_cpu", [&] {
    backward_impl<scalar_t>(pb, in.logits.data_ptr<scalar_t>(), in.sim.data_ptr<scalar_t>(),
                            in.img.data_ptr<int64_t>(), static_cast<scalar_t>(tau), grad.data_ptr<scalar_t>());
  });
  return grad;
}

}  // namespace
}  // namespace boxseg

TORCH_LIBRARY_IMPL(boxseg_ext, CPU, m) {
  m.impl("pairwise_forward", &boxseg::pairwise_forward_cpu);
  m.impl("pairwise_backward", &boxseg::pairwise_backward_cpu);
}
