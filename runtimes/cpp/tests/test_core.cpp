// C++ tests of the core rules that need no model: manifest checks, sampling edge cases, the Python-compatible JSON
// formatting of vtc-run, and the C API's argument checks (NULL handles, wrong shapes/dtypes, bad artifacts).
// The parity tests against the Python runtime are in tests/test_cpp_api.py and tests/test_cpp_run.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "error.h"
#include "manifest.h"
#include "pyjson.h"
#include "sampling.h"
#include "vtc/vtc.h"

namespace {

const char* kMinimal = R"({"schema_version": 1, "model": {"architecture": "tiny", "weights": "random",
  "embed_dim": 32, "head": "mean"}, "frames": 8, "classes": ["a", "b"], "templates": ["a video of {}."],
  "logit_scale": 100.0})";

std::string with(const std::string& key, const std::string& value) {
  std::string s = kMinimal;
  const size_t at = s.rfind('}');
  return s.substr(0, at) + ", \"" + key + "\": " + value + "}";
}

std::string error_of(const std::string& text) {
  try {
    vtc::parse_manifest(text, "m.json");
  } catch (const vtc::Error& e) {
    EXPECT_EQ(e.status(), VTC_ERR_ARTIFACT);
    return e.what();
  }
  return "";
}

TEST(Manifest, MinimalParsesWithDefaults) {
  vtc::Manifest m = vtc::parse_manifest(kMinimal, "m.json");
  EXPECT_EQ(m.frames, 8);
  EXPECT_EQ(m.input.size, 224);
  EXPECT_EQ(m.input.resize, 256);
  EXPECT_EQ(m.onnx_file, "model.onnx");
  EXPECT_FALSE(m.has_text);
}

TEST(Manifest, RejectsWhatThePythonReaderRejects) {
  EXPECT_NE(error_of("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[1]").find("must be a JSON object"), std::string::npos);
  EXPECT_NE(error_of(R"({"frames": 8})").find("no integer schema_version"), std::string::npos);
  std::string newer = kMinimal;
  newer.replace(newer.find("\"schema_version\": 1"), 19, "\"schema_version\": 2");
  EXPECT_NE(error_of(newer).find("newer than this libvtc"), std::string::npos);
  EXPECT_NE(error_of(with("surprise", "1")).find("unknown key(s) surprise"), std::string::npos);
  EXPECT_NE(error_of(with("input", R"({"size": "224"})")).find("manifest.input.size: expected int"),
            std::string::npos);
  EXPECT_NE(error_of(with("precision", R"("fp64")")).find("manifest.precision"), std::string::npos);
  EXPECT_NE(error_of(with("sampling", R"({"crops": 2})")).find("manifest.sampling.crops"), std::string::npos);
  EXPECT_NE(error_of(with("sampling", R"({"crops": true})")).find("manifest.sampling.crops"), std::string::npos);
}

TEST(Manifest, ArtifactSafetyLimits) {
  EXPECT_NE(error_of(with("onnx_file", R"("../model.onnx")")).find("manifest.onnx_file"), std::string::npos);
  EXPECT_NE(error_of(with("onnx_file", R"("/etc/passwd")")).find("manifest.onnx_file"), std::string::npos);
  EXPECT_NE(error_of(with("text", R"({"file": ".hidden"})")).find("manifest.text.file"), std::string::npos);
  EXPECT_NE(error_of(with("input", R"({"size": 5000, "resize": 6000})")).find("manifest.input.size"),
            std::string::npos);
  EXPECT_NE(error_of(with("input", R"({"resize": 9000})")).find("manifest.input.resize"), std::string::npos);
  EXPECT_NE(error_of(with("input", R"({"std": [1, 0, 1]})")).find("manifest.input.std"), std::string::npos);
  EXPECT_NE(error_of(with("input", R"({"mean": [1, 2]})")).find("manifest.input.mean"), std::string::npos);
  std::string m = kMinimal;
  EXPECT_NE(error_of(std::string(m).replace(m.find("100.0"), 5, "0")).find("manifest.logit_scale"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(m).replace(m.find("100.0"), 5, "NaN")).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(std::string(m).replace(m.find("100.0"), 5, "1e999")).find("overflow"), std::string::npos);
  EXPECT_NE(error_of(std::string(m).replace(m.find("\"frames\": 8"), 11, "\"frames\": 2000")).find("manifest.frames"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(m).replace(m.find("[\"a\", \"b\"]"), 10, "[]")).find("manifest.classes"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(m).replace(m.find("[\"a\", \"b\"]"), 10, "[\"a\", \"\"]")).find("classes[1]"),
            std::string::npos);
  const std::string long_name(1001, 'x');
  EXPECT_NE(error_of(std::string(m).replace(m.find("[\"a\", \"b\"]"), 10, "[\"" + long_name + "\"]"))
                .find("classes[0]"),
            std::string::npos);
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(vtc::sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(vtc::sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string million(1000000, 'a');
  EXPECT_EQ(vtc::sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sampling, OneClipIsSegmentStarts) {
  EXPECT_EQ(vtc::uniform_indices(250, 8), (std::vector<int64_t>{0, 31, 62, 93, 125, 156, 187, 218}));
  EXPECT_EQ(vtc::uniform_indices(3, 8), (std::vector<int64_t>{0, 0, 0, 1, 1, 1, 2, 2}));
  // short video, several clips: the later starts are floor(linspace) = -1 and wrap (see sampling.py)
  EXPECT_EQ(vtc::uniform_indices(3, 8, 3), (std::vector<int64_t>{0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0, 1, 1, 2,
                                                                  0, 0, 0, 0, 0, 1, 1}));
  EXPECT_THROW(vtc::uniform_indices(0, 8), vtc::Error);
  EXPECT_THROW(vtc::dense_indices(10, 0), vtc::Error);
}

TEST(PyJson, FloatsAsPythonRepr) {
  EXPECT_EQ(vtc::pyjson::number(1.0), "1.0");
  EXPECT_EQ(vtc::pyjson::number(0.1), "0.1");
  EXPECT_EQ(vtc::pyjson::number(-2.5), "-2.5");
  EXPECT_EQ(vtc::pyjson::number(1e-05), "1e-05");
  EXPECT_EQ(vtc::pyjson::number(0.0001), "0.0001");
  EXPECT_EQ(vtc::pyjson::number(1.5e16), "1.5e+16");
  EXPECT_EQ(vtc::pyjson::number(1e16), "1e+16");
  EXPECT_EQ(vtc::pyjson::number(123456789012345.0), "123456789012345.0");
  EXPECT_EQ(vtc::pyjson::number(static_cast<double>(23.1f)), "23.100000381469727");
  EXPECT_EQ(vtc::pyjson::number(-0.0), "-0.0");
  EXPECT_EQ(vtc::pyjson::number(NAN), "NaN");
  EXPECT_EQ(vtc::pyjson::number(2.5e-300), "2.5e-300");
  EXPECT_EQ(vtc::pyjson::round3(0.6405), 0.64);  // as Python: 0.6405 is 0.64049999...
  EXPECT_EQ(vtc::pyjson::round3(2.0005), 2.001);
  EXPECT_EQ(vtc::pyjson::string("a\"b\\c\n\x01é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
}

TEST(CApi, NullHandlesAndBadArgumentsGiveAStatusAndOneLine) {
  vtc_result* results = nullptr;
  const char* paths[] = {"x.mp4"};
  EXPECT_EQ(vtc_classify_files(nullptr, paths, 1, nullptr, &results), VTC_ERR_ARGUMENT);
  EXPECT_NE(std::string(vtc_last_error()).find("clf is NULL"), std::string::npos);
  EXPECT_EQ(results, nullptr);
  vtc_classifier* clf = reinterpret_cast<vtc_classifier*>(0x1);
  EXPECT_EQ(vtc_open(nullptr, nullptr, &clf), VTC_ERR_ARGUMENT);
  EXPECT_EQ(clf, nullptr);
  EXPECT_EQ(vtc_open("/nonexistent/artifact", nullptr, &clf), VTC_ERR_ARTIFACT);
  EXPECT_NE(std::string(vtc_last_error()).find("/nonexistent/artifact: no such artifact directory"),
            std::string::npos);
  EXPECT_EQ(vtc_open("/tmp", nullptr, nullptr), VTC_ERR_ARGUMENT);
  EXPECT_EQ(vtc_get_info(nullptr, nullptr), VTC_ERR_ARGUMENT);
  EXPECT_EQ(vtc_set_classes(nullptr, nullptr, 0, nullptr, 0), VTC_ERR_ARGUMENT);
  vtc_stream* stream = nullptr;
  EXPECT_EQ(vtc_stream_open(nullptr, 8, 2, 5, 0, nullptr, &stream), VTC_ERR_ARGUMENT);
  size_t n = 0;
  EXPECT_EQ(vtc_stream_push(nullptr, nullptr, 0, 0, 0, &results, &n), VTC_ERR_ARGUMENT);
  EXPECT_EQ(vtc_close(nullptr), VTC_OK);
  EXPECT_EQ(vtc_stream_close(nullptr), VTC_OK);
  vtc_results_free(nullptr, 0);
  EXPECT_EQ(std::string(vtc_status_name(VTC_ERR_DECODE)), "VTC_ERR_DECODE");
  // messages are per thread: another thread's failure does not change this thread's message
  const std::string mine = vtc_last_error();
  std::thread([] { vtc_open("/elsewhere", nullptr, nullptr); }).join();
  EXPECT_EQ(std::string(vtc_last_error()), mine);
  for (const char* message : {vtc_last_error()}) EXPECT_EQ(std::string(message).find('\n'), std::string::npos);
}

TEST(CApi, CorruptManifestAndMissingGraph) {
  const std::string dir = ::testing::TempDir() + "/vtc_bad_artifact";
  ASSERT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);
  vtc_classifier* clf = nullptr;
  EXPECT_EQ(vtc_open(dir.c_str(), nullptr, &clf), VTC_ERR_ARTIFACT);
  EXPECT_NE(std::string(vtc_last_error()).find("no manifest.json"), std::string::npos);
  std::ofstream(dir + "/manifest.json") << "{\"schema_version\": 1, ";
  EXPECT_EQ(vtc_open(dir.c_str(), nullptr, &clf), VTC_ERR_ARTIFACT);
  EXPECT_NE(std::string(vtc_last_error()).find("not valid JSON"), std::string::npos);
  std::ofstream(dir + "/manifest.json") << kMinimal;
  EXPECT_EQ(vtc_open(dir.c_str(), nullptr, &clf), VTC_ERR_ARTIFACT);
  EXPECT_NE(std::string(vtc_last_error()).find("model.onnx, which is missing"), std::string::npos);
  std::ofstream(dir + "/model.onnx") << "not a graph";
  EXPECT_EQ(vtc_open(dir.c_str(), nullptr, &clf), VTC_ERR_ARTIFACT);
  EXPECT_NE(std::string(vtc_last_error()).find("records no sha256 for model.onnx"), std::string::npos);
  std::ofstream(dir + "/manifest.json") << with("onnx_sha256", "\"00\"");
  EXPECT_EQ(vtc_open(dir.c_str(), nullptr, &clf), VTC_ERR_ARTIFACT);
  EXPECT_NE(std::string(vtc_last_error()).find("does not match the manifest"), std::string::npos);
  vtc_options o;
  vtc_options_init(&o);
  o.check_hash = 0;
  EXPECT_EQ(vtc_open(dir.c_str(), &o, &clf), VTC_ERR_ARTIFACT);
  EXPECT_NE(std::string(vtc_last_error()).find("ONNX Runtime cannot load the graph"), std::string::npos);
  EXPECT_EQ(clf, nullptr);
}

}  // namespace
