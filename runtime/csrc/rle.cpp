#include "rle.h"

namespace boxseg {

std::string rle_counts_to_string(const std::vector<uint64_t>& counts) {
  std::string out;
  out.reserve(counts.size() * 2);
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t x = static_cast<int64_t>(counts[i]);
    // From the third run on, store the difference to the run of the same value two places back.
    if (i > 2) x -= static_cast<int64_t>(counts[i - 2]);
    bool more = true;
    while (more) {
      int c = static_cast<int>(x & 0x1f);
      x >>= 5;  // arithmetic shift: negative differences end at -1
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      out += static_cast<char>(c + 48);
    }
  }
  return out;
}

std::string rle_encode_mask(const uint8_t* mask, int64_t height, int64_t width) {
  RleBuilder rle;
  for (int64_t x = 0; x < width; ++x) {
    int64_t y = 0;
    while (y < height) {
      const bool v = mask[y * width + x] != 0;
      int64_t end = y + 1;
      while (end < height && (mask[end * width + x] != 0) == v) ++end;
      rle.push(v, static_cast<uint64_t>(end - y));
      y = end;
    }
  }
  return rle_counts_to_string(rle.counts());
}

}  // namespace boxseg
