// The C API (vtc.h): argument checks, the exception boundary (every entry point catches everything), per-thread
// error messages, and results as C structs owned by one allocation that vtc_results_free releases.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine.h"
#include "error.h"
#include "ort_session.h"
#include "rules/error.h"
#include "sampling.h"
#include "vtc/vtc.h"

struct vtc_classifier {
  std::unique_ptr<vtc::Engine> engine;
  std::string provider;
  std::string input_kind, sampling, precision, architecture;
  std::vector<std::shared_ptr<const vtc::ClassSet>> pinned;  // every class set a label was lent from, until close
  std::mutex mutex;
  std::atomic<int> open_streams{0};
};

struct vtc_stream {
  vtc_classifier* owner;
  std::unique_ptr<vtc::StreamSession> session;
};

namespace {

thread_local std::string t_last_error;
thread_local std::unordered_map<const void*, std::string> t_handle_errors;

int set_error(const void* handle, int status, const char* message) noexcept {
  try {
    t_last_error = message;
    if (handle != nullptr) t_handle_errors[handle] = message;
  } catch (...) {  // out of memory for the message itself: keep the status
  }
  return status;
}

void set_ok(const void* handle) noexcept {
  if (handle == nullptr) return;
  auto it = t_handle_errors.find(handle);
  if (it != t_handle_errors.end()) it->second.clear();
}

// Runs f(); maps every exception to a status and a one-line message.
template <class F>
int guard(const void* handle, const char* function, F&& f) noexcept {
  try {
    f();
    set_ok(handle);
    return VTC_OK;
  } catch (const vtc::Error& e) {
    return set_error(handle, e.status(), e.what());
  } catch (const vtc::rules::Error& e) {
    const int status = e.kind() == vtc::rules::Error::Kind::decode  ? VTC_ERR_DECODE
                       : e.kind() == vtc::rules::Error::Kind::input ? VTC_ERR_ARGUMENT
                                                                   : VTC_ERR_INTERNAL;
    return set_error(handle, status, vtc::Error::one_line(e.what()).c_str());
  } catch (const std::bad_alloc&) {
    return set_error(handle, VTC_ERR_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    try {
      return set_error(handle, VTC_ERR_INTERNAL,
                       (std::string(function) + ": unexpected error (" + vtc::Error::one_line(e.what()) + ")").c_str());
    } catch (...) {
      return set_error(handle, VTC_ERR_INTERNAL, "unexpected error");
    }
  } catch (...) {
    return set_error(handle, VTC_ERR_INTERNAL, "unexpected error of an unknown type");
  }
}

[[noreturn]] void argument(const std::string& message) { throw vtc::Error(VTC_ERR_ARGUMENT, message); }

// ---------------------------------------------------------------------------------------------- results

// One allocation per returned array: [Block*][vtc_result x n]; the Block owns every string and array.
struct Block {
  std::vector<vtc::Result> results;
  std::vector<std::vector<vtc_prediction>> predictions;
  size_t n = 0;
};

vtc_result* export_results(std::vector<vtc::Result>&& results) {
  const size_t n = results.size();
  if (n == 0) return nullptr;
  auto block = std::make_unique<Block>();
  block->results = std::move(results);
  block->n = n;
  block->predictions.resize(n);
  void* raw = ::operator new(sizeof(Block*) + n * sizeof(vtc_result));
  auto** head = static_cast<Block**>(raw);
  auto* out = reinterpret_cast<vtc_result*>(head + 1);
  for (size_t i = 0; i < n; ++i) {
    const vtc::Result& r = block->results[i];
    auto& preds = block->predictions[i];
    for (const auto& p : r.topk) preds.push_back({p.index, p.label.c_str(), p.logit, p.prob});
    vtc_result c{};
    c.video = r.video.c_str();
    c.status = r.status;
    c.error = r.status == VTC_OK ? nullptr : r.error.c_str();
    c.num_topk = preds.size();
    c.topk = preds.empty() ? nullptr : preds.data();
    c.num_classes = r.logits.size();
    c.logits = r.logits.empty() ? nullptr : r.logits.data();
    c.embed_dim = r.embedding.size();
    c.embedding = r.embedding.empty() ? nullptr : r.embedding.data();
    c.views = r.views;
    c.num_frames = r.num_frames;
    c.start_frame = r.start_frame;
    c.end_frame = r.end_frame;
    c.start_s = r.start_s;
    c.end_s = r.end_s;
    c.start_pts = r.start_pts;
    c.end_pts = r.end_pts;
    new (out + i) vtc_result(c);
  }
  *head = block.release();
  return out;
}

vtc::RunOptions run_options(const vtc_run_options* run) {
  vtc::RunOptions o;
  if (run == nullptr) return o;
  if (run->size < sizeof(vtc_run_options)) argument("vtc_run_options: call vtc_run_options_init first");
  o.topk = run->topk;
  o.clips = run->clips;
  o.crops = run->crops;
  if (o.topk < 1) argument("topk must be >= 1, got " + std::to_string(o.topk));
  if (o.clips < 0) argument("clips must be >= 1 (or 0 for the manifest's), got " + std::to_string(o.clips));
  if (o.crops != 0 && o.crops != 1 && o.crops != 3) argument("crops must be 1 or 3, got " + std::to_string(o.crops));
  return o;
}

// Checks a frames tensor: uint8 [N >= 1, H >= 1, W >= 1, 3], size within limits.
void check_frames(const void* data, int dtype, const int64_t* shape, int ndim, int64_t* n, int64_t* h, int64_t* w) {
  if (data == nullptr) argument("frames: data is NULL");
  if (shape == nullptr) argument("frames: shape is NULL");
  if (dtype != VTC_DTYPE_UINT8) {
    argument("frames must be uint8 [N, H, W, 3] RGB, got dtype " + std::string(dtype == VTC_DTYPE_FLOAT32 ? "float32"
                                                                              : dtype == VTC_DTYPE_INT64 ? "int64"
                                                                                                          : "unknown") +
             " (" + std::to_string(dtype) + ")");
  }
  std::string dims;
  for (int i = 0; i < ndim && i < 8; ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (ndim != 4 || shape[0] < 1 || shape[1] < 1 || shape[2] < 1 || shape[3] != 3) {
    argument("frames must be uint8 [N>=1, H, W, 3] RGB, got shape [" + dims + "]");
  }
  if (shape[1] * shape[2] > 8294400LL * 4 || shape[0] > (1LL << 20)) {
    argument("frames of shape [" + dims + "] exceed the limit (8K frames, 2^20 frames)");
  }
  *n = shape[0];
  *h = shape[1];
  *w = shape[2];
}

}  // namespace

extern "C" {

const char* vtc_version(void) { return "0.1.0"; }

const char* vtc_status_name(int status) {
  switch (status) {
    case VTC_OK:
      return "VTC_OK";
    case VTC_ERR_ARGUMENT:
      return "VTC_ERR_ARGUMENT";
    case VTC_ERR_ARTIFACT:
      return "VTC_ERR_ARTIFACT";
    case VTC_ERR_DECODE:
      return "VTC_ERR_DECODE";
    case VTC_ERR_BACKEND:
      return "VTC_ERR_BACKEND";
    case VTC_ERR_UNSUPPORTED:
      return "VTC_ERR_UNSUPPORTED";
    case VTC_ERR_LABELS:
      return "VTC_ERR_LABELS";
    case VTC_ERR_MEMORY:
      return "VTC_ERR_MEMORY";
    case VTC_ERR_INTERNAL:
      return "VTC_ERR_INTERNAL";
    default:
      return "VTC_ERR_UNKNOWN";
  }
}

const char* vtc_errmsg(const vtc_classifier* clf) {
  if (clf == nullptr) return t_last_error.c_str();
  auto it = t_handle_errors.find(clf);
  return it == t_handle_errors.end() ? "" : it->second.c_str();
}

const char* vtc_last_error(void) { return t_last_error.c_str(); }

const char* vtc_stream_errmsg(const vtc_stream* stream) {
  if (stream == nullptr) return t_last_error.c_str();
  auto it = t_handle_errors.find(stream);
  return it == t_handle_errors.end() ? "" : it->second.c_str();
}

void vtc_options_init(vtc_options* opts) {
  if (opts == nullptr) return;
  std::memset(opts, 0, sizeof *opts);
  opts->size = sizeof *opts;
  opts->threads = 0;
  opts->batch = 4;
  opts->decode_threads = 2;
  opts->provider = "cpu";
  opts->check_hash = 1;
}

void vtc_run_options_init(vtc_run_options* opts) {
  if (opts == nullptr) return;
  std::memset(opts, 0, sizeof *opts);
  opts->size = sizeof *opts;
  opts->topk = 5;
}

int vtc_open(const char* artifact_dir, const vtc_options* opts, vtc_classifier** out) {
  return guard(nullptr, "vtc_open", [&] {
    if (out == nullptr) argument("vtc_open: out is NULL");
    *out = nullptr;
    if (artifact_dir == nullptr) argument("vtc_open: artifact_dir is NULL");
    vtc::EngineOptions o;
    if (opts != nullptr) {
      if (opts->size < sizeof(vtc_options)) argument("vtc_options: call vtc_options_init first");
      o.threads = opts->threads;
      o.batch = opts->batch;
      o.decode_threads = opts->decode_threads;
      o.provider = opts->provider != nullptr ? opts->provider : "cpu";
      if (opts->num_provider_options > 0 &&
          (opts->provider_option_keys == nullptr || opts->provider_option_values == nullptr)) {
        argument("vtc_options: provider option keys/values are NULL");
      }
      for (size_t i = 0; i < opts->num_provider_options; ++i) {
        if (opts->provider_option_keys[i] == nullptr || opts->provider_option_values[i] == nullptr) {
          argument("vtc_options: provider option " + std::to_string(i) + " is NULL");
        }
        o.provider_options.emplace_back(opts->provider_option_keys[i], opts->provider_option_values[i]);
      }
      o.check_hash = opts->check_hash != 0;
      o.low_memory = opts->low_memory != 0;
    }
    auto handle = std::make_unique<vtc_classifier>();
    handle->engine = std::make_unique<vtc::Engine>(artifact_dir, o);
    const auto& m = handle->engine->manifest();
    handle->input_kind = m.input.kind;
    handle->sampling = m.sampling_rule;
    handle->precision = m.precision;
    handle->architecture = m.architecture;
    *out = handle.release();
  });
}

int vtc_close(vtc_classifier* clf) {
  if (clf == nullptr) return VTC_OK;
  if (const int open = clf->open_streams.load(); open > 0) {  // as sqlite3_close with unfinalized statements
    return set_error(clf, VTC_ERR_ARGUMENT,
                     ("vtc_close: " + std::to_string(open) + " stream(s) still open; vtc_stream_close them first")
                         .c_str());
  }
  t_handle_errors.erase(clf);
  delete clf;
  return VTC_OK;
}

int vtc_get_info(vtc_classifier* clf, vtc_info* info) {
  return guard(clf, "vtc_get_info", [&] {
    if (clf == nullptr) argument("vtc_get_info: clf is NULL");
    if (info == nullptr) argument("vtc_get_info: info is NULL");
    const auto& m = clf->engine->manifest();
    vtc_info i{};
    i.size = sizeof i;
    i.frames = m.frames;
    i.input_size = m.input.size;
    i.input_resize = m.input.resize;
    i.input_kind = clf->input_kind.c_str();
    i.embed_dim = m.embed_dim;
    i.num_classes = clf->engine->classes()->names.size();
    i.sampling = clf->sampling.c_str();
    i.default_clips = m.clips;
    i.default_crops = m.crops;
    i.dense_window = m.window;
    i.logit_scale = static_cast<float>(m.logit_scale);
    i.precision = clf->precision.c_str();
    i.architecture = clf->architecture.c_str();
    i.has_text = m.has_text;
    i.has_streaming = m.has_streaming;
    *info = i;
  });
}

int vtc_class_name(vtc_classifier* clf, size_t index, const char** label) {
  return guard(clf, "vtc_class_name", [&] {
    if (clf == nullptr) argument("vtc_class_name: clf is NULL");
    if (label == nullptr) argument("vtc_class_name: label is NULL");
    auto classes = clf->engine->classes();
    if (index >= classes->names.size()) {
      argument("class index " + std::to_string(index) + " is out of range (" +
               std::to_string(classes->names.size()) + " classes)");
    }
    std::lock_guard<std::mutex> lock(clf->mutex);
    if (clf->pinned.empty() || clf->pinned.back() != classes) clf->pinned.push_back(classes);
    *label = classes->names[index].c_str();
  });
}

int vtc_manifest_json(vtc_classifier* clf, const char** json) {
  return guard(clf, "vtc_manifest_json", [&] {
    if (clf == nullptr) argument("vtc_manifest_json: clf is NULL");
    if (json == nullptr) argument("vtc_manifest_json: json is NULL");
    *json = clf->engine->manifest().json_text.c_str();
  });
}

int vtc_classify_files_cb(vtc_classifier* clf, const char* const* paths, size_t n, const vtc_run_options* run,
                          vtc_result_callback callback, void* user) {
  return guard(clf, "vtc_classify_files_cb", [&] {
    if (clf == nullptr) argument("vtc_classify_files_cb: clf is NULL");
    if (callback == nullptr) argument("vtc_classify_files_cb: callback is NULL");
    if (paths == nullptr && n > 0) argument("vtc_classify_files_cb: paths is NULL");
    std::vector<std::string> list;
    for (size_t i = 0; i < n; ++i) {
      if (paths[i] == nullptr) argument("vtc_classify_files_cb: paths[" + std::to_string(i) + "] is NULL");
      list.emplace_back(paths[i]);
    }
    clf->engine->classify_files(list, run_options(run), [&](const vtc::Result& r, size_t index) {
      std::vector<vtc::Result> one{r};
      vtc_result* c = export_results(std::move(one));
      callback(c, index, user);
      vtc_results_free(c, 1);
    });
  });
}

int vtc_classify_stream(vtc_classifier* clf, const char* source, const char* window, const char* stride, int topk,
                        int live, vtc_result_callback callback, void* user) {
  return guard(clf, "vtc_classify_stream", [&] {
    if (clf == nullptr) argument("vtc_classify_stream: clf is NULL");
    if (source == nullptr || window == nullptr) argument("vtc_classify_stream: source/window is NULL");
    if (callback == nullptr) argument("vtc_classify_stream: callback is NULL");
    if (topk < 1) argument("topk must be >= 1, got " + std::to_string(topk));
    std::string w = window, s;
    if (stride != nullptr && *stride != 0) {
      s = stride;
    } else if (!w.empty() && (w.back() == 's' || w.back() == 'S')) {
      char text[64];
      std::snprintf(text, sizeof text, "%gs", std::strtod(w.c_str(), nullptr) / 4);
      s = text;
    } else {
      s = std::to_string(std::max(1LL, std::strtoll(w.c_str(), nullptr, 10) / 4));
    }
    size_t index = 0;
    vtc::run_stream_source(clf->engine.get(), source, w, s, topk, live, [&](const vtc::Result& r) {
      std::vector<vtc::Result> one{r};
      vtc_result* c = export_results(std::move(one));
      callback(c, index++, user);
      vtc_results_free(c, 1);
    });
  });
}

int vtc_classify_files(vtc_classifier* clf, const char* const* paths, size_t n, const vtc_run_options* run,
                       vtc_result** results) {
  return guard(clf, "vtc_classify_files", [&] {
    if (results == nullptr) argument("vtc_classify_files: results is NULL");
    *results = nullptr;
    if (clf == nullptr) argument("vtc_classify_files: clf is NULL");
    if (paths == nullptr && n > 0) argument("vtc_classify_files: paths is NULL");
    std::vector<std::string> list;
    for (size_t i = 0; i < n; ++i) {
      if (paths[i] == nullptr) argument("vtc_classify_files: paths[" + std::to_string(i) + "] is NULL");
      list.emplace_back(paths[i]);
    }
    *results = export_results(clf->engine->classify_files(list, run_options(run)));
  });
}

int vtc_classify_frames(vtc_classifier* clf, const void* data, int dtype, const int64_t* shape, int ndim,
                        const vtc_run_options* run, vtc_result** result) {
  return guard(clf, "vtc_classify_frames", [&] {
    if (result == nullptr) argument("vtc_classify_frames: result is NULL");
    *result = nullptr;
    if (clf == nullptr) argument("vtc_classify_frames: clf is NULL");
    int64_t n, h, w;
    check_frames(data, dtype, shape, ndim, &n, &h, &w);
    std::vector<vtc::Result> one;
    one.push_back(clf->engine->classify_frames(static_cast<const uint8_t*>(data), n, h, w, run_options(run),
                                               "<frames 0>"));
    *result = export_results(std::move(one));
  });
}

int vtc_embed_frames(vtc_classifier* clf, const void* data, int dtype, const int64_t* shape, int ndim,
                     const vtc_run_options* run, float* embedding, size_t capacity) {
  return guard(clf, "vtc_embed_frames", [&] {
    if (clf == nullptr) argument("vtc_embed_frames: clf is NULL");
    if (embedding == nullptr) argument("vtc_embed_frames: embedding is NULL");
    const size_t d = static_cast<size_t>(clf->engine->manifest().embed_dim);
    if (capacity < d) {
      argument("vtc_embed_frames: capacity " + std::to_string(capacity) + " < embed_dim " + std::to_string(d));
    }
    int64_t n, h, w;
    check_frames(data, dtype, shape, ndim, &n, &h, &w);
    vtc::Result r =
        clf->engine->classify_frames(static_cast<const uint8_t*>(data), n, h, w, run_options(run), "<frames 0>");
    std::memcpy(embedding, r.embedding.data(), d * sizeof(float));
  });
}

int vtc_sample_indices(const char* rule, int64_t num_frames, int frames, int clips, int window, int64_t* out,
                       size_t capacity) {
  return guard(nullptr, "vtc_sample_indices", [&] {
    if (rule == nullptr || out == nullptr) argument("vtc_sample_indices: rule/out is NULL");
    if (frames > 1 << 20 || clips > 1 << 20) argument("vtc_sample_indices: frames and clips must be <= 2^20");
    const std::vector<int64_t> indices = vtc::sample_indices(rule, num_frames, frames, clips, window);
    if (capacity < indices.size()) {
      argument("vtc_sample_indices: capacity " + std::to_string(capacity) + " < clips x frames " +
               std::to_string(indices.size()));
    }
    std::copy(indices.begin(), indices.end(), out);
  });
}

void vtc_results_free(vtc_result* results, size_t n) {
  (void)n;
  if (results == nullptr) return;
  Block** head = reinterpret_cast<Block**>(results) - 1;
  delete *head;
  ::operator delete(static_cast<void*>(head));
}

int vtc_set_classes(vtc_classifier* clf, const char* const* names, size_t num_names, const char* const* templates,
                    size_t num_templates) {
  return guard(clf, "vtc_set_classes", [&] {
    if (clf == nullptr) argument("vtc_set_classes: clf is NULL");
    if (names == nullptr && num_names > 0) argument("vtc_set_classes: names is NULL");
    if (templates == nullptr && num_templates > 0) argument("vtc_set_classes: templates is NULL");
    std::vector<std::string> n, t;
    for (size_t i = 0; i < num_names; ++i) {
      if (names[i] == nullptr) argument("vtc_set_classes: names[" + std::to_string(i) + "] is NULL");
      n.emplace_back(names[i]);
    }
    for (size_t i = 0; i < num_templates; ++i) {
      if (templates[i] == nullptr) argument("vtc_set_classes: templates[" + std::to_string(i) + "] is NULL");
      t.emplace_back(templates[i]);
    }
    clf->engine->set_classes(n, t);
  });
}

int vtc_set_classes_from(vtc_classifier* clf, const char* source, const char* const* templates,
                         size_t num_templates) {
  return guard(clf, "vtc_set_classes_from", [&] {
    if (clf == nullptr) argument("vtc_set_classes_from: clf is NULL");
    if (source == nullptr) argument("vtc_set_classes_from: source is NULL");
    if (templates == nullptr && num_templates > 0) argument("vtc_set_classes_from: templates is NULL");
    std::vector<std::string> t;
    for (size_t i = 0; i < num_templates; ++i) {
      if (templates[i] == nullptr) argument("vtc_set_classes_from: templates[" + std::to_string(i) + "] is NULL");
      t.emplace_back(templates[i]);
    }
    if (!clf->engine->manifest().has_text) {  // the clear error before reading the list (as Classifier.load)
      clf->engine->set_classes({}, t);
    }
    clf->engine->set_classes(vtc::load_class_names(source), t);
  });
}

int vtc_stream_open(vtc_classifier* clf, int window, int stride, int topk, double fps, const char* name,
                    vtc_stream** out) {
  return guard(clf, "vtc_stream_open", [&] {
    if (out == nullptr) argument("vtc_stream_open: out is NULL");
    *out = nullptr;
    if (clf == nullptr) argument("vtc_stream_open: clf is NULL");
    if (!(fps >= 0) || !std::isfinite(fps)) argument("vtc_stream_open: fps must be >= 0 and finite");
    auto s = std::make_unique<vtc_stream>();
    s->owner = clf;
    s->session = std::make_unique<vtc::StreamSession>(clf->engine.get(), window, stride, topk, fps,
                                                      name != nullptr ? name : "<stream>");
    ++clf->open_streams;
    *out = s.release();
  });
}

int vtc_stream_push(vtc_stream* stream, const uint8_t* rgb, int height, int width, double pts_seconds,
                    vtc_result** results, size_t* num_results) {
  return guard(stream, "vtc_stream_push", [&] {
    if (results == nullptr || num_results == nullptr) argument("vtc_stream_push: results/num_results is NULL");
    *results = nullptr;
    *num_results = 0;
    if (stream == nullptr) argument("vtc_stream_push: stream is NULL");
    if (rgb == nullptr) argument("vtc_stream_push: rgb is NULL");
    if (height < 1 || width < 1 || static_cast<int64_t>(height) * width > 8294400LL * 4) {
      argument("vtc_stream_push: frame size " + std::to_string(width) + "x" + std::to_string(height) +
               " is not 1..8K");
    }
    std::vector<vtc::Result> windows = stream->session->push(rgb, height, width, pts_seconds);
    *num_results = windows.size();
    *results = export_results(std::move(windows));
  });
}

int vtc_stream_counts(vtc_stream* stream, int64_t* frames_pushed, int64_t* frames_encoded) {
  return guard(stream, "vtc_stream_counts", [&] {
    if (stream == nullptr) argument("vtc_stream_counts: stream is NULL");
    if (frames_pushed != nullptr) *frames_pushed = stream->session->frames_pushed();
    if (frames_encoded != nullptr) *frames_encoded = stream->session->frames_encoded();
  });
}

int vtc_stream_close(vtc_stream* stream) {
  if (stream == nullptr) return VTC_OK;
  t_handle_errors.erase(stream);
  --stream->owner->open_streams;
  delete stream;
  return VTC_OK;
}

}  // extern "C"
