// ONNX Runtime sessions through its C API (via the header-only C++ layer, manually initialised so that any
// libonnxruntime.so.1 from 1.17 on works): one process-wide environment whose logger discards everything (libvtc
// never prints), execution providers cpu / cuda / tensorrt / auto with their options, the graph's declared I/O,
// and Run with one input. Ort::Session::Run is thread-safe, so one Session serves several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace vtc {

struct SessionConfig {
  int threads = 0;  // intra-op threads; 0: ONNX Runtime's default
  std::string provider = "cpu";
  std::vector<std::pair<std::string, std::string>> provider_options;
  bool spinning = true;
  // Always (peak memory at no cost in speed): no memory pattern (the planned activation block is allocated on top
  // of the arena's chunks: batch 4, VmHWM after 5 runs 591 -> 554 MB; ViT-B/32 pure inference 2.05-2.13 clips/s
  // against 2.07-2.14 with the pattern, Xeon with AVX-512) and, on the CPU provider, the arena shrunk after every
  // run (without it the arena keeps the union of the pages that runs of different batch sizes touched: vtc-run,
  // 16 videos, batch 4 with partial batches, VmHWM 599 -> 588 MB). The CPU arena stays on: without it the first
  // inference peaked at 994 MB against 554 MB. Loading from a buffer instead of the path peaks at 898 MB (the
  // buffer and the initializers at once); from the path ONNX Runtime holds the weights once (model.onnx 428 MB ->
  // 483 MB after session creation). VmHWM per step: README.md, "C and C++".
  // Session creation runs inside HeapForWeights (ort_session.cpp): the originals ONNX Runtime frees after pre-packing
  // the MatMul weights go back to the system (vtc-run, ViT-B/32 fp32: peak 741 -> 604 MB, the same speed).
  // low_memory: also no pre-packed MatMul weights. ViT-B/32 fp32, batch 4, 1 thread, ONNX Runtime 1.32: inference
  // 12% slower on a Xeon with AVX-512 (2.21 -> 1.95 clips/s), 3% on an AVX2-only AMD EPYC; the same peak RSS as the
  // default (589 MB) where HeapForWeights acts, ~190 MB lower where it does not (another C library, VTC_KEEP_MALLOC=1
  // or glibc's thresholds set from outside). Resident fp32 weights are the floor either way (mapped external weights
  // count as resident once inference touches them).
  bool low_memory = false;
  std::string trt_cache_dir;  // default TensorRT engine cache (artifact/engines/ort-trt)
  bool trt_fp16 = false;
};

enum class DType { uint8, float32, int64, other };

struct TensorInfo {
  std::string name;
  DType dtype = DType::other;
  std::vector<int64_t> shape;  // -1 (or any negative) for a dynamic axis
};

struct Tensor {
  std::vector<float> data;
  std::vector<int64_t> shape;
};

class Session {
 public:
  // Throws vtc::Error (VTC_ERR_ARTIFACT when the graph cannot be loaded, VTC_ERR_BACKEND for a provider problem).
  Session(const std::string& path, const SessionConfig& config);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::vector<TensorInfo>& inputs() const { return inputs_; }
  const std::vector<TensorInfo>& outputs() const { return outputs_; }
  const std::string& path() const { return path_; }
  std::string providers() const;

  // Runs the graph on one input tensor (data is read only) and returns the named float32 outputs.
  std::vector<Tensor> run(const std::string& input, DType dtype, const void* data, const std::vector<int64_t>& shape,
                          const std::vector<std::string>& outputs) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  std::vector<TensorInfo> inputs_, outputs_;
};

// Checks a graph's declared I/O against what the manifest promises: `expected` lists (name, dtype, shape) with -1
// for the dynamic batch axis; a static dimension of the graph must equal the expected one. Throws vtc::Error
// (VTC_ERR_ARTIFACT) naming the graph and the tensor.
void check_io(const Session& session, const std::vector<TensorInfo>& expected_inputs,
              const std::vector<TensorInfo>& expected_outputs);

std::string ort_version();

}  // namespace vtc
