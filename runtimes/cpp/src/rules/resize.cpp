// Pillow-identical bicubic resampling, written from the definition of separable convolution resampling, and the
// Text4Vis preprocessing of vtc_deploy/preprocess.py.
//
// One pass (horizontal or vertical) maps an axis of length `in` to `out`:
//   scale = in / out; filterscale = max(scale, 1); support = 2 * filterscale (bicubic kernel support 2)
//   output sample i has centre c = (i + 0.5) * scale; it reads inputs j in [int(c - support + 0.5),
//   int(c + support + 0.5)) clipped to [0, in), with weights K((j - c + 0.5) / filterscale) normalised to sum 1,
//   K the bicubic kernel with a = -0.5. Weights become fixed point with 22 fractional bits (rounded half away from
//   zero); a sample is (sum w_j * x_j + 2^21) >> 22 clamped to 0..255. The image between the passes is 8-bit.
// Pass order: see `horizontal_first` below. Every output pixel depends only on these rules, so a region of the output
// (resize_bicubic_region; preprocessing asks for the crops' bounding box) computes only the intermediate pixels and
// inputs that region reads and gives exactly the whole resize's pixels there.
#include "resize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#define VTC_X86_DISPATCH 1
#else
#define VTC_X86_DISPATCH 0
#endif
#define VTC_ALWAYS_INLINE inline __attribute__((always_inline))

namespace vtc::rules {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Per output sample: first input index, number of taps, and `ksize` fixed-point weights.
struct Coefficients {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // [out, ksize]
};

Coefficients coefficients(int in, int out) {
  const double scale = static_cast<double>(in) / out;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out);
  c.count.resize(out);
  c.weights.assign(static_cast<size_t>(out) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int i = 0; i < out; ++i) {
    const double centre = (i + 0.5) * scale;
    int lo = static_cast<int>(centre - support + 0.5);
    if (lo < 0) lo = 0;
    int hi = static_cast<int>(centre + support + 0.5);
    if (hi > in) hi = in;
    const int n = hi - lo;
    double total = 0.0;
    for (int j = 0; j < n; ++j) {
      k[j] = bicubic((j + lo - centre + 0.5) / filterscale);
      total += k[j];
    }
    for (int j = 0; j < n; ++j) {
      const double w = total != 0.0 ? k[j] / total : k[j];
      const double fixed = w * (1 << kPrecisionBits);
      c.weights[static_cast<size_t>(i) * c.ksize + j] = static_cast<int32_t>(fixed < 0 ? std::trunc(fixed - 0.5)
                                                                                        : std::trunc(fixed + 0.5));
    }
    c.first[i] = lo;
    c.count[i] = n;
  }
  return c;
}

inline uint8_t clamp8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Inputs [lo, hi) that outputs [a, b) of one pass read.
std::pair<int, int> span(const Coefficients& c, int a, int b) {
  int hi = 0;
  for (int i = a; i < b; ++i) hi = std::max(hi, c.first[i] + c.count[i]);
  return {c.first[a], hi};
}

// The passes' loops (see pass_horizontal and pass_vertical below).
VTC_ALWAYS_INLINE void horizontal_body(const uint8_t* src, size_t src_stride, int rows, int col_offset,
                                       const Coefficients& c, int x0, int x1, uint8_t* dst, size_t dst_stride) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t* row = src + static_cast<size_t>(y) * src_stride;
    uint8_t* orow = dst + static_cast<size_t>(y) * dst_stride;
    for (int x = x0; x < x1; ++x) {
      const int32_t* k = &c.weights[static_cast<size_t>(x) * c.ksize];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      const uint8_t* p = row + static_cast<size_t>(c.first[x] - col_offset) * 3;
      for (int j = 0; j < c.count[x]; ++j) {
        s0 += p[3 * j] * k[j];
        s1 += p[3 * j + 1] * k[j];
        s2 += p[3 * j + 2] * k[j];
      }
      uint8_t* o = orow + static_cast<size_t>(x - x0) * 3;
      o[0] = clamp8(s0);
      o[1] = clamp8(s1);
      o[2] = clamp8(s2);
    }
  }
}

VTC_ALWAYS_INLINE void vertical_body(const uint8_t* src, size_t src_stride, int row_offset, size_t row_bytes,
                                     const Coefficients& c, int y0, int y1, uint8_t* dst, size_t dst_stride,
                                     int32_t* acc) {
  for (int y = y0; y < y1; ++y) {
    const int32_t* k = &c.weights[static_cast<size_t>(y) * c.ksize];
    for (size_t i = 0; i < row_bytes; ++i) acc[i] = 1 << (kPrecisionBits - 1);
    for (int j = 0; j < c.count[y]; ++j) {
      const uint8_t* row = src + static_cast<size_t>(c.first[y] + j - row_offset) * src_stride;
      const int32_t kj = k[j];
      for (size_t i = 0; i < row_bytes; ++i) acc[i] += row[i] * kj;
    }
    uint8_t* orow = dst + static_cast<size_t>(y - y0) * dst_stride;
    for (size_t i = 0; i < row_bytes; ++i) orow[i] = clamp8(acc[i]);
  }
}

// The two passes are compiled twice on x86: for the baseline ISA and with AVX2 (the vertical pass and the horizontal
// pass's accumulation vectorise there: 1080p centre crop 7.1 -> ~3.5 ms), chosen once by the CPU. Integer arithmetic
// only, so both give the same bytes (tests/test_rules_resize.cpp compares them).
void pass_horizontal_generic(const uint8_t* src, size_t src_stride, int rows, int col_offset, const Coefficients& c,
                             int x0, int x1, uint8_t* dst, size_t dst_stride) {
  horizontal_body(src, src_stride, rows, col_offset, c, x0, x1, dst, dst_stride);
}
void pass_vertical_generic(const uint8_t* src, size_t src_stride, int row_offset, size_t row_bytes,
                           const Coefficients& c, int y0, int y1, uint8_t* dst, size_t dst_stride, int32_t* acc) {
  vertical_body(src, src_stride, row_offset, row_bytes, c, y0, y1, dst, dst_stride, acc);
}
#if VTC_X86_DISPATCH
__attribute__((target("avx2"))) void pass_horizontal_avx2(const uint8_t* src, size_t src_stride, int rows,
                                                          int col_offset, const Coefficients& c, int x0, int x1,
                                                          uint8_t* dst, size_t dst_stride) {
  horizontal_body(src, src_stride, rows, col_offset, c, x0, x1, dst, dst_stride);
}
__attribute__((target("avx2"))) void pass_vertical_avx2(const uint8_t* src, size_t src_stride, int row_offset,
                                                        size_t row_bytes, const Coefficients& c, int y0, int y1,
                                                        uint8_t* dst, size_t dst_stride, int32_t* acc) {
  vertical_body(src, src_stride, row_offset, row_bytes, c, y0, y1, dst, dst_stride, acc);
}
#endif

std::atomic<bool> g_generic_only{false};

bool use_avx2() {
#if VTC_X86_DISPATCH
  static const bool avx2 = [] {
    __builtin_cpu_init();  // (libgcc's constructor does it too; harmless when called first from another one)
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return avx2 && !g_generic_only.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

// Horizontal pass, output columns [x0, x1) of `rows` rows: src row y starts at src + y * src_stride and holds input
// columns from `col_offset` on; dst row y at dst + y * dst_stride.
void pass_horizontal(const uint8_t* src, size_t src_stride, int rows, int col_offset, const Coefficients& c, int x0,
                     int x1, uint8_t* dst, size_t dst_stride) {
#if VTC_X86_DISPATCH
  if (use_avx2()) return pass_horizontal_avx2(src, src_stride, rows, col_offset, c, x0, x1, dst, dst_stride);
#endif
  pass_horizontal_generic(src, src_stride, rows, col_offset, c, x0, x1, dst, dst_stride);
}

// Vertical pass, output rows [y0, y1), `row_bytes` bytes of each: src row r (input row r + row_offset) starts at
// src + r * src_stride; output row y at dst + (y - y0) * dst_stride.
void pass_vertical(const uint8_t* src, size_t src_stride, int row_offset, size_t row_bytes, const Coefficients& c,
                   int y0, int y1, uint8_t* dst, size_t dst_stride) {
  std::vector<int32_t> acc(row_bytes);
#if VTC_X86_DISPATCH
  if (use_avx2()) {
    return pass_vertical_avx2(src, src_stride, row_offset, row_bytes, c, y0, y1, dst, dst_stride, acc.data());
  }
#endif
  pass_vertical_generic(src, src_stride, row_offset, row_bytes, c, y0, y1, dst, dst_stride, acc.data());
}

// Which pass runs first when both axes change. Pillow up to 12 always ran the horizontal pass first; Pillow 13
// (python-pillow/Pillow#9549, "if height is scaled down significantly more than width, resize vertically first")
// runs the vertical pass first when the height shrinks and loses more than twice as many pixels as the width:
// (h - out_h) > 2 * (w - out_w). Found by testing against Pillow 13.0.0 on 1,800 random size pairs (up and down in
// each axis, 2..300 pixels): every case where the two orders differ follows this rule.
bool horizontal_first(int h, int w, int out_h, int out_w) {
  const bool vertical_first = out_h < h && static_cast<int64_t>(h - out_h) > 2 * static_cast<int64_t>(w - out_w);
  return !vertical_first;
}

void check_sizes(int h, int w, int out_h, int out_w) {
  if (h < 1 || w < 1 || out_h < 1 || out_w < 1) {
    throw Error(Error::Kind::input, "resize: sizes must be >= 1, got " + std::to_string(w) + "x" + std::to_string(h) +
                                        " -> " + std::to_string(out_w) + "x" + std::to_string(out_h));
  }
}

}  // namespace

void resize_bicubic_region(const uint8_t* src, int h, int w, int out_h, int out_w, const Box& box, uint8_t* dst) {
  check_sizes(h, w, out_h, out_w);
  const int x0 = box.x0, x1 = box.x1, y0 = box.y0, y1 = box.y1;
  if (x0 < 0 || y0 < 0 || x1 > out_w || y1 > out_h || x0 >= x1 || y0 >= y1) {
    throw Error(Error::Kind::input, "resize: region [" + std::to_string(x0) + ", " + std::to_string(x1) + ") x [" +
                                        std::to_string(y0) + ", " + std::to_string(y1) + ") is not inside " +
                                        std::to_string(out_w) + "x" + std::to_string(out_h));
  }
  const size_t stride = static_cast<size_t>(w) * 3, out_row = static_cast<size_t>(x1 - x0) * 3;
  const bool need_h = out_w != w, need_v = out_h != h;
  if (!need_h && !need_v) {
    for (int y = y0; y < y1; ++y) {
      std::memcpy(dst + static_cast<size_t>(y - y0) * out_row, src + y * stride + static_cast<size_t>(x0) * 3, out_row);
    }
    return;
  }
  if (!need_v) {
    pass_horizontal(src + y0 * stride, stride, y1 - y0, 0, coefficients(w, out_w), x0, x1, dst, out_row);
    return;
  }
  const Coefficients cv = coefficients(h, out_h);
  if (!need_h) {
    pass_vertical(src + static_cast<size_t>(x0) * 3, stride, 0, out_row, cv, y0, y1, dst, out_row);
    return;
  }
  const Coefficients ch = coefficients(w, out_w);
  if (horizontal_first(h, w, out_h, out_w)) {
    // the input rows the wanted output rows read, only the wanted columns
    const auto [r0, r1] = span(cv, y0, y1);
    std::vector<uint8_t> tmp(static_cast<size_t>(r1 - r0) * out_row);
    pass_horizontal(src + r0 * stride, stride, r1 - r0, 0, ch, x0, x1, tmp.data(), out_row);
    pass_vertical(tmp.data(), out_row, r0, out_row, cv, y0, y1, dst, out_row);
  } else {
    // the wanted output rows, only the input columns the wanted output columns read
    const auto [c0, c1] = span(ch, x0, x1);
    const size_t tmp_row = static_cast<size_t>(c1 - c0) * 3;
    std::vector<uint8_t> tmp(static_cast<size_t>(y1 - y0) * tmp_row);
    pass_vertical(src + static_cast<size_t>(c0) * 3, stride, 0, tmp_row, cv, y0, y1, tmp.data(), tmp_row);
    pass_horizontal(tmp.data(), tmp_row, y1 - y0, c0, ch, x0, x1, dst, out_row);
  }
}

namespace detail {
void set_resize_generic_only(bool generic_only) { g_generic_only.store(generic_only, std::memory_order_relaxed); }

bool resize_uses_avx2() { return use_avx2(); }
}  // namespace detail

void resize_bicubic(const uint8_t* src, int h, int w, uint8_t* dst, int out_h, int out_w) {
  resize_bicubic_region(src, h, w, out_h, out_w, Box{0, 0, out_w, out_h}, dst);
}

void resized_size(int w, int h, int shorter, int* out_w, int* out_h) {
  // int(shorter * long / short) in float64, as Python computes it
  if (w <= h) {
    *out_w = shorter;
    *out_h = static_cast<int>(static_cast<double>(shorter) * h / w);
  } else {
    *out_w = static_cast<int>(static_cast<double>(shorter) * w / h);
    *out_h = shorter;
  }
}

std::vector<uint8_t> preprocess(const uint8_t* rgb, int h, int w, int resize, int size, int crops) {
  if (crops != 1 && crops != 3) throw Error(Error::Kind::input, "crops must be 1 or 3, got " + std::to_string(crops));
  if (h < 1 || w < 1 || resize < 1 || size < 1) {
    throw Error(Error::Kind::input, "preprocess: frame " + std::to_string(w) + "x" + std::to_string(h) +
                                        ", resize " + std::to_string(resize) + ", size " + std::to_string(size) +
                                        " must all be >= 1");
  }
  int rw = 0, rh = 0;
  resized_size(w, h, resize, &rw, &rh);
  if (rw < size || rh < size) {
    throw Error(Error::Kind::input, "preprocess: resized frame " + std::to_string(rw) + "x" + std::to_string(rh) +
                                        " is smaller than the crop size " + std::to_string(size));
  }
  int xs[3], ys[3];
  if (crops == 1) {
    // Python round() of (W - size) / 2: halves go to even
    auto round_half_even = [](int twice) { return (twice / 2) + ((twice % 2) && ((twice / 2) % 2) ? 1 : 0); };
    xs[0] = round_half_even(rw - size);
    ys[0] = round_half_even(rh - size);
  } else {
    const int ws = (rw - size) / 4, hs = (rh - size) / 4;
    xs[0] = 0, ys[0] = 2 * hs;
    xs[1] = 4 * ws, ys[1] = 2 * hs;
    xs[2] = 2 * ws, ys[2] = 2 * hs;
  }
  // Only the part of the resized frame that the crops cover is computed (each of its pixels exactly as in the whole
  // resized frame: same coefficients, same pass order, same 8-bit intermediate).
  Box box{xs[0], ys[0], xs[0] + size, ys[0] + size};
  for (int v = 1; v < crops; ++v) {
    box.x0 = std::min(box.x0, xs[v]), box.y0 = std::min(box.y0, ys[v]);
    box.x1 = std::max(box.x1, xs[v] + size), box.y1 = std::max(box.y1, ys[v] + size);
  }
  const int bw = box.x1 - box.x0;
  std::vector<uint8_t> resized(static_cast<size_t>(box.y1 - box.y0) * bw * 3);
  resize_bicubic_region(rgb, h, w, rh, rw, box, resized.data());
  std::vector<uint8_t> out(static_cast<size_t>(crops) * size * size * 3);
  const size_t row_bytes = static_cast<size_t>(size) * 3;
  for (int v = 0; v < crops; ++v) {
    for (int y = 0; y < size; ++y) {
      const uint8_t* from =
          resized.data() + ((static_cast<size_t>(ys[v] - box.y0) + y) * bw + (xs[v] - box.x0)) * 3;
      std::memcpy(out.data() + (static_cast<size_t>(v) * size + y) * row_bytes, from, row_bytes);
    }
  }
  return out;
}

}  // namespace vtc::rules
