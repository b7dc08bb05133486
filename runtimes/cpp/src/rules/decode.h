// Video decoding with FFmpeg (libavformat/libavcodec/libswscale), frame-exact in the Python runtime's sense:
// frame k is the k-th frame of a plain sequential decode in presentation order, and num_frames is the number of
// frames that decode yields. The display matrix is applied by default, as FFmpeg autorotate shows it. Every bad file
// (missing, empty, directory, not a video, truncated, corrupt part-way, audio-only, zero frames, too many pixels)
// is an Error whose one-line message names the file. RGB: the bytes PyAV's frame.to_ndarray(format="rgb24") gives
// (FFmpeg 8's swscale, reproduced with Debian's FFmpeg 5.1, decode.cpp says how), so frames match the Python runtime's
// PyAV decoder; the few formats it cannot match (4:2:0 at an odd width or field height, 4:4:0 and 4:1:0 chroma) are
// refused with an Error.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "error.h"

namespace vtc::rules {

struct DecodeOptions {
  bool autorotate = true;
  int64_t max_pixels = 8294400LL * 4;  // 7680x4320 (8K UHD), as vtc_deploy.video.DEFAULT_MAX_PIXELS
  int threads = 1;                     // decoder threads (0: FFmpeg chooses)
  bool ignore_discard = false;  // failure injection for tests only: the packet index treats packets marked
                                // "discard" (edit lists) as shown frames, as a demuxer that does not flag them would
};

struct VideoInfo {
  int64_t num_frames = 0;  // frames a plain sequential decode yields
  int width = 0;           // of the returned frames (after rotation)
  int height = 0;
  double fps = 0.0;        // average frame rate from the container (0 when unknown)
  int rotation = 0;        // display rotation found in the file, counter-clockwise degrees (0/90/180/270), as
                           // vtc_deploy.video reports it; applied to the frames when DecodeOptions.autorotate
  bool mirrored = false;   // the display matrix also mirrors the picture: a horizontal flip after the rotation
  bool indexed = false;    // read through the packet index (num_frames counted without decoding), as
                           // vtc_deploy.video's "pyav" mode; false: the sequential path ("pyav-sequential")
};

// frames_at found that the packet index was wrong for this file (a decoded range did not check out) and counted
// the frames with a sequential decode: that count differs from info().num_frames as first reported. The reader's
// info() now holds the corrected count; sample again with it (vtc_deploy.video.FrameCountChanged).
class FrameCountChanged : public Error {
 public:
  explicit FrameCountChanged(const std::string& message) : Error(Kind::decode, message) {}
};

class VideoReader {
 public:
  // Opens and checks the file and counts its frames: from the packet index without decoding where the container
  // and codec allow it (MP4/MOV/Matroska/WebM with H.264, HEVC, VP8, VP9, AV1 or MJPEG and a one-frame-per-packet
  // index, the conditions of vtc_deploy.video's indexed path; one frame is decoded), else with one sequential
  // decode (no colour conversion). Throws Error.
  static std::unique_ptr<VideoReader> open(const std::string& path, const DecodeOptions& opts = DecodeOptions());
  const VideoInfo& info() const { return info_; }
  // Frames at `indices` (any order, repeats allowed, each in 0..num_frames-1): uint8 RGB, row-major
  // [K, H, W, 3], in the order given; all in one pass over the file (ask for every view of a video in one call).
  // Indexed files: decoding starts at the keyframe before each wanted frame, skips non-reference pictures that are
  // not wanted and stops after the last wanted one; every decoded range is checked (one frame per packet, with its
  // pts, none flagged corrupt) and a failed check switches the file to the sequential path (which may throw
  // FrameCountChanged). Throws Error.
  std::vector<uint8_t> frames_at(const std::vector<int64_t>& indices);
  // The same pass without holding the frames: on_frame(k, rgb) for frame indices[k] (uint8 RGB [H, W, 3] of info()
  // size, valid during the call only), in decoding order; `indices` ascending without repeats. A frame can
  // be visited again when a failed check of the packet index switches the file to the sequential path, which
  // visits every frame once more (or throws FrameCountChanged): keep the last visit. Exceptions from on_frame end
  // the pass. Throws Error.
  virtual void visit_frames(const std::vector<int64_t>& indices,
                            const std::function<void(size_t, const uint8_t*)>& on_frame) = 0;
  virtual ~VideoReader();

 protected:
  VideoInfo info_;
};

// Sequential source for streaming (files, pipes "-" for stdin, URLs FFmpeg can open): frames in decode order with
// presentation timestamps in seconds, rotated as VideoReader does.
class FrameStream {
 public:
  static std::unique_ptr<FrameStream> open(const std::string& path_or_url,
                                           const DecodeOptions& opts = DecodeOptions());
  // Next frame as uint8 RGB [height, width, 3]; false at the end of the stream (also a stream with no frames at
  // all: the caller decides, as vtc_deploy.streaming, which prints nothing for such a file). Throws Error.
  virtual bool next(std::vector<uint8_t>* rgb, int* height, int* width, double* pts_seconds) = 0;
  virtual double fps() const = 0;  // average frame rate from the container (0 when unknown)
  virtual int64_t frames_read() const = 0;  // frames returned so far
  // Why the file is truncated ("truncated: the container's index lists video data up to byte E but the file has S
  // bytes", or an AVI's RIFF header lists more bytes than the file has), "" when it is complete or not a regular
  // file: VideoReader's rule, which refuses such a file at open; streaming returns its frames and then reports it
  // (vtc_deploy.streaming).
  virtual std::string truncation() const = 0;
  virtual ~FrameStream();
};

}  // namespace vtc::rules
