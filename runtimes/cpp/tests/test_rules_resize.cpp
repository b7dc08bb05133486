// Resize and preprocessing: properties that follow from the definition (bit-exactness against Pillow itself is
// tested from pytest, tests/test_cpp_rules.py).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "rules/resize.h"

namespace {

using vtc::rules::Error;

std::vector<uint8_t> random_image(int h, int w, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> img(static_cast<size_t>(h) * w * 3);
  for (auto& v : img) v = static_cast<uint8_t>(rng() & 0xFF);
  return img;
}

TEST(Resize, SameSizeIsACopy) {
  const auto img = random_image(17, 23, 1);
  std::vector<uint8_t> out(img.size());
  vtc::rules::resize_bicubic(img.data(), 17, 23, out.data(), 17, 23);
  EXPECT_EQ(out, img);
}

TEST(Resize, FlatImageStaysFlat) {
  // weights are normalised per output pixel, so a constant image stays exactly constant in both pass orders
  for (auto [h, w, oh, ow] : {std::array<int, 4>{40, 50, 20, 60}, {50, 40, 60, 20}, {300, 30, 40, 25},
                              {1080, 1920, 224, 398}}) {
    std::vector<uint8_t> img(static_cast<size_t>(h) * w * 3);
    for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<uint8_t>(i % 3 == 0 ? 200 : (i % 3 == 1 ? 7 : 128));
    std::vector<uint8_t> out(static_cast<size_t>(oh) * ow * 3);
    vtc::rules::resize_bicubic(img.data(), h, w, out.data(), oh, ow);
    for (size_t i = 0; i < out.size(); i += 3) {
      ASSERT_EQ(out[i], 200);
      ASSERT_EQ(out[i + 1], 7);
      ASSERT_EQ(out[i + 2], 128);
    }
  }
}

TEST(Resize, BicubicOvershootIsClamped) {
  // a sharp edge upscaled: the bicubic kernel's negative lobes overshoot; results stay within 0..255 and reach both
  const int h = 4, w = 8;
  std::vector<uint8_t> img(static_cast<size_t>(h) * w * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img[(static_cast<size_t>(y) * w + x) * 3 + c] = x < w / 2 ? 0 : 255;
  std::vector<uint8_t> out(static_cast<size_t>(h) * 32 * 3);
  vtc::rules::resize_bicubic(img.data(), h, w, out.data(), h, 32);
  EXPECT_EQ(out[0], 0);
  EXPECT_EQ(out[31 * 3], 255);
}

TEST(Resize, RejectsEmptySizes) {
  const auto img = random_image(4, 4, 2);
  std::vector<uint8_t> out(48);
  EXPECT_THROW(vtc::rules::resize_bicubic(img.data(), 4, 4, out.data(), 0, 4), Error);
}

TEST(Resize, RegionIsThatPartOfTheWholeResize) {
  // random boxes in both pass orders, up and down, single-axis and same-size resizes
  std::mt19937 rng(7);
  const std::array<int, 4> sizes[] = {{40, 50, 20, 60},  {50, 40, 60, 20},  {300, 30, 40, 25}, {30, 300, 25, 40},
                                      {144, 176, 224, 273}, {1920, 360, 1194, 224}, {37, 53, 37, 20}, {37, 53, 90, 53},
                                      {37, 53, 37, 53},  {270, 480, 224, 398}};
  for (const auto& [h, w, oh, ow] : sizes) {
    const auto img = random_image(h, w, static_cast<unsigned>(h * 1000 + w));
    std::vector<uint8_t> whole(static_cast<size_t>(oh) * ow * 3);
    vtc::rules::resize_bicubic(img.data(), h, w, whole.data(), oh, ow);
    for (int trial = 0; trial < 12; ++trial) {
      vtc::rules::Box box;
      box.x0 = static_cast<int>(rng() % ow), box.x1 = box.x0 + 1 + static_cast<int>(rng() % (ow - box.x0));
      box.y0 = static_cast<int>(rng() % oh), box.y1 = box.y0 + 1 + static_cast<int>(rng() % (oh - box.y0));
      if (trial == 0) box = {0, 0, ow, oh};
      const int bw = box.x1 - box.x0, bh = box.y1 - box.y0;
      std::vector<uint8_t> part(static_cast<size_t>(bh) * bw * 3);
      vtc::rules::resize_bicubic_region(img.data(), h, w, oh, ow, box, part.data());
      for (int y = 0; y < bh; ++y) {
        ASSERT_EQ(0, std::memcmp(&part[static_cast<size_t>(y) * bw * 3],
                                 &whole[(static_cast<size_t>(box.y0 + y) * ow + box.x0) * 3], static_cast<size_t>(bw) * 3))
            << w << "x" << h << " -> " << ow << "x" << oh << ", box x [" << box.x0 << ", " << box.x1 << ") y ["
            << box.y0 << ", " << box.y1 << "), row " << y;
      }
    }
  }
}

TEST(Resize, BaselineAndAvx2PassesGiveTheSameBytes) {
  if (!vtc::rules::detail::resize_uses_avx2()) GTEST_SKIP() << "this CPU runs the baseline passes only";
  for (const auto& [h, w, oh, ow] : {std::array<int, 4>{1080, 1920, 224, 398}, {1920, 360, 1194, 224},
                                     {144, 176, 224, 273}, {31, 77, 5, 300}, {300, 30, 40, 25}}) {
    const auto img = random_image(h, w, static_cast<unsigned>(h + w));
    std::vector<uint8_t> simd(static_cast<size_t>(oh) * ow * 3), generic(simd.size());
    vtc::rules::resize_bicubic(img.data(), h, w, simd.data(), oh, ow);
    vtc::rules::detail::set_resize_generic_only(true);
    EXPECT_FALSE(vtc::rules::detail::resize_uses_avx2());
    vtc::rules::resize_bicubic(img.data(), h, w, generic.data(), oh, ow);
    vtc::rules::detail::set_resize_generic_only(false);
    ASSERT_EQ(simd, generic) << w << "x" << h << " -> " << ow << "x" << oh;
  }
}

TEST(Resize, RegionOutsideTheOutputIsRefused) {
  const auto img = random_image(8, 8, 4);
  std::vector<uint8_t> out(8 * 8 * 3);
  for (const vtc::rules::Box& box : {vtc::rules::Box{0, 0, 5, 4}, vtc::rules::Box{-1, 0, 2, 2},
                                     vtc::rules::Box{2, 2, 2, 3}, vtc::rules::Box{0, 3, 4, 2}}) {
    EXPECT_THROW(vtc::rules::resize_bicubic_region(img.data(), 8, 8, 4, 4, box, out.data()), Error);
  }
}

TEST(Preprocess, ResizedSizeFollowsTorchvision) {
  int w = 0, h = 0;
  vtc::rules::resized_size(1920, 1080, 224, &w, &h);
  EXPECT_EQ(w, 398);
  EXPECT_EQ(h, 224);
  vtc::rules::resized_size(1080, 1920, 256, &w, &h);
  EXPECT_EQ(w, 256);
  EXPECT_EQ(h, 455);
  vtc::rules::resized_size(176, 144, 224, &w, &h);
  EXPECT_EQ(w, 273);  // int(224 * 176 / 144) = int(273.77...)
  EXPECT_EQ(h, 224);
}

TEST(Preprocess, ThreeCropsAreLeftRightCentreOfTheResizedFrame) {
  const int h = 144, w = 176, resize = 224, size = 224;
  const auto img = random_image(h, w, 3);
  int rw = 0, rh = 0;
  vtc::rules::resized_size(w, h, resize, &rw, &rh);
  std::vector<uint8_t> resized(static_cast<size_t>(rh) * rw * 3);
  vtc::rules::resize_bicubic(img.data(), h, w, resized.data(), rh, rw);
  const auto views = vtc::rules::preprocess(img.data(), h, w, resize, size, 3);
  ASSERT_EQ(views.size(), static_cast<size_t>(3) * size * size * 3);
  const int step = (rw - size) / 4;
  const int xs[3] = {0, 4 * step, 2 * step};
  for (int v = 0; v < 3; ++v) {
    for (int y = 0; y < size; y += 37) {
      for (int x = 0; x < size; x += 29) {
        for (int c = 0; c < 3; ++c) {
          ASSERT_EQ(views[((static_cast<size_t>(v) * size + y) * size + x) * 3 + c],
                    resized[(static_cast<size_t>(y) * rw + x + xs[v]) * 3 + c]);
        }
      }
    }
  }
  const auto centre = vtc::rules::preprocess(img.data(), h, w, resize, size, 1);
  // centre crop x = round((273 - 224) / 2) = round(24.5) = 24 (Python rounds half to even), y = 0
  for (int c = 0; c < 3; ++c) EXPECT_EQ(centre[c], resized[static_cast<size_t>(24) * 3 + c]);
}

TEST(Preprocess, RejectsBadArguments) {
  const auto img = random_image(10, 10, 4);
  EXPECT_THROW(vtc::rules::preprocess(img.data(), 10, 10, 224, 224, 2), Error);
  EXPECT_THROW(vtc::rules::preprocess(img.data(), 10, 10, 200, 224, 1), Error);
  try {
    vtc::rules::preprocess(img.data(), 10, 10, 224, 224, 5);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::input);
    EXPECT_STREQ(e.what(), "crops must be 1 or 3, got 5");
  }
}

}  // namespace
