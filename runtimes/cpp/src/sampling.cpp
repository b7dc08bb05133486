// Sampling rules: see sampling.h. The float64 arithmetic follows numpy's, operation for operation:
// linspace(0, stop, num)[i] = i * (stop / (num - 1)) with the last element set to stop (and 0 * ... when the step is
// 0), floor, then start + tick * k truncated towards zero and taken modulo n (Python's non-negative modulo).
#include "sampling.h"

#include <cmath>

#include "error.h"

namespace vtc {
namespace {

void check(int64_t num_frames, int frames, int clips) {
  if (num_frames < 1) {
    throw Error(VTC_ERR_ARGUMENT, "cannot sample from a video with " + std::to_string(num_frames) + " frames");
  }
  if (frames < 1 || clips < 1) {
    throw Error(VTC_ERR_ARGUMENT, "frames (" + std::to_string(frames) + ") and clips (" + std::to_string(clips) +
                                      ") must be >= 1");
  }
}

int64_t py_mod(int64_t a, int64_t n) {
  int64_t r = a % n;
  return r < 0 ? r + n : r;
}

}  // namespace

std::vector<int64_t> uniform_indices(int64_t num_frames, int frames, int clips) {
  check(num_frames, frames, clips);
  const double tick = static_cast<double>(num_frames) / static_cast<double>(frames);
  const double stop = tick - 1.0;
  std::vector<int64_t> out(static_cast<size_t>(clips) * frames);
  for (int c = 0; c < clips; ++c) {
    double start;
    if (clips == 1) {
      start = 0.0;
    } else if (c == clips - 1) {
      start = stop;
    } else {
      const double step = stop / static_cast<double>(clips - 1);
      start = step == 0.0 ? (static_cast<double>(c) / static_cast<double>(clips - 1)) * stop
                          : static_cast<double>(c) * step;
    }
    start = std::floor(start);
    for (int k = 0; k < frames; ++k) {
      const double position = start + tick * static_cast<double>(k);
      out[static_cast<size_t>(c) * frames + k] = py_mod(static_cast<int64_t>(position), num_frames);
    }
  }
  return out;
}

std::vector<int64_t> dense_indices(int64_t num_frames, int frames, int clips, int window) {
  check(num_frames, frames, clips);
  const int64_t stride = std::max<int64_t>(1, window / frames);
  const int64_t sample_pos = std::max<int64_t>(0, num_frames - window);
  const int64_t step = clips == 1 ? 0 : sample_pos / (clips - 1);
  std::vector<int64_t> out(static_cast<size_t>(clips) * frames);
  for (int c = 0; c < clips; ++c) {
    for (int k = 0; k < frames; ++k) {
      out[static_cast<size_t>(c) * frames + k] = py_mod(c * step + k * stride, num_frames);
    }
  }
  return out;
}

std::vector<int64_t> sample_indices(const std::string& rule, int64_t num_frames, int frames, int clips, int window) {
  if (rule == "uniform") return uniform_indices(num_frames, frames, clips);
  if (rule == "dense") return dense_indices(num_frames, frames, clips, window);
  throw Error(VTC_ERR_ARGUMENT, "unknown sampling rule '" + rule + "'; allowed: uniform, dense");
}

}  // namespace vtc
