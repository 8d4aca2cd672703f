// COCO run-length encoding, identical to pycocotools' `mask.encode`: runs over the mask in column-major
// (Fortran) order, alternating 0-runs and 1-runs and starting with a (possibly empty) 0-run, then written with
// pycocotools' compact string form (5 bits per character, runs after the second stored as differences).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace boxseg {

class RleBuilder {
 public:
  // Appends `count` pixels of value `value` in column-major order.
  void push(bool value, uint64_t count) {
    if (count == 0) return;
    if (value != current_) {
      counts_.push_back(0);
      current_ = value;
    }
    counts_.back() += count;
  }
  const std::vector<uint64_t>& counts() const { return counts_; }

 private:
  std::vector<uint64_t> counts_{0};
  bool current_ = false;
};

// pycocotools' string form of a list of run lengths.
std::string rle_counts_to_string(const std::vector<uint64_t>& counts);

// Encodes a row-major (height, width) mask of 0/1 bytes.
std::string rle_encode_mask(const uint8_t* mask, int64_t height, int64_t width);

}  // namespace boxseg
