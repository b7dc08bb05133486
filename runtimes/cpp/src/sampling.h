// Text4Vis test-time frame sampling, exactly as vtc_deploy/sampling.py (uniform segment starts with multi-clip
// starts floor(linspace(0, n/T - 1, clips)), and dense 128-frame windows), tested index for index against it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vtc {

// int64 [clips, frames] row-major. Throws vtc::Error(VTC_ERR_ARGUMENT) for num_frames < 1, frames < 1, clips < 1.
std::vector<int64_t> uniform_indices(int64_t num_frames, int frames, int clips = 1);
std::vector<int64_t> dense_indices(int64_t num_frames, int frames, int clips = 1, int window = 128);
// `rule` is "uniform" or "dense".
std::vector<int64_t> sample_indices(const std::string& rule, int64_t num_frames, int frames, int clips, int window);

}  // namespace vtc
