// Pillow-identical (bit-exact) bicubic resizing, written from the resampling definition, and the Text4Vis
// test-time preprocessing exactly as vtc_deploy/preprocess.py does it.
//
// Resampling: separable convolution with the bicubic kernel (a = -0.5), the kernel support stretched by the
// downscale factor, weights normalised per output pixel then turned into 22-bit fixed point (rounded half away
// from zero), accumulation in 32-bit integers with a rounding offset, results clamped to 0..255 after each pass
// (the intermediate image is 8-bit). Pillow 13 chooses which pass runs first (python-pillow/Pillow#9549); the rule
// used here was found by testing against Pillow and is documented in resize.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "error.h"

namespace vtc::rules {

// src: uint8 RGB [h, w, 3]; dst: [out_h, out_w, 3]; same result as PIL Image.resize((out_w, out_h), BICUBIC).
void resize_bicubic(const uint8_t* src, int h, int w, uint8_t* dst, int out_h, int out_w);

// Output pixels [x0, x1) x [y0, y1) of a resize.
struct Box {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Only `box` of resize_bicubic's output, into dst [y1 - y0, x1 - x0, 3]: every pixel equal to the whole resize's
// (the same coefficients, pass order and 8-bit intermediate; only the inputs and intermediate pixels that box
// reads are computed). Throws Error(input) for bad sizes or a box outside [0, out_w) x [0, out_h).
void resize_bicubic_region(const uint8_t* src, int h, int w, int out_h, int out_w, const Box& box, uint8_t* dst);

namespace detail {
// For tests: run the baseline-ISA passes even where the AVX2 ones would be chosen (process-wide), and whether the
// AVX2 ones are in use now (x86-64 CPUs with AVX2; never elsewhere).
void set_resize_generic_only(bool generic_only);
bool resize_uses_avx2();
}  // namespace detail

// torchvision Resize(shorter) output size: shorter side = `shorter`, longer = int(shorter * long / short).
void resized_size(int w, int h, int shorter, int* out_w, int* out_h);

// Shorter side to `resize`, then `crops` (1: centre, 3: left, right, centre as Text4Vis) of `size` x `size`:
// uint8 [crops, size, size, 3]. Throws Error(input) for sizes that cannot be cropped or crops not in {1, 3}.
std::vector<uint8_t> preprocess(const uint8_t* rgb, int h, int w, int resize, int size, int crops);

}  // namespace vtc::rules
