#include "predictor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <system_error>

#include "postprocess.h"

namespace boxseg {
namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

void check_image(const ImageView& im, size_t index) {
  const std::string where = "image " + std::to_string(index);
  if (im.height <= 0 || im.width <= 0)
    throw std::invalid_argument(where + " has zero size (" + std::to_string(im.height) + " x " +
                                std::to_string(im.width) + "); expected height and width >= 1");
  if (im.data == nullptr) throw std::invalid_argument(where + " has no data");
  // The stride of a length-1 axis is never used (numpy may leave it negative even on a "contiguous" array).
  const bool neg_y = im.height > 1 && im.stride_y < 0, neg_x = im.width > 1 && im.stride_x < 0;
  if (neg_y || neg_x || im.stride_c < 0)
    throw std::invalid_argument(where + " has negative strides (" + std::to_string(im.stride_y) + ", " +
                                std::to_string(im.stride_x) + ", " + std::to_string(im.stride_c) +
                                " elements); expected non-negative strides: pass a copy of the image");
}

void check_plan(const ResizePlan& p, size_t index, int64_t min_size, int64_t max_size) {
  if (p.dst_h <= kMaxResizeSide && p.dst_w <= kMaxResizeSide) return;
  const bool resized = p.dst_h != p.src_h || p.dst_w != p.src_w;
  throw std::invalid_argument(
      "image " + std::to_string(index) + " (" + std::to_string(p.src_h) + " x " + std::to_string(p.src_w) +
      ") would be " + (resized ? "resized to " : "run at ") + std::to_string(p.dst_h) + " x " +
      std::to_string(p.dst_w) + " (min_size " + std::to_string(min_size) + ", max_size " +
      std::to_string(max_size) + "); expected sides <= " + std::to_string(kMaxResizeSide) +
      ": set max_size (e.g. 1333) or pass a smaller image");
}

void check_size_limit(int64_t value, const char* name) {
  if (value > kMaxResizeSide)
    throw std::invalid_argument(std::string(name) + " is " + std::to_string(value) + "; expected 0 (off) or 1.." +
                                std::to_string(kMaxResizeSide) + " pixels, e.g. 800");
}

}  // namespace

Predictor::Predictor(const PredictorConfig& config) : config_(config) {
  if (config_.threads < 0 || config_.threads > kMaxThreads)
    throw std::invalid_argument("threads is " + std::to_string(config_.threads) + "; expected 0 (one per hardware "
                                "thread) or 1.." + std::to_string(kMaxThreads));
  check_size_limit(config_.min_size, "min_size");
  check_size_limit(config_.max_size, "max_size");
  if (!std::isfinite(config_.score_threshold))
    throw std::invalid_argument("score_threshold is " + std::to_string(config_.score_threshold) +
                                "; expected a number in [0, 1], e.g. 0.3");
  if (!std::isfinite(config_.mask_threshold))
    throw std::invalid_argument("mask_threshold is " + std::to_string(config_.mask_threshold) +
                                "; expected a number in [0, 1], or < 0 for the model's own");
  BackendConfig bc{config_.model_path, config_.device, config_.threads};
  backend_ = make_backend(bc);
  info_ = parse_model_info(backend_->metadata(), config_.model_path);
  if (config_.min_size < 0) config_.min_size = info_.test_size;
  if (config_.max_size < 0) config_.max_size = info_.test_max_size;
  check_size_limit(config_.min_size, "the model's boxseg.test_size");
  check_size_limit(config_.max_size, "the model's boxseg.test_max_size");
  input_spec_.type = backend_->input_type();
  input_spec_.normalize = info_.normalize_input;
  input_spec_.mean = info_.mean;
  input_spec_.std = info_.std;
  mask_threshold_ = config_.mask_threshold >= 0.f ? config_.mask_threshold : info_.mask_threshold;
  try {
    pool_ = std::make_unique<ThreadPool>(config_.threads);
  } catch (const std::system_error& e) {
    // Thread creation fails when a container's process or memory limit is reached.
    throw std::runtime_error("cannot start the pre/post-processing threads (threads=" +
                             std::to_string(config_.threads) + "): " + e.what() +
                             "; pass a smaller threads= value or raise the process/memory limit");
  }
}

BatchResult Predictor::predict(const std::vector<ImageView>& images, bool rle) const {
  const auto t0 = Clock::now();
  if (images.empty()) throw std::invalid_argument("no images given; expected at least one (H, W, 3) uint8 image");
  std::vector<ResizePlan> plans;
  plans.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    check_image(images[i], i);
    plans.push_back(plan_resize(images[i].height, images[i].width, config_.min_size, config_.max_size));
    check_plan(plans.back(), i, config_.min_size, config_.max_size);
  }
  // Group by each image's own padded size, in order of first appearance.
  std::vector<std::array<int64_t, 2>> sizes;
  std::vector<std::vector<size_t>> groups;
  for (size_t i = 0; i < images.size(); ++i) {
    auto padded = padded_size({plans[i]}, info_.size_divisor);
    if (info_.min_input_size > 0) {  // pad tiny images up to the graph's minimum (a multiple of the divisor)
      const int64_t d = info_.size_divisor;
      const int64_t floor_side = (info_.min_input_size + d - 1) / d * d;
      padded[0] = std::max(padded[0], floor_side);
      padded[1] = std::max(padded[1], floor_side);
    }
    const auto it = std::find(sizes.begin(), sizes.end(), padded);
    if (it == sizes.end()) {
      sizes.push_back(padded);
      groups.push_back({i});
    } else {
      groups[static_cast<size_t>(it - sizes.begin())].push_back(i);
    }
  }
  BatchResult result;
  result.images.resize(images.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    run_group(images, plans, groups[g], sizes[g][0], sizes[g][1], rle, &result);
    result.runs.push_back({static_cast<int64_t>(groups[g].size()), sizes[g][0], sizes[g][1]});
  }
  result.timings.total_ms = ms_between(t0, Clock::now());
  return result;
}

void Predictor::run_group(const std::vector<ImageView>& all_images, const std::vector<ResizePlan>& all_plans,
                          const std::vector<size_t>& indices, int64_t H, int64_t W, bool rle,
                          BatchResult* result_ptr) const {
  const auto t0 = Clock::now();
  std::vector<ImageView> images;
  std::vector<ResizePlan> plans;
  for (size_t i : indices) {
    images.push_back(all_images[i]);
    plans.push_back(all_plans[i]);
  }
  const int64_t B = static_cast<int64_t>(images.size());
  const size_t elems = static_cast<size_t>(B * 3 * H * W);

  // Uninitialised on purpose: preprocess writes every element, padding included.
  std::unique_ptr<float[]> input_f;
  std::unique_ptr<uint8_t[]> input_u8;
  void* input = nullptr;
  if (input_spec_.type == InputType::Float32) {
    input_f.reset(new float[elems]);
    input = input_f.get();
  } else {
    input_u8.reset(new uint8_t[elems]);
    input = input_u8.get();
  }
  preprocess_batch(images, plans, H, W, input_spec_, input, *pool_);
  const auto t1 = Clock::now();

  const BackendOutputs out = backend_->run(input, B, H, W);
  const auto t2 = Clock::now();

  const int64_t stride = info_.mask_stride;
  if (out.mask_h * stride != H || out.mask_w * stride != W)
    throw std::runtime_error(config_.model_path + ": output 'masks' is " + std::to_string(out.mask_h) + " x " +
                             std::to_string(out.mask_w) + " for a " + std::to_string(H) + " x " +
                             std::to_string(W) + " input; expected input / boxseg.mask_stride (" +
                             std::to_string(stride) + ")");

  BatchResult& result = *result_ptr;
  struct Task {
    int64_t b, d, k;
  };
  std::vector<Task> tasks;
  std::vector<PasteGeometry> geometry(images.size());
  std::vector<std::vector<std::array<float, 4>>> boxes(images.size());
  for (int64_t b = 0; b < B; ++b) {
    Detections& det = result.images[indices[static_cast<size_t>(b)]];
    const ResizePlan& plan = plans[static_cast<size_t>(b)];
    det.height = plan.src_h;
    det.width = plan.src_w;
    PasteGeometry& g = geometry[static_cast<size_t>(b)];
    g = {plan.src_h, plan.src_w, plan.scale_y(), plan.scale_x(), stride, mask_threshold_};
    const int64_t nd = std::clamp<int64_t>(out.num_dets[b], 0, out.max_dets);
    for (int64_t d = 0; d < nd; ++d) {
      const int64_t row = b * out.max_dets + d;
      const float score = out.scores[row];
      const int64_t cls = out.classes[row];
      if (!(score >= config_.score_threshold) || cls < 0) continue;
      const auto box = rescale_box(out.boxes + row * 4, g);
      tasks.push_back({b, d, det.count()});
      boxes[static_cast<size_t>(b)].push_back(box);
      det.boxes.insert(det.boxes.end(), box.begin(), box.end());
      det.scores.push_back(score);
      det.classes.push_back(cls);
    }
    const size_t plane = static_cast<size_t>(det.height * det.width);
    if (rle) {
      det.rle_counts.resize(det.scores.size());
    } else {
      det.masks.reset(static_cast<uint8_t*>(std::calloc(std::max<size_t>(1, plane * det.scores.size()), 1)));
      if (!det.masks) throw std::bad_alloc();
    }
  }
  const size_t mask_plane = static_cast<size_t>(out.mask_h * out.mask_w);
  pool_->parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t t) {
    const Task& task = tasks[static_cast<size_t>(t)];
    Detections& det = result.images[indices[static_cast<size_t>(task.b)]];
    const PasteGeometry& g = geometry[static_cast<size_t>(task.b)];
    const auto& box = boxes[static_cast<size_t>(task.b)][static_cast<size_t>(task.k)];
    const float* mask = out.masks + static_cast<size_t>(task.b * out.max_dets + task.d) * mask_plane;
    if (rle) {
      det.rle_counts[static_cast<size_t>(task.k)] = paste_mask_rle(mask, out.mask_h, out.mask_w, box, g);
    } else {
      uint8_t* dst = det.masks.get() + static_cast<size_t>(task.k) * static_cast<size_t>(g.height * g.width);
      paste_mask(mask, out.mask_h, out.mask_w, box, g, dst, /*plane_is_zeroed=*/true);
    }
  });
  const auto t3 = Clock::now();
  result.timings.pre_ms += ms_between(t0, t1);
  result.timings.infer_ms += ms_between(t1, t2);
  result.timings.post_ms += ms_between(t2, t3);
}

}  // namespace boxseg
