"""libvtc's C API driven through ctypes against the Python runtime (one oracle, two languages): files and frames at
clips 1/3 x crops 1/3, bad files and bad arguments, corrupt and altered artifacts, streaming windows, class
replacement against ``vtc-deploy rebake``, and several threads on one classifier. The same process has the Python
onnxruntime module loaded: libvtc's ONNX Runtime (the wheel's libonnxruntime.so) lives beside it."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import WRONG_INDEX_FRAMES, moving_square
from tests.cpp_vtc import (
    DTYPE_FLOAT32,
    ERR_ARGUMENT,
    ERR_ARTIFACT,
    ERR_BACKEND,
    ERR_DECODE,
    ERR_LABELS,
    ERR_UNSUPPORTED,
    OK,
    Classifier,
    VtcCError,
    load,
    require_build,
    strings,
)
from vtc_deploy.pipeline import Classifier as PyClassifier

LOGIT_TOL = 1e-4


@pytest.fixture(scope="module")
def lib() -> Any:
    require_build()
    return load()


@pytest.fixture(scope="module")
def clf(lib: Any, cpp_artifact: Path) -> Any:
    c = Classifier(lib, cpp_artifact, threads=2, batch=4)
    yield c
    c.close()


@pytest.fixture(scope="module")
def py(cpp_artifact: Path) -> Any:
    with PyClassifier.load(cpp_artifact, backend="onnxruntime", threads=2) as c:
        yield c


def assert_same(ours: dict[str, Any], ref: Any, tol: float = LOGIT_TOL) -> None:
    assert ours["status"] == OK, ours["error"]
    assert ref.error is None, ref.error
    assert [p[0] for p in ours["topk"]] == [p.index for p in ref.topk]
    assert [p[1] for p in ours["topk"]] == [p.label for p in ref.topk]
    np.testing.assert_allclose(ours["logits"], ref.logits, rtol=0, atol=tol)
    np.testing.assert_allclose(ours["embedding"], ref.embedding, rtol=0, atol=1e-5)
    np.testing.assert_allclose([p[3] for p in ours["topk"]], [p.prob for p in ref.topk], rtol=1e-4, atol=1e-7)
    assert ours["views"] == ref.views


def test_sampling_indices_equal_vtc_deploy_sampling(lib: Any) -> None:
    import ctypes

    from vtc_deploy.sampling import sample_indices

    checked = 0
    for rule in ("uniform", "dense"):
        for n in [*range(1, 40), 63, 64, 65, 100, 127, 128, 129, 250, 256, 300, 1000, 4097, 100_003]:
            for t in (1, 2, 3, 4, 7, 8, 16, 32):
                for clips in (1, 2, 3, 4, 5, 10):
                    for window in (128, 64) if rule == "dense" else (128,):
                        ref = sample_indices(n, t, rule=rule, clips=clips, window=window).ravel()
                        out = (ctypes.c_int64 * ref.size)()
                        status = lib.vtc_sample_indices(rule.encode(), n, t, clips, window, out, ref.size)
                        assert status == OK, lib.vtc_last_error()
                        assert list(out) == ref.tolist(), (rule, n, t, clips, window)
                        checked += 1
    assert checked > 5000
    out = (ctypes.c_int64 * 8)()
    assert lib.vtc_sample_indices(b"uniform", 0, 8, 1, 128, out, 8) == ERR_ARGUMENT
    assert lib.vtc_last_error() == b"cannot sample from a video with 0 frames"
    assert lib.vtc_sample_indices(b"random", 10, 8, 1, 128, out, 8) == ERR_ARGUMENT
    assert lib.vtc_sample_indices(b"uniform", 10, 8, 2, 128, out, 8) == ERR_ARGUMENT  # capacity


@pytest.mark.parametrize(("clips", "crops"), [(1, 1), (1, 3), (3, 1), (3, 3)])
def test_files_match_the_python_runtime(
    clf: Any, py: Any, real_videos: list[Path], make_video: Any, clips: int, crops: int
) -> None:
    videos = [*real_videos, make_video(7, 90, 160), make_video(40, 200, 120)]  # short (n < T*clips) and portrait
    ours = clf.classify_files(videos, topk=5, clips=clips, crops=crops)
    refs = py.classify(videos, topk=5, clips=clips, crops=crops)
    worst = 0.0
    for o, r in zip(ours, refs, strict=True):
        assert o["video"] == str(r.video)
        assert_same(o, r)
        worst = max(worst, float(np.abs(o["logits"] - r.logits).max()))
    print(f"clips={clips} crops={crops}: max |dlogit| {worst:.2e} over {len(videos)} videos")


@pytest.mark.parametrize("clips", [1, 3])
def test_wrong_packet_index_resamples_like_the_python_runtime(
    clf: Any, py: Any, wrong_index_video: Path, real_videos: list[Path], clips: int
) -> None:
    """conftest.wrong_index_video (the packet index lists 40 frames, the file shows 39): libvtc's reader reports the
    corrected count while reading and the engine samples again with it, as inputs.read_views does: no error, 39
    frames, the Python runtime's result."""
    videos = [wrong_index_video, real_videos[2]]
    ours = clf.classify_files(videos, topk=5, clips=clips, crops=1)
    refs = py.classify(videos, topk=5, clips=clips, crops=1)
    assert refs[0].info.num_frames == WRONG_INDEX_FRAMES - 1
    for o, r in zip(ours, refs, strict=True):
        assert_same(o, r)
        assert o["num_frames"] == r.info.num_frames


@pytest.mark.parametrize(("n", "h", "w"), [(9, 144, 176), (2, 300, 200), (30, 120, 160)])
def test_frames_match_the_python_runtime(clf: Any, py: Any, n: int, h: int, w: int) -> None:
    frames = moving_square(n, h, w, seed=n)
    for clips, crops in [(1, 1), (3, 3)]:
        ours = clf.classify_frames(frames, clips=clips, crops=crops)
        (ref,) = py.classify([frames], clips=clips, crops=crops)
        assert ours["video"] == "<frames 0>"
        assert ours["num_frames"] == n
        assert_same(ours, ref)


def test_embed_frames_equals_the_python_embedding(lib: Any, clf: Any, py: Any) -> None:
    import ctypes

    frames = moving_square(12, 144, 176)
    shape = (ctypes.c_int64 * 4)(*frames.shape)
    out = (ctypes.c_float * 48)()
    status = lib.vtc_embed_frames(clf.handle, frames.ctypes.data, 1, shape, 4, None, out, 48)
    assert status == OK, lib.vtc_errmsg(clf.handle)
    np.testing.assert_allclose(np.array(out), py.embed([frames])[0], atol=1e-5)
    assert lib.vtc_embed_frames(clf.handle, frames.ctypes.data, 1, shape, 4, None, out, 47) == ERR_ARGUMENT
    assert b"capacity 47 < embed_dim 48" in lib.vtc_errmsg(clf.handle)


def test_bad_files_are_per_file_errors_and_the_others_still_run(
    clf: Any, py: Any, bad_files: dict[str, Path], real_videos: list[Path]
) -> None:
    good = real_videos[2]
    items = [good, *bad_files.values(), good]
    ours = clf.classify_files(items)
    refs = py.classify(items)
    assert [o["status"] == OK for o in ours] == [r.error is None for r in refs]
    for o, name in zip(ours[1:-1], bad_files, strict=True):
        assert o["status"] == ERR_DECODE, (name, o)
        assert o["error"] and "\n" not in o["error"] and str(bad_files[name]) in o["error"], (name, o["error"])
        assert o["topk"] == [] and o["logits"] is None
    assert_same(ours[0], refs[0])
    assert_same(ours[-1], refs[-1])


def test_bad_arguments_give_a_status_and_one_line(lib: Any, clf: Any) -> None:
    frames = moving_square(4, 64, 64)
    with pytest.raises(VtcCError, match="got dtype float32") as err:
        clf.classify_frames(frames.astype(np.float32), dtype=DTYPE_FLOAT32)
    assert err.value.status == ERR_ARGUMENT
    for bad in (frames[0], frames[..., :2], frames[:0], frames[None]):
        with pytest.raises(VtcCError, match=r"uint8 \[N>=1, H, W, 3\]") as err:
            clf.classify_frames(bad)
        assert err.value.status == ERR_ARGUMENT and "\n" not in err.value.message
    with pytest.raises(VtcCError, match="crops must be 1 or 3"):
        clf.classify_frames(frames, crops=2)
    with pytest.raises(VtcCError, match="topk must be >= 1"):
        clf.classify_frames(frames, topk=0)
    out = ctypes_p()
    assert lib.vtc_classify_files(None, strings(["a.mp4"]), 1, None, out) == ERR_ARGUMENT
    assert b"clf is NULL" in lib.vtc_last_error()
    assert lib.vtc_classify_frames(clf.handle, None, 1, None, 4, None, out) == ERR_ARGUMENT
    assert lib.vtc_errmsg(clf.handle) == b"frames: data is NULL"
    label = ctypes_charp()
    assert lib.vtc_class_name(clf.handle, 10**6, label) == ERR_ARGUMENT
    assert lib.vtc_errmsg(clf.handle).startswith(b"class index 1000000 is out of range")
    assert lib.vtc_class_name(clf.handle, 3, label) == OK and label.value == b"chew"
    assert lib.vtc_errmsg(clf.handle) == b""  # the last call on this handle succeeded


def ctypes_p() -> Any:
    import ctypes

    return ctypes.byref(ctypes.c_void_p())


def ctypes_charp() -> Any:
    import ctypes

    return ctypes.c_char_p()


def test_manifest_facts(lib: Any, clf: Any, cpp_artifact: Path) -> None:
    import ctypes

    from tests.cpp_vtc import Info

    info = Info()
    info.size = ctypes.sizeof(Info)
    assert lib.vtc_get_info(clf.handle, ctypes.byref(info)) == OK
    spec = json.loads((cpp_artifact / "manifest.json").read_text())
    assert (info.frames, info.input_size, info.input_resize, info.embed_dim, info.num_classes) == (
        spec["frames"],
        spec["input"]["size"],
        spec["input"]["resize"],
        spec["model"]["embed_dim"],
        len(spec["classes"]),
    )
    assert info.input_kind == b"uint8" and info.sampling == b"uniform" and info.has_text and info.has_streaming
    assert info.logit_scale == pytest.approx(spec["logit_scale"], rel=1e-6)
    text = ctypes.c_char_p()
    assert lib.vtc_manifest_json(clf.handle, ctypes.byref(text)) == OK
    assert json.loads(text.value) == spec


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(root: Path, **changes: Any) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split("__")
        for p in parents:
            target = target[p]
        target[last] = value
    path.write_text(json.dumps(data))


BAD_ARTIFACTS = {
    "no dir": (lambda d: shutil.rmtree(d), "no such artifact directory"),
    "corrupt manifest": (lambda d: (d / "manifest.json").write_text('{"schema_version": 1, "mod'), "not valid JSON"),
    "newer schema": (lambda d: _edit_manifest(d, schema_version=99), "schema_version 99 is newer"),
    "unknown key": (lambda d: _edit_manifest(d, input__colour="rgb"), "manifest.input: unknown key(s) colour"),
    "wrong type": (lambda d: _edit_manifest(d, frames="4"), "manifest.frames: expected int"),
    "missing graph": (lambda d: (d / "head.onnx").unlink(), "head.onnx, which is missing"),
    "altered graph": (
        lambda d: (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:-1] + b"\x00"),
        "model.onnx does not match the manifest",
    ),
    "path out": (lambda d: _edit_manifest(d, onnx_file="../model.onnx"), "manifest.onnx_file"),
    "nan scale": (
        lambda d: (d / "manifest.json").write_text(
            (d / "manifest.json").read_text().replace('"logit_scale": ', '"logit_scale": NaN, "x": ')
        ),
        "not valid JSON",
    ),
    "huge input": (lambda d: _edit_manifest(d, input__size=5000, input__resize=6000), "manifest.input.size"),
    "too many frames": (lambda d: _edit_manifest(d, frames=4096), "manifest.frames"),
    "empty class": (lambda d: _edit_manifest(d, classes=["a", ""]), "manifest.classes[1]"),
}


@pytest.mark.parametrize("case", list(BAD_ARTIFACTS))
def test_bad_artifacts_are_refused_with_one_line(lib: Any, cpp_artifact: Path, tmp_path: Path, case: str) -> None:
    root = _copy(cpp_artifact, tmp_path / "a")
    damage, needle = BAD_ARTIFACTS[case]
    damage(root)
    with pytest.raises(VtcCError) as err:
        Classifier(lib, root)
    assert err.value.status == ERR_ARTIFACT, err.value
    assert needle in err.value.message and "\n" not in err.value.message
    assert str(root) in err.value.message  # names the artifact


def test_symlinked_graph_out_of_the_artifact_is_refused(lib: Any, cpp_artifact: Path, tmp_path: Path) -> None:
    root = _copy(cpp_artifact, tmp_path / "a")
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(root / "text.onnx", outside)
    os.symlink(outside, root / "text.onnx")
    with pytest.raises(VtcCError, match="text.onnx resolves outside the artifact directory") as err:
        Classifier(lib, root)
    assert err.value.status == ERR_ARTIFACT


def test_graph_io_must_match_the_manifest(lib: Any, cpp_artifact: Path, tmp_path: Path) -> None:
    root = _copy(cpp_artifact, tmp_path / "a")
    _edit_manifest(root, frames=8)  # the graph takes T=4
    with pytest.raises(VtcCError, match=r"input 'video' is uint8 \[\?, 4, 224, 224, 3\] but the manifest says") as err:
        Classifier(lib, root)
    assert err.value.status == ERR_ARTIFACT
    _edit_manifest(root, frames=4, model__embed_dim=64)
    with pytest.raises(VtcCError, match="output 'embedding'"):
        Classifier(lib, root)


def test_unavailable_provider_is_a_backend_error(lib: Any, cpp_artifact: Path) -> None:
    with pytest.raises(VtcCError, match="provider 'cuda' .* is not in this build") as err:
        Classifier(lib, cpp_artifact, provider="cuda")
    assert err.value.status == ERR_BACKEND
    with pytest.raises(VtcCError, match="provider 'tensorrt' .* is not in this build") as err:
        Classifier(lib, cpp_artifact, provider="tensorrt")
    Classifier(lib, cpp_artifact, provider="auto").close()  # the CPU wheel: auto falls back to the CPU provider
    with pytest.raises(VtcCError, match="provider must be one of cpu, cuda, tensorrt, auto") as err:
        Classifier(lib, cpp_artifact, provider="tpu")
    assert err.value.status == ERR_ARGUMENT


def test_threads_share_one_classifier(lib: Any, cpp_artifact: Path, real_videos: list[Path]) -> None:
    """Several threads classify files and frames on one handle while another swaps the classes back and forth: every
    result equals the sequential one for the classes it was scored against."""
    c = Classifier(lib, cpp_artifact, threads=1)
    frames = moving_square(16, 120, 160)
    names = [f"class {i}" for i in range(7)]
    c.set_classes(names)
    expected_swapped = c.classify_frames(frames)["logits"]
    assert c.lib.vtc_set_classes_from(c.handle, b"hmdb51", None, 0) == OK
    expected_text = c.classify_frames(frames)["logits"]  # the artifact's classes again, through text.onnx
    c.close()
    c = Classifier(lib, cpp_artifact, threads=1)
    expected_files = c.classify_files(real_videos[2:])
    expected_frames = c.classify_frames(frames)["logits"]
    failures: list[str] = []

    def classify() -> None:
        try:
            for _ in range(3):
                got = c.classify_files(real_videos[2:])
                for g, e in zip(got, expected_files, strict=True):
                    if not np.array_equal(g["embedding"], e["embedding"]):
                        failures.append("file embedding differs")
                logits = c.classify_frames(frames)["logits"]
                if not any(np.array_equal(logits, e) for e in (expected_frames, expected_swapped, expected_text)):
                    failures.append(f"frames logits of neither class set ({logits.shape})")
        except Exception as exc:
            failures.append(repr(exc))

    def swap() -> None:
        try:
            for _ in range(3):
                c.set_classes(names)
                c.lib.vtc_set_classes_from(c.handle, b"hmdb51", None, 0)
        except Exception as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=classify) for _ in range(3)] + [threading.Thread(target=swap)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.close()
    assert failures == []


def test_class_swap_equals_rebake(lib: Any, cpp_artifact: Path, tmp_path: Path, real_videos: list[Path]) -> None:
    from vtc_deploy.rebake import rebake

    names = ["riding a bike", "waving", "cooking 🍳 pasta", "Ünïcödé dance", "x" * 300]
    templates = ["a video of a person {}.", "a clip of {}"]
    rebaked = tmp_path / "rebaked"
    rebake(cpp_artifact, classes=names, templates=templates, out=rebaked)
    ref = Classifier(lib, rebaked)
    c = Classifier(lib, cpp_artifact)
    c.set_classes(names, templates)
    videos = real_videos[:2]
    frames = moving_square(10, 144, 176)
    for ours, theirs in [
        *zip(c.classify_files(videos, clips=3, crops=3), ref.classify_files(videos, clips=3, crops=3), strict=True),
        (c.classify_frames(frames), ref.classify_frames(frames)),
    ]:
        assert [p[1] for p in ours["topk"]] == [p[1] for p in theirs["topk"]]
        np.testing.assert_allclose(ours["logits"], theirs["logits"], rtol=0, atol=1e-5)
    with PyClassifier.load(rebaked, backend="onnxruntime") as py:  # and the Python runtime on the rebaked graph
        (r,) = py.classify([videos[0]])
    np.testing.assert_allclose(c.classify_files(videos[:1])[0]["logits"], r.logits, rtol=0, atol=1e-5)
    ref.close()
    c.close()


def test_class_swap_errors(lib: Any, clf: Any, cpp_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(VtcCError, match="duplicate class name 'a'") as err:
        clf.set_classes(["a", "b", "a"])
    assert err.value.status == ERR_LABELS
    with pytest.raises(VtcCError, match="exactly one '{}'") as err:
        clf.set_classes(["a"], ["no placeholder"])
    assert err.value.status == ERR_LABELS
    assert lib.vtc_set_classes_from(clf.handle, b"/no/such/list.csv", None, 0) == ERR_LABELS
    assert b"class list not found" in lib.vtc_errmsg(clf.handle)
    # mojibake that Python's ftfy would repair (other ids, other logits): refused, never tokenized differently
    with pytest.raises(
        VtcCError, match=r"class 1 \(template 'a video of \{\}\.'\): 'a video of CafÃ©\.' looks like"
    ) as err:
        clf.set_classes(["Café", "CafÃ©"], ["a video of {}."])
    assert err.value.status == ERR_LABELS
    assert "mis-decoded UTF-8 (mojibake)" in err.value.message and "vtc-deploy rebake" in err.value.message
    assert len(err.value.message.splitlines()) == 1
    names = (ctypes.c_char_p * 2)(b"ok", b"bad \xff")
    assert lib.vtc_set_classes(clf.handle, names, 2, None, 0) == ERR_LABELS
    assert b"class 1 (template " in lib.vtc_errmsg(clf.handle) and b"not valid UTF-8" in lib.vtc_errmsg(clf.handle)
    root = _copy(cpp_artifact, tmp_path / "notext")
    (root / "text.onnx").unlink()
    data = json.loads((root / "manifest.json").read_text())
    data["text"] = None
    (root / "manifest.json").write_text(json.dumps(data))
    c = Classifier(lib, root)
    with pytest.raises(VtcCError, match="no text.onnx") as err:
        c.set_classes(["a", "b"])
    assert err.value.status == ERR_UNSUPPORTED
    c.close()


def test_bundled_class_list_matches_python(lib: Any, cpp_artifact: Path, real_videos: list[Path]) -> None:
    c = Classifier(lib, cpp_artifact)
    assert lib.vtc_set_classes_from(c.handle, b"ucf101", None, 0) == OK, lib.vtc_errmsg(c.handle)
    with PyClassifier.load(cpp_artifact, backend="onnxruntime", classes="ucf101") as py:
        (ref,) = py.classify([real_videos[0]])
    (ours,) = c.classify_files([real_videos[0]])
    assert_same(ours, ref, tol=1e-5)
    c.close()


@pytest.mark.parametrize(("window", "stride"), [(4, 1), (8, 3), (16, 16)])
def test_stream_push_equals_python_streaming(
    lib: Any, clf: Any, cpp_artifact: Path, real_videos: list[Path], window: int, stride: int
) -> None:
    import ctypes

    from vtc_deploy.artifact import Artifact
    from vtc_deploy.streaming import StreamClassifier, StreamSource

    path = str(real_videos[2])  # 120 frames
    runner = StreamClassifier(Artifact.open(cpp_artifact), batch=16)
    source = StreamSource(path)
    refs = list(runner.run(source, window=window, stride=stride, topk=5))
    source.close()
    stream = ctypes.c_void_p()
    assert lib.vtc_stream_open(clf.handle, window, stride, 5, 25.0, b"cam", ctypes.byref(stream)) == OK
    source = StreamSource(path)
    got = []
    from tests.cpp_vtc import take_results

    for index, frame in source.frames():
        frame = np.ascontiguousarray(frame)
        out, n = ctypes.c_void_p(), ctypes.c_size_t()
        status = lib.vtc_stream_push(
            stream, frame.ctypes.data, frame.shape[0], frame.shape[1], index / 25.0, ctypes.byref(out), ctypes.byref(n)
        )
        assert status == OK, lib.vtc_stream_errmsg(stream)
        got += take_results(lib, out, n.value)
    source.close()
    pushed, encoded = ctypes.c_int64(), ctypes.c_int64()
    assert lib.vtc_stream_counts(stream, ctypes.byref(pushed), ctypes.byref(encoded)) == OK
    assert lib.vtc_close(clf.handle) == ERR_ARGUMENT  # a stream is still open: nothing is closed
    assert b"1 stream(s) still open" in lib.vtc_errmsg(clf.handle)
    lib.vtc_stream_close(stream)
    assert len(got) == len(refs) > 0
    for g, r in zip(got, refs, strict=True):
        assert g["window"][:2] == (r.start, r.end)
        assert g["window"][2] == pytest.approx(r.start / 25.0) and g["window"][4] == pytest.approx(r.start / 25.0)
        assert [p[0] for p in g["topk"]] == [p.index for p in r.topk]
        np.testing.assert_allclose(g["logits"], r.logits, rtol=0, atol=LOGIT_TOL)
    assert pushed.value == 120
    assert encoded.value == runner.frames_encoded  # each needed frame encoded once, as in Python


def test_stream_needs_the_streaming_graphs(lib: Any, cpp_artifact: Path, tmp_path: Path) -> None:
    import ctypes

    root = _copy(cpp_artifact, tmp_path / "nostream")
    data = json.loads((root / "manifest.json").read_text())
    data["streaming"] = None
    (root / "manifest.json").write_text(json.dumps(data))
    c = Classifier(lib, root)
    stream = ctypes.c_void_p()
    assert lib.vtc_stream_open(c.handle, 8, 2, 5, 0.0, None, ctypes.byref(stream)) == ERR_UNSUPPORTED
    assert b"no streaming graphs" in lib.vtc_errmsg(c.handle)
    assert lib.vtc_stream_open(c.handle, 0, 2, 5, 0.0, None, ctypes.byref(stream)) != OK
    c.close()
