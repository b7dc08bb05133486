// TEMPORARY stand-in (see standin.cmake).
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>
#include <libavutil/imgutils.h>
}
#include <algorithm>
#include <cmath>
#include <map>
#include <cstring>

#include "rules/decode.h"
#include "rules/resize.h"
#include "rules/tokenizer.h"

namespace vtc::rules {
namespace {
Error decode_error(const std::string& path, const std::string& m) { return Error(Error::Kind::decode, path + ": " + m); }

struct Decoder {
  AVFormatContext* fmt = nullptr;
  AVCodecContext* ctx = nullptr;
  int stream = -1;
  std::string path;
  explicit Decoder(const std::string& p) : path(p) {
    if (avformat_open_input(&fmt, p.c_str(), nullptr, nullptr) < 0) throw decode_error(p, "cannot open");
    if (avformat_find_stream_info(fmt, nullptr) < 0) throw decode_error(p, "no stream info");
    stream = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
    if (stream < 0) throw decode_error(p, "no video stream");
    const AVCodec* codec = avcodec_find_decoder(fmt->streams[stream]->codecpar->codec_id);
    if (!codec) throw decode_error(p, "no decoder");
    ctx = avcodec_alloc_context3(codec);
    avcodec_parameters_to_context(ctx, fmt->streams[stream]->codecpar);
    ctx->thread_count = 1;
    if (avcodec_open2(ctx, codec, nullptr) < 0) throw decode_error(p, "cannot open decoder");
  }
  ~Decoder() {
    avcodec_free_context(&ctx);
    avformat_close_input(&fmt);
  }
  // calls f(frame) for each decoded frame in order; f returns false to stop
  template <class F> void each(F&& f) {
    AVPacket* pkt = av_packet_alloc();
    AVFrame* frame = av_frame_alloc();
    bool go = true, flushing = false;
    while (go) {
      int r = 0;
      if (!flushing) {
        r = av_read_frame(fmt, pkt);
        if (r < 0) { flushing = true; avcodec_send_packet(ctx, nullptr); }
        else if (pkt->stream_index != stream) { av_packet_unref(pkt); continue; }
        else { avcodec_send_packet(ctx, pkt); av_packet_unref(pkt); }
      }
      while (go) {
        r = avcodec_receive_frame(ctx, frame);
        if (r == AVERROR(EAGAIN)) break;
        if (r < 0) { go = false; break; }
        go = f(frame);
        av_frame_unref(frame);
      }
      if (flushing && go && r != AVERROR(EAGAIN)) break;
    }
    av_frame_free(&frame);
    av_packet_free(&pkt);
  }
};

std::vector<uint8_t> to_rgb(AVFrame* f) {
  std::vector<uint8_t> out(static_cast<size_t>(f->width) * f->height * 3);
  SwsContext* sws = sws_getContext(f->width, f->height, static_cast<AVPixelFormat>(f->format), f->width, f->height,
                                   AV_PIX_FMT_RGB24, SWS_BILINEAR, nullptr, nullptr, nullptr);
  uint8_t* dst[4] = {out.data(), nullptr, nullptr, nullptr};
  int stride[4] = {f->width * 3, 0, 0, 0};
  sws_scale(sws, f->data, f->linesize, 0, f->height, dst, stride);
  sws_freeContext(sws);
  return out;
}

class Reader : public VideoReader {
 public:
  explicit Reader(const std::string& p) : path_(p) {
    Decoder d(p);
    int64_t n = 0;
    d.each([&](AVFrame* f) { info_.width = f->width; info_.height = f->height; ++n; return true; });
    if (n == 0) throw decode_error(p, "zero frames");
    info_.num_frames = n;
  }
  std::vector<uint8_t> frames_at(const std::vector<int64_t>& indices) override {
    std::map<int64_t, std::vector<uint8_t>> got;
    for (auto i : indices) got[i];
    Decoder d(path_);
    int64_t k = 0;
    d.each([&](AVFrame* f) { auto it = got.find(k++); if (it != got.end()) it->second = to_rgb(f); return true; });
    std::vector<uint8_t> out;
    for (auto i : indices) {
      if (got[i].empty()) throw decode_error(path_, "frame missing");
      out.insert(out.end(), got[i].begin(), got[i].end());
    }
    return out;
  }
 private:
  std::string path_;
};

class Stream : public FrameStream {
 public:
  explicit Stream(const std::string& p) : d_(p) {}
  bool next(std::vector<uint8_t>* rgb, int* h, int* w, double* pts) override {
    if (frames_.empty() && !done_) {
      d_.each([&](AVFrame* f) { frames_.push_back({to_rgb(f), f->height, f->width}); return true; });
      done_ = true;
    }
    if (pos_ >= frames_.size()) return false;
    auto& f = frames_[pos_++];
    *rgb = f.rgb; *h = f.h; *w = f.w; *pts = 0;
    return true;
  }
  double fps() const override { auto r = d_.fmt->streams[d_.stream]->avg_frame_rate; return r.den ? av_q2d(r) : 0; }
 private:
  struct F { std::vector<uint8_t> rgb; int h, w; };
  Decoder d_;
  std::vector<F> frames_;
  size_t pos_ = 0;
  bool done_ = false;
};
}  // namespace

VideoReader::~VideoReader() = default;
FrameStream::~FrameStream() = default;
std::unique_ptr<VideoReader> VideoReader::open(const std::string& path, const DecodeOptions&) {
  return std::make_unique<Reader>(path);
}
std::unique_ptr<FrameStream> FrameStream::open(const std::string& path, const DecodeOptions&) {
  return std::make_unique<Stream>(path);
}

void resized_size(int w, int h, int shorter, int* ow, int* oh) {
  if (w <= h) { *ow = shorter; *oh = static_cast<int>(static_cast<double>(shorter) * h / w); }
  else { *ow = static_cast<int>(static_cast<double>(shorter) * w / h); *oh = shorter; }
}

static double cubic(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

void resize_bicubic(const uint8_t* src, int h, int w, uint8_t* dst, int oh, int ow) {
  std::vector<double> tmp(static_cast<size_t>(h) * ow * 3);
  auto pass = [](int in, int out, std::vector<std::vector<std::pair<int, double>>>& k) {
    double scale = static_cast<double>(in) / out, fs = std::max(scale, 1.0), support = 2 * fs;
    k.resize(out);
    for (int o = 0; o < out; ++o) {
      double c = (o + 0.5) * scale;
      int lo = std::max(0, static_cast<int>(c - support + 0.5)), hi = std::min(in, static_cast<int>(c + support + 0.5));
      double sum = 0;
      for (int i = lo; i < hi; ++i) { double v = cubic((i - c + 0.5) / fs); k[o].push_back({i, v}); sum += v; }
      for (auto& p : k[o]) p.second /= sum;
    }
  };
  std::vector<std::vector<std::pair<int, double>>> kx, ky;
  pass(w, ow, kx);
  pass(h, oh, ky);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < ow; ++x)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (auto& p : kx[x]) s += p.second * src[(static_cast<size_t>(y) * w + p.first) * 3 + c];
        tmp[(static_cast<size_t>(y) * ow + x) * 3 + c] = std::min(255.0, std::max(0.0, std::round(s)));
      }
  for (int y = 0; y < oh; ++y)
    for (int x = 0; x < ow; ++x)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (auto& p : ky[y]) s += p.second * tmp[(static_cast<size_t>(p.first) * ow + x) * 3 + c];
        dst[(static_cast<size_t>(y) * ow + x) * 3 + c] = static_cast<uint8_t>(std::min(255.0, std::max(0.0, std::round(s))));
      }
}

std::vector<uint8_t> preprocess(const uint8_t* rgb, int h, int w, int resize, int size, int crops) {
  int ow, oh;
  resized_size(w, h, resize, &ow, &oh);
  std::vector<uint8_t> r(static_cast<size_t>(ow) * oh * 3);
  resize_bicubic(rgb, h, w, r.data(), oh, ow);
  std::vector<std::pair<int, int>> off;
  if (crops == 1) off.push_back({static_cast<int>(std::nearbyint((ow - size) / 2.0)), static_cast<int>(std::nearbyint((oh - size) / 2.0))});
  else { int ws = (ow - size) / 4, hs = (oh - size) / 4; off = {{0, 2 * hs}, {4 * ws, 2 * hs}, {2 * ws, 2 * hs}}; }
  std::vector<uint8_t> out(off.size() * size * size * 3);
  for (size_t v = 0; v < off.size(); ++v)
    for (int y = 0; y < size; ++y)
      std::memcpy(&out[((v * size + y) * size) * 3], &r[((static_cast<size_t>(off[v].second) + y) * ow + off[v].first) * 3], static_cast<size_t>(size) * 3);
  return out;
}

struct Tokenizer::Impl {};
Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
std::vector<int32_t> Tokenizer::encode(const std::string&) const { throw Error(Error::Kind::internal, "stand-in tokenizer"); }
std::vector<int64_t> Tokenizer::tokenize(const std::string&, int) const { throw Error(Error::Kind::internal, "stand-in tokenizer"); }
std::string Tokenizer::clean(const std::string& s) const { return s; }
}  // namespace vtc::rules
