// The interface every inference backend (ONNX Runtime, TensorRT) implements. No backend type leaks out of
// here, so the predictor, the bindings and the C++ example compile without any backend's headers.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace boxseg {

enum class InputType { Float32, UInt8 };

// Host views of the five graph outputs of one run (docs/contracts.md, "Exported ONNX graph"). The pointers
// stay valid as long as `keepalive` is held; the backend decides what it holds (ORT values, host buffers).
struct BackendOutputs {
  const float* boxes = nullptr;      // (batch, max_dets, 4) xyxy in input pixels
  const float* scores = nullptr;     // (batch, max_dets)
  const int64_t* classes = nullptr;  // (batch, max_dets), -1 on padding rows
  const float* masks = nullptr;      // (batch, max_dets, mask_h, mask_w) probabilities
  const int64_t* num_dets = nullptr; // (batch,)
  int64_t batch = 0;
  int64_t max_dets = 0;
  int64_t mask_h = 0;
  int64_t mask_w = 0;
  std::shared_ptr<void> keepalive;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Short name for reports, e.g. "onnxruntime-1.31.1 [CPUExecutionProvider]".
  virtual std::string name() const = 0;
  virtual InputType input_type() const = 0;
  // The model's `boxseg.*` metadata as stored (all strings).
  virtual const std::map<std::string, std::string>& metadata() const = 0;
  // Runs the graph on a (batch, 3, height, width) tensor of input_type(). Must be safe to call from many
  // threads at once.
  virtual BackendOutputs run(const void* images, int64_t batch, int64_t height, int64_t width) const = 0;
};

struct BackendConfig {
  std::string model_path;
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N"
  int threads = 0;             // intra-op threads; 0 = the backend's default
};

// Picks the backend from the file: `.engine` / `.plan` -> TensorRT (when built in), anything else -> ONNX Runtime.
std::unique_ptr<Backend> make_backend(const BackendConfig& config);

}  // namespace boxseg
