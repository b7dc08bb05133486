# TEMPORARY stand-in for the cpp-rules half (rules.cmake) until branch cpp-rules is merged: a plain FFmpeg decoder,
# a simple bicubic resize (NOT Pillow-exact) and no tokenizer. Removed once rules.cmake exists.
find_package(PkgConfig REQUIRED)
pkg_check_modules(VTC_FFMPEG REQUIRED IMPORTED_TARGET libavformat libavcodec libswscale libavutil)
add_library(vtc_rules STATIC "${CMAKE_CURRENT_LIST_DIR}/standin.cpp")
set_target_properties(vtc_rules PROPERTIES POSITION_INDEPENDENT_CODE ON CXX_STANDARD 17)
target_include_directories(vtc_rules PUBLIC "${CMAKE_CURRENT_LIST_DIR}")
target_link_libraries(vtc_rules PUBLIC PkgConfig::VTC_FFMPEG)
