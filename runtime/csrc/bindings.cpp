// nanobind module `boxseg.runtime._core`: the C++ Predictor for Python, returning numpy arrays. The GIL is
// released while a batch runs. C++ exceptions become Python ones: std::invalid_argument -> ValueError,
// std::runtime_error -> RuntimeError. runtime/predictor.py is the public, documented wrapper.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cerrno>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "metadata.h"
#include "ort_backend.h"
#include "postprocess.h"
#include "predictor.h"
#include "preprocess.h"
#include "rle.h"
#include "thread_pool.h"

#ifdef _WIN32
#include <io.h>
#else
#include <unistd.h>
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using boxseg::Detections;
using boxseg::ImageView;
using boxseg::Predictor;
using boxseg::PredictorConfig;

using AnyArray = nb::ndarray<nb::ro, nb::device::cpu>;

std::string dtype_name(nb::dlpack::dtype t) {
  std::string kind;
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Int: kind = "int"; break;
    case nb::dlpack::dtype_code::UInt: kind = "uint"; break;
    case nb::dlpack::dtype_code::Float: kind = "float"; break;
    case nb::dlpack::dtype_code::Bool: return "bool";
    case nb::dlpack::dtype_code::Complex: kind = "complex"; break;
    default: kind = "other"; break;
  }
  return kind + std::to_string(t.bits);
}

std::string shape_of(const AnyArray& a) {
  std::string s = "(";
  for (size_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

AnyArray as_array(nb::handle obj, const std::string& what) {
  AnyArray a;
  if (!nb::try_cast(obj, a, false))
    throw std::invalid_argument(what + ": expected a numpy array on the CPU, got " +
                                std::string(nb::inst_name(obj).c_str()));
  return a;
}

ImageView image_view(const AnyArray& a, size_t index) {
  const std::string what = "image " + std::to_string(index);
  if (a.dtype() != nb::dtype<uint8_t>())
    throw std::invalid_argument(what + ": expected dtype uint8 (RGB 0..255), got " + dtype_name(a.dtype()));
  if (a.ndim() != 3 || a.shape(2) != 3)
    throw std::invalid_argument(what + ": expected shape (H, W, 3) RGB, got " + shape_of(a));
  if (a.shape(0) == 0 || a.shape(1) == 0)
    throw std::invalid_argument(what + ": zero-size image " + shape_of(a) + "; expected H, W >= 1");
  ImageView v;
  v.data = static_cast<const uint8_t*>(a.data());
  v.height = static_cast<int64_t>(a.shape(0));
  v.width = static_cast<int64_t>(a.shape(1));
  // numpy leaves whatever stride it likes on a length-1 axis (negative after a flip, even on an array it calls
  // contiguous, so np.ascontiguousarray returns it unchanged): such a stride is never used, so make it 0.
  v.stride_y = a.shape(0) == 1 ? 0 : a.stride(0);
  v.stride_x = a.shape(1) == 1 ? 0 : a.stride(1);
  v.stride_c = a.stride(2);
  if (v.stride_y < 0 || v.stride_x < 0 || v.stride_c < 0)
    throw std::invalid_argument(what + ": strides (" + std::to_string(a.stride(0)) + ", " +
                                std::to_string(a.stride(1)) + ", " + std::to_string(a.stride(2)) +
                                ") elements include a negative one (a flipped view); expected non-negative strides: "
                                "pass image.copy(), or use boxseg.runtime.Predictor, which copies such views");
  return v;
}

template <typename T>
nb::object vector_to_numpy(std::vector<T>&& v, std::initializer_list<size_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  if (heap->empty()) heap->reserve(1);  // a valid pointer even for zero rows
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, T>(heap->data(), shape, owner));
}

nb::object masks_to_numpy(boxseg::MaskBuffer&& data, size_t n, size_t h, size_t w) {
  uint8_t* raw = data.release();
  nb::capsule owner(raw, [](void* p) noexcept { std::free(p); });
  return nb::cast(nb::ndarray<nb::numpy, bool>(reinterpret_cast<bool*>(raw), {n, h, w}, owner));
}

nb::list rle_list(const std::vector<std::string>& counts, int64_t h, int64_t w) {
  nb::list out;
  for (const auto& c : counts) {
    nb::dict d;
    nb::list size;  // a list, as pycocotools writes it
    size.append(h);
    size.append(w);
    d["size"] = size;
    d["counts"] = c;
    out.append(d);
  }
  return out;
}

nb::dict detections_to_dict(Detections& det, bool rle) {
  nb::dict d;
  const size_t n = static_cast<size_t>(det.count());
  d["boxes"] = vector_to_numpy(std::move(det.boxes), {n, 4});
  d["scores"] = vector_to_numpy(std::move(det.scores), {n});
  d["classes"] = vector_to_numpy(std::move(det.classes), {n});
  if (rle) {
    d["masks"] = rle_list(det.rle_counts, det.height, det.width);
  } else {
    d["masks"] = masks_to_numpy(std::move(det.masks), n, static_cast<size_t>(det.height),
                                static_cast<size_t>(det.width));
  }
  return d;
}

nb::dict timings_dict(const boxseg::StageTimings& t) {
  nb::dict d;
  d["pre_ms"] = t.pre_ms;
  d["infer_ms"] = t.infer_ms;
  d["post_ms"] = t.post_ms;
  d["total_ms"] = t.total_ms;
  return d;
}

// Test hook for tests/runtime/test_threads.py, called without the GIL: says "in flight" by writing one byte to `fd`
// (this end of a socket pair) and waits for one byte back. The test's Python thread waits for the first byte and
// then answers, which it can only do if the caller really released the GIL; if not, the call deadlocks.
void test_handshake(int fd) {
#ifdef _WIN32
  (void)fd;
  throw std::invalid_argument("test_gate_fd needs a POSIX socket pair; not supported on Windows");
#else
  char byte = 1;
  ssize_t done;
  do done = ::write(fd, &byte, 1); while (done < 0 && errno == EINTR);
  if (done != 1) throw std::runtime_error("test_gate_fd: write failed");
  do done = ::read(fd, &byte, 1); while (done < 0 && errno == EINTR);
  if (done != 1) throw std::runtime_error("test_gate_fd: read failed or closed");
#endif
}

nb::tuple predict(const Predictor& p, nb::sequence images, bool rle, int test_gate_fd) {
  std::vector<AnyArray> arrays;  // keep the buffers alive while the GIL is released
  std::vector<ImageView> views;
  const size_t n = nb::len(images);
  for (size_t i = 0; i < n; ++i) {
    arrays.push_back(as_array(images[i], "image " + std::to_string(i)));
    views.push_back(image_view(arrays.back(), i));
  }
  boxseg::BatchResult result;
  {
    nb::gil_scoped_release release;
    result = p.predict(views, rle);
    if (test_gate_fd >= 0) test_handshake(test_gate_fd);  // same GIL-free scope as the run above
  }
  nb::list dets;
  for (auto& det : result.images) dets.append(detections_to_dict(det, rle));
  nb::list runs;  // (images, padded height, padded width) of each graph run
  for (const auto& r : result.runs) runs.append(nb::make_tuple(r[0], r[1], r[2]));
  return nb::make_tuple(dets, timings_dict(result.timings), runs);
}

// Test hook: the C++ pre-processing alone, to compare with runtime/reference.py.
nb::tuple preprocess(nb::sequence images, int64_t min_size, int64_t max_size, int64_t size_divisor,
                     const std::string& input_type, bool normalize, std::vector<float> mean, std::vector<float> std,
                     int threads) {
  std::vector<AnyArray> arrays;
  std::vector<ImageView> views;
  std::vector<boxseg::ResizePlan> plans;
  const size_t n = nb::len(images);
  if (n == 0) throw std::invalid_argument("no images given");
  for (size_t i = 0; i < n; ++i) {
    arrays.push_back(as_array(images[i], "image " + std::to_string(i)));
    views.push_back(image_view(arrays.back(), i));
    plans.push_back(boxseg::plan_resize(views.back().height, views.back().width, min_size, max_size));
  }
  if (mean.size() != 3 || std.size() != 3) throw std::invalid_argument("mean and std need 3 values each");
  boxseg::InputSpec spec;
  if (input_type == "uint8") {
    spec.type = boxseg::InputType::UInt8;
  } else if (input_type != "float32") {
    throw std::invalid_argument("input_type must be 'float32' or 'uint8', got '" + input_type + "'");
  }
  spec.normalize = normalize;
  for (int c = 0; c < 3; ++c) {
    spec.mean[c] = mean[c];
    spec.std[c] = std[c];
  }
  const auto padded = boxseg::padded_size(plans, size_divisor);
  const size_t B = n, H = static_cast<size_t>(padded[0]), W = static_cast<size_t>(padded[1]);
  boxseg::ThreadPool pool(threads);
  nb::list sizes;
  for (const auto& p : plans) sizes.append(nb::make_tuple(p.dst_h, p.dst_w));
  if (spec.type == boxseg::InputType::Float32) {
    std::vector<float> out(B * 3 * H * W);
    {
      nb::gil_scoped_release release;
      boxseg::preprocess_batch(views, plans, padded[0], padded[1], spec, out.data(), pool);
    }
    return nb::make_tuple(vector_to_numpy(std::move(out), {B, 3, H, W}), sizes);
  }
  std::vector<uint8_t> out(B * 3 * H * W);
  {
    nb::gil_scoped_release release;
    boxseg::preprocess_batch(views, plans, padded[0], padded[1], spec, out.data(), pool);
  }
  return nb::make_tuple(vector_to_numpy(std::move(out), {B, 3, H, W}), sizes);
}

using MaskArray = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using BoxArray = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// Test hook: the C++ post-processing of one image's detections.
nb::tuple paste_masks(MaskArray masks, BoxArray boxes, int64_t height, int64_t width, double scale_y, double scale_x,
                      int64_t stride, float threshold, bool rle, int threads) {
  const size_t n = masks.shape(0);
  if (boxes.shape(0) != n || boxes.shape(1) != 4)
    throw std::invalid_argument("boxes must be (n, 4) with n = masks.shape[0]");
  if (height <= 0 || width <= 0 || stride <= 0 || !(scale_y > 0) || !(scale_x > 0))
    throw std::invalid_argument("height, width, stride and scales must be > 0");
  if (masks.shape(1) == 0 || masks.shape(2) == 0) throw std::invalid_argument("masks must be at least 1 x 1");
  const int64_t mh = static_cast<int64_t>(masks.shape(1)), mw = static_cast<int64_t>(masks.shape(2));
  const boxseg::PasteGeometry g{height, width, scale_y, scale_x, stride, threshold};
  std::vector<float> out_boxes(n * 4);
  std::vector<std::string> counts(rle ? n : 0);
  // Deliberately not zeroed: this hook tests the path that writes whole planes.
  boxseg::MaskBuffer planes(static_cast<uint8_t*>(std::malloc(std::max<size_t>(1, n * size_t(height * width)))));
  if (!planes) throw std::bad_alloc();
  {
    nb::gil_scoped_release release;
    boxseg::ThreadPool pool(threads);
    pool.parallel_for(static_cast<int64_t>(n), [&](int64_t i) {
      const auto box = boxseg::rescale_box(boxes.data() + i * 4, g);
      std::copy(box.begin(), box.end(), out_boxes.begin() + i * 4);
      const float* m = masks.data() + i * mh * mw;
      if (rle) {
        counts[static_cast<size_t>(i)] = boxseg::paste_mask_rle(m, mh, mw, box, g);
      } else {
        boxseg::paste_mask(m, mh, mw, box, g, planes.get() + i * height * width);
      }
    });
  }
  nb::object boxes_np = vector_to_numpy(std::move(out_boxes), {n, 4});
  if (rle) return nb::make_tuple(boxes_np, rle_list(counts, height, width));
  return nb::make_tuple(boxes_np, masks_to_numpy(std::move(planes), n, size_t(height), size_t(width)));
}

std::string rle_encode(nb::handle mask_obj) {
  AnyArray a = as_array(mask_obj, "mask");
  if (a.ndim() != 2) throw std::invalid_argument("mask: expected shape (H, W), got " + shape_of(a));
  if (a.dtype() != nb::dtype<uint8_t>() && a.dtype() != nb::dtype<bool>())
    throw std::invalid_argument("mask: expected dtype bool or uint8, got " + dtype_name(a.dtype()));
  const int64_t h = static_cast<int64_t>(a.shape(0)), w = static_cast<int64_t>(a.shape(1));
  std::vector<uint8_t> dense(static_cast<size_t>(h * w));
  const uint8_t* p = static_cast<const uint8_t*>(a.data());
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) dense[static_cast<size_t>(y * w + x)] = p[y * a.stride(0) + x * a.stride(1)] != 0;
  return boxseg::rle_encode_mask(dense.data(), h, w);
}

nb::dict model_info_dict(const boxseg::ModelInfo& info) {
  nb::dict d;
  d["metadata"] = info.metadata;
  d["version"] = info.version;
  d["preset"] = info.preset;
  d["input_format"] = info.input_format;
  d["class_names"] = info.class_names;
  d["size_divisor"] = info.size_divisor;
  d["mask_stride"] = info.mask_stride;
  d["max_dets"] = info.max_dets;
  d["test_size"] = info.test_size;
  d["test_max_size"] = info.test_max_size;
  d["mask_threshold"] = info.mask_threshold;
  d["mean"] = std::vector<float>(info.mean.begin(), info.mean.end());
  d["std"] = std::vector<float>(info.std.begin(), info.std.end());
  d["normalize_input"] = info.normalize_input;
  return d;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "BoxSeg C++ runtime core (internal; use boxseg.runtime.Predictor)";
#ifdef BOXSEG_WITH_TENSORRT
  m.attr("has_tensorrt") = true;
#else
  m.attr("has_tensorrt") = false;
#endif
  m.attr("ort_api_version") = boxseg::onnxruntime_api_version_built();

  m.def("load_onnxruntime", &boxseg::load_onnxruntime, "library_path"_a,
        "dlopen the ONNX Runtime library once per process; returns its version");
  m.def("onnxruntime_loaded", &boxseg::onnxruntime_loaded);
  m.def("onnxruntime_version", &boxseg::onnxruntime_version);
  m.def("onnxruntime_providers", &boxseg::onnxruntime_providers);

  nb::class_<Predictor>(m, "CorePredictor")
      .def(
          "__init__",
          [](Predictor* self, const std::string& model_path, const std::string& device, int threads, int64_t min_size,
             int64_t max_size, float score_threshold, float mask_threshold) {
            PredictorConfig cfg;
            cfg.model_path = model_path;
            cfg.device = device;
            cfg.threads = threads;
            cfg.min_size = min_size;
            cfg.max_size = max_size;
            cfg.score_threshold = score_threshold;
            cfg.mask_threshold = mask_threshold;
            nb::gil_scoped_release release;
            new (self) Predictor(cfg);
          },
          "model_path"_a, "device"_a = "cpu", "threads"_a = 0, "min_size"_a = 0, "max_size"_a = 0,
          "score_threshold"_a = 0.f, "mask_threshold"_a = -1.f)
      .def("predict", &predict, "images"_a, "rle"_a = false, "test_gate_fd"_a = -1,
           "Run a batch (one graph run per padded size); returns (list of detection dicts, timings dict, "
           "list of (images, padded H, padded W) per graph run). test_gate_fd >= 0 (tests only): after the "
           "run, still without the GIL, write one byte to that socket and wait for one byte back")
      .def_prop_ro("info", [](const Predictor& p) { return model_info_dict(p.info()); })
      .def_prop_ro("backend", &Predictor::backend_name)
      .def_prop_ro("mask_threshold", &Predictor::mask_threshold)
      .def_prop_ro("resize", [](const Predictor& p) {
        return nb::make_tuple(p.config().min_size, p.config().max_size);
      })
      .def_prop_ro("pool_size", &Predictor::pool_size);

  m.def("preprocess", &preprocess, "images"_a, "min_size"_a = 0, "max_size"_a = 0, "size_divisor"_a = 32,
        "input_type"_a = "float32", "normalize"_a = false, "mean"_a = std::vector<float>{0.f, 0.f, 0.f},
        "std"_a = std::vector<float>{1.f, 1.f, 1.f}, "threads"_a = 1);
  m.def("paste_masks", &paste_masks, "masks"_a, "boxes"_a, "height"_a, "width"_a, "scale_y"_a, "scale_x"_a,
        "stride"_a = 4, "threshold"_a = 0.5f, "rle"_a = false, "threads"_a = 1);
  m.def("rle_encode", &rle_encode, "mask"_a);
  m.def("parse_model_info", [](const std::map<std::string, std::string>& md, const std::string& source) {
    return model_info_dict(boxseg::parse_model_info(md, source));
  }, "metadata"_a, "source"_a = "<metadata>");
}
