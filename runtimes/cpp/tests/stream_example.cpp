// The README's streaming loop with the C++ header (vtc::Classifier, vtc::Stream): frames from "your own decoder" --
// here a raw file of uint8 RGB frames [N, H, W, 3] -- pushed one by one; every completed window printed as one JSON
// line. tests/test_cpp_run.py compares the windows with vtc_deploy.streaming on the same frames.
//   vtc_stream_example MODEL_DIR FRAMES.rgb N H W WINDOW STRIDE FPS
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "vtc/vtc.hpp"

int main(int argc, char** argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: %s MODEL_DIR FRAMES.rgb N H W WINDOW STRIDE FPS\n", argv[0]);
    return 2;
  }
  const int n = std::atoi(argv[3]), h = std::atoi(argv[4]), w = std::atoi(argv[5]);
  const double fps = std::atof(argv[8]);
  std::ifstream in(argv[2], std::ios::binary);
  std::vector<uint8_t> frame(static_cast<size_t>(h) * w * 3);
  try {
    vtc::Options options;
    options.threads = 1;
    vtc::Classifier clf(argv[1], options);
    vtc::Stream stream(clf, std::atoi(argv[6]), std::atoi(argv[7]), /*topk*/ 5, fps, "raw");
    for (int i = 0; i < n && in.read(reinterpret_cast<char*>(frame.data()), static_cast<std::streamsize>(frame.size()));
         ++i) {
      for (const vtc_result& win : stream.push(frame.data(), h, w, i / fps)) {
        std::printf("{\"start\": %lld, \"end\": %lld, \"start_pts\": %.6f, \"end_pts\": %.6f, \"topk\": [",
                    static_cast<long long>(win.start_frame), static_cast<long long>(win.end_frame), win.start_pts,
                    win.end_pts);
        for (size_t k = 0; k < win.num_topk; ++k) std::printf("%s%d", k ? ", " : "", win.topk[k].index);
        std::printf("], \"logits\": [");
        for (size_t c = 0; c < win.num_classes; ++c) std::printf("%s%.9g", c ? ", " : "", win.logits[c]);
        std::printf("]}\n");
      }
    }
    std::printf("{\"encoded\": %lld}\n", static_cast<long long>(stream.frames_encoded()));
  } catch (const vtc::Exception& e) {
    std::fprintf(stderr, "error %d: %s\n", e.status(), e.what());
    return 1;
  }
  return 0;
}
