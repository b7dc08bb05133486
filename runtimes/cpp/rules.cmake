# The "rules" half of libvtc (issue 14): FFmpeg decoding, Pillow-identical resize + Text4Vis preprocessing, the CLIP
# BPE tokenizer. Included by the top-level CMakeLists.txt (which links `vtc_rules` into libvtc).
# Defines: vtc_rules (static, PIC), vtc-rules (test tool for tests/test_cpp_rules.py), vtc_rules_tests (gtest, ctest).
# Both vtc-rules and vtc_rules_tests belong in the ASan+UBSan build too: ctest there, and
#   VTC_RULES_TOOL=build/cpp-asan/vtc-rules pytest tests/test_cpp_rules.py   (all checks pass under the sanitizers).
# Debian packages: cmake g++ pkg-config libavformat-dev libavcodec-dev libswscale-dev libavutil-dev zlib1g-dev
# libicu-dev libgtest-dev.

set(VTC_RULES_DIR "${CMAKE_CURRENT_LIST_DIR}")
get_filename_component(VTC_REPO_ROOT "${VTC_RULES_DIR}/../.." ABSOLUTE)

find_package(PkgConfig REQUIRED)
pkg_check_modules(VTC_FFMPEG REQUIRED IMPORTED_TARGET libavformat libavcodec libswscale libavutil)
pkg_check_modules(VTC_ICU REQUIRED IMPORTED_TARGET icu-uc icu-i18n)
find_package(ZLIB REQUIRED)

set(VTC_VOCAB_GZ "${VTC_REPO_ROOT}/vtc_deploy/data/bpe_simple_vocab_16e6.txt.gz")
set(VTC_VOCAB_CPP "${CMAKE_CURRENT_BINARY_DIR}/vtc_rules_vocab.cpp")
add_custom_command(
  OUTPUT "${VTC_VOCAB_CPP}"
  COMMAND "${CMAKE_COMMAND}" -DINPUT=${VTC_VOCAB_GZ} -DOUTPUT=${VTC_VOCAB_CPP} -DSYMBOL=vtc_bpe_vocab_gz
          -P "${VTC_RULES_DIR}/cmake/embed_file.cmake"
  DEPENDS "${VTC_VOCAB_GZ}" "${VTC_RULES_DIR}/cmake/embed_file.cmake"
  COMMENT "Embedding the CLIP BPE vocabulary"
  VERBATIM)

add_library(vtc_rules STATIC
  "${VTC_RULES_DIR}/src/rules/decode.cpp"
  "${VTC_RULES_DIR}/src/rules/resize.cpp"
  "${VTC_RULES_DIR}/src/rules/tokenizer.cpp"
  "${VTC_VOCAB_CPP}")
set_target_properties(vtc_rules PROPERTIES POSITION_INDEPENDENT_CODE ON CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
                                           CXX_EXTENSIONS OFF)
target_include_directories(vtc_rules PUBLIC "${VTC_RULES_DIR}/src")
target_link_libraries(vtc_rules PUBLIC PkgConfig::VTC_FFMPEG PkgConfig::VTC_ICU ZLIB::ZLIB)
if(TARGET vtc_warnings)
  target_link_libraries(vtc_rules PRIVATE vtc_warnings)
endif()

add_executable(vtc-rules "${VTC_RULES_DIR}/tools/vtc_rules.cpp")
set_target_properties(vtc-rules PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
target_link_libraries(vtc-rules PRIVATE vtc_rules)
if(TARGET vtc_warnings)
  target_link_libraries(vtc-rules PRIVATE vtc_warnings)
endif()

if(BUILD_TESTING)
  find_package(GTest REQUIRED)
  add_executable(vtc_rules_tests
    "${VTC_RULES_DIR}/tests/test_rules_resize.cpp"
    "${VTC_RULES_DIR}/tests/test_rules_tokenizer.cpp"
    "${VTC_RULES_DIR}/tests/test_rules_decode.cpp")
  set_target_properties(vtc_rules_tests PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
  target_link_libraries(vtc_rules_tests PRIVATE vtc_rules GTest::gtest GTest::gtest_main)
  if(TARGET vtc_warnings)
    target_link_libraries(vtc_rules_tests PRIVATE vtc_warnings)
  endif()
  # the decoder tests write their own small videos with FFmpeg (libavcodec's mpeg4/mjpeg encoders) into a temp dir
  include(GoogleTest)
  gtest_discover_tests(vtc_rules_tests DISCOVERY_TIMEOUT 60)
endif()
