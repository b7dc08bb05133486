"""Dropping H.264 reference pictures that no wanted frame needs (vtc_deploy/h264.py, used by the PyAV reader's
indexed path) never changes a returned frame: for many x264 configurations, every frame read alone, random sets of
frames and the Text4Vis views equal a plain sequential decode, and the drops really happen where the structure
allows them (so the comparison is not vacuous). Non-reference pictures are skipped only while their frame_num is what
a valid stream gives them (``h264.NonReferenceCheck``, a damaged file from the fuzzer)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.test_video_corpus import encode, scene
from vtc_deploy import h264, video
from vtc_deploy.sampling import uniform_indices
from vtc_deploy.video import open_video

# name: (x264-params, pixel format, frames, must drop pictures for some reads)
CONFIGS: dict[str, tuple[str, str, int, bool]] = {
    "veryfast_pyramid": ("keyint=60:bframes=3:ref=1:b-pyramid=normal:scenecut=0", "yuv420p", 90, True),
    "medium_defaults": ("keyint=60:scenecut=0", "yuv420p", 90, False),
    "ref4_strict_pyramid": ("keyint=60:bframes=3:ref=4:b-pyramid=strict:scenecut=0", "yuv420p", 90, False),
    "no_pyramid": ("keyint=60:bframes=2:ref=2:b-pyramid=none:scenecut=0", "yuv420p", 90, False),
    "deep_bframes": ("keyint=90:bframes=8:b-adapt=2:ref=2:b-pyramid=normal", "yuv420p", 90, False),
    "p_only_ref1": ("keyint=45:bframes=0:ref=1", "yuv420p", 90, False),
    "p_only_ref3_cavlc": ("keyint=45:bframes=0:ref=3:cabac=0", "yuv420p", 90, False),
    "weighted_pred": ("keyint=60:bframes=3:ref=2:weightp=2:weightb=1", "yuv420p", 90, False),
    "four_slices": ("keyint=60:bframes=3:ref=1:slices=4:scenecut=0", "yuv420p", 90, True),
    "scaling_matrix": ("keyint=60:bframes=3:ref=1:cqm=jvt:scenecut=0", "yuv420p", 90, True),
    "high444_10bit": ("keyint=60:bframes=3:ref=1:scenecut=0", "yuv444p10le", 60, True),
    "open_gop": ("keyint=30:bframes=3:ref=1:open-gop=1:scenecut=0", "yuv420p", 90, False),
    "intra_refresh": ("keyint=30:bframes=0:ref=1:intra-refresh=1", "yuv420p", 90, False),
    "infinite_gop": ("keyint=infinite:bframes=3:ref=1:scenecut=0", "yuv420p", 150, True),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("h264")
    out = {}
    for name, (params, pix_fmt, n, _) in CONFIGS.items():
        out[name] = encode(
            root / f"{name}.mp4", scene(n), pix_fmt=pix_fmt, options={"x264-params": params + ":log-level=none"}
        )
    return out


def sequential(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def reads(n: int) -> Iterator[list[int]]:
    rng = np.random.default_rng(0)
    for k in range(n):
        yield [k]
    for _ in range(12):
        yield sorted(rng.choice(n, size=int(rng.integers(2, 6)), replace=False).tolist())
    for t in (8, 16):
        for clips in (1, 3):
            yield uniform_indices(n, t, clips).reshape(-1).tolist()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_dropping_references_never_changes_a_frame(
    files: dict[str, Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = sequential(files[name])
    dropped: list[int] = []
    droppable = h264.Analysis.droppable

    def spy(self: h264.Analysis, wanted: Any) -> dict[int, str]:
        out = droppable(self, wanted)
        dropped.append(len(out))
        return out

    monkeypatch.setattr(h264.Analysis, "droppable", spy)
    monkeypatch.setattr(video, "DROP_MIN_PIXELS", 0)  # the files are tiny
    with open_video(files[name], decoder="pyav") as reader:
        if CONFIGS[name][3]:
            assert reader.info.decoder == "pyav", f"{name}: not on the indexed path ({reader.info.decoder})"
        for idx in reads(len(ref)):
            got = reader.get_frames_at(idx)
            assert np.array_equal(got, ref[idx]), (
                f"{name}: frames {idx} differ, max |diff| {np.abs(got.astype(int) - ref[idx]).max()} "
                f"(decoder {reader.info.decoder})"
            )
        if CONFIGS[name][3]:  # and the drops did not make a range fail its check (a silent fall-back: slow)
            assert reader.info.decoder == "pyav", f"{name}: fell back to {reader.info.decoder}"
    if CONFIGS[name][3]:
        assert dropped and max(dropped) > 0, f"{name}: no reference picture was ever dropped ({dropped[:10]})"


def test_parsed_slice_types_match_the_decoder(files: dict[str, Path]) -> None:
    """The parser reads what FFmpeg reads: every packet's slice type equals the decoded frame's picture type."""
    for name in ("veryfast_pyramid", "four_slices", "high444_10bit", "weighted_pred"):
        with av.open(str(files[name])) as container:
            stream = container.streams.video[0]
            extradata = bytes(stream.codec_context.extradata)
            params = h264.ParameterSets.from_avcc(extradata)
            size = (extradata[4] & 3) + 1
            types: dict[int, str] = {}
            for packet in container.demux(stream):
                if packet.size:
                    header = h264.picture_header(bytes(packet), size, params)
                    types[int(packet.pts)] = "PBI"[header.slices[0].slice_type]
        with av.open(str(files[name])) as container:
            decoded = {int(f.pts): " IPB"[int(f.pict_type)] for f in container.decode(video=0)}
        assert decoded == types, name


def test_unsupported_streams_drop_nothing() -> None:
    """Malformed headers raise ``Unsupported`` (the reader then drops only non-reference pictures)."""
    with pytest.raises(h264.Unsupported):
        h264.ParameterSets.from_avcc(b"\x01\x64\x00\x1f\xff\xe1\x00\x40")
    with pytest.raises(h264.Unsupported):
        h264.nal_units(b"\x00\x00\x00\x09\x65", 4)
    params = h264.ParameterSets()
    with pytest.raises(h264.Unsupported):  # a slice naming a PPS that was never sent
        h264.picture_header(b"\x00\x00\x00\x02\x65\x88", 4, params)


# ---------------------------------------------------------------------- the analysis on hand-made reference structures


def sps(max_refs: int, *, poc_type: int = 2, log2_max_poc_lsb: int = 0) -> h264.Sps:
    return h264.Sps(4, poc_type, log2_max_poc_lsb, False, max_refs, True, False, 1)


def pic(
    kind: int,
    frame_num: int,
    seq: h264.Sps,
    *,
    ref: bool = True,
    lsb: int = 0,
    mods: tuple[tuple[int, int], ...] = (),
    mmco: tuple[tuple[int, int], ...] | None = None,
) -> h264.PictureHeader:
    idr = kind == h264.I and frame_num == 0
    return h264.PictureHeader(idr, ref, frame_num, mmco, (h264.Slice(kind, frame_num, lsb, 1, mods),), seq)


def test_b_pictures_depend_on_every_held_reference() -> None:
    """P pictures 1 and 2 are referenced by nothing but the B picture 4, which may predict from all four held."""
    s = sps(4)
    headers = [
        pic(h264.I, 0, s),
        pic(h264.P, 1, s),
        pic(h264.P, 2, s, mods=((0, 1),)),  # its list: picture 0 (PicNum 2 - 2)
        pic(h264.P, 3, s, mods=((0, 2),)),  # picture 0 again
        pic(h264.B, 4, s, ref=False),
    ]
    analysis = h264.analyse(headers)
    assert analysis.droppable({4}) == {}
    assert analysis.droppable({3}) == {1: "NONINTRA", 2: "NONINTRA"}


def test_a_drop_whose_marking_the_decoder_would_miss_is_given_up() -> None:
    """B reference picture 2 removes picture 0 by mmco. Dropped, that command never runs, so FFmpeg would still hold
    picture 0 when B picture 4 builds its lists (with 3 reference frames allowed; with 2, the sliding window of the
    placeholder frame removes picture 0 just the same and the drop is kept)."""
    for max_refs, expected in ((3, {}), (2, {2: "BIDIR"})):
        s = sps(max_refs)
        headers = [
            pic(h264.I, 0, s),
            pic(h264.P, 1, s),
            pic(h264.B, 2, s, mmco=((1, 1),)),  # removes PicNum 2 - 2 = 0
            pic(h264.P, 3, s, mods=((0, 1),), mmco=((1, 0),)),  # predicts from picture 1, removes picture 2
            pic(h264.B, 4, s, ref=False),
        ]
        analysis = h264.analyse(headers)
        assert analysis.pictures[4].held == {1, 3}
        assert analysis.droppable({4}) == expected, max_refs


def test_a_drop_that_would_change_picture_order_counts_is_given_up() -> None:
    """pic_order_cnt_type 0 with 16 lsb values: without reference picture 2 (lsb 12), picture 3's lsb 2 looks like
    a step back from 6 instead of a wrap after 12, and its order count would be wrong."""
    for lsbs, expected in (((6, 12, 2), {}), ((2, 4, 6), {2: "BIDIR"})):
        s = sps(4, poc_type=0, log2_max_poc_lsb=4)
        headers = [
            pic(h264.I, 0, s),
            pic(h264.P, 1, s, lsb=lsbs[0]),
            pic(h264.B, 2, s, lsb=lsbs[1]),
            pic(h264.P, 3, s, lsb=lsbs[2], mods=((0, 1),)),  # predicts from picture 1
        ]
        assert h264.analyse(headers).droppable({3}) == expected, lsbs


def test_what_the_analysis_does_not_model_is_unsupported() -> None:
    s = sps(2)
    with pytest.raises(h264.Unsupported):  # gap in frame_num
        h264.analyse([pic(h264.I, 0, s), pic(h264.P, 2, s)])
    with pytest.raises(h264.Unsupported):  # a list modification naming a picture that is not held
        h264.analyse([pic(h264.I, 0, s), pic(h264.P, 1, s, mods=((0, 4),))])
    with pytest.raises(h264.Unsupported):  # not starting at an IDR picture
        h264.analyse([pic(h264.P, 1, s)])


def test_damaged_headers_raise_only_unsupported(files: dict[str, Path]) -> None:
    """Bit flips in slice headers and in the avcC parameter sets: the parser returns or raises ``Unsupported`` (the
    reader then drops nothing more), never another exception that would reach the user."""
    with av.open(str(files["medium_defaults"])) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata)
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    size = (extradata[4] & 3) + 1
    rng = np.random.default_rng(1)
    parsed = 0
    for trial in range(3000):
        data = bytearray(packets[int(rng.integers(len(packets)))])
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(size, min(len(data), size + 24)))] ^= 1 << int(rng.integers(8))
        extra = bytearray(extradata)
        if trial % 5 == 0:
            extra[int(rng.integers(len(extra)))] ^= 1 << int(rng.integers(8))
        try:
            h264.picture_header(bytes(data), size, h264.ParameterSets.from_avcc(bytes(extra)))
            parsed += 1
        except h264.Unsupported:
            pass
        with contextlib.suppress(h264.Unsupported):  # the non-reference check's own, shorter parse
            h264.frame_num(bytes(data), size, h264.FrameNumParams.from_avcc(bytes(extra)))
    assert 0 < parsed < 3000


def test_frame_num_agrees_with_the_full_slice_header(files: dict[str, Path]) -> None:
    """The non-reference check's short parse (``h264.frame_num``, libvtc's ``h264_frame_num``) reads every picture's
    ``frame_num`` as the full slice-header parse does, over all the configurations (scaling matrices, 4:4:4, slices)."""
    for name, path in files.items():
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            extradata = bytes(stream.codec_context.extradata)
            packets = [bytes(p) for p in container.demux(stream) if p.size]
        size = (extradata[4] & 3) + 1
        full, short = h264.ParameterSets.from_avcc(extradata), h264.FrameNumParams.from_avcc(extradata)
        for data in packets:
            header = h264.picture_header(data, size, full)
            assert h264.frame_num(data, size, short) == (header.frame_num, 1 << header.sps.log2_max_frame_num), name


DAMAGED_AT, DAMAGED_FROM, DAMAGED_TO = 1172, 0x63, 0x02


def damaged_carphone(video_dir: Path, out: Path) -> Path:
    """carphone_distorted.mp4 with one slice-header byte of its 5th packet (a non-reference B picture) changed, the
    case tests/fuzz_decode.py found: the picture's frame_num is no longer the previous reference picture's plus one,
    FFmpeg fills a frame_num gap when it decodes it, and every later frame of a plain decode changes."""
    data = bytearray((video_dir / "carphone_distorted.mp4").read_bytes())
    assert data[DAMAGED_AT] == DAMAGED_FROM  # the file this test was written against
    data[DAMAGED_AT] = DAMAGED_TO
    out.write_bytes(bytes(data))
    return out


def test_a_damaged_non_reference_picture_is_decoded_as_a_plain_decode_does(video_dir: Path, tmp_path: Path) -> None:
    """The reader skips a non-reference picture only while its frame_num is what a valid stream gives it
    (``h264.NonReferenceCheck``): on the damaged file it decodes that picture and every later non-reference one, and
    returns the plain decode's frames at the Text4Vis indices (before: up to 102 grey levels off, no error). The
    damage is real: the plain decodes of the two files differ from frame 15 on."""
    clean = video_dir / "carphone_distorted.mp4"
    damaged = damaged_carphone(video_dir, tmp_path / "damaged.mp4")
    ref, ref_clean = sequential(damaged), sequential(clean)
    assert np.array_equal(ref[0], ref_clean[0]) and np.abs(ref[15].astype(int) - ref_clean[15]).max() > 50
    for t in (8, 16):
        for clips in (1, 3):
            idx = uniform_indices(len(ref), t, clips).reshape(-1).tolist()
            with open_video(damaged, decoder="pyav") as reader:
                assert reader.info.decoder == "pyav"  # the indexed path, where skipping happens
                assert np.array_equal(reader.get_frames_at(idx), ref[idx]), (t, clips)

    def verdicts(path: Path) -> list[bool | None]:
        """Per packet in decode order: whether the non-reference picture in it may be skipped (None: a reference)."""
        src = video._Source(str(path), 1 << 40)
        try:
            check = h264.NonReferenceCheck(h264.FrameNumParams.from_avcc(src.extradata), src.nal_size)
            assert src._kept is not None
            out: list[bool | None] = []
            for p, packet in zip(src.packets, src._kept, strict=True):
                skippable = check.skippable(bytes(packet), not p.disposable)
                out.append(skippable if p.disposable else None)
            return out
        finally:
            src.close()

    clean_verdicts, damaged_verdicts = verdicts(clean), verdicts(damaged)
    assert False not in clean_verdicts and True in clean_verdicts  # the valid file's may all be skipped
    assert damaged_verdicts[:4] == clean_verdicts[:4] and damaged_verdicts[4] is False  # the damaged picture
    assert True not in damaged_verdicts[4:]  # and nothing after it
