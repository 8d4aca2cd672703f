#include "ort_backend.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>

// The C++ wrapper normally initialises itself from the linked library; we have no link, so we hand it the
// API table we got through dlsym.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

namespace boxseg {
namespace {

struct OrtGlobal {
  std::mutex mutex;
  std::string path;
  void* handle = nullptr;
  const OrtApi* api = nullptr;
  Ort::Env* env = nullptr;  // never freed: destroying it at exit races ORT's own static teardown
  std::string version;
};

OrtGlobal& global() {
  static OrtGlobal g;
  return g;
}

void require_loaded() {
  if (global().api == nullptr)
    throw std::runtime_error(
        "ONNX Runtime is not loaded: call load_onnxruntime(<path to libonnxruntime.so>) first (the Python "
        "Predictor does this from the installed onnxruntime wheel)");
}

const char* type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    default: return "another type";
  }
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// Output names in the order BackendOutputs lists them, with the element type each must have.
constexpr const char* kOutputNames[5] = {"boxes", "scores", "classes", "masks", "num_dets"};
constexpr ONNXTensorElementDataType kOutputTypes[5] = {
    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64};

class OrtBackend final : public Backend {
 public:
  explicit OrtBackend(const BackendConfig& cfg) : path_(cfg.model_path) {
    require_loaded();
    {
      std::ifstream f(path_, std::ios::binary);
      if (!f) throw std::invalid_argument(path_ + ": model file not found or not readable");
    }
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (cfg.threads > 0) {
      // More intra-op threads than hardware threads only add contention, and ONNX Runtime hangs in session
      // creation when it cannot start one of them (measured with threads=1000 under a 3 GB address-space
      // limit): cap them. The pre/post-processing pool keeps the requested size and fails cleanly instead.
      const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      so.SetIntraOpNumThreads(std::min(cfg.threads, hardware));
    }
    so.SetInterOpNumThreads(1);
    // ORT's intra-op threads spin-wait after each run by default, starving the pre/post-processing pool that
    // runs right before and after (measured: post-processing 5-10x slower on a busy 2-core machine).
    // BOXSEG_ORT_SPIN=1 restores ORT's default.
    const char* spin = std::getenv("BOXSEG_ORT_SPIN");
    so.AddConfigEntry("session.intra_op.allow_spinning", spin != nullptr && spin[0] == '1' ? "1" : "0");
    provider_ = "CPUExecutionProvider";
    if (cfg.device.rfind("cuda", 0) == 0) {
      append_cuda(so, cfg.device);
      provider_ = "CUDAExecutionProvider";
    } else if (cfg.device != "cpu") {
      throw std::invalid_argument("device must be 'cpu', 'cuda' or 'cuda:N', got '" + cfg.device + "'");
    }
    try {
      session_ = Ort::Session(*global().env, path_.c_str(), so);
    } catch (const Ort::Exception& e) {
      throw std::runtime_error(path_ + ": ONNX Runtime could not load the model (corrupt or not an ONNX file?): " +
                               e.what());
    }
    read_metadata();
    check_io();
  }

  std::string name() const override { return "onnxruntime-" + global().version + " [" + provider_ + "]"; }
  InputType input_type() const override { return input_type_; }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }

  BackendOutputs run(const void* images, int64_t batch, int64_t height, int64_t width) const override {
    const int64_t shape[4] = {batch, 3, height, width};
    const size_t count = static_cast<size_t>(batch * 3 * height * width);
    auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    // ORT does not write to inputs; the API only lacks a const overload.
    Ort::Value input =
        input_type_ == InputType::Float32
            ? Ort::Value::CreateTensor<float>(mem, static_cast<float*>(const_cast<void*>(images)), count, shape, 4)
            : Ort::Value::CreateTensor<uint8_t>(mem, static_cast<uint8_t*>(const_cast<void*>(images)), count,
                                                shape, 4);
    const char* input_names[1] = {"images"};
    auto values = std::make_shared<std::vector<Ort::Value>>();
    try {
      *values = session_.Run(Ort::RunOptions{nullptr}, input_names, &input, 1, kOutputNames, 5);
    } catch (const Ort::Exception& e) {
      throw std::runtime_error(path_ + ": ONNX Runtime failed to run the model on input " +
                               shape_str({batch, 3, height, width}) + ": " + e.what());
    }
    std::vector<int64_t> shapes[5];
    for (int i = 0; i < 5; ++i) {
      auto info = (*values)[static_cast<size_t>(i)].GetTensorTypeAndShapeInfo();
      if (info.GetElementType() != kOutputTypes[i])
        throw std::runtime_error(path_ + ": output '" + kOutputNames[i] + "' is " + type_name(info.GetElementType()) +
                                 ", expected " + type_name(kOutputTypes[i]));
      shapes[i] = info.GetShape();
    }
    const int64_t d = shapes[1].size() == 2 ? shapes[1][1] : -1;
    const std::vector<int64_t> expected[3] = {{batch, d, 4}, {batch, d}, {batch, d}};
    for (int i = 0; i < 3; ++i)
      if (shapes[i] != expected[i])
        throw std::runtime_error(path_ + ": output '" + kOutputNames[i] + "' has shape " + shape_str(shapes[i]) +
                                 ", expected " + shape_str(expected[i]) + " (batch, max_dets, ...)");
    if (shapes[3].size() != 4 || shapes[3][0] != batch || shapes[3][1] != d)
      throw std::runtime_error(path_ + ": output 'masks' has shape " + shape_str(shapes[3]) + ", expected (" +
                               std::to_string(batch) + ", " + std::to_string(d) + ", H/stride, W/stride)");
    if (shapes[4] != std::vector<int64_t>{batch})
      throw std::runtime_error(path_ + ": output 'num_dets' has shape " + shape_str(shapes[4]) + ", expected (" +
                               std::to_string(batch) + ",)");
    BackendOutputs out;
    out.boxes = (*values)[0].GetTensorData<float>();
    out.scores = (*values)[1].GetTensorData<float>();
    out.classes = (*values)[2].GetTensorData<int64_t>();
    out.masks = (*values)[3].GetTensorData<float>();
    out.num_dets = (*values)[4].GetTensorData<int64_t>();
    out.batch = batch;
    out.max_dets = d;
    out.mask_h = shapes[3][2];
    out.mask_w = shapes[3][3];
    out.keepalive = std::move(values);
    return out;
  }

 private:
  static void append_cuda(Ort::SessionOptions& so, const std::string& device) {
    const auto providers = Ort::GetAvailableProviders();
    if (std::find(providers.begin(), providers.end(), "CUDAExecutionProvider") == providers.end())
      throw std::runtime_error(
          "CUDA requested but the installed onnxruntime has no CUDA provider (install boxseg[gpu])");
    std::string device_id = "0";
    if (device.size() > 5 && device[4] == ':') device_id = device.substr(5);
    if (device != "cuda" && (device.size() <= 5 || device[4] != ':' ||
                             device_id.find_first_not_of("0123456789") != std::string::npos))
      throw std::invalid_argument("device must be 'cpu', 'cuda' or 'cuda:N', got '" + device + "'");
    const OrtApi& api = Ort::GetApi();
    OrtCUDAProviderOptionsV2* opts = nullptr;
    Ort::ThrowOnError(api.CreateCUDAProviderOptions(&opts));
    const char* keys[1] = {"device_id"};
    const char* vals[1] = {device_id.c_str()};
    OrtStatus* status = api.UpdateCUDAProviderOptions(opts, keys, vals, 1);
    if (status == nullptr) {
      try {
        so.AppendExecutionProvider_CUDA_V2(*opts);
      } catch (...) {
        api.ReleaseCUDAProviderOptions(opts);
        throw;
      }
    }
    api.ReleaseCUDAProviderOptions(opts);
    Ort::ThrowOnError(status);
  }

  void read_metadata() {
    Ort::AllocatorWithDefaultOptions alloc;
    Ort::ModelMetadata md = session_.GetModelMetadata();
    for (auto& key : md.GetCustomMetadataMapKeysAllocated(alloc)) {
      auto value = md.LookupCustomMetadataMapAllocated(key.get(), alloc);
      metadata_[key.get()] = value ? value.get() : "";
    }
  }

  void check_io() {
    Ort::AllocatorWithDefaultOptions alloc;
    bool found = false;
    std::string inputs;
    for (size_t i = 0; i < session_.GetInputCount(); ++i) {
      const std::string name = session_.GetInputNameAllocated(i, alloc).get();
      inputs += (i ? ", " : "") + name;
      if (name != "images") continue;
      found = true;
      Ort::TypeInfo type_info = session_.GetInputTypeInfo(i);  // owns what the view below points into
      auto info = type_info.GetTensorTypeAndShapeInfo();
      const auto t = info.GetElementType();
      if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        input_type_ = InputType::Float32;
      } else if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) {
        input_type_ = InputType::UInt8;
      } else {
        throw std::invalid_argument(path_ + ": input 'images' is " + type_name(t) + ", expected float32 or uint8");
      }
      if (info.GetShape().size() != 4)
        throw std::invalid_argument(path_ + ": input 'images' has rank " + std::to_string(info.GetShape().size()) +
                                    ", expected 4 (batch, 3, height, width)");
    }
    if (!found || session_.GetInputCount() != 1)
      throw std::invalid_argument(path_ + ": expected exactly one input named 'images', found [" + inputs + "]");
    std::vector<std::string> outputs;
    for (size_t i = 0; i < session_.GetOutputCount(); ++i)
      outputs.push_back(session_.GetOutputNameAllocated(i, alloc).get());
    for (const char* want : kOutputNames) {
      if (std::find(outputs.begin(), outputs.end(), want) == outputs.end()) {
        std::string have;
        for (const auto& o : outputs) have += (have.empty() ? "" : ", ") + o;
        throw std::invalid_argument(path_ + ": output '" + want +
                                    "' is missing; a boxseg graph has boxes, scores, classes, masks, num_dets "
                                    "(found [" + have + "])");
      }
    }
  }

  std::string path_;
  std::string provider_;
  mutable Ort::Session session_{nullptr};  // Run is thread-safe in ORT; the wrapper just lacks const
  std::map<std::string, std::string> metadata_;
  InputType input_type_ = InputType::Float32;
};

}  // namespace

std::string load_onnxruntime(const std::string& library_path) {
  OrtGlobal& g = global();
  std::lock_guard<std::mutex> lock(g.mutex);
  if (g.api != nullptr) {
    if (library_path == g.path || library_path.empty()) return g.version;
    throw std::runtime_error("ONNX Runtime is already loaded from " + g.path + "; cannot also load " + library_path);
  }
  void* handle = dlopen(library_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    throw std::runtime_error("could not load the ONNX Runtime library " + library_path + ": " +
                             (err ? err : "unknown error"));
  }
  using GetApiBaseFn = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBaseFn>(dlsym(handle, "OrtGetApiBase"));
  if (get_api_base == nullptr) {
    dlclose(handle);
    throw std::runtime_error(library_path + " is not an ONNX Runtime library (no OrtGetApiBase symbol)");
  }
  const OrtApiBase* base = get_api_base();
  const std::string version = base->GetVersionString();
  const OrtApi* api = base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    dlclose(handle);
    throw std::runtime_error("ONNX Runtime " + version + " at " + library_path + " does not serve C API version " +
                             std::to_string(ORT_API_VERSION) + " (the headers this runtime was built with); " +
                             "install onnxruntime >= 1." + std::to_string(ORT_API_VERSION));
  }
  Ort::InitApi(api);
  try {
    g.env = new Ort::Env(ORT_LOGGING_LEVEL_WARNING, "boxseg");
  } catch (const Ort::Exception& e) {
    throw std::runtime_error(std::string("ONNX Runtime could not create its environment: ") + e.what());
  }
  g.handle = handle;
  g.api = api;
  g.path = library_path;
  g.version = version;
  return version;
}

int onnxruntime_api_version_built() { return ORT_API_VERSION; }

bool onnxruntime_loaded() { return global().api != nullptr; }

std::string onnxruntime_version() {
  require_loaded();
  return global().version;
}

std::vector<std::string> onnxruntime_providers() {
  require_loaded();
  return Ort::GetAvailableProviders();
}

std::unique_ptr<Backend> make_ort_backend(const BackendConfig& config) {
  return std::make_unique<OrtBackend>(config);
}

}  // namespace boxseg
