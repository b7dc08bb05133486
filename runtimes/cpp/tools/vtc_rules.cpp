// vtc-rules: drives the rules components (decoder, resize, preprocessing, tokenizer) through files and
// stdin/stdout, for tests/test_cpp_rules.py. Raw images are uint8 RGB, row-major, no header.
//
//   vtc-rules info <video>                                    one JSON line: num_frames width height fps rotation
//                                                             indexed
// Decoder options anywhere on the line: --no-rotate, --max-pixels=N, --threads=N, --ignore-discard (failure
// injection: the packet index ignores "discard" flags).
//   vtc-rules decode <video> <out.raw> <index>... [--no-rotate] frames [K, H, W, 3]; prints the info JSON line
//                                                             (after a FrameCountChanged: its message on stderr, the
//                                                             corrected info line, and the same indices read again)
//   vtc-rules stream <source> <out.raw>                       every frame in order; prints one JSON line per frame
//                                                             (a source without frames, or a truncated file after
//                                                             its frames, is an error here)
//   vtc-rules resize <in.raw> <h> <w> <out_h> <out_w> <out.raw>
//   vtc-rules preprocess <in.raw> <n> <h> <w> <resize> <size> <crops> <out.raw>   [crops, n, size, size, 3]
//   vtc-rules tokenize [<context_length>]   stdin: one text per line as hex of its UTF-8; stdout: a line of ids each
//   vtc-rules clean                         stdin as tokenize; stdout: the cleaned texts, hex of UTF-8, one a line
//   vtc-rules tokenize-each [<context_length>]   as tokenize, but a text the tokenizer refuses gives the line
//                                           "error <message>" instead of ending the run
// Errors: one line on stderr (the library's message, naming the file), exit status 2.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "rules/decode.h"
#include "rules/resize.h"
#include "rules/tokenizer.h"

namespace {

using vtc::rules::Error;

[[noreturn]] void usage() {
  std::cerr << "usage: vtc-rules info|decode|stream|resize|preprocess|tokenize|tokenize-each|clean ... "
               "(see tools/vtc_rules.cpp)\n";
  std::exit(64);
}

int to_int(const std::string& s) {
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used != s.size()) usage();
    return static_cast<int>(v);
  } catch (const std::exception&) {
    usage();
  }
}

std::vector<uint8_t> read_file(const std::string& path, size_t expected) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Error::Kind::input, path + ": cannot open");
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() != expected) {
    throw Error(Error::Kind::input, path + ": expected " + std::to_string(expected) + " bytes, got " +
                                        std::to_string(data.size()));
  }
  return data;
}

void write_file(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  if (!out) throw Error(Error::Kind::input, path + ": cannot write");
}

std::string info_json(const vtc::rules::VideoInfo& info) {
  std::ostringstream s;
  s.precision(17);
  s << "{\"num_frames\": " << info.num_frames << ", \"width\": " << info.width << ", \"height\": " << info.height
    << ", \"fps\": " << info.fps << ", \"rotation\": " << info.rotation
    << ", \"mirrored\": " << (info.mirrored ? "true" : "false")
    << ", \"indexed\": " << (info.indexed ? "true" : "false") << "}";
  return s.str();
}

// stdin: one text per line, as the hex digits of its UTF-8 bytes (so any text, NUL and newlines included, fits)
std::vector<std::string> read_texts() {
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.size() % 2 != 0) throw Error(Error::Kind::input, "stdin: odd number of hex digits");
    std::string text;
    for (size_t i = 0; i < line.size(); i += 2) {
      text.push_back(static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16)));
    }
    texts.push_back(text);
  }
  return texts;
}

std::string to_hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

int run(std::vector<std::string> args) {
  if (args.empty()) usage();
  vtc::rules::DecodeOptions opts;
  for (auto it = args.begin(); it != args.end();) {
    if (*it == "--no-rotate") {
      opts.autorotate = false;
      it = args.erase(it);
    } else if (it->rfind("--max-pixels=", 0) == 0) {
      opts.max_pixels = std::stoll(it->substr(13));
      it = args.erase(it);
    } else if (*it == "--ignore-discard") {
      opts.ignore_discard = true;
      it = args.erase(it);
    } else if (it->rfind("--threads=", 0) == 0) {
      opts.threads = to_int(it->substr(10));
      it = args.erase(it);
    } else {
      ++it;
    }
  }
  const std::string cmd = args[0];
  if (cmd == "info" && args.size() == 2) {
    auto reader = vtc::rules::VideoReader::open(args[1], opts);
    std::cout << info_json(reader->info()) << "\n";
  } else if (cmd == "decode" && args.size() >= 3) {
    auto reader = vtc::rules::VideoReader::open(args[1], opts);
    std::vector<int64_t> indices;
    for (size_t i = 3; i < args.size(); ++i) indices.push_back(to_int(args[i]));
    std::vector<uint8_t> frames;
    try {
      frames = reader->frames_at(indices);
    } catch (const vtc::rules::FrameCountChanged& e) {  // report the count first listed, then read again
      std::cerr << e.what() << "\n";
      std::cout << info_json(reader->info()) << "\n";
      frames = reader->frames_at(indices);
    }
    write_file(args[2], frames);
    std::cout << info_json(reader->info()) << "\n";
  } else if (cmd == "stream" && args.size() == 3) {
    auto stream = vtc::rules::FrameStream::open(args[1], opts);
    std::ofstream out(args[2], std::ios::binary);
    std::vector<uint8_t> rgb;
    int h = 0, w = 0;
    double pts = 0.0;
    while (stream->next(&rgb, &h, &w, &pts)) {
      out.write(reinterpret_cast<const char*>(rgb.data()), static_cast<std::streamsize>(rgb.size()));
      std::cout << "{\"height\": " << h << ", \"width\": " << w << ", \"pts\": " << pts << "}\n";
    }
    if (!out) throw Error(Error::Kind::input, args[2] + ": cannot write");
    if (stream->frames_read() == 0) throw Error(Error::Kind::decode, args[1] + ": video has no frames");
    if (const std::string why = stream->truncation(); !why.empty()) {
      const std::string frames = std::to_string(stream->frames_read());
      throw Error(Error::Kind::decode, args[1] + ": the file ended after " + frames + " frames (" + why + ")");
    }
  } else if (cmd == "resize" && args.size() == 7) {
    const int h = to_int(args[2]), w = to_int(args[3]), oh = to_int(args[4]), ow = to_int(args[5]);
    if (h < 1 || w < 1 || oh < 1 || ow < 1) usage();
    const auto src = read_file(args[1], static_cast<size_t>(h) * w * 3);
    std::vector<uint8_t> dst(static_cast<size_t>(oh) * ow * 3);
    vtc::rules::resize_bicubic(src.data(), h, w, dst.data(), oh, ow);
    write_file(args[6], dst);
  } else if (cmd == "preprocess" && args.size() == 9) {
    const int n = to_int(args[2]), h = to_int(args[3]), w = to_int(args[4]);
    const int resize = to_int(args[5]), size = to_int(args[6]), crops = to_int(args[7]);
    if (n < 1 || h < 1 || w < 1 || size < 1 || (crops != 1 && crops != 3)) usage();
    const size_t frame = static_cast<size_t>(h) * w * 3, crop = static_cast<size_t>(size) * size * 3;
    const auto src = read_file(args[1], frame * n);
    std::vector<uint8_t> out(crop * crops * n);  // [crops, n, size, size, 3]
    for (int i = 0; i < n; ++i) {
      const auto views = vtc::rules::preprocess(src.data() + frame * i, h, w, resize, size, crops);
      for (int v = 0; v < crops; ++v) {
        std::copy(views.begin() + static_cast<std::ptrdiff_t>(crop * v),
                  views.begin() + static_cast<std::ptrdiff_t>(crop * (v + 1)),
                  out.begin() + static_cast<std::ptrdiff_t>(crop * (static_cast<size_t>(v) * n + i)));
      }
    }
    write_file(args[8], out);
  } else if (cmd == "tokenize" && args.size() <= 2) {
    const int length = args.size() == 2 ? to_int(args[1]) : 77;
    const vtc::rules::Tokenizer tokenizer;
    for (const auto& text : read_texts()) {
      const auto ids = tokenizer.tokenize(text, length);
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
      std::cout << "\n";
    }
  } else if (cmd == "tokenize-each" && args.size() <= 2) {
    const int length = args.size() == 2 ? to_int(args[1]) : 77;
    const vtc::rules::Tokenizer tokenizer;
    for (const auto& text : read_texts()) {
      std::vector<int64_t> ids;
      try {
        ids = tokenizer.tokenize(text, length);
      } catch (const Error& e) {
        if (e.kind() != Error::Kind::input) throw;
        std::cout << "error " << e.what() << "\n";
        continue;
      }
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
      std::cout << "\n";
    }
  } else if (cmd == "clean" && args.size() == 1) {
    const vtc::rules::Tokenizer tokenizer;
    for (const auto& text : read_texts()) std::cout << to_hex(tokenizer.clean(text)) << "\n";
  } else {
    usage();
  }
  std::cout.flush();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
}
