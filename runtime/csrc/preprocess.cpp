#include "preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "sampling.h"

namespace boxseg {
namespace {

constexpr int64_t kRowsPerTask = 32;

int64_t round_half_up(double v) { return static_cast<int64_t>(std::floor(v + 0.5)); }

template <typename T>
struct Writer;

template <>
struct Writer<float> {
  static float put(float v) { return v; }
};

template <>
struct Writer<uint8_t> {
  // Round half up and clamp, the same as the numpy reference.
  static uint8_t put(float v) {
    const float r = std::floor(v + 0.5f);
    return static_cast<uint8_t>(r < 0.f ? 0.f : (r > 255.f ? 255.f : r));
  }
};

struct ImageJob {
  const ImageView* image;
  const ResizePlan* plan;
  std::vector<AxisTap> taps_x;
  double src_per_dst_y;
  bool identity;
};

// Fills rows [y_begin, y_end) of image `b`'s three planes.
template <typename T, bool Normalize>
void fill_rows(const ImageJob& job, int64_t y_begin, int64_t y_end, int64_t padded_h, int64_t padded_w,
               const InputSpec& spec, T* image_dst) {
  const ImageView& im = *job.image;
  const int64_t dst_w = job.plan->dst_w, dst_h = job.plan->dst_h;
  const size_t plane = static_cast<size_t>(padded_h * padded_w);
  float mean[3], inv_std[3];
  for (int c = 0; c < 3; ++c) {
    mean[c] = spec.mean[c];
    inv_std[c] = 1.f / spec.std[c];
  }
  auto emit = [&](float v, int c) -> T {
    if constexpr (Normalize) v = (v - mean[c]) * inv_std[c];
    return Writer<T>::put(v);
  };
  for (int64_t y = y_begin; y < y_end; ++y) {
    T* out[3];
    for (int c = 0; c < 3; ++c) out[c] = image_dst + c * plane + static_cast<size_t>(y * padded_w);
    if (y >= dst_h) {
      for (int c = 0; c < 3; ++c) std::memset(out[c], 0, sizeof(T) * static_cast<size_t>(padded_w));
      continue;
    }
    if (job.identity) {
      const uint8_t* row = im.data + y * im.stride_y;
      for (int64_t x = 0; x < dst_w; ++x) {
        const uint8_t* p = row + x * im.stride_x;
        for (int c = 0; c < 3; ++c) out[c][x] = emit(static_cast<float>(p[c * im.stride_c]), c);
      }
    } else {
      const AxisTap ty = resize_tap(y, job.src_per_dst_y, im.height);
      const uint8_t* r0 = im.data + ty.i0 * im.stride_y;
      const uint8_t* r1 = im.data + ty.i1 * im.stride_y;
      const float wy1 = ty.w1, wy0 = 1.f - ty.w1;
      for (int64_t x = 0; x < dst_w; ++x) {
        const AxisTap& tx = job.taps_x[static_cast<size_t>(x)];
        const float wx1 = tx.w1, wx0 = 1.f - tx.w1;
        const int64_t o0 = tx.i0 * im.stride_x, o1 = tx.i1 * im.stride_x;
        for (int c = 0; c < 3; ++c) {
          const int64_t oc = c * im.stride_c;
          const float top = wx0 * float(r0[o0 + oc]) + wx1 * float(r0[o1 + oc]);
          const float bottom = wx0 * float(r1[o0 + oc]) + wx1 * float(r1[o1 + oc]);
          out[c][x] = emit(wy0 * top + wy1 * bottom, c);
        }
      }
    }
    for (int c = 0; c < 3; ++c)
      std::memset(out[c] + dst_w, 0, sizeof(T) * static_cast<size_t>(padded_w - dst_w));
  }
}

template <typename T>
void run_batch(const std::vector<ImageJob>& jobs, int64_t padded_h, int64_t padded_w, const InputSpec& spec,
               T* dst, ThreadPool& pool) {
  const int64_t chunks_per_image = (padded_h + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t tasks = chunks_per_image * static_cast<int64_t>(jobs.size());
  const size_t image_size = static_cast<size_t>(3 * padded_h * padded_w);
  pool.parallel_for(tasks, [&](int64_t t) {
    const int64_t b = t / chunks_per_image;
    const int64_t y0 = (t % chunks_per_image) * kRowsPerTask;
    const int64_t y1 = std::min(padded_h, y0 + kRowsPerTask);
    T* image_dst = dst + static_cast<size_t>(b) * image_size;
    if (spec.normalize) {
      fill_rows<T, true>(jobs[static_cast<size_t>(b)], y0, y1, padded_h, padded_w, spec, image_dst);
    } else {
      fill_rows<T, false>(jobs[static_cast<size_t>(b)], y0, y1, padded_h, padded_w, spec, image_dst);
    }
  });
}

}  // namespace

ResizePlan plan_resize(int64_t height, int64_t width, int64_t min_size, int64_t max_size) {
  if (height <= 0 || width <= 0)
    throw std::invalid_argument("image has zero size (" + std::to_string(height) + " x " +
                                std::to_string(width) + "); expected height and width >= 1");
  ResizePlan plan{height, width, height, width};
  if (min_size <= 0 && max_size <= 0) return plan;
  double scale = 1e300;
  if (min_size > 0) scale = double(min_size) / double(std::min(height, width));
  if (max_size > 0) scale = std::min(scale, double(max_size) / double(std::max(height, width)));
  plan.dst_h = std::max<int64_t>(1, round_half_up(double(height) * scale));
  plan.dst_w = std::max<int64_t>(1, round_half_up(double(width) * scale));
  return plan;
}

std::array<int64_t, 2> padded_size(const std::vector<ResizePlan>& plans, int64_t size_divisor) {
  if (size_divisor < 1) size_divisor = 1;
  int64_t h = 0, w = 0;
  for (const auto& p : plans) {
    h = std::max(h, p.dst_h);
    w = std::max(w, p.dst_w);
  }
  auto up = [&](int64_t v) { return (v + size_divisor - 1) / size_divisor * size_divisor; };
  return {{up(h), up(w)}};
}

void preprocess_batch(const std::vector<ImageView>& images, const std::vector<ResizePlan>& plans,
                      int64_t padded_h, int64_t padded_w, const InputSpec& spec, void* dst, ThreadPool& pool) {
  if (images.size() != plans.size()) throw std::invalid_argument("preprocess: one resize plan per image expected");
  std::vector<ImageJob> jobs(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    const ResizePlan& p = plans[i];
    if (p.dst_h > padded_h || p.dst_w > padded_w)
      throw std::invalid_argument("preprocess: resized image larger than the padded batch");
    ImageJob& j = jobs[i];
    j.image = &images[i];
    j.plan = &p;
    j.identity = p.dst_h == p.src_h && p.dst_w == p.src_w;
    j.src_per_dst_y = double(p.src_h) / double(p.dst_h);
    if (!j.identity) {
      const double src_per_dst_x = double(p.src_w) / double(p.dst_w);
      j.taps_x.resize(static_cast<size_t>(p.dst_w));
      for (int64_t x = 0; x < p.dst_w; ++x) j.taps_x[static_cast<size_t>(x)] = resize_tap(x, src_per_dst_x, p.src_w);
    }
  }
  if (spec.type == InputType::Float32) {
    run_batch(jobs, padded_h, padded_w, spec, static_cast<float*>(dst), pool);
  } else {
    run_batch(jobs, padded_h, padded_w, spec, static_cast<uint8_t*>(dst), pool);
  }
}

}  // namespace boxseg
