// The library core: see engine.h. Each rule cites the Python function it mirrors.
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <numeric>
#include <set>
#include <thread>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cstdio>
#include <stdexcept>
#include <cctype>

#include "error.h"
#include "rules/decode.h"
#include "rules/resize.h"
#include "rules/tokenizer.h"
#include "sampling.h"

namespace vtc {

// ------------------------------------------------------------------------------------------------ rules

void aggregate_views(const std::vector<float>& logits, const std::vector<float>& embeddings,
                     const std::vector<float>& norms, size_t views, std::vector<float>* out_logits,
                     std::vector<float>* out_embedding) {
  // pipeline.aggregate_views: F = sum_v n_v e_v (float64), embedding F/|F|, logits sum_v n_v logits_v / |F|
  const size_t c = logits.size() / views, d = embeddings.size() / views;
  std::vector<double> fused(d, 0.0), agg(c, 0.0);
  for (size_t v = 0; v < views; ++v) {
    const double w = static_cast<double>(norms[v]);
    for (size_t i = 0; i < d; ++i) fused[i] += w * static_cast<double>(embeddings[v * d + i]);
    for (size_t i = 0; i < c; ++i) agg[i] += w * static_cast<double>(logits[v * c + i]);
  }
  double sq = 0.0;
  for (double x : fused) sq += x * x;
  const double scale = std::sqrt(sq);
  out_logits->resize(c);
  out_embedding->resize(d);
  for (size_t i = 0; i < c; ++i) (*out_logits)[i] = static_cast<float>(agg[i] / scale);
  for (size_t i = 0; i < d; ++i) (*out_embedding)[i] = static_cast<float>(fused[i] / scale);
}

namespace {
// numpy's pairwise summation (the float64 add.reduce of a contiguous array: first element, then the rest pairwise)
double pairwise(const double* a, size_t n) {
  if (n < 8) {
    double r = 0.0;
    for (size_t i = 0; i < n; ++i) r += a[i];
    return r;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise(a, n2) + pairwise(a + n2, n - n2);
}

double numpy_sum(const std::vector<double>& a) {
  if (a.empty()) return 0.0;
  double total = a[0];
  for (size_t start = 1; start < a.size(); start += 8192) {  // numpy reduces in buffers of 8192 elements
    total += pairwise(a.data() + start, std::min<size_t>(8192, a.size() - start));
  }
  return total;
}
}  // namespace

std::vector<Prediction> top_predictions(const std::vector<float>& logits, const std::vector<std::string>& names,
                                        int k) {
  // pipeline.softmax + top_predictions
  const size_t c = logits.size();
  float max = -INFINITY;
  for (float x : logits) max = std::max(max, x);
  std::vector<double> e(c);
  for (size_t i = 0; i < c; ++i) e[i] = std::exp(static_cast<double>(logits[i]) - static_cast<double>(max));
  const double sum = numpy_sum(e);
  std::vector<size_t> order(c);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return -logits[a] < -logits[b]; });
  const size_t take = std::min(c, static_cast<size_t>(std::max(k, 0)));
  std::vector<Prediction> out;
  out.reserve(take);
  for (size_t j = 0; j < take; ++j) {
    const size_t i = order[j];
    out.push_back({static_cast<int>(i), names[i], logits[i], e[i] / sum});
  }
  return out;
}

void check_class_names(const std::vector<std::string>& names, const std::string& where) {
  // labels._check_names plus the artifact-safety limits
  if (names.empty()) throw Error(VTC_ERR_LABELS, where + ": class list is empty");
  if (names.size() > kMaxClasses) {
    throw Error(VTC_ERR_LABELS, where + ": " + std::to_string(names.size()) + " classes; the limit is " +
                                    std::to_string(kMaxClasses));
  }
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) throw Error(VTC_ERR_LABELS, where + ": class " + std::to_string(i) + " has an empty name");
    if (names[i].size() > kMaxClassBytes) {
      throw Error(VTC_ERR_LABELS, where + ": class " + std::to_string(i) + " is longer than " +
                                      std::to_string(kMaxClassBytes) + " bytes");
    }
    auto [it, fresh] = seen.emplace(names[i], i);
    if (!fresh) {
      throw Error(VTC_ERR_LABELS, where + ": duplicate class name '" + names[i].substr(0, 100) + "' (ids " +
                                      std::to_string(it->second) + " and " + std::to_string(i) + ")");
    }
  }
}

void check_templates(const std::vector<std::string>& templates) {
  // labels.check_templates plus the artifact-safety limits
  if (templates.empty()) {
    throw Error(VTC_ERR_LABELS, "at least one prompt template is needed, e.g. 'a video of a person {}.'");
  }
  if (templates.size() > kMaxTemplates) {
    throw Error(VTC_ERR_LABELS, std::to_string(templates.size()) + " templates; the limit is " +
                                    std::to_string(kMaxTemplates));
  }
  for (const auto& t : templates) {
    size_t count = 0;
    for (size_t p = t.find("{}"); p != std::string::npos; p = t.find("{}", p + 2)) ++count;
    if (count != 1 || t.size() > kMaxTemplateBytes) {
      throw Error(VTC_ERR_LABELS, "prompt template '" + t.substr(0, 100) +
                                      "' must contain exactly one '{}' for the class name (and be at most " +
                                      std::to_string(kMaxTemplateBytes) + " bytes)");
    }
  }
}

namespace {

std::string fill_template(const std::string& t, const std::string& name) {
  std::string out;
  size_t pos = 0;
  for (size_t p = t.find("{}"); p != std::string::npos; p = t.find("{}", pos)) {
    out.append(t, pos, p - pos);
    out += name;
    pos = p + 2;
  }
  out.append(t, pos, std::string::npos);
  return out;
}

// uint8 [..., H, W, 3] -> normalised float32 [..., 3, H, W] (preprocess.to_float, in float32 as numpy does it)
void to_float(const uint8_t* src, size_t images, int s, const InputSpec& in, float* dst) {
  const size_t plane = static_cast<size_t>(s) * s;
  for (size_t i = 0; i < images; ++i) {
    const uint8_t* image = src + i * plane * 3;
    float* out = dst + i * plane * 3;
    for (size_t p = 0; p < plane; ++p) {
      for (int ch = 0; ch < 3; ++ch) {
        volatile float scaled = static_cast<float>(image[p * 3 + ch]) / 255.0f;
        volatile float centred = scaled - in.mean[ch];
        out[ch * plane + p] = centred / in.std[ch];
      }
    }
  }
}

// Logits of swapped classes: logit_scale * (class_embeddings [C, D] @ embedding [D]) in float32 (pipeline._finish)
std::vector<float> swapped_logits(const ClassSet& classes, const std::vector<float>& embedding, double logit_scale) {
  const size_t d = embedding.size(), c = classes.names.size();
  std::vector<float> out(c);
  const float scale = static_cast<float>(logit_scale);
  for (size_t i = 0; i < c; ++i) {
    double dot = 0.0;
    for (size_t j = 0; j < d; ++j) {
      dot += static_cast<double>(classes.embeddings[i * d + j]) * static_cast<double>(embedding[j]);
    }
    out[i] = scale * static_cast<float>(dot);
  }
  return out;
}

int status_of(const rules::Error& e) {
  switch (e.kind()) {
    case rules::Error::Kind::decode:
      return VTC_ERR_DECODE;
    case rules::Error::Kind::input:
      return VTC_ERR_ARGUMENT;
    default:
      return VTC_ERR_INTERNAL;
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------ engine

struct Engine::Prepared {
  std::vector<uint8_t> views;  // [V, T, S, S, 3], crop-major (view c * clips + k = crop c of clip k)
  int count = 0;
  int64_t num_frames = 0;
};

Engine::Engine(const std::string& dir, const EngineOptions& options) : options_(options) {
  if (options.batch < 1 || options.batch > 4096) {
    throw Error(VTC_ERR_ARGUMENT, "batch must be 1..4096, got " + std::to_string(options.batch));
  }
  if (options.decode_threads < 1 || options.decode_threads > 256) {
    throw Error(VTC_ERR_ARGUMENT, "decode_threads must be 1..256, got " + std::to_string(options.decode_threads));
  }
  if (options.threads < 0 || options.threads > 1024) {
    throw Error(VTC_ERR_ARGUMENT, "threads must be 0..1024, got " + std::to_string(options.threads));
  }
  manifest_ = read_manifest(dir, options.check_hash);
  session_config_.threads = options.threads;
  session_config_.provider = options.provider;
  session_config_.provider_options = options.provider_options;
  session_config_.low_memory = options.low_memory;
  session_config_.trt_cache_dir = manifest_.root + "/engines/ort-trt";
  session_config_.trt_fp16 = manifest_.precision == "fp16";
  model_ = std::make_unique<Session>(manifest_.path_of(manifest_.onnx_file), session_config_);
  const auto& m = manifest_;
  const int64_t t = m.frames, s = m.input.size, d = m.embed_dim, c = static_cast<int64_t>(m.classes.size());
  if (m.inputs.size() != 1) {
    throw Error(VTC_ERR_ARTIFACT, m.manifest_path + ": manifest.inputs must name one input, got " +
                                      std::to_string(m.inputs.size()));
  }
  TensorInfo video{m.inputs[0], DType::uint8, {-1, t, s, s, 3}};
  if (m.input.kind == "float") video = {m.inputs[0], DType::float32, {-1, t, 3, s, s}};
  for (const char* o : {"logits", "embedding", "feature_norm"}) {
    if (std::find(m.outputs.begin(), m.outputs.end(), o) == m.outputs.end()) {
      throw Error(VTC_ERR_ARTIFACT, m.manifest_path + ": manifest.outputs lacks '" + o + "'");
    }
  }
  check_io(*model_, {video},
           {{"logits", DType::float32, {-1, c}}, {"embedding", DType::float32, {-1, d}},
            {"feature_norm", DType::float32, {-1}}});
  auto initial = std::make_shared<ClassSet>();
  initial->names = m.classes;
  classes_ = initial;
}

Engine::~Engine() = default;

std::shared_ptr<const ClassSet> Engine::classes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return classes_;
}

int Engine::resolve_clips(int clips) const {
  const int v = clips == 0 ? manifest_.clips : clips;
  if (v < 1 || v > 1024) throw Error(VTC_ERR_ARGUMENT, "clips must be 1..1024, got " + std::to_string(clips));
  return v;
}

int Engine::resolve_crops(int crops) const {
  const int v = crops == 0 ? manifest_.crops : crops;
  if (v != 1 && v != 3) throw Error(VTC_ERR_ARGUMENT, "crops must be 1 or 3, got " + std::to_string(crops));
  return v;
}

Engine::Prepared Engine::prepare_frames(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, int clips,
                                        int crops) const {
  // inputs.read_views on frames: sample (test rule), preprocess every sampled frame once, assemble crop-major views
  const auto& m = manifest_;
  const int t = m.frames, s = m.input.size;
  const std::vector<int64_t> indices = sample_indices(m.sampling_rule, n, t, clips, m.window);  // [clips, T]
  const size_t frame_bytes = static_cast<size_t>(h) * static_cast<size_t>(w) * 3;
  const size_t crop_bytes = static_cast<size_t>(s) * s * 3;
  Prepared p;
  p.count = clips * crops;
  p.num_frames = n;
  p.views.resize(static_cast<size_t>(p.count) * t * crop_bytes);
  std::map<int64_t, std::vector<uint8_t>> done;  // frame index -> [crops, S, S, 3]
  for (int k = 0; k < clips; ++k) {
    for (int j = 0; j < t; ++j) {
      const int64_t index = indices[static_cast<size_t>(k) * t + j];
      auto it = done.find(index);
      if (it == done.end()) {
        it = done.emplace(index, rules::preprocess(rgb + static_cast<size_t>(index) * frame_bytes, static_cast<int>(h),
                                                   static_cast<int>(w), m.input.resize, s, crops))
                 .first;
      }
      for (int c = 0; c < crops; ++c) {
        const size_t view = static_cast<size_t>(c) * clips + k;
        std::memcpy(p.views.data() + (view * t + j) * crop_bytes, it->second.data() + c * crop_bytes, crop_bytes);
      }
    }
  }
  return p;
}

Engine::Prepared Engine::prepare_file(const std::string& path, int clips, int crops) const {
  // inputs.read_views on a file: decode only the distinct sampled frames, in one pass, each preprocessed as soon as
  // it is decoded (one full-size RGB frame held at a time, not all of them: peak memory)
  const auto& m = manifest_;
  const int t = m.frames, s = m.input.size;
  rules::DecodeOptions decode;
  auto reader = rules::VideoReader::open(path, decode);
  rules::VideoInfo info;
  std::vector<int64_t> indices, unique;
  std::vector<std::vector<uint8_t>> pre;  // unique frame u -> [crops, S, S, 3]
  for (int attempt = 0;; ++attempt) {
    info = reader->info();  // a copy: the reader is released before the views are assembled
    indices = sample_indices(m.sampling_rule, info.num_frames, m.frames, clips, m.window);
    unique = indices;
    std::sort(unique.begin(), unique.end());
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    pre.assign(unique.size(), {});
    try {
      reader->visit_frames(unique, [&](size_t u, const uint8_t* rgb) {
        pre[u] = rules::preprocess(rgb, info.height, info.width, m.input.resize, s, crops);
      });
      break;
    } catch (const rules::FrameCountChanged&) {
      if (attempt > 0) throw;  // the sequential count is final: a second change is a file changing under us
    }  // the packet index was wrong: sample again with the sequential count (inputs.read_views)
  }
  reader.reset();
  const size_t crop_bytes = static_cast<size_t>(s) * s * 3;
  Prepared p;
  p.count = clips * crops;
  p.num_frames = info.num_frames;
  p.views.resize(static_cast<size_t>(p.count) * t * crop_bytes);
  for (int k = 0; k < clips; ++k) {
    for (int j = 0; j < t; ++j) {
      const size_t u = static_cast<size_t>(
          std::lower_bound(unique.begin(), unique.end(), indices[static_cast<size_t>(k) * t + j]) - unique.begin());
      for (int c = 0; c < crops; ++c) {
        const size_t view = static_cast<size_t>(c) * clips + k;
        std::memcpy(p.views.data() + (view * t + j) * crop_bytes, pre[u].data() + c * crop_bytes, crop_bytes);
      }
    }
  }
  return p;
}

void Engine::infer(const uint8_t* views, int64_t count, std::vector<float>* logits, std::vector<float>* embedding,
                   std::vector<float>* norms) const {
  const auto& m = manifest_;
  const int64_t t = m.frames, s = m.input.size;
  std::vector<Tensor> out;
  if (m.input.kind == "uint8") {
    out = model_->run(m.inputs[0], DType::uint8, views, {count, t, s, s, 3}, {"logits", "embedding", "feature_norm"});
  } else {
    std::vector<float> feed(static_cast<size_t>(count * t * s * s * 3));
    to_float(views, static_cast<size_t>(count * t), static_cast<int>(s), m.input, feed.data());
    out = model_->run(m.inputs[0], DType::float32, feed.data(), {count, t, 3, s, s},
                      {"logits", "embedding", "feature_norm"});
  }
  const size_t c = m.classes.size(), d = static_cast<size_t>(m.embed_dim);
  if (out[0].data.size() != count * c || out[1].data.size() != count * d ||
      out[2].data.size() != static_cast<size_t>(count)) {
    throw Error(VTC_ERR_ARTIFACT, model_->path() + ": the graph returned outputs of unexpected sizes");
  }
  *logits = std::move(out[0].data);
  *embedding = std::move(out[1].data);
  *norms = std::move(out[2].data);
}

Result Engine::finish(const std::string& name, const std::vector<float>& logits, const std::vector<float>& embedding,
                      const std::vector<float>& norms, int views, int64_t num_frames, int topk) const {
  // pipeline.Classifier._finish
  Result r;
  r.video = name;
  r.views = views;
  r.num_frames = num_frames;
  aggregate_views(logits, embedding, norms, static_cast<size_t>(views), &r.logits, &r.embedding);
  auto classes = this->classes();
  if (!classes->embeddings.empty()) r.logits = swapped_logits(*classes, r.embedding, manifest_.logit_scale);
  r.topk = top_predictions(r.logits, classes->names, topk);
  return r;
}

Result Engine::classify_frames(const uint8_t* rgb, int64_t n, int64_t h, int64_t w, const RunOptions& run,
                               const std::string& name) {
  if (run.topk < 1) throw Error(VTC_ERR_ARGUMENT, "topk must be >= 1, got " + std::to_string(run.topk));
  const int clips = resolve_clips(run.clips), crops = resolve_crops(run.crops);
  Prepared p = prepare_frames(rgb, n, h, w, clips, crops);
  const size_t view_bytes = p.views.size() / static_cast<size_t>(p.count);
  std::vector<float> logits, embedding, norms;
  for (int start = 0; start < p.count; start += options_.batch) {
    const int b = std::min(options_.batch, p.count - start);
    std::vector<float> l, e, f;
    infer(p.views.data() + static_cast<size_t>(start) * view_bytes, b, &l, &e, &f);
    logits.insert(logits.end(), l.begin(), l.end());
    embedding.insert(embedding.end(), e.begin(), e.end());
    norms.insert(norms.end(), f.begin(), f.end());
  }
  return finish(name, logits, embedding, norms, p.count, n, run.topk);
}

std::vector<Result> Engine::classify_files(const std::vector<std::string>& paths, const RunOptions& run,
                                           const std::function<void(const Result&, size_t)>& on_result) {
  // pipeline.Classifier.iter_classify: decode threads prepare videos ahead of the inference loop (this thread);
  // views of different videos share batches; results in input order.
  if (run.topk < 1) throw Error(VTC_ERR_ARGUMENT, "topk must be >= 1, got " + std::to_string(run.topk));
  const int clips = resolve_clips(run.clips), crops = resolve_crops(run.crops);
  const size_t n = paths.size();
  const int batch = options_.batch;
  const int workers = static_cast<int>(std::min<size_t>(static_cast<size_t>(options_.decode_threads), n));
  const size_t ahead = static_cast<size_t>(batch + 2 * options_.decode_threads);

  struct Slot {
    bool ready = false;
    Prepared prepared;
    int status = VTC_OK;
    std::string error;
  };
  std::vector<Slot> slots(n);
  std::vector<char> taken(n, 0);  // a decoding thread or this one has started preparing that video
  std::mutex mu;
  std::condition_variable cv;
  size_t next_take = 0, consumed = 0;
  bool stop = false;
  auto first_untaken = [&] {  // (under mu)
    while (next_take < n && taken[next_take]) ++next_take;
    return next_take;
  };

  auto prepare_slot = [&](size_t i) {
    Slot slot;
    try {
      slot.prepared = prepare_file(paths[i], clips, crops);
    } catch (const rules::Error& e) {
      slot.status = status_of(e);
      slot.error = Error::one_line(e.what());
    } catch (const Error& e) {
      slot.status = e.status();
      slot.error = paths[i] + ": " + e.what();
    } catch (const std::bad_alloc&) {
      slot.status = VTC_ERR_MEMORY;
      slot.error = paths[i] + ": out of memory while decoding";
    } catch (const std::exception& e) {
      slot.status = VTC_ERR_INTERNAL;
      slot.error = paths[i] + ": cannot process video (" + Error::one_line(e.what()) + ")";
    }
    if (slot.status != VTC_OK && slot.error.empty()) slot.error = paths[i] + ": cannot process video";
#if defined(__GLIBC__)
    // The decoder's buffers (its frame pool, the RGB conversion, tens of MB for HD video) were freed into this
    // thread's malloc arena; glibc keeps such memory (its mmap threshold adapts upwards), so without a trim the
    // peak RSS grows by about one arena per decoding thread (measured on ViT-B/32 with one decoding thread:
    // 1056 -> ~620 MB when all sampled frames were held; with frames preprocessed as decoded, 16 videos, 617 ->
    // 588 MB).
    malloc_trim(0);
#endif
    slot.ready = true;
    {
      std::lock_guard<std::mutex> lock(mu);
      slots[i] = std::move(slot);
    }
    cv.notify_all();
  };
  auto work = [&] {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || first_untaken() >= n || next_take < consumed + ahead; });
        if (stop || next_take >= n) return;
        i = next_take;
        taken[i] = 1;
      }
      prepare_slot(i);
    }
  };
  // pipeline.Classifier.iter_classify's help_decode: when the inference thread has nothing to run until the next
  // video is decoded, it prepares, itself, the videos that the next batch still needs and that no decoding thread
  // has started (the far ones first, so that the decoding threads keep going on the near ones). Where decoding is
  // the bottleneck (a small model, a GPU) that is one more core decoding; elsewhere it shortens the start.
  const size_t views_per_video = static_cast<size_t>(clips) * static_cast<size_t>(crops);
  auto help_decode = [&](size_t head, size_t missing_views) {
    const size_t needed = (missing_views + views_per_video - 1) / views_per_video;  // the head video included
    for (size_t s = std::min(head + needed, n); s-- > head + 1;) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (taken[s]) continue;
        taken[s] = 1;
      }
      prepare_slot(s);
    }
  };
  std::vector<std::thread> threads;
  for (int k = 0; k < workers; ++k) threads.emplace_back(work);
  struct Joiner {
    std::vector<std::thread>* threads;
    std::mutex* mu;
    std::condition_variable* cv;
    bool* stop;
    ~Joiner() {
      {
        std::lock_guard<std::mutex> lock(*mu);
        *stop = true;
      }
      cv->notify_all();
      for (auto& t : *threads) t.join();
    }
  } joiner{&threads, &mu, &cv, &stop};

  struct Pending {
    size_t position;
    Prepared prepared;
    std::vector<float> logits, embedding, norms;  // per view, in view order
    int done = 0;
  };
  std::vector<Result> results(n);
  std::vector<bool> finished(n, false);
  std::deque<std::unique_ptr<Pending>> active;
  std::vector<std::pair<Pending*, int>> buffer;  // views waiting for a batch
  size_t next_emit = 0;
  const size_t c = manifest_.classes.size(), d = static_cast<size_t>(manifest_.embed_dim);
  const size_t view_bytes = static_cast<size_t>(manifest_.frames) * manifest_.input.size * manifest_.input.size * 3;

  auto emit_ready = [&] {
    while (next_emit < n && finished[next_emit]) {
      if (on_result) on_result(results[next_emit], next_emit);
      ++next_emit;
    }
  };
  auto run_batch = [&] {  // one inference call over the first (up to) `batch` buffered views
    {
      const size_t b = std::min(buffer.size(), static_cast<size_t>(batch));
      std::vector<uint8_t> feed(b * view_bytes);
      for (size_t r = 0; r < b; ++r) {
        std::memcpy(feed.data() + r * view_bytes,
                    buffer[r].first->prepared.views.data() + static_cast<size_t>(buffer[r].second) * view_bytes,
                    view_bytes);
      }
      std::vector<float> l, e, f;
      infer(feed.data(), static_cast<int64_t>(b), &l, &e, &f);
      for (size_t r = 0; r < b; ++r) {
        Pending* p = buffer[r].first;
        const size_t v = static_cast<size_t>(buffer[r].second);
        std::copy(l.begin() + r * c, l.begin() + (r + 1) * c, p->logits.begin() + v * c);
        std::copy(e.begin() + r * d, e.begin() + (r + 1) * d, p->embedding.begin() + v * d);
        p->norms[v] = f[r];
        if (++p->done == p->prepared.count) {
          results[p->position] = finish(paths[p->position], p->logits, p->embedding, p->norms, p->prepared.count,
                                        p->prepared.num_frames, run.topk);
          finished[p->position] = true;
          p->prepared.views.clear();
          p->prepared.views.shrink_to_fit();
        }
      }
      buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(b));
      while (!active.empty() && active.front()->done == active.front()->prepared.count) active.pop_front();
      emit_ready();
    }
  };
  auto flush = [&](size_t limit) {
    while (!buffer.empty() && buffer.size() >= limit) run_batch();
  };

  for (size_t i = 0; i < n; ++i) {
    // While the next video is still decoding, the views already buffered run (a partial batch) instead of the
    // inference thread idling: the batch composition changes nothing but the speed.
    bool ready = false;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu);
        ready = slots[i].ready;
      }
      if (ready || buffer.empty()) break;
      run_batch();
    }
    if (!ready) help_decode(i, static_cast<size_t>(batch));  // (the buffer is empty here)
    Slot slot;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return slots[i].ready; });
      slot = std::move(slots[i]);
      consumed = i + 1;
    }
    cv.notify_all();
    if (slot.status != VTC_OK) {
      results[i].video = paths[i];
      results[i].status = slot.status;
      results[i].error = slot.error;
      finished[i] = true;
    } else {
      auto p = std::make_unique<Pending>();
      p->position = i;
      p->prepared = std::move(slot.prepared);
      p->logits.resize(static_cast<size_t>(p->prepared.count) * c);
      p->embedding.resize(static_cast<size_t>(p->prepared.count) * d);
      p->norms.resize(static_cast<size_t>(p->prepared.count));
      for (int v = 0; v < p->prepared.count; ++v) buffer.emplace_back(p.get(), v);
      active.push_back(std::move(p));
    }
    flush(static_cast<size_t>(batch));
    emit_ready();
  }
  flush(1);
  emit_ready();
  return results;
}

// ------------------------------------------------------------------------------------------------ classes

void Engine::set_classes(const std::vector<std::string>& names, const std::vector<std::string>& templates_in) {
  // vocab.TextEncoder.class_embeddings + combine_templates; pipeline.Classifier.set_classes
  const auto& m = manifest_;
  if (!m.has_text) {
    throw Error(VTC_ERR_UNSUPPORTED, m.root + ": the artifact has no text.onnx (exported with --no-text): re-export "
                                              "it to change classes without torch");
  }
  check_class_names(names, "<class list>");
  const std::vector<std::string> templates = templates_in.empty() ? m.templates : templates_in;
  check_templates(templates);
  Session* text;
  rules::Tokenizer* tokenizer;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!text_) {
      SessionConfig config;  // the Python TextEncoder runs text.onnx on the CPU provider
      config.threads = options_.threads;
      auto session = std::make_unique<Session>(m.path_of(m.text_file), config);
      check_io(*session, {{"tokens", DType::int64, {-1, m.context_length}}},
               {{"text_embedding", DType::float32, {-1, m.embed_dim}}});
      text_ = std::move(session);
    }
    if (!tokenizer_) tokenizer_ = std::make_unique<rules::Tokenizer>();
    text = text_.get();
    tokenizer = tokenizer_.get();
  }
  const size_t c = names.size(), d = static_cast<size_t>(m.embed_dim), k = templates.size();
  const int64_t length = m.context_length;
  std::vector<double> mean(c * d, 0.0);
  for (const auto& t : templates) {
    for (size_t start = 0; start < c; start += 256) {
      const size_t b = std::min<size_t>(256, c - start);
      std::vector<int64_t> tokens;
      tokens.reserve(b * static_cast<size_t>(length));
      for (size_t i = 0; i < b; ++i) {
        std::vector<int64_t> ids;
        try {
          ids = tokenizer->tokenize(fill_template(t, names[start + i]), static_cast<int>(length));
        } catch (const rules::Error& e) {
          // invalid UTF-8, or text the tokenizer refuses (mojibake that Python's ftfy would repair)
          if (e.kind() != rules::Error::Kind::input) throw;
          throw Error(VTC_ERR_LABELS, "class " + std::to_string(start + i) + " (template '" + t.substr(0, 100) +
                                          "'): " + e.what());
        }
        tokens.insert(tokens.end(), ids.begin(), ids.end());
      }
      auto out = text->run("tokens", DType::int64, tokens.data(), {static_cast<int64_t>(b), length},
                           {"text_embedding"});
      if (out[0].data.size() != b * d) throw Error(VTC_ERR_ARTIFACT, text->path() + ": unexpected output size");
      for (size_t i = 0; i < b; ++i) {
        const float* row = out[0].data.data() + i * d;
        double sq = 0.0;
        for (size_t j = 0; j < d; ++j) sq += static_cast<double>(row[j]) * static_cast<double>(row[j]);
        const double norm = std::sqrt(sq);
        for (size_t j = 0; j < d; ++j) mean[(start + i) * d + j] += static_cast<double>(row[j]) / norm;
      }
    }
  }
  auto set = std::make_shared<ClassSet>();
  set->names = names;
  set->embeddings.resize(c * d);
  for (size_t i = 0; i < c; ++i) {
    double sq = 0.0;
    for (size_t j = 0; j < d; ++j) {
      mean[i * d + j] /= static_cast<double>(k);
      sq += mean[i * d + j] * mean[i * d + j];
    }
    const double norm = std::sqrt(sq);
    for (size_t j = 0; j < d; ++j) set->embeddings[i * d + j] = static_cast<float>(mean[i * d + j] / norm);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  classes_ = std::move(set);
}

// ------------------------------------------------------------------------------------------------ streaming

const Session& Engine::frames_session() {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto& m = manifest_;
  if (!m.has_streaming) {
    throw Error(VTC_ERR_UNSUPPORTED,
                m.root + ": the artifact has no streaming graphs: export it with --streaming");
  }
  if (!frames_) {
    SessionConfig config = session_config_;
    config.spinning = false;  // the two streaming sessions alternate (streaming.StreamClassifier)
    const int64_t s = m.input.size;
    auto frames = std::make_unique<Session>(m.path_of(m.frames_file), config);
    TensorInfo in{"frames", DType::uint8, {-1, s, s, 3}};
    if (m.input.kind == "float") in = {"frames", DType::float32, {-1, 3, s, s}};
    check_io(*frames, {in}, {{"frame_embedding", DType::float32, {-1, m.embed_dim}}});
    auto head = std::make_unique<Session>(m.path_of(m.head_file), config);
    check_io(*head, {{"frame_embeddings", DType::float32, {-1, m.frames, m.embed_dim}}},
             {{"logits", DType::float32, {-1, static_cast<int64_t>(m.classes.size())}},
              {"embedding", DType::float32, {-1, m.embed_dim}}});
    frames_ = std::move(frames);
    head_ = std::move(head);
  }
  return *frames_;
}

const Session& Engine::head_session() {
  frames_session();
  return *head_;
}

StreamSession::StreamSession(Engine* engine, int window, int stride, int topk, double fps, std::string name)
    : engine_(engine), window_(window), stride_(stride), topk_(topk), fps_(fps), name_(std::move(name)) {
  if (window < 1 || stride < 1) {
    throw Error(VTC_ERR_ARGUMENT, "window and stride must be >= 1 frame, got " + std::to_string(window) + " and " +
                                      std::to_string(stride));
  }
  if (topk < 1) throw Error(VTC_ERR_ARGUMENT, "topk must be >= 1, got " + std::to_string(topk));
  engine_->frames_session();  // opens both graphs or throws
  offsets_ = uniform_indices(window, engine->manifest().frames, 1);
}

bool StreamSession::needed(int64_t index) const {
  // streaming.StreamClassifier.run.needed: some window not yet emitted samples this frame
  const int64_t a = index - window_ + 1;
  const int64_t first = a <= 0 ? 0 : ((a + stride_ - 1) / stride_) * stride_;
  for (int64_t s = first; s <= index; s += stride_) {
    if (s < next_start_) continue;
    if (std::find(offsets_.begin(), offsets_.end(), index - s) != offsets_.end()) return true;
  }
  return false;
}

void StreamSession::flush() {
  if (pending_.empty()) return;
  const auto& m = engine_->manifest();
  const int64_t s = m.input.size, n = static_cast<int64_t>(pending_.size());
  const size_t bytes = static_cast<size_t>(s * s * 3);
  std::vector<uint8_t> batch(static_cast<size_t>(n) * bytes);
  for (int64_t i = 0; i < n; ++i) std::memcpy(batch.data() + i * bytes, pending_[i].second.data(), bytes);
  const Session& frames = engine_->frames_session();
  std::vector<Tensor> out;
  if (m.input.kind == "uint8") {
    out = frames.run("frames", DType::uint8, batch.data(), {n, s, s, 3}, {"frame_embedding"});
  } else {
    std::vector<float> feed(batch.size());
    to_float(batch.data(), static_cast<size_t>(n), static_cast<int>(s), m.input, feed.data());
    out = frames.run("frames", DType::float32, feed.data(), {n, 3, s, s}, {"frame_embedding"});
  }
  const size_t d = static_cast<size_t>(m.embed_dim);
  if (out[0].data.size() != static_cast<size_t>(n) * d) {
    throw Error(VTC_ERR_ARTIFACT, frames.path() + ": unexpected output size");
  }
  for (int64_t i = 0; i < n; ++i) {
    cache_[pending_[i].first].assign(out[0].data.begin() + i * d, out[0].data.begin() + (i + 1) * d);
  }
  encoded_ += n;
  pending_.clear();
}

Result StreamSession::classify(int64_t start) {
  // streaming.StreamClassifier._classify
  const auto& m = engine_->manifest();
  const size_t t = offsets_.size(), d = static_cast<size_t>(m.embed_dim);
  std::vector<float> feats(t * d);
  for (size_t k = 0; k < t; ++k) {
    const auto& e = cache_.at(start + offsets_[k]);
    std::copy(e.begin(), e.end(), feats.begin() + k * d);
  }
  auto out = engine_->head_session().run("frame_embeddings", DType::float32, feats.data(),
                                         {1, static_cast<int64_t>(t), static_cast<int64_t>(d)},
                                         {"logits", "embedding"});
  Result r;
  r.video = name_;
  r.logits = std::move(out[0].data);
  r.embedding = std::move(out[1].data);
  auto classes = engine_->classes();
  if (!classes->embeddings.empty()) r.logits = swapped_logits(*classes, r.embedding, m.logit_scale);
  r.topk = top_predictions(r.logits, classes->names, topk_);
  r.views = 1;
  r.num_frames = window_;
  r.start_frame = start;
  r.end_frame = start + window_;
  r.start_s = fps_ > 0 ? static_cast<double>(start) / fps_ : NAN;
  r.end_s = fps_ > 0 ? static_cast<double>(start + window_) / fps_ : NAN;
  r.start_pts = pts_.count(start) ? pts_[start] : NAN;
  r.end_pts = pts_.count(start + window_ - 1) ? pts_[start + window_ - 1] : NAN;
  return r;
}

std::vector<Result> StreamSession::push(const uint8_t* rgb, int h, int w, double pts) {
  const auto& m = engine_->manifest();
  const int64_t index = pushed_;
  std::vector<Result> out;
  if (needed(index)) {
    std::vector<uint8_t> pre = rules::preprocess(rgb, h, w, m.input.resize, m.input.size, 1);
    pending_.emplace_back(index, std::move(pre));
  }
  ++pushed_;
  pts_[index] = pts;
  if (static_cast<int>(pending_.size()) >= batch_) flush();
  while (next_start_ + window_ - 1 <= index) {
    flush();
    out.push_back(classify(next_start_));
    next_start_ += stride_;
    cache_.erase(cache_.begin(), cache_.lower_bound(next_start_));
    pts_.erase(pts_.begin(), pts_.lower_bound(next_start_));
  }
  return out;
}


int parse_span(const std::string& text_in, double fps, const std::string& what) {
  std::string raw;
  for (char c : text_in) {
    if (c != ' ' && c != '\t' && c != '\n') raw.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  long long frames = 0;
  try {
    size_t used = 0;
    if (!raw.empty() && raw.back() == 's') {
      const double seconds = std::stod(raw.substr(0, raw.size() - 1), &used);
      if (used != raw.size() - 1) throw std::invalid_argument("span");
      if (!(fps > 0)) {
        throw Error(VTC_ERR_ARGUMENT, "--" + what + " " + text_in +
                                          ": the source reports no frame rate; give it in frames");
      }
      const double f = std::nearbyint(seconds * fps);
      frames = std::isfinite(f) && std::fabs(f) < 1e12 ? static_cast<long long>(f) : -1;
    } else {
      frames = std::stoll(raw, &used);
      if (used != raw.size()) throw std::invalid_argument("span");
    }
  } catch (const std::logic_error&) {
    throw Error(VTC_ERR_ARGUMENT, "--" + what + " must be frames (16) or seconds (2s), got '" + text_in + "'");
  }
  if (frames < 1) throw Error(VTC_ERR_ARGUMENT, "--" + what + " " + text_in + " is less than one frame");
  if (frames > (1LL << 24)) throw Error(VTC_ERR_ARGUMENT, "--" + what + " " + text_in + " is too long");
  return static_cast<int>(frames);
}

void run_stream_source(Engine* engine, const std::string& source, const std::string& window,
                       const std::string& stride, int topk, int live_in,
                       const std::function<void(const Result&)>& on_window) {
  static const char* const kLive[] = {"pipe:", "rtsp://", "rtsps://", "rtmp://", "http://", "https://",
                                      "udp://", "tcp://",  "srt://"};
  bool live = live_in == 1;
  if (live_in < 0) {
    live = source == "-" || source.rfind("/dev/video", 0) == 0;
    for (const char* p : kLive) live = live || source.rfind(p, 0) == 0;
  }
  auto error_result = [&](int status, const std::string& message) {
    Result r;
    r.video = source;
    r.status = status;
    r.error = Error::one_line(message);
    on_window(r);
  };
  std::unique_ptr<rules::FrameStream> stream;
  try {
    rules::DecodeOptions decode;
    stream = rules::FrameStream::open(source, decode);
  } catch (const rules::Error& e) {
    error_result(status_of(e), e.what());
    return;
  }
  const double fps = stream->fps();
  const int w = parse_span(window, fps, "window"), s = parse_span(stride, fps, "stride");
  StreamSession session(engine, w, s, topk, fps, source);

  // Decoding on its own thread, a bounded queue of frames ahead of the encoder.
  struct Frame {
    std::vector<uint8_t> rgb;
    int h = 0, w = 0;
    double pts = 0;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Frame> queue;
  bool done = false, stop = false;
  int failed_status = VTC_OK;
  std::string failed;
  std::thread reader([&] {
    try {
      for (;;) {
        Frame f;
        if (!stream->next(&f.rgb, &f.h, &f.w, &f.pts)) break;
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || queue.size() < 8; });
        if (stop) break;
        queue.push_back(std::move(f));
        cv.notify_all();
      }
    } catch (const rules::Error& e) {
      std::lock_guard<std::mutex> lock(mu);
      failed_status = status_of(e);
      failed = e.what();
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu);
      failed_status = VTC_ERR_INTERNAL;
      failed = source + ": stream failed (" + e.what() + ")";
    }
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  });
  struct Joiner {
    std::thread* t;
    std::mutex* mu;
    std::condition_variable* cv;
    bool* stop;
    ~Joiner() {
      {
        std::lock_guard<std::mutex> lock(*mu);
        *stop = true;
      }
      cv->notify_all();
      t->join();
    }
  } joiner{&reader, &mu, &cv, &stop};
  for (;;) {
    Frame f;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done || !queue.empty(); });
      if (queue.empty()) break;
      f = std::move(queue.front());
      queue.pop_front();
      cv.notify_all();
    }
    for (const Result& r : session.push(f.rgb.data(), f.h, f.w, f.pts)) on_window(r);
  }
  if (failed_status != VTC_OK) {
    const std::string prefix = failed.rfind(source, 0) == 0 ? "" : source + ": ";
    error_result(failed_status, prefix + failed);
    return;
  }
  // The end, as vtc_deploy.streaming.StreamClassifier.run: a live source has no natural end (an error line says
  // where it stopped); a file ends normally at its last frame unless it is truncated (its index lists video data past
  // its end: rules::FrameStream::truncation, the file reader's rule). A file without frames prints nothing.
  const int64_t n = stream->frames_read();
  if (live) {
    char seconds[64] = "";
    if (fps > 0) std::snprintf(seconds, sizeof seconds, " (%.2f s)", static_cast<double>(n) / fps);
    error_result(VTC_ERR_DECODE, source + ": the stream stopped after " + std::to_string(n) + " frames" + seconds);
  } else if (const std::string why = stream->truncation(); !why.empty()) {
    error_result(VTC_ERR_DECODE, source + ": the file ended after " + std::to_string(n) + " frames (" + why + ")");
  }
}

}  // namespace vtc
