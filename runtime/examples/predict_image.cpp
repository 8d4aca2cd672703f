// boxseg_predict_image: runs an exported BoxSeg model on one image with the C++ runtime core alone (no Python),
// and prints the detections as JSON with COCO RLE masks. Proof that the runtime embeds in a C++ pipeline.
//
// usage: boxseg_predict_image MODEL.onnx IMAGE.ppm [--ort-library PATH] [--device cpu|cuda] [--threads N]
//                             [--min-size N] [--max-size N] [--score-threshold F]
// The ONNX Runtime library (libonnxruntime.so.*, e.g. from the onnxruntime wheel's capi/ folder) comes from
// --ort-library or the environment variable BOXSEG_ORT_LIBRARY. Images are binary PPM (P6), which any image
// tool writes (e.g. Pillow: Image.open("a.png").convert("RGB").save("a.ppm")), so no image library is needed.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "metadata.h"
#include "ort_backend.h"
#include "predictor.h"

namespace {

struct Image {
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> rgb;  // (height, width, 3)
};

// Reads the next header token of a PPM file, skipping whitespace and '#' comments.
std::string ppm_token(std::istream& in, const std::string& path) {
  std::string tok;
  int c;
  while ((c = in.get()) != EOF) {
    if (c == '#') {
      while ((c = in.get()) != EOF && c != '\n') {
      }
      continue;
    }
    if (std::isspace(c)) {
      if (!tok.empty()) return tok;
      continue;
    }
    tok += static_cast<char>(c);
  }
  if (tok.empty()) throw std::runtime_error(path + ": truncated PPM header");
  return tok;
}

int64_t ppm_int(std::istream& in, const std::string& path, const char* field) {
  const std::string tok = ppm_token(in, path);
  char* end = nullptr;
  const long long v = std::strtoll(tok.c_str(), &end, 10);
  if (end != tok.c_str() + tok.size() || v <= 0)
    throw std::runtime_error(path + ": PPM " + field + " must be a positive integer, got '" + tok + "'");
  return v;
}

Image read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open image");
  if (ppm_token(in, path) != "P6")
    throw std::runtime_error(path + ": not a binary PPM (P6) image; convert it first, e.g. with Pillow");
  Image im;
  im.width = ppm_int(in, path, "width");
  im.height = ppm_int(in, path, "height");
  const int64_t maxval = ppm_int(in, path, "maxval");
  if (maxval > 255) throw std::runtime_error(path + ": 16-bit PPM is not supported (maxval " + std::to_string(maxval) + ")");
  // ppm_token consumed the single whitespace byte after maxval; pixel data follows.
  im.rgb.resize(static_cast<size_t>(im.height * im.width * 3));
  in.read(reinterpret_cast<char*>(im.rgb.data()), static_cast<std::streamsize>(im.rgb.size()));
  if (in.gcount() != static_cast<std::streamsize>(im.rgb.size()))
    throw std::runtime_error(path + ": truncated PPM pixel data");
  if (maxval != 255)
    for (auto& v : im.rgb) v = static_cast<uint8_t>((v * 255 + maxval / 2) / maxval);
  return im;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "boxseg_predict_image: " << why << "\n"
            << "usage: boxseg_predict_image MODEL.onnx IMAGE.ppm [--ort-library PATH] [--device cpu|cuda] "
               "[--threads N] [--min-size N] [--max-size N] [--score-threshold F]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string ort_library;
  if (const char* env = std::getenv("BOXSEG_ORT_LIBRARY")) ort_library = env;
  boxseg::PredictorConfig cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--ort-library") ort_library = value();
    else if (arg == "--device") cfg.device = value();
    else if (arg == "--threads") cfg.threads = std::atoi(value().c_str());
    else if (arg == "--min-size") cfg.min_size = std::atoll(value().c_str());
    else if (arg == "--max-size") cfg.max_size = std::atoll(value().c_str());
    else if (arg == "--score-threshold") cfg.score_threshold = std::strtof(value().c_str(), nullptr);
    else if (arg == "-h" || arg == "--help") usage("help");
    else if (!arg.empty() && arg[0] == '-') usage("unknown option " + arg);
    else positional.push_back(arg);
  }
  if (positional.size() != 2) usage("expected MODEL and IMAGE");
  if (ort_library.empty()) usage("no ONNX Runtime library: pass --ort-library or set BOXSEG_ORT_LIBRARY");
  cfg.model_path = positional[0];
  try {
    boxseg::load_onnxruntime(ort_library);
    const Image im = read_ppm(positional[1]);
    const boxseg::Predictor predictor(cfg);
    boxseg::ImageView view;
    view.data = im.rgb.data();
    view.height = im.height;
    view.width = im.width;
    view.stride_y = im.width * 3;
    boxseg::BatchResult result = predictor.predict({view}, /*rle=*/true);
    const boxseg::Detections& det = result.images[0];
    const auto& names = predictor.info().class_names;
    std::ostringstream out;
    out << "{\"model\": " << boxseg::json_quote(cfg.model_path)
        << ", \"backend\": " << boxseg::json_quote(predictor.backend_name())
        << ", \"image\": {\"path\": " << boxseg::json_quote(positional[1]) << ", \"height\": " << det.height
        << ", \"width\": " << det.width << "}, \"detections\": [";
    for (int64_t k = 0; k < det.count(); ++k) {
      const int64_t cls = det.classes[static_cast<size_t>(k)];
      const std::string name = cls < static_cast<int64_t>(names.size()) ? names[static_cast<size_t>(cls)] : "";
      out << (k ? ", " : "") << "{\"box\": [";
      for (int j = 0; j < 4; ++j) out << (j ? ", " : "") << num(det.boxes[static_cast<size_t>(k * 4 + j)]);
      out << "], \"score\": " << num(det.scores[static_cast<size_t>(k)]) << ", \"class\": " << cls
          << ", \"class_name\": " << boxseg::json_quote(name) << ", \"segmentation\": {\"size\": [" << det.height
          << ", " << det.width << "], \"counts\": " << boxseg::json_quote(det.rle_counts[static_cast<size_t>(k)])
          << "}}";
    }
    const auto& t = result.timings;
    out << "], \"timings_ms\": {\"pre\": " << num(t.pre_ms) << ", \"infer\": " << num(t.infer_ms)
        << ", \"post\": " << num(t.post_ms) << ", \"total\": " << num(t.total_ms) << "}}\n";
    std::cout << out.str();
  } catch (const std::exception& e) {
    std::cerr << "boxseg_predict_image: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
