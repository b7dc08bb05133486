// vtc-run: classify videos (or sliding windows of streams) with a vtc-deploy artifact from C++, printing exactly the
// objects of `vtc-deploy run --json`. Uses only the public C++ header (vtc/vtc.hpp); decoding runs on
// --workers threads ahead of inference (streams: on a thread of its own).
//
//   vtc-run --model DIR [--json] [--topk K] [--clips N] [--crops 1|3] [--batch B] [--threads N] [--workers N]
//           [--provider cpu|cuda|tensorrt|auto] [--low-memory] [--classes FILE|NAME] [--templates T]...
//           [--window W [--stride S]] VIDEO...
// Inputs: files, directories (their video files, recursively, sorted) and @list.txt. Exit 1 when any input failed,
// 2 for a usage error.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "pyjson.h"
#include "vtc/vtc.hpp"

namespace {

const char* kUsage =
    "usage: vtc-run --model DIR [--json] [--topk K] [--clips N] [--crops 1|3] [--batch B] [--threads N]\n"
    "               [--workers N] [--provider cpu|cuda|tensorrt|auto] [--low-memory] [--classes FILE|NAME]\n"
    "               [--templates T]... [--window W [--stride S]] [--timing] VIDEO...\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "%svtc-run: error: %s\n", kUsage, message.c_str());
  std::exit(2);
}

int to_int(const std::string& option, const std::string& value, int lo) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno != 0 || v < lo || v > 1000000) {
    usage_error("invalid value for " + option + ": '" + value + "' (an integer >= " + std::to_string(lo) + ")");
  }
  return static_cast<int>(v);
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool has_video_extension(const std::string& name) {
  static const char* const kExt[] = {".mp4", ".avi", ".mkv", ".mov",  ".webm", ".m4v",
                                     ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",  ".ts"};
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* e : kExt) {
    if (ext == e) return true;
  }
  return false;
}

void walk(const std::string& dir, std::vector<std::string>* out) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = dir + "/" + name;
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      walk(path, out);
    } else if (S_ISREG(st.st_mode) && has_video_extension(name)) {
      out->push_back(path);
    }
  }
  closedir(d);
}

// inputs.expand_inputs
std::vector<std::string> expand_inputs(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    if (!item.empty() && item[0] == '@') {
      const std::string list = item.substr(1);
      std::ifstream in(list);
      if (!in) throw vtc::Exception(VTC_ERR_ARGUMENT, list + ": cannot read the video list");
      const size_t slash = list.rfind('/');
      const std::string parent = slash == std::string::npos ? "" : list.substr(0, slash + 1);
      std::string line;
      while (std::getline(in, line)) {
        const size_t a = line.find_first_not_of(" \t\r\n");
        if (a == std::string::npos) continue;
        line = line.substr(a, line.find_last_not_of(" \t\r\n") - a + 1);
        if (line[0] == '#') continue;
        out.push_back(line[0] == '/' ? line : parent + line);
      }
    } else if (is_dir(item)) {
      std::vector<std::string> found;
      std::string root = item;
      while (root.size() > 1 && root.back() == '/') root.pop_back();
      walk(root, &found);
      if (found.empty()) throw vtc::Exception(VTC_ERR_ARGUMENT, item + ": no video files in the directory");
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else {
      out.push_back(item);
    }
  }
  return out;
}

std::string topk_json(const vtc_result& r) {
  std::string s = "[";
  for (size_t i = 0; i < r.num_topk; ++i) {
    const vtc_prediction& p = r.topk[i];
    s += (i ? ", " : "");
    s += "{\"index\": " + std::to_string(p.index) + ", \"label\": " + vtc::pyjson::string(p.label) +
         ", \"logit\": " + vtc::pyjson::number(static_cast<double>(p.logit)) +
         ", \"prob\": " + vtc::pyjson::number(p.prob) + "}";
  }
  return s + "]";
}

std::string error_json(const vtc_result& r) {
  return r.status == VTC_OK ? "null" : vtc::pyjson::string(r.error != nullptr ? r.error : "error");
}

void print_video(const vtc_result& r, bool as_json) {
  if (as_json) {
    std::printf("{\"video\": %s, \"topk\": %s, \"error\": %s}\n", vtc::pyjson::string(r.video).c_str(),
                topk_json(r).c_str(), error_json(r).c_str());
  } else if (r.status != VTC_OK) {
    std::printf("%s: error: %s\n", r.video, r.error);
  } else {
    size_t width = 0;
    for (size_t i = 0; i < r.num_topk; ++i) width = std::max(width, std::strlen(r.topk[i].label));
    std::printf("%s\n", r.video);
    for (size_t i = 0; i < r.num_topk; ++i) {
      std::printf("  %zu. %-*s  %5.1f%%  (logit %.2f)\n", i + 1, static_cast<int>(width), r.topk[i].label,
                  100.0 * r.topk[i].prob, static_cast<double>(r.topk[i].logit));
    }
  }
  std::fflush(stdout);
}

void print_window(const vtc_result& r, bool as_json) {
  if (as_json) {
    std::string window = "null";
    if (r.status == VTC_OK) {
      window = "{\"start_frame\": " + std::to_string(r.start_frame) + ", \"end_frame\": " + std::to_string(r.end_frame);
      if (!std::isnan(r.start_s)) {
        window += ", \"start_s\": " + vtc::pyjson::number(vtc::pyjson::round3(r.start_s)) +
                  ", \"end_s\": " + vtc::pyjson::number(vtc::pyjson::round3(r.end_s));
      }
      window += "}";
    }
    std::printf("{\"video\": %s, \"window\": %s, \"topk\": %s, \"error\": %s}\n", vtc::pyjson::string(r.video).c_str(),
                window.c_str(), topk_json(r).c_str(), error_json(r).c_str());
  } else if (r.status != VTC_OK) {
    std::printf("%s: error: %s\n", r.video, r.error);
  } else {
    std::string span;
    char buf[128];
    if (!std::isnan(r.start_s)) {
      std::snprintf(buf, sizeof buf, "%.2fs-%.2fs", r.start_s, r.end_s);
    } else {
      std::snprintf(buf, sizeof buf, "frames %lld-%lld", static_cast<long long>(r.start_frame),
                    static_cast<long long>(r.end_frame));
    }
    std::printf("%s [%s]", r.video, buf);
    for (size_t i = 0; i < r.num_topk; ++i) {
      std::printf("%s %s %.0f%%", i ? "," : "", r.topk[i].label, 100.0 * r.topk[i].prob);
    }
    std::printf("\n");
  }
  std::fflush(stdout);
}

// Peak resident set so far (VmHWM of /proc/self/status) in MB, -1 where unknown: the --timing report.
long peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10) / 1024;
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  // ONNX Runtime's telemetry off for this process before anything loads it, unless the user chose
  // (ORT_DISABLE_TELEMETRY already set): the same rule as vtc-deploy (README, "ONNX Runtime telemetry").
  setenv("ORT_DISABLE_TELEMETRY", "1", 0);
  std::string model, classes, window, stride, provider = "cpu";
  std::vector<std::string> templates, inputs;
  bool as_json = false, timing = false;
  vtc::RunOptions run;
  vtc::Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error("option " + a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::printf("%s", kUsage);
      return 0;
    } else if (a == "--model") {
      model = value();
    } else if (a == "--json") {
      as_json = true;
    } else if (a == "--timing") {  // benchmarks: seconds to open the model and to classify, peak RSS, on stderr
      timing = true;
    } else if (a == "--topk") {
      run.topk = to_int(a, value(), 1);
    } else if (a == "--clips") {
      run.clips = to_int(a, value(), 1);
    } else if (a == "--crops") {
      const std::string v = value();
      if (v != "1" && v != "3") usage_error("invalid value for --crops: '" + v + "' is not one of '1', '3'");
      run.crops = v == "1" ? 1 : 3;
    } else if (a == "--batch") {
      options.batch = to_int(a, value(), 1);
    } else if (a == "--threads") {
      options.threads = to_int(a, value(), 0);
    } else if (a == "--workers") {
      options.decode_threads = to_int(a, value(), 1);
    } else if (a == "--provider") {
      provider = value();
    } else if (a == "--low-memory") {  // no pre-packed weights: slower (vtc_options.low_memory)
      options.low_memory = true;
    } else if (a == "--classes") {
      classes = value();
    } else if (a == "--templates") {
      templates.push_back(value());
    } else if (a == "--window") {
      window = value();
    } else if (a == "--stride") {
      stride = value();
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      usage_error("no such option: " + a);
    } else {
      inputs.push_back(a);
    }
  }
  if (model.empty()) usage_error("missing option '--model'");
  if (inputs.empty()) usage_error("missing argument 'VIDEO...'");
  if (!stride.empty() && window.empty()) usage_error("--stride needs --window");
  options.provider = provider;

  int failed = 0;
  try {
    const auto t0 = std::chrono::steady_clock::now();
    vtc::Classifier clf(model, options);
    if (!classes.empty()) clf.set_classes_from(classes, templates);
    const auto t1 = std::chrono::steady_clock::now();
    const long open_hwm = peak_rss_mb();
    struct Report {
      bool on;
      std::chrono::steady_clock::time_point t0, t1;
      long open_hwm;
      ~Report() {
        if (!on) return;
        const auto t2 = std::chrono::steady_clock::now();
        std::fprintf(stderr, "vtc-run: timing: open %.3f s, classify %.3f s; peak RSS after open %ld MB, at the end %ld MB\n",
                     std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count(),
                     open_hwm, peak_rss_mb());
      }
    } report{timing, t0, t1, open_hwm};
    if (!window.empty()) {
      for (const auto& source : inputs) {
        clf.classify_stream(source, window, stride, run.topk, [&](const vtc_result& r) {
          failed += r.status != VTC_OK;
          print_window(r, as_json);
        });
      }
    } else {
      const std::vector<std::string> items = expand_inputs(inputs);
      clf.classify(items, run, [&](const vtc_result& r, size_t) {
        failed += r.status != VTC_OK;
        print_video(r, as_json);
      });
      if (failed) std::fprintf(stderr, "%d of %zu videos failed\n", failed, items.size());
    }
  } catch (const vtc::Exception& e) {
    std::fprintf(stderr, "vtc-run: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vtc-run: error: %s\n", e.what());
    return 1;
  }
  return failed ? 1 : 0;
}
