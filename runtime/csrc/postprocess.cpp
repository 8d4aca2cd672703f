#include "postprocess.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "rle.h"
#include "sampling.h"

namespace boxseg {
namespace {

float clip(double v, double hi) {
  if (!(v > 0.0)) return 0.f;  // also NaN
  return static_cast<float>(v < hi ? v : hi);
}

// Thresholded bilinear samples of the mask for the pixels in `r`, written row by row to `out` with row
// stride `out_stride`. Separable: first between two mask rows, then between two mask columns.
void sample_region(const float* mask, int64_t mask_h, int64_t mask_w, const PixelRange& r, const PasteGeometry& g,
                   uint8_t* out, int64_t out_stride) {
  const int64_t bw = r.x1 - r.x0;
  const double per_x = g.scale_x / double(g.stride);
  const double per_y = g.scale_y / double(g.stride);
  std::vector<AxisTap> taps(static_cast<size_t>(bw));
  for (int64_t i = 0; i < bw; ++i) taps[static_cast<size_t>(i)] = resize_tap(r.x0 + i, per_x, mask_w);
  // Taps are monotonic in x, so the mask columns needed are [c0, c1].
  const int64_t c0 = taps.front().i0, c1 = taps.back().i1;
  std::vector<float> row(static_cast<size_t>(c1 - c0 + 1));
  const float thr = g.threshold;
  for (int64_t y = r.y0; y < r.y1; ++y) {
    const AxisTap ty = resize_tap(y, per_y, mask_h);
    const float* m0 = mask + ty.i0 * mask_w;
    const float* m1 = mask + ty.i1 * mask_w;
    const float w1 = ty.w1, w0 = 1.f - ty.w1;
    for (int64_t c = c0; c <= c1; ++c) row[static_cast<size_t>(c - c0)] = w0 * m0[c] + w1 * m1[c];
    uint8_t* o = out + (y - r.y0) * out_stride;
    const float* rp = row.data() - c0;
    for (int64_t i = 0; i < bw; ++i) {
      const AxisTap& t = taps[static_cast<size_t>(i)];
      const float v = (1.f - t.w1) * rp[t.i0] + t.w1 * rp[t.i1];
      o[i] = v > thr ? 1 : 0;
    }
  }
}

}  // namespace

std::array<float, 4> rescale_box(const float* b, const PasteGeometry& g) {
  const double w = double(g.width), h = double(g.height);
  return {{clip(double(b[0]) / g.scale_x, w), clip(double(b[1]) / g.scale_y, h), clip(double(b[2]) / g.scale_x, w),
           clip(double(b[3]) / g.scale_y, h)}};
}

PixelRange box_pixels(const std::array<float, 4>& box, int64_t height, int64_t width) {
  if (!(box[2] > box[0]) || !(box[3] > box[1])) return {};  // zero-area box: empty mask
  auto lo = [](float v, int64_t n) { return std::clamp<int64_t>(static_cast<int64_t>(std::floor(v)), 0, n); };
  auto hi = [](float v, int64_t n) { return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(v)), 0, n); };
  return {lo(box[0], width), hi(box[2], width), lo(box[1], height), hi(box[3], height)};
}

void paste_mask(const float* mask, int64_t mask_h, int64_t mask_w, const std::array<float, 4>& box,
                const PasteGeometry& g, uint8_t* plane, bool plane_is_zeroed) {
  const PixelRange r = box_pixels(box, g.height, g.width);
  const size_t W = static_cast<size_t>(g.width);
  if (plane_is_zeroed) {
    if (!r.empty()) sample_region(mask, mask_h, mask_w, r, g, plane + W * static_cast<size_t>(r.y0) + r.x0, g.width);
    return;
  }
  if (r.empty()) {
    std::memset(plane, 0, W * static_cast<size_t>(g.height));
    return;
  }
  std::memset(plane, 0, W * static_cast<size_t>(r.y0));
  std::memset(plane + W * static_cast<size_t>(r.y1), 0, W * static_cast<size_t>(g.height - r.y1));
  for (int64_t y = r.y0; y < r.y1; ++y) {
    uint8_t* row = plane + W * static_cast<size_t>(y);
    std::memset(row, 0, static_cast<size_t>(r.x0));
    std::memset(row + r.x1, 0, static_cast<size_t>(g.width - r.x1));
  }
  sample_region(mask, mask_h, mask_w, r, g, plane + W * static_cast<size_t>(r.y0) + r.x0, g.width);
}

std::string paste_mask_rle(const float* mask, int64_t mask_h, int64_t mask_w, const std::array<float, 4>& box,
                           const PasteGeometry& g) {
  const PixelRange r = box_pixels(box, g.height, g.width);
  RleBuilder rle;
  const uint64_t H = static_cast<uint64_t>(g.height);
  if (r.empty()) {
    rle.push(false, H * static_cast<uint64_t>(g.width));
    return rle_counts_to_string(rle.counts());
  }
  const int64_t bw = r.x1 - r.x0, bh = r.y1 - r.y0;
  std::vector<uint8_t> region(static_cast<size_t>(bw * bh));
  sample_region(mask, mask_h, mask_w, r, g, region.data(), bw);
  // Column-major: whole background columns left of the box, then each box column framed by background.
  rle.push(false, static_cast<uint64_t>(r.x0) * H);
  for (int64_t i = 0; i < bw; ++i) {
    rle.push(false, static_cast<uint64_t>(r.y0));
    int64_t y = 0;
    while (y < bh) {
      const uint8_t v = region[static_cast<size_t>(y * bw + i)];
      int64_t end = y + 1;
      while (end < bh && region[static_cast<size_t>(end * bw + i)] == v) ++end;
      rle.push(v != 0, static_cast<uint64_t>(end - y));
      y = end;
    }
    rle.push(false, static_cast<uint64_t>(g.height - r.y1));
  }
  rle.push(false, static_cast<uint64_t>(g.width - r.x1) * H);
  return rle_counts_to_string(rle.counts());
}

}  // namespace boxseg
