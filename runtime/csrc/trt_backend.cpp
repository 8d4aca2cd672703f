#include "trt_backend.h"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "metadata.h"

namespace boxseg {
namespace {

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

class TrtLogger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", msg);
  }
};

TrtLogger& logger() {
  static TrtLogger l;
  return l;
}

size_t element_size(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kINT64: return 8;
    case nvinfer1::DataType::kUINT8: return 1;
    case nvinfer1::DataType::kBOOL: return 1;
    case nvinfer1::DataType::kHALF: return 2;
    default: return 0;
  }
}

std::vector<int64_t> to_vector(const nvinfer1::Dims& d) { return std::vector<int64_t>(d.d, d.d + d.nbDims); }

int64_t volume(const std::vector<int64_t>& s) {
  int64_t v = 1;
  for (int64_t x : s) v *= x;
  return v;
}

std::vector<char> read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument(path + ": " + what + " not found or not readable");
  return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A device buffer that only grows.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    bytes = 0;
    cuda_check(cudaMalloc(&ptr, n), "cudaMalloc");
    bytes = n;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

// One execution context with its stream and buffers. Contexts are not thread-safe, so concurrent calls each
// take their own slot from a pool.
struct Slot {
  nvinfer1::IExecutionContext* context = nullptr;
  cudaStream_t stream = nullptr;
  std::map<std::string, DeviceBuffer> buffers;
  ~Slot() {
    delete context;
    if (stream) cudaStreamDestroy(stream);
  }
};

struct HostOutputs {
  std::vector<float> boxes, scores, masks;
  std::vector<int64_t> classes, num_dets;
};

constexpr const char* kOutputs[5] = {"boxes", "scores", "classes", "masks", "num_dets"};

class TrtBackend final : public Backend {
 public:
  explicit TrtBackend(const BackendConfig& cfg) : path_(cfg.model_path) {
    if (cfg.device.rfind("cuda", 0) != 0)
      throw std::invalid_argument(path_ + ": a TensorRT engine runs on a GPU; use device='cuda' (got '" +
                                  cfg.device + "')");
    if (cfg.device.size() > 5 && cfg.device[4] == ':') device_ = std::stoi(cfg.device.substr(5));
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    const std::vector<char> blob = read_file(path_, "TensorRT engine");
    const std::string meta_path = path_ + ".json";
    const std::vector<char> meta = read_file(meta_path, "metadata file (the engine's boxseg.* keys)");
    metadata_ = parse_json_flat_object(std::string(meta.begin(), meta.end()), meta_path);
    runtime_.reset(nvinfer1::createInferRuntime(logger()));
    if (runtime_ == nullptr) throw std::runtime_error("TensorRT: createInferRuntime failed");
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (engine_ == nullptr)
      throw std::runtime_error(path_ + ": TensorRT could not deserialize the engine (corrupt, or built by "
                                       "another TensorRT version or for another GPU)");
    check_io();
  }

  std::string name() const override { return "tensorrt-" + std::to_string(getInferLibVersion()); }
  InputType input_type() const override { return input_type_; }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }

  BackendOutputs run(const void* images, int64_t batch, int64_t height, int64_t width) const override {
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");  // per calling thread
    check_profile({batch, 3, height, width});
    std::unique_ptr<Slot> slot = acquire();
    try {
      auto host = std::make_shared<HostOutputs>();
      BackendOutputs out = execute(*slot, images, batch, height, width, *host);
      out.keepalive = host;
      release(std::move(slot));
      return out;
    } catch (...) {
      release(std::move(slot));
      throw;
    }
  }

 private:
  void check_io() {
    if (engine_->getTensorIOMode("images") != nvinfer1::TensorIOMode::kINPUT)
      throw std::invalid_argument(path_ + ": the engine has no input tensor named 'images'");
    const nvinfer1::DataType in = engine_->getTensorDataType("images");
    if (in == nvinfer1::DataType::kFLOAT) {
      input_type_ = InputType::Float32;
    } else if (in == nvinfer1::DataType::kUINT8) {
      input_type_ = InputType::UInt8;
    } else {
      throw std::invalid_argument(path_ + ": input 'images' must be float32 or uint8");
    }
    for (const char* name : kOutputs)
      if (engine_->getTensorIOMode(name) != nvinfer1::TensorIOMode::kOUTPUT)
        throw std::invalid_argument(path_ + ": the engine has no output named '" + name + "'");
  }

  void check_profile(const std::vector<int64_t>& shape) const {
    const auto lo = to_vector(engine_->getProfileShape("images", 0, nvinfer1::OptProfileSelector::kMIN));
    const auto hi = to_vector(engine_->getProfileShape("images", 0, nvinfer1::OptProfileSelector::kMAX));
    bool ok = lo.size() == 4 && hi.size() == 4;
    for (size_t i = 0; ok && i < 4; ++i) ok = shape[i] >= lo[i] && shape[i] <= hi[i];
    if (!ok) {
      auto str = [](const std::vector<int64_t>& s) {
        std::string r;
        for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
        return r;
      };
      throw std::invalid_argument(path_ + ": input " + str(shape) + " is outside the engine's optimisation profile " +
                                  str(lo) + " .. " + str(hi) + "; rebuild the engine or change min_size/max_size");
    }
  }

  std::unique_ptr<Slot> acquire() const {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!slots_.empty()) {
        auto s = std::move(slots_.back());
        slots_.pop_back();
        return s;
      }
    }
    auto s = std::make_unique<Slot>();
    s->context = engine_->createExecutionContext();
    if (s->context == nullptr) throw std::runtime_error(path_ + ": TensorRT could not create an execution context");
    cuda_check(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    if (!s->context->setOptimizationProfileAsync(0, s->stream))
      throw std::runtime_error(path_ + ": TensorRT could not select optimisation profile 0");
    return s;
  }

  void release(std::unique_ptr<Slot> s) const {
    std::lock_guard<std::mutex> lock(mutex_);
    slots_.push_back(std::move(s));
  }

  BackendOutputs execute(Slot& s, const void* images, int64_t batch, int64_t height, int64_t width,
                         HostOutputs& host) const {
    nvinfer1::IExecutionContext& ctx = *s.context;
    if (!ctx.setInputShape("images", nvinfer1::Dims4(batch, 3, height, width)))
      throw std::runtime_error(path_ + ": TensorRT rejected the input shape");
    const size_t in_bytes =
        static_cast<size_t>(batch * 3 * height * width) * (input_type_ == InputType::Float32 ? 4 : 1);
    DeviceBuffer& in = s.buffers["images"];
    in.reserve(in_bytes);
    cuda_check(cudaMemcpyAsync(in.ptr, images, in_bytes, cudaMemcpyHostToDevice, s.stream), "copy to device");
    ctx.setTensorAddress("images", in.ptr);

    std::vector<int64_t> shapes[5];
    nvinfer1::DataType types[5];
    for (int i = 0; i < 5; ++i) {
      shapes[i] = to_vector(ctx.getTensorShape(kOutputs[i]));
      types[i] = engine_->getTensorDataType(kOutputs[i]);
      const size_t bytes = static_cast<size_t>(volume(shapes[i])) * element_size(types[i]);
      if (element_size(types[i]) == 0 || volume(shapes[i]) < 0)
        throw std::runtime_error(path_ + ": output '" + kOutputs[i] + "' has an unsupported type or shape");
      DeviceBuffer& buf = s.buffers[kOutputs[i]];
      buf.reserve(std::max<size_t>(bytes, 1));
      ctx.setTensorAddress(kOutputs[i], buf.ptr);
    }
    if (!ctx.enqueueV3(s.stream)) throw std::runtime_error(path_ + ": TensorRT failed to run the engine");

    auto fetch_float = [&](int i, std::vector<float>& dst) {
      if (types[i] != nvinfer1::DataType::kFLOAT)
        throw std::runtime_error(path_ + ": output '" + kOutputs[i] + "' must be float32");
      dst.resize(static_cast<size_t>(volume(shapes[i])));
      cuda_check(cudaMemcpyAsync(dst.data(), s.buffers[kOutputs[i]].ptr, dst.size() * 4, cudaMemcpyDeviceToHost,
                                 s.stream),
                 "copy to host");
    };
    std::vector<int32_t> i32[2];
    auto fetch_int = [&](int i, std::vector<int64_t>& dst, std::vector<int32_t>& tmp) {
      const size_t n = static_cast<size_t>(volume(shapes[i]));
      dst.resize(n);
      if (types[i] == nvinfer1::DataType::kINT64) {
        cuda_check(cudaMemcpyAsync(dst.data(), s.buffers[kOutputs[i]].ptr, n * 8, cudaMemcpyDeviceToHost, s.stream),
                   "copy to host");
      } else if (types[i] == nvinfer1::DataType::kINT32) {  // engines may narrow int64 outputs
        tmp.resize(n);
        cuda_check(cudaMemcpyAsync(tmp.data(), s.buffers[kOutputs[i]].ptr, n * 4, cudaMemcpyDeviceToHost, s.stream),
                   "copy to host");
      } else {
        throw std::runtime_error(path_ + ": output '" + kOutputs[i] + "' must be int64 or int32");
      }
    };
    fetch_float(0, host.boxes);
    fetch_float(1, host.scores);
    fetch_int(2, host.classes, i32[0]);
    fetch_float(3, host.masks);
    fetch_int(4, host.num_dets, i32[1]);
    cuda_check(cudaStreamSynchronize(s.stream), "cudaStreamSynchronize");
    if (!i32[0].empty()) std::copy(i32[0].begin(), i32[0].end(), host.classes.begin());
    if (!i32[1].empty()) std::copy(i32[1].begin(), i32[1].end(), host.num_dets.begin());

    const int64_t d = shapes[1].size() == 2 ? shapes[1][1] : -1;
    if (shapes[0] != std::vector<int64_t>{batch, d, 4} || shapes[2] != std::vector<int64_t>{batch, d} ||
        shapes[3].size() != 4 || shapes[3][0] != batch || shapes[3][1] != d ||
        shapes[4] != std::vector<int64_t>{batch})
      throw std::runtime_error(path_ + ": engine outputs do not have the boxseg shapes (boxes (B, D, 4), scores "
                                       "(B, D), classes (B, D), masks (B, D, h, w), num_dets (B,))");
    BackendOutputs out;
    out.boxes = host.boxes.data();
    out.scores = host.scores.data();
    out.classes = host.classes.data();
    out.masks = host.masks.data();
    out.num_dets = host.num_dets.data();
    out.batch = batch;
    out.max_dets = d;
    out.mask_h = shapes[3][2];
    out.mask_w = shapes[3][3];
    return out;
  }

  std::string path_;
  int device_ = 0;
  std::map<std::string, std::string> metadata_;
  // Destroyed bottom-up: contexts before the engine before the runtime (TensorRT 10 objects use delete).
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  InputType input_type_ = InputType::Float32;
  mutable std::mutex mutex_;
  mutable std::vector<std::unique_ptr<Slot>> slots_;
};

}  // namespace

std::unique_ptr<Backend> make_trt_backend(const BackendConfig& config) {
  return std::make_unique<TrtBackend>(config);
}

}  // namespace boxseg
