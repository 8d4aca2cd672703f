// CPU kernel of color_similarity: LAB per pixel into a (B,3,H,W) scratch, then the similarities of each pixel to
// its dilated neighbours (0 for neighbours outside the image). Parallel over image rows.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "../binding_checks.h"
#include "../color_kernels.h"
#include "parallel.h"

namespace boxseg {
namespace {

template <typename T>
void color_similarity_impl(const T* img, T* lab, T* out, int64_t b, int64_t h, int64_t w, int k, int dilation,
                           T theta) {
  const int64_t plane = h * w;
  const int kk = k * k - 1;
  const int64_t grain = std::max<int64_t>(1, kMinParallelWork / std::max<int64_t>(w, 1));  // rows
  at::parallel_for(0, b * h, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bi = row / h, y = row % h;
      const T* src = img + bi * 3 * plane + y * w;
      T* dst = lab + bi * 3 * plane + y * w;
      for (int64_t x = 0; x < w; ++x) {
        T v[3];
        rgb_to_lab_pixel(src[x], src[plane + x], src[2 * plane + x], v);
        dst[x] = v[0];
        dst[plane + x] = v[1];
        dst[2 * plane + x] = v[2];
      }
    }
  });
  at::parallel_for(0, b * h, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bi = row / h, y = row % h;
      const T* l = lab + bi * 3 * plane;
      for (int j = 0; j < kk; ++j) {
        int dy, dx;
        neighbour_offset(j, k, dilation, dy, dx);
        T* o = out + (bi * kk + j) * plane + y * w;
        const int64_t ny = y + dy;
        if (ny < 0 || ny >= h) {
          for (int64_t x = 0; x < w; ++x) o[x] = T(0);
          continue;
        }
        for (int64_t x = 0; x < w; ++x) {
          const int64_t nx = x + dx;
          if (nx < 0 || nx >= w) {
            o[x] = T(0);
            continue;
          }
          const int64_t p = y * w + x, q = ny * w + nx;
          o[x] = lab_similarity(l[p], l[plane + p], l[2 * plane + p], l[q], l[plane + q], l[2 * plane + q], theta);
        }
      }
    }
  });
}

at::Tensor color_similarity_cpu(const at::Tensor& images, int64_t kernel_size, int64_t dilation, double theta) {
  check_color_inputs(images, kernel_size, dilation);
  at::Tensor img = images.contiguous();
  const int64_t b = img.size(0), h = img.size(2), w = img.size(3);
  const int64_t kk = kernel_size * kernel_size - 1;
  at::Tensor lab = at::empty({b, 3, h, w}, img.options());
  at::Tensor out = at::empty({b, kk, h, w}, img.options());
  AT_DISPATCH_FLOATING_TYPES(img.scalar_type(), "color_similarity_cpu", [&] {
    color_similarity_impl<scalar_t>(img.data_ptr<scalar_t>(), lab.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), b,
                                    h, w, static_cast<int>(kernel_size), static_cast<int>(dilation),
                                    static_cast<scalar_t>(theta));
  });
  return out;
}

}  // namespace
}  // namespace boxseg

TORCH_LIBRARY_IMPL(boxseg_ext, CPU, m) { m.impl("color_similarity", &boxseg::color_similarity_cpu); }
