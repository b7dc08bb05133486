// FFmpeg decoding, frame-exact: frame k is the k-th frame that a plain sequential decode (demux every packet of the
// first video stream, avcodec_send_packet/avcodec_receive_frame, flush at the end) yields; that decode also gives
// num_frames. RGB: swscale with SWS_BILINEAR, the frame's colour matrix (colorspace) and range, as PyAV's
// frame.to_ndarray(format="rgb24") converts. Rotation: the stream's display matrix, applied to the RGB frames.
#include "decode.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

namespace vtc::rules {

VideoReader::~VideoReader() = default;
FrameStream::~FrameStream() = default;

namespace {

constexpr int64_t kMaxFrames = 10000000;  // as vtc_deploy.video.MAX_FRAMES

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  std::string line = path.empty() ? message : path + ": " + message;
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  throw Error(Error::Kind::decode, line);
}

std::string av_message(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(err, buf, sizeof(buf));
  return buf;
}

void quiet_ffmpeg() {
  static const bool once = [] {
    av_log_set_level(AV_LOG_QUIET);  // errors are reported through Error, never printed
    return true;
  }();
  (void)once;
}

struct FormatCloser {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecCloser {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct PacketFree {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct SwsFree {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};

// Clockwise degrees (0, 90, 180, 270) to rotate decoded frames by, from the stream's display matrix.
int stream_rotation(const AVStream* stream) {
  const uint8_t* matrix = av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, nullptr);
  if (matrix == nullptr) return 0;
  const double ccw = av_display_rotation_get(reinterpret_cast<const int32_t*>(matrix));
  if (std::isnan(ccw)) return 0;
  double theta = -std::round(ccw);
  theta -= 360.0 * std::floor(theta / 360.0 + 0.9 / 360.0);  // to [0, 360)
  for (int r : {90, 180, 270}) {
    if (std::fabs(theta - r) < 1.0) return r;
  }
  return 0;
}

// uint8 RGB [h, w, 3] rotated clockwise by `rotation` into `out` ([w, h, 3] for 90/270).
void rotate_rgb(const uint8_t* in, int h, int w, int rotation, uint8_t* out) {
  if (rotation == 0) {
    std::memcpy(out, in, static_cast<size_t>(h) * w * 3);
    return;
  }
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      size_t dst = 0;
      if (rotation == 90) {  // out[x][h-1-y] = in[y][x], out is h wide
        dst = (static_cast<size_t>(x) * h + (h - 1 - y)) * 3;
      } else if (rotation == 180) {
        dst = (static_cast<size_t>(h - 1 - y) * w + (w - 1 - x)) * 3;
      } else {  // 270: out[w-1-x][y] = in[y][x]
        dst = (static_cast<size_t>(w - 1 - x) * h + y) * 3;
      }
      const uint8_t* src = in + (static_cast<size_t>(y) * w + x) * 3;
      out[dst] = src[0];
      out[dst + 1] = src[1];
      out[dst + 2] = src[2];
    }
  }
}

// swscale colour matrix for a frame's AVColorSpace, as sws_scale_frame picks it from the frame.
int sws_colorspace(AVColorSpace cs) {
  switch (cs) {
    case AVCOL_SPC_BT709: return SWS_CS_ITU709;
    case AVCOL_SPC_FCC: return SWS_CS_FCC;
    case AVCOL_SPC_SMPTE240M: return SWS_CS_SMPTE240M;
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL: return SWS_CS_BT2020;
    default: return SWS_CS_DEFAULT;  // BT.601 (BT470BG, SMPTE170M, unspecified)
  }
}

// Frame -> packed RGB24 with the settings PyAV uses.
class RgbConverter {
 public:
  // Debian's FFmpeg 5.1 x86 yuv2rgb converts whole groups of 8 pixels and leaves a narrower tail of each row
  // unwritten; FFmpeg 8 (PyAV's) converts it. So the conversion runs on a width padded to kPad pixels, reading the
  // decoder's row padding (or a padded copy of the frame), and the extra columns are dropped: every real pixel is
  // converted from its own samples, as FFmpeg 8 does.
  static constexpr int kPad = 16;

  void convert(const AVFrame* frame, std::vector<uint8_t>* rgb, const std::string& path) {
    const int w = frame->width, h = frame->height;
    const int wp = (w + kPad - 1) / kPad * kPad;
    const auto fmt = static_cast<AVPixelFormat>(frame->format);
    const bool full = frame->color_range == AVCOL_RANGE_JPEG;
    const int cs = sws_colorspace(frame->colorspace);
    if (!ctx_ || wp != w_ || h != h_ || fmt != fmt_ || full != full_ || cs != cs_) {
      ctx_.reset(sws_getContext(wp, h, fmt, wp, h, AV_PIX_FMT_RGB24, SWS_BILINEAR, nullptr, nullptr, nullptr));
      if (!ctx_) {
        const char* name = av_get_pix_fmt_name(fmt);
        fail(path, std::string("cannot convert pixel format ") + (name ? name : "?") + " to RGB");
      }
      int* inv = nullptr;
      int* table = nullptr;
      int src_range = 0, dst_range = 0, brightness = 0, contrast = 0, saturation = 0;
      if (sws_getColorspaceDetails(ctx_.get(), &inv, &src_range, &table, &dst_range, &brightness, &contrast,
                                   &saturation) >= 0) {
        const int* coeffs = sws_getCoefficients(cs);
        // source range from the frame (yuvj formats are full range already), RGB full range
        sws_setColorspaceDetails(ctx_.get(), coeffs, full ? 1 : src_range, coeffs, dst_range, brightness, contrast,
                                 saturation);
      }
      w_ = wp, h_ = h, fmt_ = fmt, full_ = full, cs_ = cs;
    }
    const uint8_t* const* src = frame->data;
    const int* src_stride = frame->linesize;
    bool fits = wp == w;
    if (!fits) {
      fits = true;
      for (int p = 0; p < 4 && frame->data[p] != nullptr; ++p) {
        const int need = av_image_get_linesize(fmt, wp, p);
        if (need < 0 || need > frame->linesize[p]) fits = false;
      }
    }
    if (!fits) {  // copy into a frame whose rows are long enough
      if (!padded_ || padded_->width != wp || padded_->height != h || padded_->format != frame->format) {
        padded_.reset(av_frame_alloc());
        if (!padded_) fail(path, "out of memory");
        padded_->width = wp, padded_->height = h, padded_->format = frame->format;
        if (av_frame_get_buffer(padded_.get(), 64) < 0) fail(path, "out of memory");
      }
      av_image_copy(padded_->data, padded_->linesize, const_cast<const uint8_t**>(frame->data), frame->linesize, fmt,
                    w, h);
      src = padded_->data;
      src_stride = padded_->linesize;
    }
    out_.resize(static_cast<size_t>(wp) * 3 * (h + 1));
    uint8_t* dst[4] = {out_.data(), nullptr, nullptr, nullptr};
    int dst_stride[4] = {wp * 3, 0, 0, 0};
    const int rows = sws_scale(ctx_.get(), src, src_stride, 0, h, dst, dst_stride);
    if (rows != h) fail(path, "colour conversion failed (" + av_message(rows < 0 ? rows : AVERROR_UNKNOWN) + ")");
    rgb->resize(static_cast<size_t>(w) * h * 3);
    for (int y = 0; y < h; ++y) {
      std::memcpy(rgb->data() + static_cast<size_t>(y) * w * 3, out_.data() + static_cast<size_t>(y) * wp * 3,
                  static_cast<size_t>(w) * 3);
    }
  }

 private:
  std::unique_ptr<SwsContext, SwsFree> ctx_;
  std::unique_ptr<AVFrame, FrameFree> padded_;
  std::vector<uint8_t> out_;
  int w_ = 0, h_ = 0, cs_ = -1;
  AVPixelFormat fmt_ = AV_PIX_FMT_NONE;
  bool full_ = false;
};

// One pass of decoding: open, find the stream, read packets and pull frames in order.
class Decoder {
 public:
  Decoder(const std::string& path, const std::string& url, const DecodeOptions& opts, bool check_file)
      : path_(path) {
    quiet_ffmpeg();
    if (check_file) check_regular_file();
    AVFormatContext* raw = nullptr;
    int err = avformat_open_input(&raw, url.c_str(), nullptr, nullptr);
    if (err < 0) {
      if (err == AVERROR_INVALIDDATA) fail(path_, "not a video file (no container format recognised, or truncated header)");
      fail(path_, "cannot open video (" + av_message(err) + ")");
    }
    fmt_.reset(raw);
    err = avformat_find_stream_info(fmt_.get(), nullptr);
    if (err < 0) fail(path_, "cannot read the stream headers (" + av_message(err) + ")");
    for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
      const AVStream* s = fmt_->streams[i];
      if (s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO && !(s->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
        stream_index_ = static_cast<int>(i);
        break;
      }
    }
    if (stream_index_ < 0) fail(path_, "no video stream (audio-only or data file)");
    stream_ = fmt_->streams[stream_index_];
    for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
      if (static_cast<int>(i) != stream_index_) fmt_->streams[i]->discard = AVDISCARD_ALL;
    }
    const AVCodecParameters* par = stream_->codecpar;
    if (par->width <= 0 || par->height <= 0) {
      fail(path_, "video stream has no frame size (" + std::to_string(par->width) + "x" + std::to_string(par->height) + ")");
    }
    if (static_cast<int64_t>(par->width) * par->height > opts.max_pixels) {
      fail(path_, "frame size " + std::to_string(par->width) + "x" + std::to_string(par->height) +
                      " exceeds the limit of " + std::to_string(opts.max_pixels) + " pixels (raise max_pixels to allow it)");
    }
    max_pixels_ = opts.max_pixels;
    const AVCodec* codec = avcodec_find_decoder(par->codec_id);
    if (codec == nullptr) {
      const char* name = avcodec_get_name(par->codec_id);
      fail(path_, std::string("no decoder for the video codec ") + (name ? name : "?"));
    }
    codec_.reset(avcodec_alloc_context3(codec));
    if (!codec_) fail(path_, "out of memory");
    err = avcodec_parameters_to_context(codec_.get(), par);
    if (err < 0) fail(path_, "cannot set up the decoder (" + av_message(err) + ")");
    codec_->thread_count = std::max(0, opts.threads);
    codec_->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    codec_->pkt_timebase = stream_->time_base;
    err = avcodec_open2(codec_.get(), codec, nullptr);
    if (err < 0) fail(path_, "cannot open the decoder (" + av_message(err) + ")");
    packet_.reset(av_packet_alloc());
    frame_.reset(av_frame_alloc());
    if (!packet_ || !frame_) fail(path_, "out of memory");
    stored_rotation_ = stream_rotation(stream_);
    rotation_ = opts.autorotate ? stored_rotation_ : 0;
    const AVRational rate = stream_->avg_frame_rate.num > 0 && stream_->avg_frame_rate.den > 0
                                ? stream_->avg_frame_rate
                                : av_guess_frame_rate(fmt_.get(), stream_, nullptr);
    fps_ = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0.0;
    declared_frames_ = stream_->nb_frames;
  }

  // Next decoded frame (owned by the decoder until the next call), nullptr at the end.
  const AVFrame* next() {
    while (true) {
      int err = avcodec_receive_frame(codec_.get(), frame_.get());
      if (err >= 0) {
        if (static_cast<int64_t>(frame_->width) * frame_->height > max_pixels_) {
          fail(path_, "frame " + std::to_string(frames_out_) + " is " + std::to_string(frame_->width) + "x" +
                          std::to_string(frame_->height) + ", over the limit of " + std::to_string(max_pixels_) + " pixels");
        }
        ++frames_out_;
        return frame_.get();
      }
      if (err == AVERROR_EOF) return nullptr;
      if (err != AVERROR(EAGAIN)) {
        fail(path_, "cannot decode frame " + std::to_string(frames_out_) + " (" + av_message(err) +
                        "); the file is truncated or corrupt");
      }
      if (flushed_) return nullptr;
      feed();
    }
  }

  int64_t packets() const { return packets_; }
  int64_t frames_out() const { return frames_out_; }
  int64_t declared_frames() const { return declared_frames_; }
  int rotation() const { return rotation_; }  // clockwise degrees applied to the frames
  int stored_rotation() const { return stored_rotation_; }  // clockwise degrees the display matrix asks for
  double fps() const { return fps_; }
  double seconds(int64_t ts) const {
    if (ts == AV_NOPTS_VALUE) return std::nan("");
    const int64_t start = stream_->start_time != AV_NOPTS_VALUE ? stream_->start_time : 0;
    return static_cast<double>(ts - start) * av_q2d(stream_->time_base);
  }
  int width() const { return stream_->codecpar->width; }
  int height() const { return stream_->codecpar->height; }

 private:
  void check_regular_file() {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) fail(path_, "no such file");
    if (!S_ISREG(st.st_mode)) fail(path_, "not a regular file");
    if (st.st_size == 0) fail(path_, "empty file (0 bytes)");
  }

  // Sends the next packet of the stream (or the flush) to the decoder.
  void feed() {
    while (true) {
      av_packet_unref(packet_.get());
      const int err = av_read_frame(fmt_.get(), packet_.get());
      if (err == AVERROR_EOF) {
        send(nullptr);
        flushed_ = true;
        return;
      }
      if (err < 0) {
        fail(path_, "cannot read packets after frame " + std::to_string(frames_out_) + " (" + av_message(err) +
                        "); the file is truncated or corrupt");
      }
      if (packet_->stream_index != stream_index_) continue;
      if (packet_->size > 0) ++packets_;
      if (packets_ > kMaxFrames) fail(path_, "more than " + std::to_string(kMaxFrames) + " frames");
      send(packet_.get());
      return;
    }
  }

  void send(const AVPacket* packet) {
    const int err = avcodec_send_packet(codec_.get(), packet);
    if (err < 0 && err != AVERROR_EOF) {
      fail(path_, "cannot decode packet " + std::to_string(packets_) + " (" + av_message(err) +
                      "); the file is truncated or corrupt");
    }
  }

  std::string path_;
  std::unique_ptr<AVFormatContext, FormatCloser> fmt_;
  std::unique_ptr<AVCodecContext, CodecCloser> codec_;
  std::unique_ptr<AVPacket, PacketFree> packet_;
  std::unique_ptr<AVFrame, FrameFree> frame_;
  AVStream* stream_ = nullptr;
  int stream_index_ = -1;
  int rotation_ = 0;
  int stored_rotation_ = 0;
  double fps_ = 0.0;
  int64_t declared_frames_ = 0;
  int64_t max_pixels_ = 0;
  int64_t packets_ = 0;
  int64_t frames_out_ = 0;
  bool flushed_ = false;
};

class FileReader final : public VideoReader {
 public:
  FileReader(const std::string& path, const DecodeOptions& opts) : path_(path), opts_(opts) {
    // Counting pass: a plain sequential decode without colour conversion.
    Decoder counter(path_, path_, opts_, true);
    int frame_w = 0, frame_h = 0;
    while (const AVFrame* f = counter.next()) {
      if (frame_w == 0) frame_w = f->width, frame_h = f->height;
      if (f->width != frame_w || f->height != frame_h) {
        fail(path_, "frame size changes mid-stream (" + std::to_string(frame_w) + "x" + std::to_string(frame_h) +
                        " to " + std::to_string(f->width) + "x" + std::to_string(f->height) + ")");
      }
    }
    if (counter.frames_out() == 0) fail(path_, "video has no frames");
    if (counter.declared_frames() > 0 && counter.packets() < counter.declared_frames()) {
      fail(path_, "truncated: the header lists " + std::to_string(counter.declared_frames()) +
                      " frames but only " + std::to_string(counter.packets()) + " are in the file");
    }
    info_.num_frames = counter.frames_out();
    rotation_cw_ = counter.rotation();
    info_.rotation = (360 - counter.stored_rotation()) % 360;  // counter-clockwise, as the Python runtime reports it
    info_.fps = counter.fps();
    const bool swap = rotation_cw_ == 90 || rotation_cw_ == 270;
    info_.width = swap ? frame_h : frame_w;
    info_.height = swap ? frame_w : frame_h;
  }

  std::vector<uint8_t> frames_at(const std::vector<int64_t>& indices) override {
    for (int64_t i : indices) {
      if (i < 0 || i >= info_.num_frames) {
        fail(path_, "frame index " + std::to_string(i) + " outside 0.." + std::to_string(info_.num_frames - 1));
      }
    }
    const size_t frame_bytes = static_cast<size_t>(info_.width) * info_.height * 3;
    std::vector<uint8_t> out(frame_bytes * indices.size());
    if (indices.empty()) return out;
    std::vector<int64_t> wanted(indices);
    std::sort(wanted.begin(), wanted.end());
    wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
    std::map<int64_t, size_t> slot;  // frame index -> position in `wanted`
    for (size_t k = 0; k < wanted.size(); ++k) slot[wanted[k]] = k;
    std::vector<uint8_t> unique_frames(frame_bytes * wanted.size());
    if (!decoder_ || wanted.front() < position_) {
      decoder_ = std::make_unique<Decoder>(path_, path_, opts_, true);
      position_ = 0;
    }
    std::vector<uint8_t> rgb;
    size_t k = 0;
    while (k < wanted.size()) {
      const AVFrame* f = decoder_->next();
      if (f == nullptr) {
        decoder_.reset();
        fail(path_, "frame " + std::to_string(wanted[k]) + " could not be decoded (the first pass counted " +
                        std::to_string(info_.num_frames) + " frames); the file changed or is corrupt");
      }
      const int64_t index = position_++;
      if (index != wanted[k]) continue;
      const bool swap = rotation_cw_ == 90 || rotation_cw_ == 270;
      if ((swap ? f->height : f->width) != info_.width || (swap ? f->width : f->height) != info_.height) {
        fail(path_, "frame " + std::to_string(index) + " has a different size from the first frame");
      }
      converter_.convert(f, &rgb, path_);
      rotate_rgb(rgb.data(), f->height, f->width, rotation_cw_, unique_frames.data() + k * frame_bytes);
      ++k;
    }
    for (size_t i = 0; i < indices.size(); ++i) {
      std::memcpy(out.data() + i * frame_bytes, unique_frames.data() + slot[indices[i]] * frame_bytes, frame_bytes);
    }
    return out;
  }

 private:
  std::string path_;
  DecodeOptions opts_;
  std::unique_ptr<Decoder> decoder_;  // kept open between calls: later frames continue the same decode
  int64_t position_ = 0;              // index of the next frame decoder_ yields
  int rotation_cw_ = 0;               // clockwise degrees applied to the decoded frames
  RgbConverter converter_;
};

class Stream final : public FrameStream {
 public:
  Stream(const std::string& source, const DecodeOptions& opts)
      : decoder_(source, source == "-" ? "pipe:0" : source, opts,
                 /*check_file=*/source != "-" && source.find("://") == std::string::npos &&
                     source.rfind("pipe:", 0) != 0 && source.rfind("/dev/", 0) != 0),
        source_(source) {}

  bool next(std::vector<uint8_t>* rgb, int* height, int* width, double* pts_seconds) override {
    const AVFrame* f = decoder_.next();
    if (f == nullptr) {
      if (decoder_.frames_out() == 0) fail(source_, "video has no frames");
      return false;
    }
    converter_.convert(f, &tmp_, source_);
    const int r = decoder_.rotation();
    const bool swap = r == 90 || r == 270;
    *height = swap ? f->width : f->height;
    *width = swap ? f->height : f->width;
    rgb->resize(tmp_.size());
    rotate_rgb(tmp_.data(), f->height, f->width, r, rgb->data());
    *pts_seconds = decoder_.seconds(f->best_effort_timestamp);
    return true;
  }

  double fps() const override { return decoder_.fps(); }

 private:
  Decoder decoder_;
  std::string source_;
  RgbConverter converter_;
  std::vector<uint8_t> tmp_;
};

}  // namespace

std::unique_ptr<VideoReader> VideoReader::open(const std::string& path, const DecodeOptions& opts) {
  try {
    return std::make_unique<FileReader>(path, opts);
  } catch (const std::bad_alloc&) {
    fail(path, "out of memory while decoding");
  }
}

std::unique_ptr<FrameStream> FrameStream::open(const std::string& path_or_url, const DecodeOptions& opts) {
  return std::make_unique<Stream>(path_or_url, opts);
}

}  // namespace vtc::rules
