// The library core behind the C API: an opened artifact (manifest + ONNX Runtime sessions) that classifies video
// files (decoding pipelined ahead of inference), app-decoded frames and pushed streams, with the same rules as the
// Python runtime (vtc_deploy/pipeline.py, inputs.py, streaming.py, vocab.py): Text4Vis sampling, Pillow-identical
// preprocessing (rules/resize.h), exact multi-view aggregation through feature_norm, top-k with softmax
// probabilities, class replacement through text.onnx. Errors are exceptions (vtc::Error, vtc::rules::Error); the C
// API layer (capi.cpp) catches them. Thread-safe as vtc.h documents.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "manifest.h"
#include "ort_session.h"

namespace vtc {

namespace rules {
class Tokenizer;
}

struct EngineOptions {
  int threads = 0;
  int batch = 4;
  int decode_threads = 2;
  std::string provider = "cpu";
  std::vector<std::pair<std::string, std::string>> provider_options;
  bool check_hash = true;
  bool low_memory = false;  // SessionConfig::low_memory
};

struct Prediction {
  int index = 0;
  std::string label;
  float logit = 0;
  double prob = 0;
};

struct Result {
  std::string video;
  int status = 0;  // VTC_OK or a vtc_status
  std::string error;
  std::vector<Prediction> topk;
  std::vector<float> logits, embedding;
  int views = 0;
  int64_t num_frames = 0;
  int64_t start_frame = 0, end_frame = 0;
  double start_s = 0, end_s = 0, start_pts = 0, end_pts = 0;
};

struct RunOptions {
  int topk = 5;
  int clips = 0;  // 0: manifest default
  int crops = 0;
};

struct ClassSet {
  std::vector<std::string> names;
  std::vector<float> embeddings;  // [C, D] when replaced at run time; empty: the graph's own classifier
};

// The Text4Vis view aggregation: per-view logits [V, C], embeddings [V, D], feature norms [V] -> [C], [D].
void aggregate_views(const std::vector<float>& logits, const std::vector<float>& embeddings,
                     const std::vector<float>& norms, size_t views, std::vector<float>* out_logits,
                     std::vector<float>* out_embedding);
// Softmax (float64) and the top k in descending logit order, ties to the lower index (numpy's stable argsort).
std::vector<Prediction> top_predictions(const std::vector<float>& logits, const std::vector<std::string>& names,
                                        int k);

class StreamSession;

class Engine {
 public:
  Engine(const std::string& dir, const EngineOptions& options);
  ~Engine();

  const Manifest& manifest() const { return manifest_; }
  const EngineOptions& options() const { return options_; }
  std::shared_ptr<const ClassSet> classes() const;
  std::string manifest_json() const { return manifest_.json_text; }

  // Results in input order; `on_result` (optional) sees each as soon as it and all before it are complete.
  std::vector<Result> classify_files(const std::vector<std::string>& paths, const RunOptions& run,
                                     const std::function<void(const Result&, size_t)>& on_result = nullptr);
  // uint8 [n, h, w, 3] frames as a video.
  Result classify_frames(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, const RunOptions& run,
                         const std::string& name);

  void set_classes(const std::vector<std::string>& names, const std::vector<std::string>& templates);

  // Streaming graphs (opened on first use).
  const Session& frames_session();
  const Session& head_session();

  int resolve_clips(int clips) const;
  int resolve_crops(int crops) const;

 private:
  struct Prepared;
  Prepared prepare_frames(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, int clips, int crops) const;
  Prepared prepare_file(const std::string& path, int clips, int crops) const;
  // Runs model.onnx over `count` views (uint8 [count, T, S, S, 3], contiguous) in one call.
  void infer(const uint8_t* views, int64_t count, std::vector<float>* logits, std::vector<float>* embedding,
             std::vector<float>* norms) const;
  Result finish(const std::string& name, const std::vector<float>& logits, const std::vector<float>& embedding,
                const std::vector<float>& norms, int views, int64_t num_frames, int topk) const;

  EngineOptions options_;
  Manifest manifest_;
  SessionConfig session_config_;
  std::unique_ptr<Session> model_;
  mutable std::mutex mutex_;  // guards classes_, the lazily opened sessions, the tokenizer
  std::shared_ptr<const ClassSet> classes_;
  std::unique_ptr<Session> text_, frames_, head_;
  std::unique_ptr<rules::Tokenizer> tokenizer_;

  friend class StreamSession;
};

// A sliding-window timeline over pushed frames (vtc_deploy.streaming.StreamClassifier.run, frame by frame).
class StreamSession {
 public:
  StreamSession(Engine* engine, int window, int stride, int topk, double fps, std::string name);
  // Push the next frame; returns the windows it completes.
  std::vector<Result> push(const uint8_t* rgb, int h, int w, double pts);
  int64_t frames_pushed() const { return pushed_; }
  int64_t frames_encoded() const { return encoded_; }
  const std::string& name() const { return name_; }
  double fps() const { return fps_; }

 private:
  bool needed(int64_t index) const;
  void flush();
  Result classify(int64_t start);

  Engine* engine_;
  int window_, stride_, topk_;
  double fps_;
  std::string name_;
  std::vector<int64_t> offsets_;
  std::map<int64_t, std::vector<float>> cache_;  // frame index -> embedding [D]
  std::map<int64_t, double> pts_;
  std::vector<std::pair<int64_t, std::vector<uint8_t>>> pending_;  // preprocessed frames [S, S, 3]
  int64_t next_start_ = 0;
  int64_t pushed_ = 0;
  int64_t encoded_ = 0;
  int batch_ = 16;
};

// Frames in a span: "16" (frames) or "2s" (seconds x fps, rounded half to even), as streaming.parse_span.
int parse_span(const std::string& text, double fps, const std::string& what);

// streaming.run_stream for one source: decode on a thread of its own, windows to `on_window`; errors of the source
// become a final result with a status. Throws vtc::Error(VTC_ERR_ARGUMENT) for a bad window/stride.
void run_stream_source(Engine* engine, const std::string& source, const std::string& window,
                       const std::string& stride, int topk, int live,
                       const std::function<void(const Result&)>& on_window);

// Class names from a bundled list (kinetics400, ucf101, hmdb51, activitynet200), a .csv with an id,name header or a
// text file with one name per line; the rules of vtc_deploy/labels.py. Throws vtc::Error(VTC_ERR_LABELS).
std::vector<std::string> load_class_names(const std::string& source);
// The checks of labels._check_names / check_templates plus the artifact-safety limits.
void check_class_names(const std::vector<std::string>& names, const std::string& where);
void check_templates(const std::vector<std::string>& templates);

}  // namespace vtc
