// libvtc for C++: RAII types over the C API (vtc.h), header-only. A failed call throws vtc::Exception (status +
// message) in your code; the library itself never throws across its C boundary.
//
//   vtc::Classifier clf("artifacts/k400");                       // vtc_open ... vtc_close
//   for (const vtc_result& r : clf.classify({"a.mp4"}))          // vtc::Results frees itself
//     if (!r.error) std::printf("%s %.3f\n", r.topk[0].label, r.topk[0].prob);
//
// Thread safety and ownership are those of vtc.h: a Classifier may be shared by threads; a Stream may not.
#ifndef VTC_VTC_HPP
#define VTC_VTC_HPP

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "vtc/vtc.h"

namespace vtc {

class Exception : public std::runtime_error {
 public:
  Exception(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const noexcept { return status_; }

 private:
  int status_;
};

inline void check(int status, const char* message) {
  if (status != VTC_OK) throw Exception(status, message != nullptr && *message ? message : vtc_status_name(status));
}

// An owned array of results (vtc_results_free on destruction). Iterable; results[i] is a vtc_result.
class Results {
 public:
  Results() = default;
  Results(vtc_result* data, size_t n) : data_(data), n_(n) {}
  Results(Results&& other) noexcept : data_(std::exchange(other.data_, nullptr)), n_(std::exchange(other.n_, 0)) {}
  Results& operator=(Results&& other) noexcept {
    if (this != &other) {
      vtc_results_free(data_, n_);
      data_ = std::exchange(other.data_, nullptr);
      n_ = std::exchange(other.n_, 0);
    }
    return *this;
  }
  Results(const Results&) = delete;
  Results& operator=(const Results&) = delete;
  ~Results() { vtc_results_free(data_, n_); }

  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const vtc_result& operator[](size_t i) const { return data_[i]; }
  const vtc_result* begin() const { return data_; }
  const vtc_result* end() const { return data_ + n_; }

 private:
  vtc_result* data_ = nullptr;
  size_t n_ = 0;
};

struct RunOptions {
  int topk = 5;
  int clips = 0;  // 0: the manifest's default
  int crops = 0;
  vtc_run_options c() const {
    vtc_run_options o;
    vtc_run_options_init(&o);
    o.topk = topk;
    o.clips = clips;
    o.crops = crops;
    return o;
  }
};

struct Options {
  int threads = 0;
  int batch = 4;
  int decode_threads = 2;
  std::string provider = "cpu";
  std::vector<std::pair<std::string, std::string>> provider_options;
  bool check_hash = true;
  bool low_memory = false;  // vtc_options.low_memory
};

class Stream;

class Classifier {
 public:
  explicit Classifier(const std::string& artifact_dir, const Options& options = Options()) {
    vtc_options o;
    vtc_options_init(&o);
    o.threads = options.threads;
    o.batch = options.batch;
    o.decode_threads = options.decode_threads;
    o.provider = options.provider.c_str();
    std::vector<const char*> keys, values;
    for (const auto& kv : options.provider_options) {
      keys.push_back(kv.first.c_str());
      values.push_back(kv.second.c_str());
    }
    o.provider_option_keys = keys.data();
    o.provider_option_values = values.data();
    o.num_provider_options = keys.size();
    o.check_hash = options.check_hash ? 1 : 0;
    o.low_memory = options.low_memory ? 1 : 0;
    const int status = vtc_open(artifact_dir.c_str(), &o, &handle_);  // (the message is read after the call)
    check(status, vtc_last_error());
  }
  Classifier(Classifier&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Classifier& operator=(Classifier&& other) noexcept {
    if (this != &other) {
      vtc_close(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;
  ~Classifier() { vtc_close(handle_); }

  vtc_classifier* get() const { return handle_; }

  vtc_info info() const {
    vtc_info i;
    i.size = sizeof i;
    call(vtc_get_info(handle_, &i));
    return i;
  }
  std::vector<std::string> classes() const {
    std::vector<std::string> out;
    const size_t n = info().num_classes;
    for (size_t i = 0; i < n; ++i) {
      const char* label = nullptr;
      call(vtc_class_name(handle_, i, &label));
      out.emplace_back(label);
    }
    return out;
  }

  Results classify(const std::vector<std::string>& paths, const RunOptions& run = RunOptions()) const {
    std::vector<const char*> p;
    for (const auto& s : paths) p.push_back(s.c_str());
    const vtc_run_options o = run.c();
    vtc_result* r = nullptr;
    call(vtc_classify_files(handle_, p.data(), p.size(), &o, &r));
    return Results(r, paths.size());
  }
  // Each result as soon as it (and all before it) is complete; `r` is valid only during the call.
  void classify(const std::vector<std::string>& paths, const RunOptions& run,
                const std::function<void(const vtc_result& r, size_t index)>& on_result) const {
    std::vector<const char*> p;
    for (const auto& s : paths) p.push_back(s.c_str());
    const vtc_run_options o = run.c();
    auto trampoline = [](const vtc_result* r, size_t index, void* user) {
      (*static_cast<const std::function<void(const vtc_result&, size_t)>*>(user))(*r, index);
    };
    call(vtc_classify_files_cb(handle_, p.data(), p.size(), &o, trampoline,
                               const_cast<std::function<void(const vtc_result&, size_t)>*>(&on_result)));
  }
  // Frames your decoder produced: uint8 RGB [n, height, width, 3], C-contiguous.
  Results classify_frames(const uint8_t* rgb, int64_t n, int64_t height, int64_t width,
                          const RunOptions& run = RunOptions()) const {
    const int64_t shape[4] = {n, height, width, 3};
    const vtc_run_options o = run.c();
    vtc_result* r = nullptr;
    call(vtc_classify_frames(handle_, rgb, VTC_DTYPE_UINT8, shape, 4, &o, &r));
    return Results(r, 1);
  }
  std::vector<float> embed_frames(const uint8_t* rgb, int64_t n, int64_t height, int64_t width,
                                  const RunOptions& run = RunOptions()) const {
    const int64_t shape[4] = {n, height, width, 3};
    const vtc_run_options o = run.c();
    std::vector<float> e(static_cast<size_t>(info().embed_dim));
    call(vtc_embed_frames(handle_, rgb, VTC_DTYPE_UINT8, shape, 4, &o, e.data(), e.size()));
    return e;
  }
  void set_classes(const std::vector<std::string>& names, const std::vector<std::string>& templates = {}) {
    std::vector<const char*> n, t;
    for (const auto& s : names) n.push_back(s.c_str());
    for (const auto& s : templates) t.push_back(s.c_str());
    call(vtc_set_classes(handle_, n.data(), n.size(), t.data(), t.size()));
  }
  void set_classes_from(const std::string& source, const std::vector<std::string>& templates = {}) {
    std::vector<const char*> t;
    for (const auto& s : templates) t.push_back(s.c_str());
    call(vtc_set_classes_from(handle_, source.c_str(), t.data(), t.size()));
  }
  // The timeline of a file, pipe ("-") or URL; window/stride "16" (frames) or "2s"; stride "" = window / 4.
  void classify_stream(const std::string& source, const std::string& window, const std::string& stride, int topk,
                       const std::function<void(const vtc_result& r)>& on_window, int live = -1) const {
    auto trampoline = [](const vtc_result* r, size_t, void* user) {
      (*static_cast<const std::function<void(const vtc_result&)>*>(user))(*r);
    };
    call(vtc_classify_stream(handle_, source.c_str(), window.c_str(), stride.c_str(), topk, live, trampoline,
                             const_cast<std::function<void(const vtc_result&)>*>(&on_window)));
  }

 private:
  void call(int status) const { check(status, vtc_errmsg(handle_)); }
  vtc_classifier* handle_ = nullptr;
};

// A sliding-window session over frames you push (one thread at a time).
class Stream {
 public:
  Stream(const Classifier& clf, int window, int stride, int topk = 5, double fps = 0, const std::string& name = "") {
    const int status =
        vtc_stream_open(clf.get(), window, stride, topk, fps, name.empty() ? nullptr : name.c_str(), &handle_);
    check(status, vtc_errmsg(clf.get()));
  }
  Stream(Stream&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { vtc_stream_close(handle_); }

  // uint8 RGB [height, width, 3]; returns the windows this frame completes.
  Results push(const uint8_t* rgb, int height, int width, double pts_seconds) {
    vtc_result* r = nullptr;
    size_t n = 0;
    const int status = vtc_stream_push(handle_, rgb, height, width, pts_seconds, &r, &n);
    check(status, vtc_stream_errmsg(handle_));
    return Results(r, n);
  }
  int64_t frames_encoded() const {
    int64_t pushed = 0, encoded = 0;
    const int status = vtc_stream_counts(handle_, &pushed, &encoded);
    check(status, vtc_stream_errmsg(handle_));
    return encoded;
  }

 private:
  vtc_stream* handle_ = nullptr;
};

}  // namespace vtc

#endif  // VTC_VTC_HPP
