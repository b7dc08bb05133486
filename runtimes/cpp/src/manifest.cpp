// Manifest reading: see manifest.h. The schema below mirrors the dataclasses of vtc_deploy/spec.py field by field
// (names, types, required keys, Literal values); a key the Python reader does not know is an error here too.
#include "manifest.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <sstream>

#include "error.h"

namespace vtc {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& where, const std::string& message) {
  throw Error(VTC_ERR_ARTIFACT, where + ": " + message);
}

std::string show(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

// ------------------------------------------------------------------------------------------------ typed readers

struct Reader {
  std::string file;  // the manifest path, prefixed to every message

  [[noreturn]] void error(const std::string& field, const std::string& message) const {
    fail(file, field + ": " + message);
  }

  // Unknown keys are errors (spec.from_dict); returns nothing, throws.
  void keys(const json& obj, const std::string& where, const std::vector<std::string>& allowed,
            const std::vector<std::string>& required) const {
    if (!obj.is_object()) error(where, "must be an object, got " + show(obj));
    std::vector<std::string> unknown;
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      bool known = false;
      for (const auto& a : allowed) known = known || a == it.key();
      if (!known) unknown.push_back(it.key());
    }
    if (!unknown.empty()) {
      std::string u, a;
      for (const auto& k : unknown) u += (u.empty() ? "" : ", ") + k;
      for (const auto& k : allowed) a += (a.empty() ? "" : ", ") + k;
      error(where, "unknown key(s) " + u + "; allowed: " + a);
    }
    for (const auto& r : required) {
      if (!obj.contains(r)) error(where, "missing key '" + r + "'");
    }
  }

  std::string str(const json& v, const std::string& where) const {
    if (!v.is_string()) error(where, "expected str, got " + show(v));
    return v.get<std::string>();
  }
  int64_t integer(const json& v, const std::string& where) const {
    if (!v.is_number_integer()) error(where, "expected int, got " + show(v));
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      error(where, "integer " + show(v) + " is out of range");
    }
    return v.get<int64_t>();
  }
  int int_in(const json& v, const std::string& where, int64_t lo, int64_t hi) const {
    int64_t x = integer(v, where);
    if (x < lo || x > hi) error(where, show(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
    return static_cast<int>(x);
  }
  double number(const json& v, const std::string& where) const {
    if (!v.is_number()) error(where, "expected a number, got " + show(v));
    double x = v.get<double>();
    if (!std::isfinite(x)) error(where, "must be finite, got " + show(v));
    return x;
  }
  bool boolean(const json& v, const std::string& where) const {
    if (!v.is_boolean()) error(where, "expected bool, got " + show(v));
    return v.get<bool>();
  }
  std::string literal(const json& v, const std::string& where, const std::vector<std::string>& allowed) const {
    if (v.is_string()) {
      for (const auto& a : allowed) {
        if (v.get<std::string>() == a) return a;
      }
    }
    std::string a;
    for (const auto& k : allowed) a += (a.empty() ? "'" : ", '") + k + "'";
    error(where, show(v) + " is not one of " + a);
  }
  std::vector<std::string> str_list(const json& v, const std::string& where) const {
    if (!v.is_array()) error(where, "expected a list, got " + show(v));
    std::vector<std::string> out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) out.push_back(str(v[i], where + "[" + std::to_string(i) + "]"));
    return out;
  }
  bool is_null(const json& v) const { return v.is_null(); }
};

// ^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$
bool plain_file_name(const std::string& name) {
  auto alnum = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (name.empty() || name.size() > 255 || !alnum(name[0])) return false;
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

void check_file_name(const Reader& r, const std::string& name, const std::string& where) {
  if (!plain_file_name(name)) {
    r.error(where, "file name '" + name.substr(0, 80) +
                       "' is not allowed (a plain name inside the artifact: [A-Za-z0-9][A-Za-z0-9._-]{0,254})");
  }
}

void check_sha(const Reader& r, const std::string& sha, const std::string& where) {
  (void)r;
  (void)sha;
  (void)where;  // the Python reader accepts any string here; the hash comparison catches a wrong one
}

// ------------------------------------------------------------------------------------------------ sha256

alignas(16) const uint32_t kRound[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#if defined(__x86_64__)
// Four SHA-256 rounds at a time with the SHA extensions (AMD Zen, Intel since Ice Lake / Goldmont); used when the
// CPU has them (checked at run time), the portable code otherwise. Same digests (tests/test_core.cpp).
__attribute__((target("sha,sse4.1"))) void compress_shani(uint32_t state[8], const uint8_t* data, size_t blocks) {
  const __m128i order = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);  // big-endian words
  __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(state)), 0xB1);      // CDAB
  __m128i state1 = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(state + 4)), 0x1B);  // EFGH
  __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  // ABEF
  state1 = _mm_blend_epi16(state1, tmp, 0xF0);       // CDGH
  for (; blocks > 0; --blocks, data += 64) {
    const __m128i abef = state0, cdgh = state1;
    __m128i m[4];
    for (int g = 0; g < 16; ++g) {
      __m128i& w = m[g % 4];
      if (g < 4) {
        w = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * g)), order);
      } else {  // W[i..i+3] from W[i-16..i-13], W[i-12..], W[i-8..], W[i-4..]
        const __m128i x = _mm_add_epi32(_mm_sha256msg1_epu32(w, m[(g + 1) % 4]),
                                        _mm_alignr_epi8(m[(g + 3) % 4], m[(g + 2) % 4], 4));
        w = _mm_sha256msg2_epu32(x, m[(g + 3) % 4]);
      }
      __m128i msg = _mm_add_epi32(w, _mm_load_si128(reinterpret_cast<const __m128i*>(kRound + 4 * g)));
      state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
      msg = _mm_shuffle_epi32(msg, 0x0E);
      state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
    }
    state0 = _mm_add_epi32(state0, abef);
    state1 = _mm_add_epi32(state1, cdgh);
  }
  tmp = _mm_shuffle_epi32(state0, 0x1B);        // FEBA
  state1 = _mm_shuffle_epi32(state1, 0xB1);     // DCHG
  state0 = _mm_blend_epi16(tmp, state1, 0xF0);  // DCBA
  state1 = _mm_alignr_epi8(state1, tmp, 8);     // HGFE
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state), state0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state + 4), state1);
}

bool have_shani() {
  static const bool yes = __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1");
  return yes;
}
#endif

struct Sha256 {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t block[64] = {};
  size_t used = 0;
  uint64_t total = 0;

  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress_generic(const uint8_t* p) {
    const uint32_t* k = kRound;
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) |
             uint32_t(p[4 * i + 3]);
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      uint32_t ch = (e & f) ^ (~e & g);
      uint32_t t1 = hh + s1 + ch + k[i] + w[i];
      uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      uint32_t t2 = s0 + maj;
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }

  void compress(const uint8_t* p, size_t blocks = 1) {
#if defined(__x86_64__)
    if (have_shani()) return compress_shani(h, p, blocks);
#endif
    for (size_t b = 0; b < blocks; ++b) compress_generic(p + 64 * b);
  }

  void update(const uint8_t* p, size_t n) {
    total += n;
    while (n > 0) {
      if (used == 0 && n >= 64) {
        const size_t blocks = n / 64;
        compress(p, blocks);
        p += 64 * blocks;
        n -= 64 * blocks;
        continue;
      }
      size_t take = std::min(n, 64 - used);
      std::memcpy(block + used, p, take);
      used += take;
      p += take;
      n -= take;
      if (used == 64) {
        compress(block);
        used = 0;
      }
    }
  }

  std::string hex() {
    uint64_t bits = total * 8;
    uint8_t pad = 0x80;
    update(&pad, 1);
    uint8_t zero = 0;
    while (used != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(bits >> (56 - 8 * i));
    update(len, 8);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (uint32_t v : h) {
      for (int s = 28; s >= 0; s -= 4) out.push_back(digits[(v >> s) & 15]);
    }
    return out;
  }
};

bool valid_utf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += len;
  }
  return true;
}

std::string real_path(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> resolved(realpath(path.c_str(), nullptr), &std::free);
  return resolved ? std::string(resolved.get()) : std::string();
}

}  // namespace

std::string sha256_hex(const void* data, size_t size) {
  Sha256 s;
  s.update(static_cast<const uint8_t*>(data), size);
  return s.hex();
}

std::string sha256_file(const std::string& path) {
  std::unique_ptr<FILE, decltype(&std::fclose)> fh(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!fh) throw Error(VTC_ERR_ARTIFACT, path + ": cannot read (" + std::strerror(errno) + ")");
  Sha256 s;
  std::vector<uint8_t> buffer(1 << 20);
  size_t got;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), fh.get())) > 0) s.update(buffer.data(), got);
  if (std::ferror(fh.get())) throw Error(VTC_ERR_ARTIFACT, path + ": read error");
  return s.hex();
}

std::string Manifest::path_of(const std::string& file) const { return root + "/" + file; }

Manifest parse_manifest(const std::string& text, const std::string& where) {
  Reader r{where};
  json data;
  try {
    data = json::parse(text);
  } catch (const json::exception& exc) {
    fail(where, std::string("manifest is not valid JSON (") + exc.what() + ")");
  }
  if (!data.is_object()) fail(where, "manifest must be a JSON object");
  if (!data.contains("schema_version") || !data["schema_version"].is_number_integer()) {
    fail(where, "manifest has no integer schema_version");
  }
  Manifest m;
  m.json_text = text;
  {
    const json& v = data["schema_version"];
    const bool huge = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT_MAX);
    const int64_t x = huge ? INT_MAX : v.get<int64_t>();
    m.schema_version = static_cast<int>(std::max<int64_t>(INT_MIN, std::min<int64_t>(INT_MAX, x)));
  }
  if (m.schema_version > kSchemaVersion) {
    fail(where, "manifest schema_version " + std::to_string(m.schema_version) +
                    " is newer than this libvtc understands (" + std::to_string(kSchemaVersion) +
                    "); upgrade libvtc");
  }

  r.keys(data, "manifest",
         {"model", "frames", "classes", "templates", "logit_scale", "input", "sampling", "view_aggregation", "opset",
          "exporter", "precision", "quantization", "inputs", "outputs", "onnx_file", "onnx_sha256",
          "package_version", "source", "text", "streaming", "parity", "schema_version"},
         {"model", "frames", "classes", "templates", "logit_scale"});

  // model (ModelSpec)
  const json& model = data["model"];
  r.keys(model, "manifest.model",
         {"architecture", "weights", "embed_dim", "head", "head_layers", "vision_width", "vision_layers", "patch_size",
          "image_size", "quick_gelu"},
         {"architecture", "weights", "embed_dim", "head"});
  m.architecture = r.str(model["architecture"], "manifest.model.architecture");
  r.str(model["weights"], "manifest.model.weights");
  m.embed_dim = r.int_in(model["embed_dim"], "manifest.model.embed_dim", 1, 1 << 16);
  r.literal(model["head"], "manifest.model.head", {"mean", "transformer"});
  for (const char* k : {"head_layers", "vision_width", "vision_layers", "patch_size", "image_size"}) {
    if (model.contains(k)) r.integer(model[k], std::string("manifest.model.") + k);
  }
  if (model.contains("quick_gelu")) r.boolean(model["quick_gelu"], "manifest.model.quick_gelu");

  m.frames = r.int_in(data["frames"], "manifest.frames", 1, kMaxFrames);

  // classes and templates
  m.classes = r.str_list(data["classes"], "manifest.classes");
  if (m.classes.empty() || m.classes.size() > kMaxClasses) {
    r.error("manifest.classes", std::to_string(m.classes.size()) + " classes; need 1.." + std::to_string(kMaxClasses));
  }
  for (size_t i = 0; i < m.classes.size(); ++i) {
    const auto& c = m.classes[i];
    if (c.empty() || c.size() > kMaxClassBytes || !valid_utf8(c)) {
      r.error("manifest.classes[" + std::to_string(i) + "]",
              "a class name must be 1.." + std::to_string(kMaxClassBytes) + " UTF-8 bytes, got " +
                  std::to_string(c.size()));
    }
  }
  m.templates = r.str_list(data["templates"], "manifest.templates");
  if (m.templates.empty() || m.templates.size() > kMaxTemplates) {
    r.error("manifest.templates",
            std::to_string(m.templates.size()) + " templates; need 1.." + std::to_string(kMaxTemplates));
  }
  for (size_t i = 0; i < m.templates.size(); ++i) {
    if (m.templates[i].size() > kMaxTemplateBytes || !valid_utf8(m.templates[i])) {
      r.error("manifest.templates[" + std::to_string(i) + "]",
              "a template must be at most " + std::to_string(kMaxTemplateBytes) + " UTF-8 bytes");
    }
  }
  m.logit_scale = r.number(data["logit_scale"], "manifest.logit_scale");
  if (!(m.logit_scale > 0)) r.error("manifest.logit_scale", "must be > 0, got " + show(data["logit_scale"]));

  // input (InputSpec)
  if (data.contains("input")) {
    const json& in = data["input"];
    r.keys(in, "manifest.input", {"kind", "size", "resize", "resize_rule", "interpolation", "mean", "std"}, {});
    if (in.contains("kind")) m.input.kind = r.literal(in["kind"], "manifest.input.kind", {"uint8", "float"});
    if (in.contains("size")) m.input.size = r.int_in(in["size"], "manifest.input.size", 1, kMaxInputSize);
    if (in.contains("resize")) m.input.resize = r.int_in(in["resize"], "manifest.input.resize", 1, kMaxResize);
    if (in.contains("resize_rule")) r.literal(in["resize_rule"], "manifest.input.resize_rule", {"shorter-side"});
    if (in.contains("interpolation")) r.literal(in["interpolation"], "manifest.input.interpolation", {"bicubic"});
    for (const char* key : {"mean", "std"}) {
      if (!in.contains(key)) continue;
      const json& v = in[key];
      const std::string field = std::string("manifest.input.") + key;
      if (!v.is_array()) r.error(field, "expected a list, got " + show(v));
      if (v.size() != 3) r.error(field, "expected 3 values, got " + std::to_string(v.size()));
      std::array<float, 3> values{};
      for (size_t i = 0; i < 3; ++i) {
        double x = r.number(v[i], field + "[" + std::to_string(i) + "]");
        if (std::string(key) == "std" && !(x > 0)) r.error(field, "std must be > 0, got " + show(v));
        values[i] = static_cast<float>(x);
      }
      (std::string(key) == "mean" ? m.input.mean : m.input.std) = values;
    }
    if (m.input.size < 8 || m.input.resize < m.input.size) {
      r.error("manifest.input", "input size " + std::to_string(m.input.size) + " and resize " +
                                    std::to_string(m.input.resize) + ": need 8 <= size <= resize");
    }
  }

  // sampling (SamplingSpec)
  if (data.contains("sampling")) {
    const json& s = data["sampling"];
    r.keys(s, "manifest.sampling", {"rule", "clips", "crops", "window", "description"}, {});
    if (s.contains("rule")) m.sampling_rule = r.literal(s["rule"], "manifest.sampling.rule", {"uniform", "dense"});
    if (s.contains("clips")) m.clips = r.int_in(s["clips"], "manifest.sampling.clips", 1, 1024);
    if (s.contains("crops")) {
      const json& c = s["crops"];
      if (!c.is_number_integer() || (c.get<int64_t>() != 1 && c.get<int64_t>() != 3)) {
        r.error("manifest.sampling.crops", show(c) + " is not one of 1, 3");
      }
      m.crops = static_cast<int>(c.get<int64_t>());
    }
    if (s.contains("window")) m.window = r.int_in(s["window"], "manifest.sampling.window", 1, 1 << 20);
    if (s.contains("description")) r.str(s["description"], "manifest.sampling.description");
  }
  if (data.contains("view_aggregation")) {
    r.literal(data["view_aggregation"], "manifest.view_aggregation", {"mean-feature"});
  }
  if (data.contains("opset")) r.integer(data["opset"], "manifest.opset");
  for (const char* k : {"exporter", "package_version"}) {
    if (data.contains(k)) r.str(data[k], std::string("manifest.") + k);
  }
  if (data.contains("precision")) {
    m.precision = r.literal(data["precision"], "manifest.precision", {"fp32", "fp16", "int8"});
  }

  // quantization (QuantizationSpec | None)
  if (data.contains("quantization") && !data["quantization"].is_null()) {
    const json& q = data["quantization"];
    r.keys(q, "manifest.quantization",
           {"scheme", "scope", "fp16_ops", "int8_ops", "activations", "per_channel", "calibration",
            "calibration_videos", "calibration_samples", "nodes", "form", "weight_bits"},
           {"scheme"});
    for (const char* k : {"scheme", "scope", "activations", "calibration", "form"}) {
      if (q.contains(k)) r.str(q[k], std::string("manifest.quantization.") + k);
    }
    for (const char* k : {"fp16_ops", "int8_ops"}) {
      if (q.contains(k)) r.str_list(q[k], std::string("manifest.quantization.") + k);
    }
    if (q.contains("per_channel")) r.boolean(q["per_channel"], "manifest.quantization.per_channel");
    for (const char* k : {"calibration_videos", "calibration_samples", "nodes", "weight_bits"}) {
      if (q.contains(k)) r.integer(q[k], std::string("manifest.quantization.") + k);
    }
  }
  if (data.contains("inputs")) m.inputs = r.str_list(data["inputs"], "manifest.inputs");
  if (data.contains("outputs")) m.outputs = r.str_list(data["outputs"], "manifest.outputs");
  if (data.contains("onnx_file")) m.onnx_file = r.str(data["onnx_file"], "manifest.onnx_file");
  if (data.contains("onnx_sha256")) m.onnx_sha256 = r.str(data["onnx_sha256"], "manifest.onnx_sha256");
  check_file_name(r, m.onnx_file, "manifest.onnx_file");
  check_sha(r, m.onnx_sha256, "manifest.onnx_sha256");

  if (data.contains("source")) {
    const json& s = data["source"];
    r.keys(s, "manifest.source", {"ckpt", "ckpt_sha256", "clip"}, {});
    for (auto it = s.begin(); it != s.end(); ++it) r.str(it.value(), "manifest.source." + it.key());
  }
  if (data.contains("text") && !data["text"].is_null()) {
    const json& t = data["text"];
    r.keys(t, "manifest.text", {"file", "sha256", "context_length", "tokenizer"}, {});
    m.has_text = true;
    if (t.contains("file")) m.text_file = r.str(t["file"], "manifest.text.file");
    if (t.contains("sha256")) m.text_sha256 = r.str(t["sha256"], "manifest.text.sha256");
    if (t.contains("context_length")) {
      m.context_length = r.int_in(t["context_length"], "manifest.text.context_length", 2, 4096);
    }
    if (t.contains("tokenizer")) r.str(t["tokenizer"], "manifest.text.tokenizer");
    check_file_name(r, m.text_file, "manifest.text.file");
  }
  if (data.contains("streaming") && !data["streaming"].is_null()) {
    const json& s = data["streaming"];
    r.keys(s, "manifest.streaming", {"frames_file", "frames_sha256", "head_file", "head_sha256"}, {});
    m.has_streaming = true;
    if (s.contains("frames_file")) m.frames_file = r.str(s["frames_file"], "manifest.streaming.frames_file");
    if (s.contains("frames_sha256")) m.frames_sha256 = r.str(s["frames_sha256"], "manifest.streaming.frames_sha256");
    if (s.contains("head_file")) m.head_file = r.str(s["head_file"], "manifest.streaming.head_file");
    if (s.contains("head_sha256")) m.head_sha256 = r.str(s["head_sha256"], "manifest.streaming.head_sha256");
    check_file_name(r, m.frames_file, "manifest.streaming.frames_file");
    check_file_name(r, m.head_file, "manifest.streaming.head_file");
  }
  if (data.contains("parity") && !data["parity"].is_null()) {
    const json& p = data["parity"];
    r.keys(p, "manifest.parity",
           {"passed", "precision", "max_abs_logit", "min_cosine", "top1_agreement", "top5_agreement", "max_kl",
            "samples", "videos", "thresholds", "note", "host", "verified"},
           {"passed", "precision", "max_abs_logit", "min_cosine", "top1_agreement", "top5_agreement", "max_kl",
            "samples", "videos"});
    r.boolean(p["passed"], "manifest.parity.passed");
    r.literal(p["precision"], "manifest.parity.precision", {"fp32", "fp16", "int8"});
    for (const char* k : {"max_abs_logit", "min_cosine", "top1_agreement", "top5_agreement", "max_kl"}) {
      r.number(p[k], std::string("manifest.parity.") + k);
    }
    r.integer(p["samples"], "manifest.parity.samples");
    r.integer(p["videos"], "manifest.parity.videos");
    if (p.contains("thresholds")) {
      const json& t = p["thresholds"];
      if (!t.is_object()) r.error("manifest.parity.thresholds", "expected an object, got " + show(t));
      for (auto it = t.begin(); it != t.end(); ++it) r.number(it.value(), "manifest.parity.thresholds." + it.key());
    }
    if (p.contains("note")) r.str(p["note"], "manifest.parity.note");
    // where the gate ran (GateHost): the export's, and each later `vtc-deploy verify`
    auto gate_host = [&r](const json& h, const std::string& field) {
      r.keys(h, field, {"cpu", "isa", "onnxruntime", "backend", "passed", "date"}, {});
      for (const char* k : {"cpu", "isa", "onnxruntime", "backend", "date"}) {
        if (h.contains(k)) r.str(h[k], field + "." + k);
      }
      if (h.contains("passed")) r.boolean(h["passed"], field + ".passed");
    };
    if (p.contains("host") && !p["host"].is_null()) gate_host(p["host"], "manifest.parity.host");
    if (p.contains("verified")) {
      const json& v = p["verified"];
      if (!v.is_array()) r.error("manifest.parity.verified", "expected a list, got " + show(v));
      for (size_t i = 0; i < v.size(); ++i) gate_host(v[i], "manifest.parity.verified[" + std::to_string(i) + "]");
    }
  }
  r.integer(data["schema_version"], "manifest.schema_version");
  return m;
}

Manifest read_manifest(const std::string& root_in, bool check_hash) {
  std::string root = root_in;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  struct stat st {};
  if (stat(root.c_str(), &st) != 0) fail(root, "no such artifact directory");
  if (!S_ISDIR(st.st_mode)) fail(root, "not a directory (an artifact is the directory written by vtc-deploy export)");
  const std::string manifest_path = root + "/manifest.json";
  if (stat(manifest_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    fail(root, "no manifest.json: not a vtc-deploy artifact (or an interrupted export)");
  }
  if (st.st_size > kMaxManifestBytes) {
    fail(manifest_path, "manifest is " + std::to_string(st.st_size) + " bytes; the limit is " +
                            std::to_string(kMaxManifestBytes) + " (16 MiB)");
  }
  std::string text;
  {
    std::unique_ptr<FILE, decltype(&std::fclose)> fh(std::fopen(manifest_path.c_str(), "rb"), &std::fclose);
    if (!fh) fail(manifest_path, std::string("cannot read the manifest (") + std::strerror(errno) + ")");
    char buffer[65536];
    size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, fh.get())) > 0) {
      text.append(buffer, got);
      if (static_cast<int64_t>(text.size()) > kMaxManifestBytes) fail(manifest_path, "manifest is over 16 MiB");
    }
  }
  Manifest m = parse_manifest(text, manifest_path);
  m.root = root;
  m.manifest_path = manifest_path;

  const std::string real_root = real_path(root);
  std::vector<std::pair<std::string, std::string>> files{{m.onnx_file, m.onnx_sha256}};
  if (m.has_text) files.emplace_back(m.text_file, m.text_sha256);
  if (m.has_streaming) {
    files.emplace_back(m.frames_file, m.frames_sha256);
    files.emplace_back(m.head_file, m.head_sha256);
  }
  for (const auto& [name, expected] : files) {
    const std::string path = root + "/" + name;
    if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      fail(root, "the manifest names " + name + ", which is missing");
    }
    const std::string real = real_path(path);
    if (real.empty() || real_root.empty() || real.compare(0, real_root.size() + 1, real_root + "/") != 0) {
      fail(root, name + " resolves outside the artifact directory (a symlink out is not allowed)");
    }
    if (!check_hash) continue;
    if (expected.empty()) fail(manifest_path, "the manifest records no sha256 for " + name);
    const std::string actual = sha256_file(path);
    if (actual != expected) {
      fail(root, name + " does not match the manifest (sha256 " + actual.substr(0, 12) + "..., manifest " +
                     expected.substr(0, 12) + "...): modified or corrupt; re-export it");
    }
  }
  return m;
}

}  // namespace vtc
