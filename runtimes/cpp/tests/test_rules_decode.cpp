// Decoder: frame order and count, repeats, rotation, FrameStream and every kind of bad file, on small videos this
// test writes with libavcodec's own encoders (MPEG-4 Part 2 with B-frames, MJPEG). Frame k of a test video is a flat
// grey of level 20 + 5k (left half) and 60 grey levels brighter on the right half, so the frame order and the
// orientation can be read back. Frame-exactness against PyAV is tested from pytest (tests/test_cpp_rules.py).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "rules/decode.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/display.h>
#include <libavutil/opt.h>
}

namespace {

using vtc::rules::DecodeOptions;
using vtc::rules::Error;
using vtc::rules::FrameStream;
using vtc::rules::VideoReader;

constexpr int kW = 64, kH = 48;

int level(int k) { return 20 + 5 * k; }

std::string temp_dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/vtc_rules_test_XXXXXX";
    const char* d = mkdtemp(tmpl);
    return std::string(d ? d : "/tmp");
  }();
  return dir;
}

// Writes `frames` frames with `codec` into `path` (container from the file name). Returns false if this FFmpeg
// build lacks the encoder or muxer.
bool write_video(const std::string& path, AVCodecID codec_id, int frames, int rotation_cw = 0,
                 AVPixelFormat pix = AV_PIX_FMT_YUV420P, int b_frames = 2) {
  const AVCodec* codec = avcodec_find_encoder(codec_id);
  AVFormatContext* fmt = nullptr;
  if (!codec || avformat_alloc_output_context2(&fmt, nullptr, nullptr, path.c_str()) < 0) return false;
  AVStream* st = avformat_new_stream(fmt, nullptr);
  AVCodecContext* enc = avcodec_alloc_context3(codec);
  enc->width = kW, enc->height = kH, enc->pix_fmt = pix;
  enc->time_base = AVRational{1, 25};
  enc->framerate = AVRational{25, 1};
  enc->gop_size = 12;
  enc->max_b_frames = codec_id == AV_CODEC_ID_MJPEG ? 0 : b_frames;
  enc->global_quality = FF_QP2LAMBDA * 2;
  enc->flags |= AV_CODEC_FLAG_QSCALE;
  if (fmt->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  if (avcodec_open2(enc, codec, nullptr) < 0) return false;
  avcodec_parameters_from_context(st->codecpar, enc);
  st->time_base = enc->time_base;
  if (rotation_cw) {  // av_display_rotation_set: a clockwise rotation by the angle (how the frame is displayed)
    auto* m = reinterpret_cast<int32_t*>(av_stream_new_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, 9 * sizeof(int32_t)));
    av_display_rotation_set(m, rotation_cw);
  }
  if (avio_open(&fmt->pb, path.c_str(), AVIO_FLAG_WRITE) < 0) return false;
  if (avformat_write_header(fmt, nullptr) < 0) return false;
  AVFrame* frame = av_frame_alloc();
  frame->width = kW, frame->height = kH, frame->format = pix;
  av_frame_get_buffer(frame, 0);
  AVPacket* pkt = av_packet_alloc();
  auto drain = [&] {
    while (avcodec_receive_packet(enc, pkt) == 0) {
      if (pkt->duration == 0) pkt->duration = 1;  // else MP4's edit list leaves out the last frame
      av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
      pkt->stream_index = st->index;
      av_interleaved_write_frame(fmt, pkt);
    }
  };
  for (int k = 0; k < frames; ++k) {
    av_frame_make_writable(frame);
    for (int y = 0; y < kH; ++y)
      for (int x = 0; x < kW; ++x) frame->data[0][y * frame->linesize[0] + x] = static_cast<uint8_t>(level(k) + (x >= kW / 2 ? 60 : 0));
    const int ch = pix == AV_PIX_FMT_YUVJ422P ? kH : kH / 2;
    for (int p = 1; p < 3; ++p)
      for (int y = 0; y < ch; ++y)
        for (int x = 0; x < kW / 2; ++x) frame->data[p][y * frame->linesize[p] + x] = 128;
    frame->pts = k;
    avcodec_send_frame(enc, frame);
    drain();
  }
  avcodec_send_frame(enc, nullptr);
  drain();
  av_write_trailer(fmt);
  avio_closep(&fmt->pb);
  av_packet_free(&pkt);
  av_frame_free(&frame);
  avcodec_free_context(&enc);
  avformat_free_context(fmt);
  return true;
}

// mean of channel 0 over a rectangle of frame k in a [K, H, W, 3] buffer
double mean_r(const std::vector<uint8_t>& f, int k, int h, int w, int y0, int y1, int x0, int x1) {
  double sum = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) sum += f[((static_cast<size_t>(k) * h + y) * w + x) * 3];
  return sum / ((y1 - y0) * (x1 - x0));
}

// Full-range grey of limited-range luma Y: (Y - 16) * 255 / 219
double grey(int y_level) { return (y_level - 16) * 255.0 / 219.0; }

class Decode : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(write_video(temp_dir() + "/mpeg4.avi", AV_CODEC_ID_MPEG4, 30));
    ASSERT_TRUE(write_video(temp_dir() + "/mpeg4.mp4", AV_CODEC_ID_MPEG4, 30, 0, AV_PIX_FMT_YUV420P, 0));
    ASSERT_TRUE(write_video(temp_dir() + "/rot90.mp4", AV_CODEC_ID_MPEG4, 10, 90, AV_PIX_FMT_YUV420P, 0));
    ASSERT_TRUE(write_video(temp_dir() + "/mjpeg.mkv", AV_CODEC_ID_MJPEG, 10, 0, AV_PIX_FMT_YUVJ422P));
  }
};

TEST_F(Decode, FrameCountOrderAndRepeats) {
  for (const char* name : {"/mpeg4.avi", "/mpeg4.mp4"}) {
    auto reader = VideoReader::open(temp_dir() + name);
    const auto& info = reader->info();
    EXPECT_EQ(info.num_frames, 30);
    EXPECT_EQ(info.width, kW);
    EXPECT_EQ(info.height, kH);
    EXPECT_NEAR(info.fps, 25.0, 1e-6);
    EXPECT_EQ(info.rotation, 0);
    const std::vector<int64_t> idx = {29, 0, 7, 7, 15, 1};
    const auto frames = reader->frames_at(idx);
    ASSERT_EQ(frames.size(), idx.size() * kW * kH * 3);
    for (size_t i = 0; i < idx.size(); ++i) {
      const int k = static_cast<int>(idx[i]);
      EXPECT_NEAR(mean_r(frames, static_cast<int>(i), kH, kW, 4, kH - 4, 4, kW / 2 - 4), grey(level(k)), 3.0)
          << name << " frame " << k;
      EXPECT_NEAR(mean_r(frames, static_cast<int>(i), kH, kW, 4, kH - 4, kW / 2 + 4, kW - 4), grey(level(k) + 60), 3.0);
    }
    // a second call, going backwards, decodes again from the start and gives the same pixels
    const auto again = reader->frames_at({7});
    EXPECT_TRUE(std::equal(again.begin(), again.end(), frames.begin() + 2 * kW * kH * 3));
  }
}

TEST_F(Decode, VisitFramesGivesFramesAtsPixelsOneFrameAtATime) {
  // visit_frames (what the engine preprocesses from) hands over each wanted frame once, with frames_at's pixels;
  // the indexed path (MJPEG in Matroska), the sequential one (MPEG-4 Part 2) and a rotated file
  for (const char* name : {"/mjpeg.mkv", "/mpeg4.avi", "/mpeg4.mp4", "/rot90.mp4"}) {
    auto reader = VideoReader::open(temp_dir() + name);
    const std::vector<int64_t> idx = {0, 3, 7, reader->info().num_frames - 1};
    const auto frames = reader->frames_at(idx);
    const size_t frame_bytes = static_cast<size_t>(reader->info().width) * reader->info().height * 3;
    std::vector<int> visits(idx.size(), 0);
    reader->visit_frames(idx, [&](size_t k, const uint8_t* rgb) {
      ASSERT_LT(k, idx.size());
      ++visits[k];
      EXPECT_TRUE(std::equal(rgb, rgb + frame_bytes, frames.begin() + static_cast<std::ptrdiff_t>(k * frame_bytes)))
          << name << " frame " << idx[k];
    });
    EXPECT_EQ(visits, std::vector<int>(idx.size(), 1)) << name;
    EXPECT_EQ(std::string(name) == "/mjpeg.mkv", reader->info().indexed) << name;
    EXPECT_THROW(reader->visit_frames({7, 3}, [](size_t, const uint8_t*) {}), Error) << name;
    EXPECT_THROW(reader->visit_frames({3, 3}, [](size_t, const uint8_t*) {}), Error) << name;
  }
}

TEST_F(Decode, FullRangeMjpeg) {
  auto reader = VideoReader::open(temp_dir() + "/mjpeg.mkv");
  EXPECT_EQ(reader->info().num_frames, 10);
  const auto f = reader->frames_at({9});
  EXPECT_NEAR(mean_r(f, 0, kH, kW, 4, kH - 4, 4, kW / 2 - 4), level(9), 3.0);  // yuvj: Y is already 0..255
}

TEST_F(Decode, RotationIsAppliedByDefault) {
  auto reader = VideoReader::open(temp_dir() + "/rot90.mp4");
  const auto& info = reader->info();
  EXPECT_EQ(info.rotation, 270);  // reported counter-clockwise, as vtc_deploy.video does
  EXPECT_EQ(info.width, kH);
  EXPECT_EQ(info.height, kW);
  const auto f = reader->frames_at({3});
  // turned 90 degrees clockwise: the bright right half is now the bottom half
  EXPECT_NEAR(mean_r(f, 0, kW, kH, kW / 2 + 4, kW - 4, 4, kH - 4), grey(level(3) + 60), 3.0);
  EXPECT_NEAR(mean_r(f, 0, kW, kH, 4, kW / 2 - 4, 4, kH - 4), grey(level(3)), 3.0);

  DecodeOptions raw;
  raw.autorotate = false;
  auto stored = VideoReader::open(temp_dir() + "/rot90.mp4", raw);
  EXPECT_EQ(stored->info().rotation, 270);
  EXPECT_EQ(stored->info().width, kW);
}

TEST_F(Decode, FrameStreamGivesEveryFrameInOrder) {
  auto stream = FrameStream::open(temp_dir() + "/rot90.mp4");
  std::vector<uint8_t> rgb;
  int h = 0, w = 0, k = 0;
  double pts = -1;
  while (stream->next(&rgb, &h, &w, &pts)) {
    EXPECT_EQ(h, kW);
    EXPECT_EQ(w, kH);
    EXPECT_NEAR(pts, k / 25.0, 1e-6);
    EXPECT_NEAR(mean_r(rgb, 0, h, w, 4, kW / 2 - 4, 4, kH - 4), grey(level(k)), 3.0);
    ++k;
  }
  EXPECT_EQ(k, 10);
  EXPECT_FALSE(stream->next(&rgb, &h, &w, &pts));
}

TEST_F(Decode, OutOfRangeIndexIsAnErrorNamingTheFile) {
  auto reader = VideoReader::open(temp_dir() + "/mpeg4.avi");
  try {
    reader->frames_at({0, 30});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), temp_dir() + "/mpeg4.avi: frame index 30 outside 0..29");
  }
}

void expect_bad(const std::string& path, const std::string& part, const DecodeOptions& opts = DecodeOptions()) {
  for (int api = 0; api < 2; ++api) {
    try {
      if (api == 0) {
        (void)VideoReader::open(path, opts);
      } else {
        std::vector<uint8_t> rgb;
        int h = 0, w = 0;
        double pts = 0;
        auto s = FrameStream::open(path, opts);
        while (s->next(&rgb, &h, &w, &pts)) {
        }
      }
      ADD_FAILURE() << path << ": expected an error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(e.kind(), Error::Kind::decode);
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(part), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST_F(Decode, BadFiles) {
  const std::string d = temp_dir();
  expect_bad(d + "/missing.mp4", "no such file");
  std::ofstream(d + "/empty.mp4").close();
  expect_bad(d + "/empty.mp4", "empty file (0 bytes)");
  mkdir((d + "/dir.mp4").c_str(), 0700);
  expect_bad(d + "/dir.mp4", "not a regular file");
  {
    std::ofstream text(d + "/text.mp4");
    for (int i = 0; i < 100; ++i) text << "this is not a video\n";
  }
  expect_bad(d + "/text.mp4", "not a video file");
  {
    std::ifstream in(d + "/mpeg4.mp4", std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(d + "/half.mp4", std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size() / 2));
    std::string zeroed = data;  // the middle of the file overwritten with garbage
    for (size_t i = zeroed.size() / 3; i < zeroed.size() / 3 + 2000 && i < zeroed.size(); ++i) zeroed[i] = static_cast<char>(i * 7);
    std::ofstream(d + "/garbled.avi", std::ios::binary).write(zeroed.data(), static_cast<std::streamsize>(zeroed.size()));
  }
  expect_bad(d + "/half.mp4", "not a video file");
  DecodeOptions small;
  small.max_pixels = 1000;
  expect_bad(d + "/mpeg4.avi", "exceeds the limit of 1000 pixels", small);
  // garbled: whatever FFmpeg makes of it, never a crash; if it opens, it decodes or fails with one line
  try {
    auto r = VideoReader::open(d + "/garbled.avi");
    (void)r->frames_at({0, r->info().num_frames - 1});
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
}

}  // namespace
