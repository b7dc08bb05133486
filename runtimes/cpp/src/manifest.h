// The artifact manifest (manifest.json), read by the same rules as vtc_deploy/spec.py (ArtifactSpec.from_json) and
// vtc_deploy/artifact.py (Artifact.open): schema_version gate, unknown keys and wrong types are errors, every graph
// file must exist inside the artifact directory and match its sha256; plus the artifact-safety limits (manifest
// size, file-name pattern, no symlinks out of the directory, class/template counts and lengths, frame and input
// size ranges, finite scale/mean/std). Errors are vtc::Error(VTC_ERR_ARTIFACT) with one line naming the manifest
// and the field.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vtc {

constexpr int kSchemaVersion = 1;
constexpr int64_t kMaxManifestBytes = 16LL << 20;
constexpr size_t kMaxClasses = 100000;
constexpr size_t kMaxClassBytes = 1000;
constexpr size_t kMaxTemplates = 1000;
constexpr size_t kMaxTemplateBytes = 1000;
constexpr int kMaxFrames = 1024;
constexpr int kMaxInputSize = 4096;
constexpr int kMaxResize = 8192;

struct InputSpec {
  std::string kind = "uint8";  // uint8 [B,T,H,W,3] or float [B,T,3,H,W]
  int size = 224;
  int resize = 256;
  std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};
};

struct Manifest {
  std::string root;           // the artifact directory as given
  std::string manifest_path;  // root/manifest.json
  std::string json_text;      // the file as read
  int schema_version = 0;
  std::string architecture;
  int embed_dim = 0;
  int frames = 0;
  std::vector<std::string> classes;
  std::vector<std::string> templates;
  double logit_scale = 0;
  InputSpec input;
  std::string sampling_rule = "uniform";
  int clips = 1;
  int crops = 1;
  int window = 128;
  std::string precision = "fp32";
  std::vector<std::string> inputs{"video"};
  std::vector<std::string> outputs{"logits", "embedding", "feature_norm"};
  std::string onnx_file = "model.onnx";
  std::string onnx_sha256;
  bool has_text = false;
  std::string text_file = "text.onnx";
  std::string text_sha256;
  int context_length = 77;
  bool has_streaming = false;
  std::string frames_file = "frames.onnx";
  std::string frames_sha256;
  std::string head_file = "head.onnx";
  std::string head_sha256;

  std::string path_of(const std::string& file) const;  // root/file
};

// Reads and checks root/manifest.json and (with check_hash) the sha256 of every graph file. Throws vtc::Error.
Manifest read_manifest(const std::string& root, bool check_hash);

// Parses manifest JSON text (no file checks). `where` names the manifest in messages. Throws vtc::Error.
Manifest parse_manifest(const std::string& text, const std::string& where);

// Lower-case hex sha256 of a file. Throws vtc::Error naming the file when it cannot be read.
std::string sha256_file(const std::string& path);
// Lower-case hex sha256 of bytes.
std::string sha256_hex(const void* data, size_t size);

}  // namespace vtc
