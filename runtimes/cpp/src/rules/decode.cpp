// FFmpeg decoding, frame-exact: frame k is the k-th frame that a plain sequential decode (demux every packet of the
// first video stream, avcodec_send_packet/avcodec_receive_frame, flush at the end) yields, and num_frames the number
// of frames it yields. Two paths, as vtc_deploy.video (its module docstring states the conditions in full):
// - indexed (MP4/MOV/Matroska/WebM/FLV with H.264/HEVC/VP8/VP9/AV1/MJPEG/ProRes/DNxHD, AVI with the intra-only
//   ones, whose packets map one-to-one to frames, checked on the packet index and on the bitstream): num_frames = the
//   packets not marked discard, frame k = the packet with the k-th smallest pts; reading decodes from the IDR/IRAP
//   keyframe before each wanted frame, skips non-reference pictures that are not wanted (skip_frame per packet;
//   H.264: while NonReferenceCheck allows it), stops after the last wanted one, and checks every decoded range; a
//   failed check switches the file to the sequential path;
// - sequential: the definition itself (a counting decode at open, a second decode up to the last wanted frame).
// RGB: the bytes PyAV's frame.to_ndarray(format="rgb24") gives (FFmpeg 8's swscale: SWS_BILINEAR, the frame's colour
// matrix, range and chroma position, interlaced frames field by field; see RgbConverter for how Debian's FFmpeg 5.1 is
// made to match and which 4:2:0 sizes are refused instead). Rotation: the stream's display matrix, applied to the RGB
// frames.
#include "decode.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <utility>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

namespace vtc::rules {

VideoReader::~VideoReader() = default;

std::vector<uint8_t> VideoReader::frames_at(const std::vector<int64_t>& indices) {
  const size_t frame_bytes = static_cast<size_t>(info_.width) * info_.height * 3;
  std::vector<int64_t> wanted(indices);
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  std::vector<std::vector<size_t>> places(wanted.size());  // wanted frame -> its positions in `indices`
  for (size_t i = 0; i < indices.size(); ++i) {
    places[static_cast<size_t>(std::lower_bound(wanted.begin(), wanted.end(), indices[i]) - wanted.begin())]
        .push_back(i);
  }
  std::vector<uint8_t> out(frame_bytes * indices.size());
  if (indices.empty()) return out;
  visit_frames(wanted, [&](size_t k, const uint8_t* rgb) {
    for (size_t i : places[k]) std::memcpy(out.data() + i * frame_bytes, rgb, frame_bytes);
  });
  return out;
}
FrameStream::~FrameStream() = default;

namespace {

constexpr int64_t kMaxFrames = 10000000;  // as vtc_deploy.video.MAX_FRAMES
constexpr size_t kHeadBytes = 4096;  // read from the start of a file for the truncation rule (as HEAD_BYTES)
constexpr uint64_t kMatroskaSegment = 0x18538067;

// The EBML variable-size integer at `pos` (vtc_deploy.video._ebml_vint): false when it is not one or does not fit.
// `marker` keeps the length marker bit (element IDs); sizes have it masked off.
bool ebml_vint(const std::vector<unsigned char>& data, size_t pos, bool marker, uint64_t* value, size_t* length) {
  if (pos >= data.size() || data[pos] == 0) return false;
  size_t n = 1;
  while (!(data[pos] & (0x80 >> (n - 1)))) ++n;  // leading zero bits + 1: 1..8 bytes
  if (pos + n > data.size()) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = v << 8 | data[pos + i];
  *value = marker ? v : v & ((uint64_t{1} << (7 * n)) - 1);
  *length = n;
  return true;
}

// Where a Matroska/WebM file's Segment ends by its header (vtc_deploy.video.matroska_segment_end): -1 when `head` is
// not Matroska or the Segment's size is "unknown" (live recordings).
int64_t matroska_segment_end(const std::vector<unsigned char>& head) {
  static const unsigned char kEbml[4] = {0x1a, 0x45, 0xdf, 0xa3};
  if (head.size() < 4 || std::memcmp(head.data(), kEbml, 4) != 0) return -1;
  uint64_t value = 0;
  size_t n = 0;
  if (!ebml_vint(head, 4, false, &value, &n) || value > head.size()) return -1;
  const size_t pos = 4 + n + static_cast<size_t>(value);
  size_t id_length = 0;
  if (!ebml_vint(head, pos, true, &value, &id_length) || value != kMatroskaSegment) return -1;
  if (!ebml_vint(head, pos + id_length, false, &value, &n) || value == (uint64_t{1} << (7 * n)) - 1) return -1;
  return static_cast<int64_t>(pos + id_length + n + value);  // sizes have at most 56 bits: no overflow
}

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

// How decoded frames are turned upright: clockwise degrees (0, 90, 180, 270), then a horizontal flip when mirrored.
struct Orientation {
  int cw = 0;
  bool mirror = false;
  bool turned() const { return cw == 90 || cw == 270; }  // width and height swap
  bool none() const { return cw == 0 && !mirror; }
};

// The orientation FFmpeg's autorotate gives the stream's display matrix (fftools/ffplay: the angle of
// av_display_rotation_get rounded clockwise; at 90 a transpose when m[3] > 0, at 270 an anti-transpose when m[3] < 0,
// at 180 a horizontal flip when m[0] < 0 and a vertical one when m[4] < 0, at 0 a vertical flip when m[4] < 0); other
// angles are not applied. vtc_deploy.video.matrix_orientation, the same rule.
Orientation stream_orientation(const AVStream* stream) {
  const uint8_t* raw = av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, nullptr);
  if (raw == nullptr) return {};
  int32_t m[9];
  std::memcpy(m, raw, sizeof(m));
  const double ccw = av_display_rotation_get(m);
  if (std::isnan(ccw)) return {};
  double theta = -std::round(ccw);
  theta -= 360.0 * std::floor(theta / 360.0 + 0.9 / 360.0);  // to [0, 360)
  if (std::fabs(theta - 90) < 1.0) return {90, m[3] > 0};
  if (std::fabs(theta - 180) < 1.0) {
    const bool h = m[0] < 0, v = m[4] < 0;
    return {v ? 180 : 0, h != v};
  }
  if (std::fabs(theta - 270) < 1.0) return {270, m[3] < 0};
  if (std::fabs(theta) < 1.0 && m[4] < 0) return {180, true};  // a vertical flip
  return {};
}

// uint8 RGB [h, w, 3] rotated clockwise by `o.cw`, then flipped horizontally when `o.mirror`, into `out`
// ([w, h, 3] for 90/270).
void rotate_rgb(const uint8_t* in, int h, int w, Orientation o, uint8_t* out) {
  if (o.none()) {
    std::memcpy(out, in, static_cast<size_t>(h) * w * 3);
    return;
  }
  const int out_w = o.turned() ? h : w;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      int oy = y, ox = x;
      if (o.cw == 90) {  // out[x][h-1-y] = in[y][x], out is h wide
        oy = x, ox = h - 1 - y;
      } else if (o.cw == 180) {
        oy = h - 1 - y, ox = w - 1 - x;
      } else if (o.cw == 270) {  // out[w-1-x][y] = in[y][x]
        oy = w - 1 - x, ox = y;
      }
      if (o.mirror) ox = out_w - 1 - ox;
      const size_t dst = (static_cast<size_t>(oy) * out_w + ox) * 3;
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

// Chroma sample position of one image (a frame, or one field of an interlaced frame) in swscale's units (1/256 of a
// luma pixel; -513 where the plane is not subsampled that way), as FFmpeg 8's sws_scale_frame derives it from the
// frame's chroma_location (unspecified = centre). field: -1 for a progressive frame, 0 top, 1 bottom.
void chroma_position(AVChromaLocation loc, int sub_x, int sub_y, int field, int* h_pos, int* v_pos) {
  int x = 128, y = 128;  // centre
  switch (loc) {
    case AVCHROMA_LOC_LEFT: x = 0, y = 128; break;
    case AVCHROMA_LOC_TOPLEFT: x = 0, y = 0; break;
    case AVCHROMA_LOC_TOP: x = 128, y = 0; break;
    case AVCHROMA_LOC_BOTTOMLEFT: x = 0, y = 256; break;
    case AVCHROMA_LOC_BOTTOM: x = 128, y = 256; break;
    default: break;
  }
  x *= (1 << sub_x) - 1;  // the positions above are for 2x subsampling
  y *= (1 << sub_y) - 1;
  if (sub_y > 0 && field >= 0) {  // a field's chroma rows sit next to every other luma row of the frame
    if (field == 1) y += (256 << sub_y) - 256;
    y >>= 1;
  }
  *h_pos = sub_x > 0 ? x : -513;
  *v_pos = sub_y > 0 ? y : -513;
}

// Frame -> packed RGB24, as PyAV 18's frame.to_ndarray(format="rgb24") converts: FFmpeg 8's sws_scale_frame with a
// fresh context, SWS_BILINEAR, the frame's colour matrix, range and chroma position. What FFmpeg 8 does, and how
// Debian's FFmpeg 5.1 is made to give the same bytes:
// - an interlaced frame is converted field by field: rows 0, 2, 4... of every plane as one image (ceil(h/2) rows),
//   rows 1, 3, 5... as another, with the chroma position moved to where a field's chroma rows sit; the RGB rows are
//   interleaved again. Here: each field is its own sws_scale (plane pointers one row on, strides doubled).
// - 8-bit yuv420p/yuva420p/yuv422p (and the yuvj forms) of even (field) height: swscale's special yuv->rgb converter, which
//   ignores the chroma position. Debian's x86 version of it converts whole groups of 8 pixels and leaves a narrower
//   tail of each row unwritten; FFmpeg 8's converts it. So it runs on a width padded to kPad pixels, reading the
//   decoder's row padding (or a padded copy of the frame), and the extra columns are dropped.
// - everything else (other formats, odd sizes, more than 8 bits): swscale's general scaler, which filters the chroma
//   to the luma grid with the chroma position. With vertically subsampled chroma (4:2:0) FFmpeg 8 blends the two
//   nearest chroma rows with the filter's exact weights, where 5.1 takes the nearer row or the plain mean. Here:
//   first to yuv422p16 (5.1's general scaler: the chroma filters at 19-bit precision, which rounds nothing for these
//   weights), then that to RGB (no chroma filter left): the same bytes as FFmpeg 8 when every vertical weight is a
//   multiple of 1/8 and the width is even (at an odd width swscale interpolates chroma to every pixel, rounding
//   differently), i.e. at even width and (field) height. Other 4:2:0 sizes (odd width or height; interlaced, a
//   height that is not a multiple of 4) and other vertical subsampling (4:4:0, 4:1:0) are refused with a decode
//   error, never converted differently.
class RgbConverter {
 public:
  static constexpr int kPad = 16;

  void convert(const AVFrame* frame, std::vector<uint8_t>* rgb, const std::string& path) {
    const int w = frame->width, h = frame->height;
    const auto fmt = static_cast<AVPixelFormat>(frame->format);
    const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(fmt);
    if (desc == nullptr) fail(path, "decoded frames have an unknown pixel format");
    const bool palette = (desc->flags & AV_PIX_FMT_FLAG_PAL) != 0;
    const int fields = frame->interlaced_frame && !palette && h >= 2 ? 2 : 1;  // (a palette has no rows)
    rgb->resize(static_cast<size_t>(w) * h * 3);
    for (int field = 0; field < fields; ++field) {
      Image img;
      img.fmt = fmt;
      img.desc = desc;
      img.w = w;
      img.h = fields == 2 ? (h + (field == 0 ? 1 : 0)) / 2 : h;
      img.field = fields == 2 ? field : -1;
      for (int p = 0; p < 4; ++p) {
        img.data[p] = frame->data[p] != nullptr ? frame->data[p] + field * frame->linesize[p] : nullptr;
        img.linesize[p] = frame->linesize[p] * fields;
        img.row_bytes[p] = frame->linesize[p];
      }
      convert_image(frame, img, rgb->data() + static_cast<size_t>(field) * w * 3, fields * w * 3, path);
    }
  }

 private:
  struct Image {
    AVPixelFormat fmt = AV_PIX_FMT_NONE;
    const AVPixFmtDescriptor* desc = nullptr;
    int w = 0, h = 0, field = -1;
    const uint8_t* data[4] = {nullptr, nullptr, nullptr, nullptr};
    int linesize[4] = {0, 0, 0, 0};
    int row_bytes[4] = {0, 0, 0, 0};  // readable bytes of each row (the frame's linesize)
  };
  struct Key {
    AVPixelFormat src, dst;
    int w, h, full, cs, h_pos, v_pos;
    bool operator==(const Key& o) const {
      return src == o.src && dst == o.dst && w == o.w && h == o.h && full == o.full && cs == o.cs &&
             h_pos == o.h_pos && v_pos == o.v_pos;
    }
  };

  [[noreturn]] static void refuse(const std::string& path, const Image& img, const std::string& what) {
    fail(path, std::string(img.desc->name) + " video " + what +
                   ": this libvtc build (Debian's FFmpeg 5.1) cannot convert it to RGB exactly as the Python runtime "
                   "(PyAV's FFmpeg 8) does, so it refuses it rather than return different pixels; decode it with "
                   "the Python runtime, or re-encode it (e.g. yuv420p at an even width and a height that is a multiple "
                   "of 4)");
  }

  // A cached context for src -> dst at w x h (same size), SWS_BILINEAR, the given range, matrix and chroma position.
  SwsContext* context(const Key& key, const std::string& path) {
    for (auto& entry : contexts_) {
      if (entry.first == key) return entry.second.get();
    }
    if (contexts_.size() >= 8) contexts_.clear();
    std::unique_ptr<SwsContext, SwsFree> ctx(sws_alloc_context());
    if (!ctx) fail(path, "out of memory");
    const bool to_rgb = key.dst == AV_PIX_FMT_RGB24;
    const std::pair<const char*, int64_t> opts[] = {
        {"srcw", key.w},          {"srch", key.h},          {"src_format", key.src},  {"dstw", key.w},
        {"dsth", key.h},          {"dst_format", key.dst},  {"sws_flags", SWS_BILINEAR},
        {"src_range", key.full},  {"dst_range", to_rgb ? 0 : key.full},  // yuv -> yuv: no range change
        {"src_h_chr_pos", key.h_pos}, {"src_v_chr_pos", key.v_pos}};
    for (const auto& [name, value] : opts) {
      if (av_opt_set_int(ctx.get(), name, value, 0) < 0) fail(path, std::string("cannot set swscale option ") + name);
    }
    if (sws_init_context(ctx.get(), nullptr, nullptr) < 0) {
      const char* name = av_get_pix_fmt_name(key.src);
      fail(path, std::string("cannot convert pixel format ") + (name ? name : "?") + " to RGB");
    }
    if (to_rgb) {
      int* inv = nullptr;
      int* table = nullptr;
      int src_range = 0, dst_range = 0, brightness = 0, contrast = 0, saturation = 0;
      if (sws_getColorspaceDetails(ctx.get(), &inv, &src_range, &table, &dst_range, &brightness, &contrast,
                                   &saturation) >= 0) {
        const int* coeffs = sws_getCoefficients(key.cs);
        // source range from the frame (yuvj formats are full range already), RGB full range
        sws_setColorspaceDetails(ctx.get(), coeffs, key.full ? 1 : src_range, coeffs, dst_range, brightness, contrast,
                                 saturation);
      }
    }
    contexts_.emplace_back(key, std::move(ctx));
    return contexts_.back().second.get();
  }

  void scale(SwsContext* ctx, const uint8_t* const* src, const int* src_stride, int h, uint8_t* const* dst,
             const int* dst_stride, const std::string& path) {
    const int rows = sws_scale(ctx, src, src_stride, 0, h, dst, dst_stride);
    if (rows != h) fail(path, "colour conversion failed (" + av_message(rows < 0 ? rows : AVERROR_UNKNOWN) + ")");
  }

  // One image (frame or field) into out (rows out_stride bytes apart).
  void convert_image(const AVFrame* frame, const Image& img, uint8_t* out, int out_stride, const std::string& path) {
    const AVPixFmtDescriptor* d = img.desc;
    const int sub_x = d->log2_chroma_w, sub_y = d->log2_chroma_h;
    const bool yuv = !(d->flags & AV_PIX_FMT_FLAG_RGB) && d->nb_components >= 3;
    const bool full = frame->color_range == AVCOL_RANGE_JPEG;
    const int cs = sws_colorspace(frame->colorspace);
    int h_pos = -513, v_pos = -513;
    if (yuv) chroma_position(frame->chroma_location, sub_x, sub_y, img.field, &h_pos, &v_pos);
    const int w = img.w, h = img.h;
    const bool special = (img.fmt == AV_PIX_FMT_YUV420P || img.fmt == AV_PIX_FMT_YUVJ420P ||
                          img.fmt == AV_PIX_FMT_YUVA420P || img.fmt == AV_PIX_FMT_YUV422P ||
                          img.fmt == AV_PIX_FMT_YUVJ422P) &&
                         h % 2 == 0;
    const bool two_step = yuv && sub_y > 0 && !special;
    if (yuv && sub_y > 0) {
      if (sub_y != 1 || sub_x != 1) refuse(path, img, "(chroma subsampled vertically but not as 4:2:0)");
      if (two_step && (w % 2 != 0 || h % 2 != 0)) {
        refuse(path, img, std::string("of ") + (img.field >= 0 ? "field " : "") + "size " + std::to_string(w) + "x" +
                              std::to_string(h) + " (4:2:0 at an odd width or height)");
      }
    }
    const int wp = special ? (w + kPad - 1) / kPad * kPad : w;
    out_.resize(static_cast<size_t>(wp) * 3 * (h + 1));
    uint8_t* dst[4] = {out_.data(), nullptr, nullptr, nullptr};
    const int dst_stride[4] = {wp * 3, 0, 0, 0};
    if (two_step) {
      if (!mid_ || mid_->width != w || mid_->height != h) {
        mid_.reset(av_frame_alloc());
        if (!mid_) fail(path, "out of memory");
        mid_->width = w, mid_->height = h, mid_->format = AV_PIX_FMT_YUV422P16;
        if (av_frame_get_buffer(mid_.get(), 64) < 0) fail(path, "out of memory");
      }
      SwsContext* up = context({img.fmt, AV_PIX_FMT_YUV422P16, w, h, full, cs, h_pos, v_pos}, path);
      scale(up, img.data, img.linesize, h, mid_->data, mid_->linesize, path);
      SwsContext* to_rgb = context({AV_PIX_FMT_YUV422P16, AV_PIX_FMT_RGB24, w, h, full, cs, -513, -513}, path);
      scale(to_rgb, mid_->data, mid_->linesize, h, dst, dst_stride, path);
    } else {
      const uint8_t* const* src = img.data;
      const int* src_stride = img.linesize;
      bool fits = true;
      for (int p = 0; wp != w && p < 4 && img.data[p] != nullptr; ++p) {
        const int need = av_image_get_linesize(img.fmt, wp, p);
        if (need < 0 || need > img.row_bytes[p]) fits = false;
      }
      if (!fits) {  // copy into a frame whose rows are long enough
        if (!padded_ || padded_->width != wp || padded_->height != h || padded_->format != img.fmt) {
          padded_.reset(av_frame_alloc());
          if (!padded_) fail(path, "out of memory");
          padded_->width = wp, padded_->height = h, padded_->format = img.fmt;
          if (av_frame_get_buffer(padded_.get(), 64) < 0) fail(path, "out of memory");
        }
        av_image_copy(padded_->data, padded_->linesize, const_cast<const uint8_t**>(img.data), img.linesize, img.fmt,
                      w, h);
        src = padded_->data;
        src_stride = padded_->linesize;
      }
      SwsContext* ctx = context({img.fmt, AV_PIX_FMT_RGB24, wp, h, full, cs, h_pos, v_pos}, path);
      scale(ctx, src, src_stride, h, dst, dst_stride, path);
    }
    for (int y = 0; y < h; ++y) {
      std::memcpy(out + static_cast<size_t>(y) * out_stride, out_.data() + static_cast<size_t>(y) * wp * 3,
                  static_cast<size_t>(w) * 3);
    }
  }

  std::vector<std::pair<Key, std::unique_ptr<SwsContext, SwsFree>>> contexts_;
  std::unique_ptr<AVFrame, FrameFree> padded_;
  std::unique_ptr<AVFrame, FrameFree> mid_;
  std::vector<uint8_t> out_;
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
    // the first video stream that is not cover art, also when there are several (vtc_deploy.video.video_stream)
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
    stored_ = stream_orientation(stream_);
    applied_ = opts.autorotate ? stored_ : Orientation{};
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

  // Demuxing only (the indexed path): the next non-empty packet of the video stream into *packet; 0, AVERROR_EOF
  // at the end, or another negative AVERROR. Does not feed the decoder.
  int read_packet(AVPacket* packet) {
    while (true) {
      av_packet_unref(packet);
      const int err = av_read_frame(fmt_.get(), packet);
      if (err < 0) return err;
      if (packet->stream_index == stream_index_ && packet->size > 0) return 0;
    }
  }
  AVCodecContext* codec() { return codec_.get(); }
  const AVStream* stream() const { return stream_; }
  std::string format_name() const { return fmt_->iformat->name ? fmt_->iformat->name : ""; }
  int64_t max_pixels() const { return max_pixels_; }

  // Streaming: a packet the demuxer flags corrupt (a sample cut short where the file ends) ends the stream at the
  // frames decoded before it, so that a truncated file is reported as truncated with the frame count PyAV's FFmpeg 8
  // gives (tests/test_cpp_run.py); Debian's FFmpeg 5.1 would fail on the short packet instead.
  void end_at_short_packet() { end_at_short_packet_ = true; }

  // The rule for truncated files (vtc_deploy.video.truncation, the same words): the container's index (MP4 sample
  // table, Matroska cues, AVI idx1) lists video data past the end of the file, or an AVI's RIFF header or a Matroska
  // Segment header declares more bytes than the file has. The reason, or "" for a complete file and for a source that
  // is not a regular file (pipes, URLs, devices). Header frame counts are not used: they disagree with the plain decode
  // on valid files.
  std::string truncation() const {
    if (file_size_ < 0) return "";
    const std::string size = std::to_string(file_size_);
    int64_t end = 0;
    const int entries = avformat_index_get_entries_count(stream_);
    for (int i = 0; i < entries; ++i) {
      const AVIndexEntry* e = avformat_index_get_entry(stream_, i);
      if (e != nullptr && e->pos >= 0) end = std::max(end, e->pos + e->size);
    }
    if (end > file_size_) {
      return "truncated: the container's index lists video data up to byte " + std::to_string(end) +
             " but the file has " + size + " bytes";
    }
    std::vector<unsigned char> head(kHeadBytes);
    std::ifstream in(path_, std::ios::binary);
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
    if (head.size() >= 12 && std::memcmp(head.data(), "RIFF", 4) == 0 &&
        std::memcmp(head.data() + 8, "AVI ", 4) == 0) {
      const int64_t riff = 8 + (static_cast<int64_t>(head[4]) | static_cast<int64_t>(head[5]) << 8 |
                                static_cast<int64_t>(head[6]) << 16 | static_cast<int64_t>(head[7]) << 24);
      if (riff > file_size_) {
        return "truncated: the RIFF header lists " + std::to_string(riff) + " bytes but the file has " + size +
               " bytes";
      }
    }
    const int64_t segment_end = matroska_segment_end(head);
    if (segment_end > file_size_) {
      return "truncated: the Matroska segment header lists " + std::to_string(segment_end) +
             " bytes but the file has " + size + " bytes";
    }
    return "";
  }
  // Files are read only when complete: checked at open, before any packet is read (vtc_deploy.video._Source).
  void check_not_truncated() const {
    const std::string why = truncation();
    if (!why.empty()) fail(path_, why);
  }

  int64_t packets() const { return packets_; }
  int64_t frames_out() const { return frames_out_; }
  int64_t declared_frames() const { return declared_frames_; }
  Orientation applied() const { return applied_; }  // what is applied to the frames
  Orientation stored() const { return stored_; }    // what the display matrix asks for
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
    file_size_ = static_cast<int64_t>(st.st_size);
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
      if (end_at_short_packet_ && (packet_->flags & AV_PKT_FLAG_CORRUPT)) {
        flushed_ = true;  // the end: frames still held in the decoder are not drained
        return;
      }
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
  Orientation applied_;
  Orientation stored_;
  double fps_ = 0.0;
  int64_t declared_frames_ = 0;
  int64_t max_pixels_ = 0;
  int64_t file_size_ = -1;  // regular files (check_file), else unknown
  int64_t packets_ = 0;
  int64_t frames_out_ = 0;
  bool flushed_ = false;
  bool end_at_short_packet_ = false;
};

// ---- the indexed path's packet index (vtc_deploy.video._Packet, _parse, _indexed_plan)

constexpr int64_t kPacketMemory = 64LL << 20;  // packets kept after indexing; larger streams are demuxed again
constexpr size_t kMergeGap = 2;  // decode on through up to this many packets rather than flush and restart

struct PacketInfo {
  int64_t pts = AV_NOPTS_VALUE;
  bool keyframe = false;
  bool discard = false;
  int pictures = -1;        // H.264/HEVC: slices starting a picture; intra-only: 1 if it starts a frame (-1: not parsed)
  bool intra = true;        // the bitstream starts a fresh decode here (True where not parsed)
  bool disposable = false;  // H.264/HEVC: one picture that no other frame references
  int layer = 0;            // HEVC: the picture's TemporalId (sub-layer)
  bool huffman = false;     // MJPEG: carries Huffman tables (DHT)
};

// vtc_deploy.video._jpeg_tables: whether an MJPEG packet is a sequential JPEG image whose DQT segments, before its
// first scan, define every quantization table its frame header uses and whose DHT segments, if any, define every
// Huffman table that scan uses (FFmpeg's MJPEG decoder keeps both kinds of table from one picture to the next), and
// whether it has DHT segments. Reads at most the first 64 KiB.
bool jpeg_tables(const uint8_t* data, int size, bool* huffman) {
  *huffman = false;
  const int64_t n = std::min<int64_t>(size, 65536);
  if (n < 2 || data[0] != 0xFF || data[1] != 0xD8) return false;
  bool quant[16] = {}, huff[2][16] = {}, frame = false, used_quant[16] = {};
  int64_t pos = 2;
  while (pos + 4 <= n) {
    if (data[pos] != 0xFF) return false;
    const int marker = data[pos + 1];
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    const int64_t length = (data[pos + 2] << 8) | data[pos + 3];
    const uint8_t* seg = data + pos + 4;
    const int64_t len = length - 2;
    if (length < 2 || pos + 2 + length > n) return false;
    if (marker == 0xDB) {  // DQT: (precision, id), 64 values of 8 or 16 bits each
      int64_t i = 0;
      while (i < len) {
        quant[seg[i] & 15] = true;
        i += 1 + 64 * ((seg[i] >> 4) ? 2 : 1);
      }
      if (i != len) return false;
    } else if (marker == 0xC4) {  // DHT: (class, id), 16 code counts, the values
      *huffman = true;
      int64_t i = 0;
      while (i + 17 <= len) {
        if ((seg[i] >> 4) < 2) huff[seg[i] >> 4][seg[i] & 15] = true;
        int64_t values = 0;
        for (int k = 1; k <= 16; ++k) values += seg[i + k];
        i += 17 + values;
      }
      if (i != len) return false;
    } else if (marker == 0xC0 || marker == 0xC1) {  // SOF of a sequential Huffman-coded image
      if (len < 6 || len < 6 + 3 * seg[5]) return false;
      frame = true;
      for (int k = 0; k < seg[5]; ++k) used_quant[seg[8 + 3 * k] & 15] = true;
      for (int k = 0; k < seg[5]; ++k) {
        if (seg[8 + 3 * k] > 15) return false;
      }
    } else if (marker >= 0xC2 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
      return false;  // progressive, lossless, arithmetic-coded
    } else if (marker == 0xDA) {  // the first scan: the tables so far are the ones it is decoded with
      if (!frame || len < 1 || len < 1 + 2 * seg[0]) return false;
      for (int t = 0; t < 16; ++t) {
        if (used_quant[t] && !quant[t]) return false;
      }
      if (!*huffman) return true;
      for (int k = 0; k < seg[0]; ++k) {
        const int tables = seg[2 + 2 * k];
        if (!huff[0][tables >> 4] || !huff[1][tables & 15]) return false;
      }
      return true;
    }
    pos += 2 + length;
  }
  return false;
}

// Length-prefix size of H.264 (avcC) / HEVC (hvcC) packets, 0 when they are not length-prefixed NAL units.
int nal_length_size(const std::string& codec, const uint8_t* extra, int size) {
  if (codec == "h264" && size > 4 && extra[0] == 1) return (extra[4] & 3) + 1;
  if (codec == "hevc" && size > 21 && extra[0] == 1) return (extra[21] & 3) + 1;
  return 0;
}

void parse_packet(const uint8_t* data, int size, const std::string& codec, int length_size, PacketInfo* p) {
  p->pictures = -1, p->intra = true, p->disposable = false;
  if (codec == "vp8") {
    p->intra = size > 0 && !(data[0] & 1);
    return;
  }
  // intra-only codecs: one picture when the packet starts as a frame of the codec does
  if (codec == "mjpeg") {  // a JPEG image with its quantization tables (jpeg_tables)
    p->pictures = jpeg_tables(data, size, &p->huffman) ? 1 : 0;
    return;
  }
  if (codec == "prores") {  // frame size, then the frame identifier
    p->pictures = size >= 8 && std::memcmp(data + 4, "icpf", 4) == 0 ? 1 : 0;
    return;
  }
  if (codec == "dnxhd") {  // the header prefix of DNxHD and DNxHR frames
    p->pictures = size >= 4 && data[0] == 0 && data[1] == 0 && data[2] == 2 && data[3] == 0x80 ? 1 : 0;
    return;
  }
  if (codec == "vp9") {
    p->intra = false;
    if (size < 1 || data[0] >> 6 != 2) return;
    const int profile = ((data[0] >> 5) & 1) | ((data[0] >> 3) & 2);
    const int bit = 4 + (profile == 3 ? 1 : 0);  // after frame_marker and the profile bits (+ reserved in profile 3)
    const int bits = (data[0] << 8) | (size > 1 ? data[1] : 0);
    const int show_existing = (bits >> (15 - bit)) & 1;
    const int frame_type = (bits >> (14 - bit)) & 1;
    p->intra = !show_existing && frame_type == 0;
    return;
  }
  if (length_size == 0) return;
  p->intra = false;
  int64_t pos = 0;
  int count = 0, layer = 0;
  bool intra = false, referenced = false;
  while (pos + length_size <= size) {
    int64_t n = 0;
    for (int b = 0; b < length_size; ++b) n = (n << 8) | data[pos + b];
    pos += length_size;
    if (n < 1 || pos + n > size) return;  // malformed: pictures -1
    const uint8_t header = data[pos];
    if (codec == "h264") {
      const int kind = header & 0x1F;
      intra |= kind == 5;
      if (kind == 1 || kind == 5) {
        referenced |= (header & 0x60) != 0;                   // nal_ref_idc
        count += n > 1 && (data[pos + 1] & 0x80) ? 1 : 0;     // ue(v) first_mb_in_slice == 0
      }
    } else {
      const int kind = (header >> 1) & 0x3F;
      intra |= kind >= 16 && kind <= 23;
      if (kind < 32) {
        referenced |= kind >= 16 || kind % 2 == 1;  // 0, 2, ..., 14: sub-layer non-reference pictures
        count += n > 2 && (data[pos + 2] & 0x80) ? 1 : 0;  // first_slice_segment_in_pic_flag
        layer = std::max(layer, n > 1 ? (data[pos + 1] & 7) - 1 : 0);  // nuh_temporal_id_plus1 - 1
      }
    }
    pos += n;
  }
  if (pos != size) return;
  p->pictures = count, p->intra = intra, p->disposable = count == 1 && !referenced, p->layer = layer;
}

// An HEVC sub-layer non-reference picture is one no later picture of its own sub-layer references; pictures of
// higher sub-layers may (H.265 3.136), and FFmpeg's skip_frame=NONREF drops every such picture whatever its
// sub-layer. So only those at the stream's highest TemporalId stay disposable (vtc_deploy.video._Source, the same).
void keep_lower_sublayers(std::vector<PacketInfo>* packets) {
  int top = 0;
  for (const PacketInfo& p : *packets) top = std::max(top, p.layer);
  if (top == 0) return;
  for (PacketInfo& p : *packets) {
    if (p.layer < top) p.disposable = false;
  }
}

// ---- H.264 frame_num: may a non-reference picture be skipped (vtc_deploy.h264.FrameNumParams, frame_num and
// NonReferenceCheck, the same rule: a damaged non-reference picture whose frame_num is not the previous reference
// picture's plus one makes FFmpeg fill a frame_num gap when it decodes it, which changes later frames; a decoder that
// skipped it would return other frames than a plain decode, without an error).

struct H264Unsupported {};                       // the bitstream is not what the rule can read: skip nothing
struct H264Truncated : H264Unsupported {};       // the bytes given end inside the header

// Exp-Golomb reader over bytes [begin, end) of one NAL unit, emulation prevention bytes removed (every 00 00 03 ->
// 00 00, left to right, as Python's bytes.replace).
class H264Bits {
 public:
  H264Bits(const uint8_t* begin, const uint8_t* end) {
    for (const uint8_t* p = begin; p < end;) {
      if (end - p >= 3 && p[0] == 0 && p[1] == 0 && p[2] == 3) {
        rbsp_.push_back(0), rbsp_.push_back(0);
        p += 3;
      } else {
        rbsp_.push_back(*p++);
      }
    }
    size_ = rbsp_.size() * 8;
  }
  uint64_t u(size_t n) {
    if (pos_ + n > size_) throw H264Truncated{};
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i, ++pos_) v = (v << 1) | ((rbsp_[pos_ / 8] >> (7 - pos_ % 8)) & 1);
    return v;
  }
  uint64_t ue() {
    size_t zeros = 0;
    while (pos_ + zeros < size_ && !((rbsp_[(pos_ + zeros) / 8] >> (7 - (pos_ + zeros) % 8)) & 1)) ++zeros;
    if (pos_ + zeros >= size_) throw H264Truncated{};
    if (zeros > 31) throw H264Unsupported{};
    pos_ += zeros;
    return u(zeros + 1) - 1;
  }
  int64_t se() {
    const uint64_t k = ue();
    return k % 2 ? static_cast<int64_t>((k + 1) / 2) : -static_cast<int64_t>(k / 2);
  }

 private:
  std::vector<uint8_t> rbsp_;
  size_t size_ = 0, pos_ = 0;
};

constexpr size_t kHeaderBytes = 1024;  // parameter sets are read from at most this many bytes (h264.HEADER_BYTES)
constexpr size_t kFrameNumBytes = 24;  // first_mb_in_slice .. frame_num fit here (h264.FRAME_NUM_BYTES)

struct FrameNumParams {
  std::map<uint64_t, std::pair<int, bool>> sps;  // sps_id -> (log2_max_frame_num, separate_colour_plane_flag)
  std::map<uint64_t, uint64_t> pps;              // pps_id -> sps_id

  void add(const uint8_t* nal, size_t n) {
    const int kind = nal[0] & 0x1F;
    H264Bits bits(nal + std::min<size_t>(1, n), nal + std::min(n, kHeaderBytes));
    if (kind == 7) {
      static const int kHigh[] = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135};
      const uint64_t profile = bits.u(8);
      bits.u(16);  // constraint flags, level
      const uint64_t sps_id = bits.ue();
      bool separate = false;
      if (std::find(std::begin(kHigh), std::end(kHigh), static_cast<int>(profile)) != std::end(kHigh)) {
        const uint64_t chroma_format_idc = bits.ue();
        if (chroma_format_idc == 3) separate = bits.u(1) != 0;
        bits.ue(), bits.ue(), bits.u(1);  // bit depths, qpprime_y_zero_transform_bypass_flag
        if (bits.u(1)) {                  // seq_scaling_matrix_present_flag
          for (int i = 0; i < (chroma_format_idc == 3 ? 12 : 8); ++i) {
            if (!bits.u(1)) continue;
            int64_t last = 8, next = 8;
            for (int j = 0; j < (i < 6 ? 16 : 64); ++j) {
              if (next) next = (((last + bits.se()) % 256) + 256) % 256;
              last = next ? next : last;
            }
          }
        }
      }
      const uint64_t log2_max_frame_num = bits.ue() + 4;
      if (sps_id > 31 || log2_max_frame_num > 16) throw H264Unsupported{};
      sps[sps_id] = {static_cast<int>(log2_max_frame_num), separate};
    } else if (kind == 8) {
      const uint64_t pps_id = bits.ue();
      const uint64_t sps_id = bits.ue();
      if (pps_id > 255 || sps_id > 31) throw H264Unsupported{};
      pps[pps_id] = sps_id;
    }
  }

  static FrameNumParams from_avcc(const uint8_t* extra, size_t size) {
    FrameNumParams out;
    size_t pos = 5;
    for (int mask : {0x1F, 0xFF}) {
      if (pos >= size) throw H264Unsupported{};
      const int count = extra[pos] & mask;
      ++pos;
      for (int i = 0; i < count; ++i) {
        if (pos + 2 > size) throw H264Unsupported{};
        const size_t n = (static_cast<size_t>(extra[pos]) << 8) | extra[pos + 1];
        if (pos + 2 + n > size || n < 1) throw H264Unsupported{};
        out.add(extra + pos + 2, n);
        pos += 2 + n;
      }
    }
    return out;
  }
};

// (frame_num, MaxFrameNum) of the first slice of one length-prefixed packet; in-band SPS/PPS before it update params.
std::pair<int64_t, int64_t> h264_frame_num(const uint8_t* data, size_t size, int length_size, FrameNumParams* params) {
  size_t pos = 0;
  while (pos + static_cast<size_t>(length_size) <= size) {  // the whole packet well-formed first (h264.nal_units)
    size_t n = 0;
    for (int b = 0; b < length_size; ++b) n = (n << 8) | data[pos + static_cast<size_t>(b)];
    pos += static_cast<size_t>(length_size);
    if (n < 1 || pos + n > size) throw H264Unsupported{};
    pos += n;
  }
  if (pos != size) throw H264Unsupported{};
  pos = 0;
  while (pos + static_cast<size_t>(length_size) <= size) {
    size_t n = 0;
    for (int b = 0; b < length_size; ++b) n = (n << 8) | data[pos + static_cast<size_t>(b)];
    pos += static_cast<size_t>(length_size);
    if (n < 1 || pos + n > size) throw H264Unsupported{};
    const uint8_t* nal = data + pos;
    pos += n;
    const int kind = nal[0] & 0x1F;
    if (kind == 7 || kind == 8) {
      params->add(nal, n);
    } else if (kind == 1 || kind == 5) {
      for (size_t limit : {kFrameNumBytes, n}) {
        try {
          H264Bits bits(nal + 1, nal + std::max<size_t>(1, std::min(limit, n)));
          bits.ue(), bits.ue();  // first_mb_in_slice, slice_type
          const auto p = params->pps.find(bits.ue());
          if (p == params->pps.end() || !params->sps.count(p->second)) throw H264Unsupported{};
          const auto& sps = params->sps[p->second];
          if (sps.second) bits.u(2);  // colour_plane_id
          return {static_cast<int64_t>(bits.u(static_cast<size_t>(sps.first))), int64_t{1} << sps.first};
        } catch (const H264Truncated&) {
          if (limit >= n) break;
        }
      }
      throw H264Unsupported{};  // slice header longer than the slice
    }
  }
  throw H264Unsupported{};  // a packet without a slice
}

class NonReferenceCheck {
 public:
  NonReferenceCheck(const FrameNumParams* params, int length_size) : length_size_(length_size), ok_(params) {
    if (params) params_ = *params;
  }
  // Notes one packet (reference: it holds a reference picture); for a non-reference picture, whether it may be
  // skipped. Fed every packet of a decode run in order, from its IDR picture.
  bool skippable(const uint8_t* data, size_t size, bool reference) {
    if (!ok_) return false;
    std::pair<int64_t, int64_t> number;
    try {
      number = h264_frame_num(data, size, length_size_, &params_);
    } catch (const H264Unsupported&) {
      ok_ = false;
      return false;
    }
    if (reference) {
      prev_ref_ = number.first;
      return false;
    }
    ok_ = prev_ref_ >= 0 && number.first == (prev_ref_ + 1) % number.second;
    return ok_;
  }

 private:
  FrameNumParams params_;
  int length_size_;
  int64_t prev_ref_ = -1;  // frame_num of the latest reference picture, -1: none yet
  bool ok_;
};

using PacketPtr = std::unique_ptr<AVPacket, PacketFree>;
using FramePtr = std::unique_ptr<AVFrame, FrameFree>;

struct IndexMismatch {  // internal: the indexed path's check failed, read the file sequentially
  std::string why;
};

// One run of the decoder from a keyframe: what was fed, what came out (vtc_deploy.video._Chain).
struct Chain {
  size_t start = 0;
  int64_t start_pts = 0;
  size_t next = 0;  // next packet position to feed
  bool drained = false;
  std::vector<FramePtr> outputs;  // frames out, not yet collected
  std::unordered_set<int64_t> fed, required;
  std::vector<int64_t> seen;  // pts of every frame that came out
  bool seen_nopts = false;
  int corrupt = 0;
  std::unique_ptr<NonReferenceCheck> nonref;  // H.264: may a non-reference picture be skipped
  size_t noted = 0;                          // packets before this position went through note()
  bool verdict = false;                      // note()'s answer for the latest packet

  std::string check() const {
    if (corrupt) return std::to_string(corrupt) + " frames were decoded with missing references";
    if (seen_nopts) return "a frame without a timestamp came out";
    std::unordered_set<int64_t> unique;
    for (int64_t p : seen) {
      if (!fed.count(p)) return "a frame without a timestamp of its own came out";
      if (!unique.insert(p).second) return "a timestamp came out twice";
    }
    // The index orders frames by timestamp, the definition by the decoder's output: a file whose timestamps
    // disagree with it (a damaged or miswritten MP4 ctts) is read sequentially (vtc_deploy.video._Chain.check).
    for (size_t i = 1; i < seen.size(); ++i) {
      if (seen[i] < seen[i - 1]) return "frames came out of the decoder out of timestamp order";
    }
    for (int64_t p : required) {
      if (!unique.count(p)) return "a packet produced no frame";
    }
    return "";
  }
};

class FileReader final : public VideoReader {
 public:
  using Visit = std::function<void(size_t, const uint8_t*)>;

  FileReader(const std::string& path, const DecodeOptions& opts) : path_(path), opts_(opts) {
    if (!open_indexed()) count_sequential();
  }

  void visit_frames(const std::vector<int64_t>& wanted, const Visit& on_frame) override {
    for (size_t k = 0; k < wanted.size(); ++k) {
      if (wanted[k] < 0 || wanted[k] >= info_.num_frames) {
        fail(path_, "frame index " + std::to_string(wanted[k]) + " outside 0.." + std::to_string(info_.num_frames - 1));
      }
      if (k > 0 && wanted[k] <= wanted[k - 1]) {
        throw Error(Error::Kind::input, path_ + ": frame indices to visit must ascend without repeats");
      }
    }
    if (wanted.empty()) return;
    if (info_.indexed) {
      try {
        read_indexed(wanted, on_frame);
      } catch (const IndexMismatch&) {
        fall_back(wanted, on_frame);  // the definition decides whether the file is bad
      }
    } else {
      read_sequential(wanted, on_frame);
    }
  }

 private:
  // ---- the sequential path: the definition

  void count_sequential() {
    // Counting pass: a plain sequential decode without colour conversion.
    Decoder counter(path_, path_, opts_, true);
    counter.check_not_truncated();
    int frame_w = 0, frame_h = 0;
    while (const AVFrame* f = counter.next()) {
      if (frame_w == 0) frame_w = f->width, frame_h = f->height;
      if (f->width != frame_w || f->height != frame_h) {
        fail(path_, "frame size changes mid-stream (" + std::to_string(frame_w) + "x" + std::to_string(frame_h) +
                        " to " + std::to_string(f->width) + "x" + std::to_string(f->height) + ")");
      }
    }
    if (counter.frames_out() == 0) fail(path_, "video has no frames");
    info_.num_frames = counter.frames_out();
    info_.indexed = false;
    set_geometry(counter, frame_w, frame_h);
  }

  void set_geometry(const Decoder& d, int frame_w, int frame_h) {
    orientation_ = d.applied();
    info_.rotation = (360 - d.stored().cw) % 360;  // counter-clockwise, as the Python runtime reports it
    info_.mirrored = d.stored().mirror;
    info_.fps = d.fps();
    const bool swap = orientation_.turned();
    info_.width = swap ? frame_h : frame_w;
    info_.height = swap ? frame_w : frame_h;
  }

  void read_sequential(const std::vector<int64_t>& wanted, const Visit& on_frame) {
    if (!decoder_ || wanted.front() < position_) {
      decoder_ = std::make_unique<Decoder>(path_, path_, opts_, true);
      position_ = 0;
    }
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
      on_frame(k, rgb_of(f, index));
      ++k;
    }
  }

  // The index check failed: this file is read by the definition from now on.
  void fall_back(const std::vector<int64_t>& wanted, const Visit& on_frame) {
    chain_.reset();
    src_.reset();
    kept_.clear();
    packets_.clear();
    const int64_t listed = info_.num_frames;
    count_sequential();
    if (info_.num_frames != listed) {
      throw FrameCountChanged(path_ + ": the packet index listed " + std::to_string(listed) +
                              " frames but a sequential decode yields " + std::to_string(info_.num_frames));
    }
    read_sequential(wanted, on_frame);
  }

  // RGB of a decoded frame, rotated (info_ size; valid until the next call).
  const uint8_t* rgb_of(const AVFrame* f, int64_t index) {
    const bool swap = orientation_.turned();
    if ((swap ? f->height : f->width) != info_.width || (swap ? f->width : f->height) != info_.height) {
      fail(path_, "frame " + std::to_string(index) + " has a different size from the first frame");
    }
    converter_.convert(f, &rgb_, path_);
    if (orientation_.none()) return rgb_.data();
    rotated_.resize(rgb_.size());
    rotate_rgb(rgb_.data(), f->height, f->width, orientation_, rotated_.data());
    return rotated_.data();
  }

  // ---- the indexed path

  // Indexes the packets and, when the file meets the indexed path's conditions, decodes its first frame: true with
  // info_ set. False: use the sequential path (also for every failure here; that path reports bad files).
  bool open_indexed() {
    auto src = std::make_unique<Decoder>(path_, path_, opts_, true);
    src->check_not_truncated();
    const std::string format = src->format_name();
    bool container = false;
    bool avi = false;
    for (const char* name : {"mov", "mp4", "matroska", "webm", "flv", "avi"}) {  // video.INDEXED_CONTAINERS, ...
      size_t at = 0;
      while (at <= format.size()) {
        const size_t comma = std::min(format.find(',', at), format.size());
        if (format.compare(at, comma - at, name) == 0) {
          if (std::strcmp(name, "avi") == 0) {
            avi = true;
          } else {
            container = true;
          }
        }
        at = comma + 1;
      }
    }
    const AVCodecParameters* par = src->stream()->codecpar;
    const char* codec_name = avcodec_get_name(par->codec_id);
    codec_ = codec_name ? codec_name : "";
    static const char* const kIntraOnly[] = {"mjpeg", "prores", "dnxhd"};  // video.INTRA_ONLY_CODECS
    const bool intra_only =
        std::any_of(std::begin(kIntraOnly), std::end(kIntraOnly), [&](const char* c) { return codec_ == c; });
    container = container || (avi && intra_only);  // AVI: intra-only codecs only
    static const char* const kCodecs[] = {"h264", "hevc", "vp8", "vp9", "av1", "mjpeg", "prores", "dnxhd"};
    if (!container || std::none_of(std::begin(kCodecs), std::end(kCodecs), [&](const char* c) { return codec_ == c; })) {
      return false;
    }
    const int length_size = nal_length_size(codec_, par->extradata, par->extradata_size);
    length_size_ = length_size;
    PacketPtr packet(av_packet_alloc());
    if (!packet) fail(path_, "out of memory");
    int64_t kept_bytes = 0;
    bool keep = true;
    while (true) {
      const int err = src->read_packet(packet.get());
      if (err == AVERROR_EOF) break;
      if (err < 0) return false;
      PacketInfo p;
      p.pts = packet->pts;
      p.keyframe = (packet->flags & AV_PKT_FLAG_KEY) != 0;
      p.discard = (packet->flags & AV_PKT_FLAG_DISCARD) != 0 && !opts_.ignore_discard;
      parse_packet(packet->data, packet->size, codec_, length_size, &p);
      packets_.push_back(p);
      if (static_cast<int64_t>(packets_.size()) > kMaxFrames) return false;
      if (keep) {
        kept_bytes += packet->size;
        if (kept_bytes > kPacketMemory) {
          keep = false;
          kept_.clear();
        } else {
          kept_.emplace_back(av_packet_clone(packet.get()));
          if (!kept_.back()) fail(path_, "out of memory");
        }
      }
    }
    kept_all_ = keep;
    if (packets_.empty()) return false;
    keep_lower_sublayers(&packets_);
    // _indexed_plan
    const int64_t declared = src->declared_frames();
    if (format.rfind("mov", 0) == 0 && declared > 0 && declared != static_cast<int64_t>(packets_.size())) return false;
    if (!packets_[0].keyframe || !packets_[0].intra || packets_[0].pts == AV_NOPTS_VALUE) return false;
    const int64_t first = packets_[0].pts;
    const bool parsed = codec_ == "h264" || codec_ == "hevc" || intra_only;  // video.PICTURE_CHECKED
    std::vector<std::pair<int64_t, size_t>> shown;
    for (size_t pos = 0; pos < packets_.size(); ++pos) {
      const PacketInfo& p = packets_[pos];
      if (p.pts == AV_NOPTS_VALUE) return false;
      if (parsed && p.pictures != 1) return false;  // no picture, two, a field pair, not length-prefixed, not a JPEG
      if (p.discard) continue;
      if (p.pts < first) return false;  // presented before the first keyframe: a leading picture
      shown.emplace_back(p.pts, pos);
    }
    std::sort(shown.begin(), shown.end());
    if (codec_ == "mjpeg" && std::any_of(packets_.begin(), packets_.end(), [&](const PacketInfo& p) {
          return p.huffman != packets_[0].huffman;
        })) {
      return false;  // some pictures carry Huffman tables, others use the ones an earlier picture defined
    }
    if (shown.empty()) return false;
    for (size_t k = 1; k < shown.size(); ++k) {
      if (shown[k].first == shown[k - 1].first) return false;
    }
    frame_pos_.clear();
    for (const auto& s : shown) frame_pos_.push_back(s.second);
    for (size_t pos = 0; pos < packets_.size(); ++pos) {
      // _restart: decoding starts only where the bitstream starts afresh; a keyframe mark on an H.264 recovery point
      // (intra refresh, open GOPs) is decoded through from the restart point before it
      if (packets_[pos].keyframe && packets_[pos].intra) keyframes_.push_back(pos);
    }
    src_ = std::move(src);
    // the first frame: the decoder works on this file, and the frame size
    try {
      Chain& chain = new_chain(0);
      walk(0, packets_.size() - 1, [&](size_t pos, const AVPacket* pkt) {
        feed(pos, pkt, false);
        return chain.outputs.empty();
      });
      if (chain.outputs.empty()) drain();
      if (chain.outputs.empty()) throw IndexMismatch{"no frame"};
    } catch (const IndexMismatch&) {
      chain_.reset();
      src_.reset();
      kept_.clear();
      packets_.clear();
      return false;
    }
    const AVFrame* f = chain_->outputs.front().get();
    info_.num_frames = static_cast<int64_t>(frame_pos_.size());
    info_.indexed = true;
    set_geometry(*src_, f->width, f->height);
    return true;
  }

  // Calls fn(position, packet) for the packets from `first` to `last` (inclusive) in decode order while it returns
  // true: the kept packets, or a fresh demux of the file.
  template <typename Fn>
  void walk(size_t first, size_t last, Fn&& fn) {
    if (kept_all_) {
      for (size_t pos = first; pos <= last && pos < kept_.size(); ++pos) {
        if (!fn(pos, kept_[pos].get())) return;
      }
      return;
    }
    Decoder demux(path_, path_, opts_, false);
    PacketPtr packet(av_packet_alloc());
    if (!packet) fail(path_, "out of memory");
    for (size_t pos = 0; pos <= last; ++pos) {
      if (demux.read_packet(packet.get()) < 0) throw IndexMismatch{"the file changed"};
      if (pos >= first && !fn(pos, packet.get())) return;
    }
  }

  Chain& new_chain(size_t start) {
    AVCodecContext* ctx = src_->codec();
    if (decoder_used_) avcodec_flush_buffers(ctx);
    decoder_used_ = true;
    ctx->skip_frame = AVDISCARD_DEFAULT;
    chain_ = std::make_unique<Chain>();
    chain_->start = chain_->next = chain_->noted = start;
    chain_->start_pts = packets_[start].pts;
    chain_->nonref = nonref_check();
    return *chain_;
  }

  // H.264 (length-prefixed): the check that decides, packet by packet, whether a non-reference picture may be
  // skipped; null for other codecs (skipped whenever they are not wanted). vtc_deploy.video.PyAVReader._nonref_check.
  std::unique_ptr<NonReferenceCheck> nonref_check() {
    if (codec_ != "h264" || length_size_ == 0) return nullptr;
    if (frame_num_state_ == 0) {
      const AVCodecParameters* par = src_->stream()->codecpar;
      try {
        frame_num_params_ = FrameNumParams::from_avcc(par->extradata, static_cast<size_t>(std::max(0, par->extradata_size)));
        frame_num_state_ = 1;
      } catch (const H264Unsupported&) {
        frame_num_state_ = -1;  // the avcC does not parse: nothing is skipped
      }
    }
    return std::make_unique<NonReferenceCheck>(frame_num_state_ == 1 ? &frame_num_params_ : nullptr, length_size_);
  }

  // Whether packet pos holds a non-reference picture that may be skipped; every packet the chain decodes passes here
  // once, in decode order (feed notes any not noted yet). vtc_deploy.video._Chain.note.
  bool note(size_t pos, const AVPacket* packet) {
    Chain& c = *chain_;
    if (pos >= c.noted) {
      c.noted = pos + 1;
      const PacketInfo& info = packets_[pos];
      const bool ok =
          !c.nonref || c.nonref->skippable(packet->data, static_cast<size_t>(std::max(0, packet->size)), !info.disposable);
      c.verdict = info.disposable && ok;
    }
    return c.verdict;
  }

  void feed(size_t pos, const AVPacket* packet, bool skip) {
    note(pos, packet);
    AVCodecContext* ctx = src_->codec();
    ctx->skip_frame = skip ? AVDISCARD_NONREF : AVDISCARD_DEFAULT;
    if (avcodec_send_packet(ctx, packet) < 0) throw IndexMismatch{"decode error"};
    chain_->next = pos + 1;
    const PacketInfo& info = packets_[pos];
    if (!info.discard && info.pts >= chain_->start_pts) {
      chain_->fed.insert(info.pts);
      if (!skip) chain_->required.insert(info.pts);
    }
    receive();
  }

  void drain() {
    AVCodecContext* ctx = src_->codec();
    ctx->skip_frame = AVDISCARD_DEFAULT;
    if (avcodec_send_packet(ctx, nullptr) < 0) throw IndexMismatch{"decode error"};
    receive();
    chain_->drained = true;
  }

  void receive() {
    AVCodecContext* ctx = src_->codec();
    while (true) {
      FramePtr frame(av_frame_alloc());
      if (!frame) fail(path_, "out of memory");
      const int err = avcodec_receive_frame(ctx, frame.get());
      if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return;
      if (err < 0) throw IndexMismatch{"decode error"};
      if (static_cast<int64_t>(frame->width) * frame->height > src_->max_pixels()) {
        fail(path_, "a frame is " + std::to_string(frame->width) + "x" + std::to_string(frame->height) +
                        ", over the limit of " + std::to_string(src_->max_pixels()) + " pixels");
      }
      const int64_t pts = frame->pts;
      if (pts != AV_NOPTS_VALUE && pts < chain_->start_pts) continue;  // a leading picture of the start keyframe
      if (pts == AV_NOPTS_VALUE) chain_->seen_nopts = true;
      chain_->seen.push_back(pts);
      if (frame->decode_error_flags != 0 || (frame->flags & AV_FRAME_FLAG_CORRUPT)) ++chain_->corrupt;
      chain_->outputs.push_back(std::move(frame));
    }
  }

  void collect(const std::unordered_map<int64_t, size_t>& wanted_pts, const std::vector<int64_t>& wanted,
               std::vector<bool>* done, const Visit& on_frame) {
    for (const FramePtr& f : chain_->outputs) {
      const auto it = wanted_pts.find(f->pts);
      if (it == wanted_pts.end() || (*done)[it->second]) continue;
      on_frame(it->second, rgb_of(f.get(), wanted[it->second]));
      (*done)[it->second] = true;
    }
    chain_->outputs.clear();
  }

  // Decode position of the latest keyframe before frame k in decode order and not after it in presentation order.
  size_t start_of(int64_t k) const {
    const size_t pos = frame_pos_[static_cast<size_t>(k)];
    const int64_t pts = packets_[pos].pts;
    ptrdiff_t i = std::upper_bound(keyframes_.begin(), keyframes_.end(), pos) - keyframes_.begin() - 1;
    while (i > 0 && packets_[keyframes_[static_cast<size_t>(i)]].pts > pts) --i;
    return keyframes_[static_cast<size_t>(std::max<ptrdiff_t>(i, 0))];
  }

  void read_indexed(const std::vector<int64_t>& wanted, const Visit& on_frame) {
    std::unordered_map<int64_t, size_t> wanted_pts;  // pts -> slot in `wanted`
    std::vector<std::pair<size_t, size_t>> spans;
    for (size_t s = 0; s < wanted.size(); ++s) {
      const size_t pos = frame_pos_[static_cast<size_t>(wanted[s])];
      wanted_pts[packets_[pos].pts] = s;
      spans.emplace_back(start_of(wanted[s]), pos);
    }
    std::sort(spans.begin(), spans.end());
    std::vector<std::pair<size_t, size_t>> runs;  // decode ranges (first, last), packet positions inclusive
    for (const auto& span : spans) {
      if (!runs.empty() && span.first <= runs.back().second + 1 + kMergeGap) {
        runs.back().second = std::max(runs.back().second, span.second);
      } else {
        runs.push_back(span);
      }
    }
    std::vector<bool> done(wanted.size(), false);
    for (const auto& run : runs) {
      if (!chain_ || chain_->drained || !(chain_->start <= run.first && run.first <= chain_->next)) new_chain(run.first);
      collect(wanted_pts, wanted, &done, on_frame);
      if (chain_->next <= run.second) {
        walk(chain_->next, run.second, [&](size_t pos, const AVPacket* pkt) {
          const bool skip = !wanted_pts.count(packets_[pos].pts) && note(pos, pkt);
          feed(pos, pkt, skip);
          collect(wanted_pts, wanted, &done, on_frame);
          return true;
        });
      }
      drain();
      collect(wanted_pts, wanted, &done, on_frame);
      const std::string problem = chain_->check();
      if (!problem.empty()) throw IndexMismatch{problem};
    }
    if (std::find(done.begin(), done.end(), false) != done.end()) throw IndexMismatch{"a frame did not come out"};
  }

  std::string path_;
  DecodeOptions opts_;
  Orientation orientation_;  // applied to the decoded frames
  RgbConverter converter_;
  std::vector<uint8_t> rgb_, rotated_;
  // sequential path
  std::unique_ptr<Decoder> decoder_;  // kept open between calls: later frames continue the same decode
  int64_t position_ = 0;              // index of the next frame decoder_ yields
  // indexed path
  std::unique_ptr<Decoder> src_;  // the container and the decoder the chains run on
  std::string codec_;
  int length_size_ = 0;                  // H.264/HEVC length prefix (0: not length-prefixed)
  FrameNumParams frame_num_params_;      // H.264: the avcC's parameter sets, for NonReferenceCheck
  int frame_num_state_ = 0;              // 0 not read yet, 1 read, -1 the avcC does not parse
  std::vector<PacketInfo> packets_;  // the stream's packets in decode order
  std::vector<PacketPtr> kept_;      // their data, while it fits in kPacketMemory
  bool kept_all_ = false;
  std::vector<size_t> frame_pos_;   // frame k -> packet position
  std::vector<size_t> keyframes_;   // where decoding may start: packets marked keyframe that are IDR/IRAP
  std::unique_ptr<Chain> chain_;
  bool decoder_used_ = false;
};

class Stream final : public FrameStream {
 public:
  Stream(const std::string& source, const DecodeOptions& opts)
      : decoder_(source, source == "-" ? "pipe:0" : source, opts,
                 /*check_file=*/source != "-" && source.find("://") == std::string::npos &&
                     source.rfind("pipe:", 0) != 0 && source.rfind("/dev/", 0) != 0),
        source_(source) {
    decoder_.end_at_short_packet();
  }

  bool next(std::vector<uint8_t>* rgb, int* height, int* width, double* pts_seconds) override {
    const AVFrame* f = decoder_.next();
    if (f == nullptr) return false;
    converter_.convert(f, &tmp_, source_);
    const Orientation r = decoder_.applied();
    const bool swap = r.turned();
    *height = swap ? f->width : f->height;
    *width = swap ? f->height : f->width;
    rgb->resize(tmp_.size());
    rotate_rgb(tmp_.data(), f->height, f->width, r, rgb->data());
    *pts_seconds = decoder_.seconds(f->best_effort_timestamp);
    return true;
  }

  double fps() const override { return decoder_.fps(); }
  int64_t frames_read() const override { return decoder_.frames_out(); }
  std::string truncation() const override { return decoder_.truncation(); }

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
