// The `boxseg.*` metadata of an exported model (docs/contracts.md) and the tiny JSON parsing it needs.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace boxseg {

struct ModelInfo {
  std::map<std::string, std::string> metadata;  // every key as stored
  std::string version;
  std::string preset;
  std::string input_format;
  std::vector<std::string> class_names;
  int64_t size_divisor = 32;
  // `boxseg.min_size`: the smallest padded side for which the graph fills all max_dets slots (its fixed top-k
  // needs that many locations); smaller inputs are padded up to it. 0 = no minimum.
  int64_t min_input_size = 0;
  int64_t mask_stride = 4;
  int64_t max_dets = 0;
  // `boxseg.test_size` / `boxseg.test_max_size`: the PyTorch predictor's resize rule (0 = not stored).
  int64_t test_size = 0;
  int64_t test_max_size = 0;
  float mask_threshold = 0.5f;
  std::array<float, 3> mean{{0.f, 0.f, 0.f}};
  std::array<float, 3> std{{1.f, 1.f, 1.f}};
  // True when the graph expects normalised input ((x - mean) / std) instead of 0..255: the input format
  // string then says "normalized"/"normalised". The contract's graphs normalise inside, so this is false.
  bool normalize_input = false;
};

// Validates and parses the metadata; `source` (the model path) is named in every error.
// Throws std::invalid_argument when `boxseg.format` is not `boxseg-onnx` or a key is malformed.
ModelInfo parse_model_info(const std::map<std::string, std::string>& metadata, const std::string& source);

// Parses a JSON array of strings, e.g. ["person", "car"]. Throws std::invalid_argument naming `what`.
std::vector<std::string> parse_json_string_list(const std::string& text, const std::string& what);
// Parses a JSON array of numbers, e.g. [123.675, 116.28, 103.53].
std::vector<double> parse_json_number_list(const std::string& text, const std::string& what);
// Parses a flat JSON object whose values are strings or numbers (numbers kept as their text).
std::map<std::string, std::string> parse_json_flat_object(const std::string& text, const std::string& what);

// Quotes and escapes a string for JSON output.
std::string json_quote(const std::string& text);

}  // namespace boxseg
