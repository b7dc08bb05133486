// See ort_session.h.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include "ort_session.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "error.h"

namespace vtc {
namespace {

constexpr int kMinApiVersion = 17;  // every OrtApi function used here exists since ONNX Runtime 1.17

void discard_log(void*, OrtLoggingLevel, const char*, const char*, const char*, const char*) {}

// Around the creation of a session on glibc (runtimes/ort.py's heap_for_weights, the same rule): blocks of 1 MiB and
// more are mapped on their own while ONNX Runtime loads the weights, so that the originals it frees after pre-packing
// them go back to the system instead of staying resident as holes in the heap (ViT-B/32 fp32: ~200 MB of a 790 MB
// peak, varying from run to run with where glibc's adaptive threshold stood). Afterwards glibc is left where that
// adaptive threshold ends up by itself in a process that handles video frames (32 MiB; trim threshold 64 MiB) and
// free heap pages are returned. Nothing is changed when the process's allocator was configured from outside (its mmap
// or trim threshold or mmap_max set by MALLOC_*_ or GLIBC_TUNABLES), when VTC_KEEP_MALLOC=1 says so, or the C
// library is not glibc.
class HeapForWeights {
 public:
  HeapForWeights() : active_(configurable()) {
#if defined(__GLIBC__)
    if (active_) mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  }
  ~HeapForWeights() {
#if defined(__GLIBC__)
    if (active_) {
      mallopt(M_MMAP_THRESHOLD, 32 << 20);
      mallopt(M_TRIM_THRESHOLD, 64 << 20);
      malloc_trim(0);
    }
#endif
  }
  HeapForWeights(const HeapForWeights&) = delete;
  HeapForWeights& operator=(const HeapForWeights&) = delete;

 private:
  static bool configurable() {
#if defined(__GLIBC__)
    const char* keep = std::getenv("VTC_KEEP_MALLOC");
    if (keep != nullptr && keep[0] != '\0' && std::strcmp(keep, "0") != 0) return false;
    for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_"}) {
      if (std::getenv(name) != nullptr) return false;
    }
    const char* tunables = std::getenv("GLIBC_TUNABLES");
    if (tunables != nullptr) {
      for (const char* name : {"glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.mmap_max"}) {
        if (std::strstr(tunables, name) != nullptr) return false;
      }
    }
    return true;
#else
    return false;
#endif
  }
  bool active_;
};

const OrtApi* api_or_throw() {
  static const OrtApi* api = [] {
    const OrtApiBase* base = OrtGetApiBase();
    for (int v = ORT_API_VERSION; v >= kMinApiVersion; --v) {
      if (const OrtApi* a = base->GetApi(v)) return a;
    }
    return static_cast<const OrtApi*>(nullptr);
  }();
  if (api == nullptr) {
    throw Error(VTC_ERR_BACKEND, std::string("the loaded ONNX Runtime (") + OrtGetApiBase()->GetVersionString() +
                                     ") is older than 1.17, which libvtc needs");
  }
  return api;
}

Ort::Env& env() {
  static std::once_flag once;
  static Ort::Env* instance = nullptr;  // never destroyed: outlives every session, even at process exit
  std::call_once(once, [] {
    Ort::InitApi(api_or_throw());
    instance = new Ort::Env(ORT_LOGGING_LEVEL_FATAL, "vtc", discard_log, nullptr);
    // ONNX Runtime's telemetry (1.29 and later, Linux and macOS too): off unless the process environment says
    // ORT_DISABLE_TELEMETRY=0, as in the Python runtime. This stops the events of every session from here on; the one
    // process-information event ONNX Runtime records while creating the environment stops only with
    // ORT_DISABLE_TELEMETRY=1 in the environment beforehand (vtc-run sets it; a library must not call setenv in a
    // host's threads). A failure here costs nothing but the setting.
    const char* choice = std::getenv("ORT_DISABLE_TELEMETRY");
    if (choice == nullptr || std::strcmp(choice, "0") != 0) {
      OrtStatus* status = Ort::GetApi().DisableTelemetryEvents(*instance);
      if (status != nullptr) Ort::GetApi().ReleaseStatus(status);
    }
  });
  return *instance;
}

DType to_dtype(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return DType::uint8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return DType::float32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return DType::int64;
    default:
      return DType::other;
  }
}

ONNXTensorElementDataType from_dtype(DType t) {
  switch (t) {
    case DType::uint8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::float32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::int64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    default:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
}

size_t dtype_size(DType t) { return t == DType::uint8 ? 1 : t == DType::float32 ? 4 : 8; }

std::string dtype_name(DType t) {
  return t == DType::uint8 ? "uint8" : t == DType::float32 ? "float32" : t == DType::int64 ? "int64" : "other";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + (shape[i] < 0 ? "?" : std::to_string(shape[i]));
  return s + "]";
}

std::vector<std::string> available_providers() {
  std::vector<std::string> out = Ort::GetAvailableProviders();
  return out;
}

const char* provider_name(const std::string& p) {
  if (p == "tensorrt") return "TensorrtExecutionProvider";
  if (p == "cuda") return "CUDAExecutionProvider";
  return "CPUExecutionProvider";
}

}  // namespace

std::string ort_version() {
  env();
  return OrtGetApiBase()->GetVersionString();
}

struct Session::Impl {
  Ort::Session session{nullptr};
  std::vector<std::string> chosen;
  Ort::RunOptions run_options{nullptr};
};

Session::Session(const std::string& path, const SessionConfig& config) : impl_(new Impl), path_(path) {
  Ort::Env& e = env();
  const std::vector<std::string> available = available_providers();
  auto has = [&](const std::string& p) {
    return std::find(available.begin(), available.end(), provider_name(p)) != available.end();
  };
  std::vector<std::string> chain;
  if (config.provider == "auto") {
    for (const char* p : {"tensorrt", "cuda"}) {
      if (has(p)) chain.emplace_back(p);
    }
  } else if (config.provider == "cuda" || config.provider == "tensorrt") {
    if (!has(config.provider)) {
      std::string list;
      for (const auto& a : available) list += (list.empty() ? "" : ", ") + a;
      throw Error(VTC_ERR_BACKEND, "ONNX Runtime provider '" + config.provider + "' (" +
                                       provider_name(config.provider) + ") is not in this build (" +
                                       OrtGetApiBase()->GetVersionString() + "); available: " + list);
    }
    chain.push_back(config.provider);
  } else if (config.provider != "cpu") {
    throw Error(VTC_ERR_ARGUMENT, "provider must be one of cpu, cuda, tensorrt, auto; got '" + config.provider + "'");
  }
  try {
    Ort::SessionOptions options;
    options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (config.threads > 0) options.SetIntraOpNumThreads(config.threads);
    if (!config.spinning) options.AddConfigEntry("session.intra_op.allow_spinning", "0");
    options.DisableMemPattern();  // see SessionConfig
    if (config.low_memory) options.AddConfigEntry("session.disable_prepacking", "1");
    options.SetLogSeverityLevel(ORT_LOGGING_LEVEL_FATAL);
    const OrtApi& api = Ort::GetApi();
    for (const auto& p : chain) {
      std::vector<std::string> keys, values;
      if (p == "tensorrt") {
        if (!config.trt_cache_dir.empty()) {
          keys = {"trt_engine_cache_enable", "trt_engine_cache_path", "trt_timing_cache_enable"};
          values = {"1", config.trt_cache_dir, "1"};
        }
        keys.emplace_back("trt_fp16_enable");
        values.emplace_back(config.trt_fp16 ? "1" : "0");
      }
      for (const auto& [k, v] : config.provider_options) {
        auto it = std::find(keys.begin(), keys.end(), k);
        if (it != keys.end()) {
          values[static_cast<size_t>(it - keys.begin())] = v;
        } else {
          keys.push_back(k);
          values.push_back(v);
        }
      }
      std::vector<const char*> k_ptr, v_ptr;
      for (size_t i = 0; i < keys.size(); ++i) {
        k_ptr.push_back(keys[i].c_str());
        v_ptr.push_back(values[i].c_str());
      }
      if (p == "cuda") {
        OrtCUDAProviderOptionsV2* cuda = nullptr;
        Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
        std::unique_ptr<OrtCUDAProviderOptionsV2, void (*)(OrtCUDAProviderOptionsV2*)> hold(
            cuda, api.ReleaseCUDAProviderOptions);
        Ort::ThrowOnError(api.UpdateCUDAProviderOptions(cuda, k_ptr.data(), v_ptr.data(), k_ptr.size()));
        Ort::ThrowOnError(api.SessionOptionsAppendExecutionProvider_CUDA_V2(options, cuda));
      } else {
        OrtTensorRTProviderOptionsV2* trt = nullptr;
        Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&trt));
        std::unique_ptr<OrtTensorRTProviderOptionsV2, void (*)(OrtTensorRTProviderOptionsV2*)> hold(
            trt, api.ReleaseTensorRTProviderOptions);
        Ort::ThrowOnError(api.UpdateTensorRTProviderOptions(trt, k_ptr.data(), v_ptr.data(), k_ptr.size()));
        Ort::ThrowOnError(api.SessionOptionsAppendExecutionProvider_TensorRT_V2(options, trt));
      }
      impl_->chosen.push_back(p);
    }
    if (chain.empty() && !config.provider_options.empty()) {
      throw Error(VTC_ERR_ARGUMENT, "provider options were given but the provider is cpu");
    }
    impl_->chosen.emplace_back("cpu");
    impl_->run_options = Ort::RunOptions();
    if (chain.empty()) {  // CPU only: see SessionConfig
      impl_->run_options.AddConfigEntry("memory.enable_memory_arena_shrinkage", "cpu:0");
    }
    HeapForWeights heap;
    impl_->session = Ort::Session(e, path.c_str(), options);
  } catch (const Ort::Exception& exc) {
    std::string what = Error::one_line(exc.what());
    if (what.size() > 300) what.resize(300);
    throw Error(impl_->session ? VTC_ERR_BACKEND : VTC_ERR_ARTIFACT,
                path + ": ONNX Runtime cannot load the graph (" + what + ")");
  }
  Ort::AllocatorWithDefaultOptions allocator;
  auto describe = [&](Ort::TypeInfo info, std::string name) {
    TensorInfo t;
    t.name = std::move(name);
    if (info.GetONNXType() == ONNX_TYPE_TENSOR) {
      auto tensor = info.GetTensorTypeAndShapeInfo();
      t.dtype = to_dtype(tensor.GetElementType());
      t.shape = tensor.GetShape();
    }
    return t;
  };
  for (size_t i = 0; i < impl_->session.GetInputCount(); ++i) {
    inputs_.push_back(describe(impl_->session.GetInputTypeInfo(i),
                               impl_->session.GetInputNameAllocated(i, allocator).get()));
  }
  for (size_t i = 0; i < impl_->session.GetOutputCount(); ++i) {
    outputs_.push_back(describe(impl_->session.GetOutputTypeInfo(i),
                                impl_->session.GetOutputNameAllocated(i, allocator).get()));
  }
}

Session::~Session() = default;

std::string Session::providers() const {
  std::string s;
  for (const auto& p : impl_->chosen) s += (s.empty() ? "" : ", ") + p;
  return s;
}

std::vector<Tensor> Session::run(const std::string& input, DType dtype, const void* data,
                                 const std::vector<int64_t>& shape, const std::vector<std::string>& outputs) const {
  size_t count = 1;
  for (int64_t d : shape) count *= static_cast<size_t>(d);
  try {
    Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value value = Ort::Value::CreateTensor(memory, const_cast<void*>(data), count * dtype_size(dtype),
                                                shape.data(), shape.size(), from_dtype(dtype));
    const char* in_names[] = {input.c_str()};
    std::vector<const char*> out_names;
    for (const auto& o : outputs) out_names.push_back(o.c_str());
    std::vector<Ort::Value> results =
        impl_->session.Run(impl_->run_options, in_names, &value, 1, out_names.data(), out_names.size());
    std::vector<Tensor> out;
    for (size_t i = 0; i < results.size(); ++i) {
      auto info = results[i].GetTensorTypeAndShapeInfo();
      if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        throw Error(VTC_ERR_ARTIFACT, path_ + ": output " + outputs[i] + " is not float32");
      }
      Tensor t;
      t.shape = info.GetShape();
      const float* p = results[i].GetTensorData<float>();
      t.data.assign(p, p + info.GetElementCount());
      out.push_back(std::move(t));
    }
    return out;
  } catch (const Ort::Exception& exc) {
    std::string what = Error::one_line(exc.what());
    if (what.size() > 300) what.resize(300);
    throw Error(VTC_ERR_BACKEND, path_ + ": inference failed (" + what + ")");
  }
}

void check_io(const Session& session, const std::vector<TensorInfo>& expected_inputs,
              const std::vector<TensorInfo>& expected_outputs) {
  auto check = [&](const std::vector<TensorInfo>& have, const std::vector<TensorInfo>& want, const char* what) {
    for (const auto& w : want) {
      auto it = std::find_if(have.begin(), have.end(), [&](const TensorInfo& h) { return h.name == w.name; });
      if (it == have.end()) {
        std::string names;
        for (const auto& h : have) names += (names.empty() ? "" : ", ") + h.name;
        throw Error(VTC_ERR_ARTIFACT, session.path() + ": the graph has no " + what + " '" + w.name + "' (has " +
                                          names + "), which the manifest promises");
      }
      bool ok = it->dtype == w.dtype && it->shape.size() == w.shape.size();
      for (size_t i = 0; ok && i < w.shape.size(); ++i) {
        if (w.shape[i] >= 0 && it->shape[i] >= 0 && it->shape[i] != w.shape[i]) ok = false;
      }
      if (!ok) {
        throw Error(VTC_ERR_ARTIFACT, session.path() + ": " + what + " '" + w.name + "' is " + dtype_name(it->dtype) +
                                          " " + shape_text(it->shape) + " but the manifest says " +
                                          dtype_name(w.dtype) + " " + shape_text(w.shape));
      }
    }
    if (std::string(what) == "input" && have.size() != want.size()) {
      throw Error(VTC_ERR_ARTIFACT, session.path() + ": the graph has " + std::to_string(have.size()) +
                                        " inputs, the manifest " + std::to_string(want.size()));
    }
  };
  check(session.inputs(), expected_inputs, "input");
  check(session.outputs(), expected_outputs, "output");
}

}  // namespace vtc
