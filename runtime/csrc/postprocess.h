// Post-processing of one detection: box back to original pixels, and its low-resolution mask pasted into the
// original image size only inside the box (pixels outside the box are background), thresholded, optionally
// run-length encoded. The sampling convention is the one in sampling.h and runtime/reference.py:
// the mask grid (mask_h, mask_w) covers the padded input at `stride` pixels per cell, cell centres at
// (j + 0.5) * stride - 0.5 input pixels; original pixel x (centre x + 0.5) lies at (x + 0.5) * scale_x input pixels.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace boxseg {

struct PasteGeometry {
  int64_t height = 0;    // original image size
  int64_t width = 0;
  double scale_y = 1.0;  // original -> input pixels (ResizePlan::scale_y)
  double scale_x = 1.0;
  int64_t stride = 4;    // input pixels per mask cell
  float threshold = 0.5f;
};

// Box (xyxy, input pixels) -> original pixels, clipped to [0, width] x [0, height]; NaN becomes 0.
std::array<float, 4> rescale_box(const float* box_input, const PasteGeometry& g);

// The pixels a box touches: columns [x0, x1) and rows [y0, y1), clamped to the image; none for a box
// of zero width or height.
struct PixelRange {
  int64_t x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  bool empty() const { return x1 <= x0 || y1 <= y0; }
};
PixelRange box_pixels(const std::array<float, 4>& box, int64_t height, int64_t width);

// Writes the (height, width) plane of 0/1 bytes for one detection. With `plane_is_zeroed` (fresh calloc
// memory) only the box region is written, so untouched pages of large planes are never even faulted in.
void paste_mask(const float* mask, int64_t mask_h, int64_t mask_w, const std::array<float, 4>& box,
                const PasteGeometry& g, uint8_t* plane, bool plane_is_zeroed = false);

// The same mask as pycocotools' compressed RLE counts string, without materialising the full plane.
std::string paste_mask_rle(const float* mask, int64_t mask_h, int64_t mask_w, const std::array<float, 4>& box,
                           const PasteGeometry& g);

}  // namespace boxseg
