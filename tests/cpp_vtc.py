"""ctypes bindings of libvtc's C API (runtimes/cpp/include/vtc/vtc.h) for the tests, and the built-artifact paths.

The structs mirror vtc.h field for field; a change there must be made here too (the tests would fail loudly)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cpp"
ASAN_BUILD = REPO / "build" / "cpp-asan"
LIBVTC = Path(os.environ.get("VTC_LIBVTC", BUILD / "libvtc.so"))
VTC_RUN = BUILD / "vtc-run"

OK, ERR_ARGUMENT, ERR_ARTIFACT, ERR_DECODE, ERR_BACKEND, ERR_UNSUPPORTED, ERR_LABELS = 0, 1, 2, 3, 4, 5, 6
DTYPE_UINT8, DTYPE_FLOAT32 = 1, 2


def require_build() -> None:
    """The C++ build is part of the test command (scripts/test.sh builds it first); missing, it is a failure."""
    if os.environ.get("VTC_SKIP_CPP") == "1":
        pytest.skip("VTC_SKIP_CPP=1")
    if not LIBVTC.is_file() or not VTC_RUN.is_file():
        pytest.fail(f"{LIBVTC} / {VTC_RUN} not built: run scripts/build_cpp.sh (scripts/test.sh does)")


class Options(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("threads", ctypes.c_int),
        ("batch", ctypes.c_int),
        ("decode_threads", ctypes.c_int),
        ("provider", ctypes.c_char_p),
        ("provider_option_keys", ctypes.POINTER(ctypes.c_char_p)),
        ("provider_option_values", ctypes.POINTER(ctypes.c_char_p)),
        ("num_provider_options", ctypes.c_size_t),
        ("check_hash", ctypes.c_int),
        ("low_memory", ctypes.c_int),
    ]


class RunOptions(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("topk", ctypes.c_int), ("clips", ctypes.c_int), ("crops", ctypes.c_int)]


class Prediction(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_int),
        ("label", ctypes.c_char_p),
        ("logit", ctypes.c_float),
        ("prob", ctypes.c_double),
    ]


class Result(ctypes.Structure):
    _fields_ = [
        ("video", ctypes.c_char_p),
        ("status", ctypes.c_int),
        ("error", ctypes.c_char_p),
        ("num_topk", ctypes.c_size_t),
        ("topk", ctypes.POINTER(Prediction)),
        ("num_classes", ctypes.c_size_t),
        ("logits", ctypes.POINTER(ctypes.c_float)),
        ("embed_dim", ctypes.c_size_t),
        ("embedding", ctypes.POINTER(ctypes.c_float)),
        ("views", ctypes.c_int),
        ("num_frames", ctypes.c_int64),
        ("start_frame", ctypes.c_int64),
        ("end_frame", ctypes.c_int64),
        ("start_s", ctypes.c_double),
        ("end_s", ctypes.c_double),
        ("start_pts", ctypes.c_double),
        ("end_pts", ctypes.c_double),
    ]


class Info(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("frames", ctypes.c_int),
        ("input_size", ctypes.c_int),
        ("input_resize", ctypes.c_int),
        ("input_kind", ctypes.c_char_p),
        ("embed_dim", ctypes.c_int),
        ("num_classes", ctypes.c_size_t),
        ("sampling", ctypes.c_char_p),
        ("default_clips", ctypes.c_int),
        ("default_crops", ctypes.c_int),
        ("dense_window", ctypes.c_int),
        ("logit_scale", ctypes.c_float),
        ("precision", ctypes.c_char_p),
        ("architecture", ctypes.c_char_p),
        ("has_text", ctypes.c_int),
        ("has_streaming", ctypes.c_int),
    ]


P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "vtc_version": (ctypes.c_char_p, []),
    "vtc_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "vtc_errmsg": (ctypes.c_char_p, [P]),
    "vtc_last_error": (ctypes.c_char_p, []),
    "vtc_options_init": (None, [ctypes.POINTER(Options)]),
    "vtc_run_options_init": (None, [ctypes.POINTER(RunOptions)]),
    "vtc_open": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(Options), ctypes.POINTER(P)]),
    "vtc_close": (ctypes.c_int, [P]),
    "vtc_get_info": (ctypes.c_int, [P, ctypes.POINTER(Info)]),
    "vtc_class_name": (ctypes.c_int, [P, ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p)]),
    "vtc_manifest_json": (ctypes.c_int, [P, ctypes.POINTER(ctypes.c_char_p)]),
    "vtc_classify_files": (
        ctypes.c_int,
        [P, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, ctypes.POINTER(RunOptions), ctypes.POINTER(P)],
    ),
    "vtc_classify_frames": (
        ctypes.c_int,
        [
            P,
            P,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int64),
            ctypes.c_int,
            ctypes.POINTER(RunOptions),
            ctypes.POINTER(P),
        ],
    ),
    "vtc_embed_frames": (
        ctypes.c_int,
        [
            P,
            P,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int64),
            ctypes.c_int,
            ctypes.POINTER(RunOptions),
            ctypes.POINTER(ctypes.c_float),
            ctypes.c_size_t,
        ],
    ),
    "vtc_results_free": (None, [P, ctypes.c_size_t]),
    "vtc_sample_indices": (
        ctypes.c_int,
        [
            ctypes.c_char_p,
            ctypes.c_int64,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int64),
            ctypes.c_size_t,
        ],
    ),
    "vtc_set_classes": (
        ctypes.c_int,
        [P, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t],
    ),
    "vtc_set_classes_from": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t]),
    "vtc_stream_open": (
        ctypes.c_int,
        [P, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_char_p, ctypes.POINTER(P)],
    ),
    "vtc_stream_push": (
        ctypes.c_int,
        [P, P, ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.POINTER(P), ctypes.POINTER(ctypes.c_size_t)],
    ),
    "vtc_stream_counts": (ctypes.c_int, [P, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64)]),
    "vtc_stream_errmsg": (ctypes.c_char_p, [P]),
    "vtc_stream_close": (ctypes.c_int, [P]),
}


def load(path: Path = LIBVTC) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def strings(items: Sequence[str]) -> Any:
    return (ctypes.c_char_p * max(1, len(items)))(*[s.encode() for s in items])


def run_options(lib: ctypes.CDLL, *, topk: int = 5, clips: int = 0, crops: int = 0) -> RunOptions:
    o = RunOptions()
    lib.vtc_run_options_init(ctypes.byref(o))
    o.topk, o.clips, o.crops = topk, clips, crops
    return o


def to_dict(r: Result) -> dict[str, Any]:
    """A result as plain Python (the C memory is freed right after)."""
    ok = r.status == OK
    return {
        "video": r.video.decode(),
        "status": r.status,
        "error": r.error.decode() if r.error else None,
        "topk": [
            (r.topk[i].index, r.topk[i].label.decode(), r.topk[i].logit, r.topk[i].prob) for i in range(r.num_topk)
        ],
        "logits": np.ctypeslib.as_array(r.logits, (r.num_classes,)).copy() if ok else None,
        "embedding": np.ctypeslib.as_array(r.embedding, (r.embed_dim,)).copy() if ok else None,
        "views": r.views,
        "num_frames": r.num_frames,
        "window": (r.start_frame, r.end_frame, r.start_s, r.end_s, r.start_pts, r.end_pts),
    }


def take_results(lib: ctypes.CDLL, ptr: ctypes.c_void_p, n: int) -> list[dict[str, Any]]:
    if not ptr.value:
        return []
    array = ctypes.cast(ptr, ctypes.POINTER(Result))
    out = [to_dict(array[i]) for i in range(n)]
    lib.vtc_results_free(ptr, n)
    return out


class Classifier:
    """A thin Python wrapper over one vtc_classifier handle, for the tests."""

    def __init__(self, lib: ctypes.CDLL, model: Path | str, **options: Any) -> None:
        self.lib = lib
        o = Options()
        lib.vtc_options_init(ctypes.byref(o))
        for key, value in options.items():
            setattr(o, key, value.encode() if isinstance(value, str) else value)
        self.handle = P()
        status = lib.vtc_open(str(model).encode(), ctypes.byref(o), ctypes.byref(self.handle))
        if status != OK:
            raise VtcCError(status, lib.vtc_last_error().decode())

    def check(self, status: int) -> None:
        if status != OK:
            raise VtcCError(status, self.lib.vtc_errmsg(self.handle).decode())

    def classify_files(self, paths: Sequence[str | Path], **run: int) -> list[dict[str, Any]]:
        out = P()
        opts = run_options(self.lib, **run)
        self.check(
            self.lib.vtc_classify_files(
                self.handle, strings([str(p) for p in paths]), len(paths), ctypes.byref(opts), ctypes.byref(out)
            )
        )
        return take_results(self.lib, out, len(paths))

    def classify_frames(self, frames: np.ndarray, dtype: int = DTYPE_UINT8, **run: int) -> dict[str, Any]:
        frames = np.ascontiguousarray(frames)
        shape = (ctypes.c_int64 * max(1, frames.ndim))(*frames.shape)
        out = P()
        opts = run_options(self.lib, **run)
        self.check(
            self.lib.vtc_classify_frames(
                self.handle, frames.ctypes.data, dtype, shape, frames.ndim, ctypes.byref(opts), ctypes.byref(out)
            )
        )
        return take_results(self.lib, out, 1)[0]

    def set_classes(self, names: Sequence[str], templates: Sequence[str] = ()) -> None:
        self.check(
            self.lib.vtc_set_classes(self.handle, strings(names), len(names), strings(templates), len(templates))
        )

    def close(self) -> None:
        self.lib.vtc_close(self.handle)
        self.handle = P()


class VtcCError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"[{status}] {message}")
        self.status = status
        self.message = message
