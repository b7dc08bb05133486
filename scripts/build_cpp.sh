#!/usr/bin/env bash
# Build libvtc (the C/C++ runtime, runtimes/cpp) into build/cpp/ and, with --asan, the ASan + UBSan build into
# build/cpp-asan/ (libvtc, vtc-run and the core tests only).
#   scripts/build_cpp.sh [--asan] [--test]     --test also runs ctest
# Installs the Debian packages it needs when missing (apt-get, as root). ONNX Runtime: $ONNXRUNTIME_ROOT (include/ +
# lib/, e.g. Microsoft's release archive), else headers from the npm package com.github.asus4.onnxruntime@0.4.9
# (cached in ~/.cache/vtc-deploy/onnxruntime) with the library of the onnxruntime wheel in .venv (one ONNX Runtime
# per process when Python loads libvtc) or, without a venv, the package's own libonnxruntime.so.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ASAN=0
TEST=0
for arg in "$@"; do
  case "$arg" in
    --asan) ASAN=1 ;;
    --test) TEST=1 ;;
    *) echo "usage: $0 [--asan] [--test]" >&2; exit 2 ;;
  esac
done

PACKAGES=(cmake g++ make pkg-config libavformat-dev libavcodec-dev libswscale-dev libavutil-dev nlohmann-json3-dev
          libgtest-dev zlib1g-dev libicu-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "build_cpp.sh: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "== apt-get install ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "${ONNXRUNTIME_ROOT:-}" ]; then
  CACHE=${VTC_DEPLOY_CACHE:-$HOME/.cache/vtc-deploy}/onnxruntime
  PKG=com.github.asus4.onnxruntime-0.4.9
  if [ ! -f "$CACHE/1.29.0/include/onnxruntime_c_api.h" ]; then
    mkdir -p "$CACHE"
    if [ ! -f "$CACHE/$PKG.tgz" ]; then
      echo "== fetching ONNX Runtime 1.29 headers (npm $PKG, 150 MB, once)" >&2
      if command -v npm >/dev/null; then
        (cd "$CACHE" && npm pack --silent com.github.asus4.onnxruntime@0.4.9 >/dev/null)
      else  # the registry's tarball URL, what npm itself downloads
        python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
          "https://registry.npmjs.org/com.github.asus4.onnxruntime/-/$PKG.tgz" "$CACHE/$PKG.tgz.part"
        mv "$CACHE/$PKG.tgz.part" "$CACHE/$PKG.tgz"
      fi
    fi
    # the package's shasum as the registry publishes it
    if ! echo "3659f34012db8208ffb7f67d704204cb08792fed  $CACHE/$PKG.tgz" | sha1sum -c --status; then
      rm -f "$CACHE/$PKG.tgz"
      echo "build_cpp.sh: $PKG.tgz does not match the registry's shasum (removed; run again)" >&2
      exit 1
    fi
    tmp=$(mktemp -d)
    tar -xzf "$CACHE/$PKG.tgz" -C "$tmp" package/Plugins/Android/onnxruntime.aar package/Plugins/Linux/x64
    mkdir -p "$tmp/out/include" "$tmp/out/lib"
    python3 - "$tmp" <<'PY'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
with zipfile.ZipFile(tmp / "package/Plugins/Android/onnxruntime.aar") as z:
    for name in z.namelist():
        if name.startswith("headers/") and not name.endswith("/"):
            (tmp / "out/include" / name[len("headers/"):]).write_bytes(z.read(name))
PY
    cp "$tmp"/package/Plugins/Linux/x64/libonnxruntime*.so "$tmp/out/lib/"
    rm -rf "$CACHE/1.29.0" && mv "$tmp/out" "$CACHE/1.29.0" && rm -rf "$tmp"
  fi
  # The library: the venv's onnxruntime wheel when there is one (the same ONNX Runtime as the Python runtime).
  ORT_DIR=$ROOT/build/onnxruntime
  rm -rf "$ORT_DIR" && mkdir -p "$ORT_DIR/lib"
  ln -s "$CACHE/1.29.0/include" "$ORT_DIR/include"
  wheel_lib=$(ls "$ROOT"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1* 2>/dev/null | head -1 || true)
  if [ -z "$wheel_lib" ] && [ -x "$ROOT/.venv/bin/python" ]; then  # a venv that sees its packages elsewhere
    wheel_lib=$("$ROOT/.venv/bin/python" -c 'import glob, os, onnxruntime
print((sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.1*"))) or [""])[0])' \
      2>/dev/null || true)
  fi
  if [ -n "$wheel_lib" ]; then
    ln -s "$wheel_lib" "$ORT_DIR/lib/libonnxruntime.so"
  else
    ln -s "$CACHE/1.29.0/lib/libonnxruntime.so" "$ORT_DIR/lib/libonnxruntime.so"
  fi
  ln -s libonnxruntime.so "$ORT_DIR/lib/libonnxruntime.so.1"  # the SONAME, for the linker and the RUNPATH
  export ONNXRUNTIME_ROOT=$ORT_DIR
fi

JOBS=${VTC_BUILD_JOBS:-$(nproc)}
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
if [ ! -f build/cpp/CMakeCache.txt ] || ! grep -q "ONNXRUNTIME_ROOT:PATH=$ONNXRUNTIME_ROOT\$" build/cpp/CMakeCache.txt; then
  rm -rf build/cpp
  cmake -S runtimes/cpp -B build/cpp "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DONNXRUNTIME_ROOT="$ONNXRUNTIME_ROOT" >/dev/null
fi
echo "== building build/cpp (libvtc.so, vtc-run, tests)" >&2
cmake --build build/cpp -j "$JOBS"
if [ "$ASAN" = 1 ]; then
  if [ ! -f build/cpp-asan/CMakeCache.txt ] || ! grep -q "ONNXRUNTIME_ROOT:PATH=$ONNXRUNTIME_ROOT\$" build/cpp-asan/CMakeCache.txt; then
    rm -rf build/cpp-asan
    cmake -S runtimes/cpp -B build/cpp-asan "${GEN[@]}" -DCMAKE_BUILD_TYPE=Debug -DVTC_SANITIZE=ON \
      -DCMAKE_CXX_FLAGS=-O1 -DONNXRUNTIME_ROOT="$ONNXRUNTIME_ROOT" >/dev/null
  fi
  echo "== building build/cpp-asan (ASan + UBSan: libvtc.so, vtc-run, vtc-rules and their tests)" >&2
  cmake --build build/cpp-asan -j "$JOBS" --target vtc vtc-run vtc_core_tests vtc-rules vtc_rules_tests
fi
if [ "$TEST" = 1 ]; then
  (cd build/cpp && ctest --output-on-failure)
  if [ "$ASAN" = 1 ]; then
    ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$ROOT/runtimes/cpp/tests/lsan.supp \
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build/cpp-asan/vtc_core_tests --gtest_brief=1
    ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$ROOT/runtimes/cpp/tests/lsan.supp \
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 VTC_REPO_ROOT=$ROOT build/cpp-asan/vtc_rules_tests --gtest_brief=1
  fi
fi
