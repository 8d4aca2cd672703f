// The runtime core: owns a backend and a thread pool; turns uint8 RGB images into detections at the original
// resolution. No Python and no libtorch: the nanobind module and the C++ example both use this class.
#pragma once

#include <array>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "metadata.h"
#include "preprocess.h"
#include "thread_pool.h"

namespace boxseg {

// Limits that keep a bad argument from turning into a giant allocation or thousands of threads.
constexpr int kMaxThreads = 1024;
constexpr int64_t kMaxResizeSide = 16384;  // min_size / max_size, and any side of a resized image

struct PredictorConfig {
  std::string model_path;
  std::string device = "cpu";    // "cpu", "cuda", "cuda:N"
  int threads = 0;               // inference threads and pre/post pool size; 0 = one per hardware thread
  int64_t min_size = 0;          // resize policy (plan_resize); both 0 keeps the original size;
  int64_t max_size = 0;          // < 0: the model's own rule (boxseg.test_size / boxseg.test_max_size)
  float score_threshold = 0.f;   // keep detections with score >= this (on top of the graph's num_dets)
  float mask_threshold = -1.f;   // < 0: the model's boxseg.mask_threshold
};

// calloc-ed so that large, mostly-background mask planes cost no explicit zeroing; release with std::free.
struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};
using MaskBuffer = std::unique_ptr<uint8_t[], FreeDeleter>;

// Detections of one image, in original pixels.
struct Detections {
  int64_t height = 0;
  int64_t width = 0;
  std::vector<float> boxes;     // (n, 4) xyxy, clipped to the image
  std::vector<float> scores;    // (n,)
  std::vector<int64_t> classes; // (n,)
  MaskBuffer masks;                     // (n, height, width) of 0/1, when masks were requested as arrays
  std::vector<std::string> rle_counts;  // n pycocotools counts strings, when RLE was requested
  int64_t count() const { return static_cast<int64_t>(scores.size()); }
};

struct StageTimings {
  double pre_ms = 0.0;
  double infer_ms = 0.0;
  double post_ms = 0.0;
  double total_ms = 0.0;
};

// Images are run in groups of equal padded size, one graph run per group, so that an image's detections do
// not depend on the other images of the batch (padding it further would change what the network sees, e.g.
// its normalisation statistics). A batch of same-sized images is still one run.
struct BatchResult {
  std::vector<Detections> images;   // in input order
  StageTimings timings;             // summed over the graph runs
  std::vector<std::array<int64_t, 3>> runs;  // (images, padded height, padded width) of each graph run, in order
};

class Predictor {
 public:
  explicit Predictor(const PredictorConfig& config);

  // Thread-safe: many threads may call predict on one Predictor at once.
  BatchResult predict(const std::vector<ImageView>& images, bool rle) const;

  const ModelInfo& info() const { return info_; }
  const PredictorConfig& config() const { return config_; }
  std::string backend_name() const { return backend_->name(); }
  float mask_threshold() const { return mask_threshold_; }
  int pool_size() const { return pool_->size(); }

 private:
  // One graph run over images[indices[k]], all of padded size H x W; fills result->images at those indices.
  void run_group(const std::vector<ImageView>& images, const std::vector<ResizePlan>& plans,
                 const std::vector<size_t>& indices, int64_t H, int64_t W, bool rle, BatchResult* result) const;

  PredictorConfig config_;
  std::unique_ptr<Backend> backend_;
  ModelInfo info_;
  InputSpec input_spec_;
  float mask_threshold_ = 0.5f;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace boxseg
