// Pillow-identical bicubic resampling, written from the definition of separable convolution resampling, and the
// Text4Vis preprocessing of vtc_deploy/preprocess.py.
//
// One pass (horizontal or vertical) maps an axis of length `in` to `out`:
//   scale = in / out; filterscale = max(scale, 1); support = 2 * filterscale (bicubic kernel support 2)
//   output sample i has centre c = (i + 0.5) * scale; it reads inputs j in [int(c - support + 0.5),
//   int(c + support + 0.5)) clipped to [0, in), with weights K((j - c + 0.5) / filterscale) normalised to sum 1,
//   K the bicubic kernel with a = -0.5. Weights become fixed point with 22 fractional bits (rounded half away from
//   zero); a sample is (sum w_j * x_j + 2^21) >> 22 clamped to 0..255. The image between the passes is 8-bit.
// Pass order: see `horizontal_first` below.
#include "resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

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

// [h, w, 3] -> [h, out_w, 3]
void pass_horizontal(const uint8_t* src, int h, int w, uint8_t* dst, int out_w) {
  const Coefficients c = coefficients(w, out_w);
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = src + static_cast<size_t>(y) * w * 3;
    uint8_t* orow = dst + static_cast<size_t>(y) * out_w * 3;
    for (int x = 0; x < out_w; ++x) {
      const int32_t* k = &c.weights[static_cast<size_t>(x) * c.ksize];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      const uint8_t* p = row + static_cast<size_t>(c.first[x]) * 3;
      for (int j = 0; j < c.count[x]; ++j) {
        s0 += p[3 * j] * k[j];
        s1 += p[3 * j + 1] * k[j];
        s2 += p[3 * j + 2] * k[j];
      }
      orow[3 * x] = clamp8(s0);
      orow[3 * x + 1] = clamp8(s1);
      orow[3 * x + 2] = clamp8(s2);
    }
  }
}

// [h, w, 3] -> [out_h, w, 3]
void pass_vertical(const uint8_t* src, int h, int w, uint8_t* dst, int out_h) {
  const Coefficients c = coefficients(h, out_h);
  const size_t stride = static_cast<size_t>(w) * 3;
  std::vector<int32_t> acc(stride);
  for (int y = 0; y < out_h; ++y) {
    const int32_t* k = &c.weights[static_cast<size_t>(y) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int j = 0; j < c.count[y]; ++j) {
      const uint8_t* row = src + (static_cast<size_t>(c.first[y]) + j) * stride;
      const int32_t kj = k[j];
      for (size_t i = 0; i < stride; ++i) acc[i] += row[i] * kj;
    }
    uint8_t* orow = dst + static_cast<size_t>(y) * stride;
    for (size_t i = 0; i < stride; ++i) orow[i] = clamp8(acc[i]);
  }
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

}  // namespace

void resize_bicubic(const uint8_t* src, int h, int w, uint8_t* dst, int out_h, int out_w) {
  if (h < 1 || w < 1 || out_h < 1 || out_w < 1) {
    throw Error(Error::Kind::input, "resize: sizes must be >= 1, got " + std::to_string(w) + "x" + std::to_string(h) +
                                        " -> " + std::to_string(out_w) + "x" + std::to_string(out_h));
  }
  const bool need_h = out_w != w, need_v = out_h != h;
  if (!need_h && !need_v) {
    std::memcpy(dst, src, static_cast<size_t>(h) * w * 3);
    return;
  }
  if (need_h && !need_v) return pass_horizontal(src, h, w, dst, out_w);
  if (need_v && !need_h) return pass_vertical(src, h, w, dst, out_h);
  if (horizontal_first(h, w, out_h, out_w)) {
    std::vector<uint8_t> tmp(static_cast<size_t>(h) * out_w * 3);
    pass_horizontal(src, h, w, tmp.data(), out_w);
    pass_vertical(tmp.data(), h, out_w, dst, out_h);
  } else {
    std::vector<uint8_t> tmp(static_cast<size_t>(out_h) * w * 3);
    pass_vertical(src, h, w, tmp.data(), out_h);
    pass_horizontal(tmp.data(), out_h, w, dst, out_w);
  }
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
  std::vector<uint8_t> resized(static_cast<size_t>(rh) * rw * 3);
  resize_bicubic(rgb, h, w, resized.data(), rh, rw);
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
  std::vector<uint8_t> out(static_cast<size_t>(crops) * size * size * 3);
  const size_t row_bytes = static_cast<size_t>(size) * 3;
  for (int v = 0; v < crops; ++v) {
    for (int y = 0; y < size; ++y) {
      const uint8_t* from = resized.data() + ((static_cast<size_t>(ys[v]) + y) * rw + xs[v]) * 3;
      std::memcpy(out.data() + (static_cast<size_t>(v) * size + y) * row_bytes, from, row_bytes);
    }
  }
  return out;
}

}  // namespace vtc::rules
