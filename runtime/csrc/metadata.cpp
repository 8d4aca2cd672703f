#include "metadata.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace boxseg {
namespace {

// A minimal JSON reader: enough for flat arrays and flat objects of strings and numbers.
class JsonReader {
 public:
  JsonReader(const std::string& text, const std::string& what) : s_(text), what_(what) {}

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool at_end() {
    skip_ws();
    return pos_ >= s_.size();
  }
  char peek() {
    skip_ws();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  [[noreturn]] void fail(const std::string& why) const {
    throw std::invalid_argument(what_ + ": invalid JSON (" + why + " at character " + std::to_string(pos_) +
                                ") in " + s_.substr(0, 200));
  }

  std::string read_string() {
    expect('"');
    std::string out;
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': append_utf8(out, read_code_point()); break;
        default: fail(std::string("bad escape \\") + e);
      }
    }
    fail("unterminated string");
  }

  // The text of a number, validated by strtod.
  std::string read_number_text() {
    skip_ws();
    const size_t start = pos_;
    while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '-' ||
                                s_[pos_] == '+' || s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E'))
      ++pos_;
    std::string text = s_.substr(start, pos_ - start);
    char* end = nullptr;
    if (text.empty()) fail("expected a number");
    std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) fail("bad number '" + text + "'");
    return text;
  }

 private:
  unsigned read_hex4() {
    if (pos_ + 4 > s_.size()) fail("short \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= unsigned(h - '0');
      else if (h >= 'a' && h <= 'f') v |= unsigned(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= unsigned(h - 'A' + 10);
      else fail("bad hex digit in \\u escape");
    }
    return v;
  }
  unsigned read_code_point() {
    unsigned cp = read_hex4();
    // A UTF-16 surrogate pair spells one code point above U+FFFF.
    if (cp >= 0xD800 && cp <= 0xDBFF && pos_ + 6 <= s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u') {
      pos_ += 2;
      const unsigned low = read_hex4();
      if (low < 0xDC00 || low > 0xDFFF) fail("bad surrogate pair");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    return cp;
  }
  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }

  const std::string& s_;
  std::string what_;
  size_t pos_ = 0;
};

template <typename ReadItem>
void read_array(JsonReader& r, ReadItem read_item) {
  r.expect('[');
  if (r.peek() == ']') {
    r.expect(']');
  } else {
    for (;;) {
      read_item();
      if (r.peek() == ',') {
        r.expect(',');
        continue;
      }
      r.expect(']');
      break;
    }
  }
  if (!r.at_end()) r.fail("trailing characters");
}

const std::string* find_key(const std::map<std::string, std::string>& md, const std::string& key) {
  auto it = md.find(key);
  return it == md.end() ? nullptr : &it->second;
}

int64_t parse_int(const std::string& text, const std::string& what) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size())
    throw std::invalid_argument(what + ": expected an integer, got '" + text + "'");
  return v;
}

double parse_double(const std::string& text, const std::string& what) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
    throw std::invalid_argument(what + ": expected a number, got '" + text + "'");
  return v;
}

std::array<float, 3> parse_triplet(const std::string& text, const std::string& what) {
  const auto v = parse_json_number_list(text, what);
  if (v.size() != 3) throw std::invalid_argument(what + ": expected 3 numbers (R, G, B), got " + text);
  return {{float(v[0]), float(v[1]), float(v[2])}};
}

}  // namespace

std::vector<std::string> parse_json_string_list(const std::string& text, const std::string& what) {
  JsonReader r(text, what);
  std::vector<std::string> out;
  read_array(r, [&] { out.push_back(r.read_string()); });
  return out;
}

std::vector<double> parse_json_number_list(const std::string& text, const std::string& what) {
  JsonReader r(text, what);
  std::vector<double> out;
  read_array(r, [&] { out.push_back(std::strtod(r.read_number_text().c_str(), nullptr)); });
  return out;
}

std::map<std::string, std::string> parse_json_flat_object(const std::string& text, const std::string& what) {
  JsonReader r(text, what);
  std::map<std::string, std::string> out;
  r.expect('{');
  if (r.peek() == '}') {
    r.expect('}');
  } else {
    for (;;) {
      std::string key = r.read_string();
      r.expect(':');
      out[key] = r.peek() == '"' ? r.read_string() : r.read_number_text();
      if (r.peek() == ',') {
        r.expect(',');
        continue;
      }
      r.expect('}');
      break;
    }
  }
  if (!r.at_end()) r.fail("trailing characters");
  return out;
}

std::string json_quote(const std::string& text) {
  std::string out = "\"";
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

ModelInfo parse_model_info(const std::map<std::string, std::string>& md, const std::string& source) {
  const std::string* format = find_key(md, "boxseg.format");
  if (format == nullptr)
    throw std::invalid_argument(source +
                                ": not a boxseg model: the metadata key 'boxseg.format' is missing (expected "
                                "'boxseg-onnx'; export the model with `boxseg export`)");
  if (*format != "boxseg-onnx")
    throw std::invalid_argument(source + ": metadata 'boxseg.format' is '" + *format +
                                "', expected 'boxseg-onnx'");
  ModelInfo info;
  info.metadata = md;
  auto key = [&](const char* k) { return source + ": metadata '" + k + "'"; };
  if (auto v = find_key(md, "boxseg.version")) info.version = *v;
  if (auto v = find_key(md, "boxseg.preset")) info.preset = *v;
  if (auto v = find_key(md, "boxseg.input_format")) info.input_format = *v;
  if (auto v = find_key(md, "boxseg.class_names"))
    info.class_names = parse_json_string_list(*v, key("boxseg.class_names"));
  if (auto v = find_key(md, "boxseg.size_divisor"))
    info.size_divisor = parse_int(*v, key("boxseg.size_divisor"));
  if (auto v = find_key(md, "boxseg.mask_stride")) info.mask_stride = parse_int(*v, key("boxseg.mask_stride"));
  if (auto v = find_key(md, "boxseg.min_size")) info.min_input_size = parse_int(*v, key("boxseg.min_size"));
  if (info.min_input_size < 0)
    throw std::invalid_argument(key("boxseg.min_size") + ": expected >= 0, got " +
                                std::to_string(info.min_input_size));
  if (auto v = find_key(md, "boxseg.max_dets")) info.max_dets = parse_int(*v, key("boxseg.max_dets"));
  for (auto [name, field] : {std::pair{"boxseg.test_size", &info.test_size},
                             std::pair{"boxseg.test_max_size", &info.test_max_size}}) {
    if (auto v = find_key(md, name)) *field = parse_int(*v, key(name));
    if (*field < 0) throw std::invalid_argument(key(name) + ": expected >= 0, got " + std::to_string(*field));
  }
  if (auto v = find_key(md, "boxseg.mask_threshold"))
    info.mask_threshold = float(parse_double(*v, key("boxseg.mask_threshold")));
  if (auto v = find_key(md, "boxseg.mean")) info.mean = parse_triplet(*v, key("boxseg.mean"));
  if (auto v = find_key(md, "boxseg.std")) info.std = parse_triplet(*v, key("boxseg.std"));
  if (info.size_divisor < 1 || info.size_divisor > 4096)
    throw std::invalid_argument(key("boxseg.size_divisor") + ": expected 1..4096, got " +
                                std::to_string(info.size_divisor));
  if (info.mask_stride < 1 || info.size_divisor % info.mask_stride != 0)
    throw std::invalid_argument(key("boxseg.mask_stride") + ": expected a positive divisor of size_divisor (" +
                                std::to_string(info.size_divisor) + "), got " +
                                std::to_string(info.mask_stride));
  for (float s : info.std)
    if (!(s > 0.f)) throw std::invalid_argument(key("boxseg.std") + ": every value must be > 0");
  info.normalize_input = info.input_format.find("normalized") != std::string::npos ||
                         info.input_format.find("normalised") != std::string::npos;
  return info;
}

}  // namespace boxseg
