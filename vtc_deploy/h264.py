"""H.264 reference analysis: which earlier pictures each picture of a length-prefixed (MP4/Matroska) H.264 stream may
predict from, so that the PyAV reader can have the decoder drop reference pictures that no frame it must return
depends on (``video.PyAVReader``'s indexed path).

Owns: reading SPS, PPS and slice headers (ITU-T H.264 7.3.2.1, 7.3.2.2, 7.3.3), the decoded reference picture
marking (8.2.5: sliding window and ``mmco`` 1), the P-slice reference list (8.2.4: initial order by descending
``PicNum``, the ``ref_pic_list_modification`` commands, ``num_ref_idx_l0_active``), PicOrderCntMsb (8.2.1.1) and a
replay of FFmpeg's reference state when pictures are skipped. Imports: nothing outside the
standard library. Torch-free, numpy-free.

**The rule** (``analyse`` then ``Analysis.droppable``): a picture depends on every picture in its slices' active L0
list (P slices, exactly as the decoder builds it) and on every short-term reference picture held at that point (B
slices: a superset of both lists and of what temporal direct prediction reads), transitively. The candidates are the
non-IDR reference pictures (all slices B: ``skip_frame`` BIDIR; all P: NONINTRA) that no wanted picture depends on.
A skipped picture is not decoded at all in FFmpeg (the check comes before the picture starts): its marking commands
and picture order count are never applied, and at the next decoded picture the frame_num gap is filled with
placeholder frames, each marked by the sliding window. ``_first_difference`` replays exactly that and gives up the
latest skip before any decoded picture whose P lists, held references (B slices: exactly those of the full decode),
marking commands or PicOrderCntMsb would differ. Everything else raises ``Unsupported`` and the caller drops nothing
beyond non-reference pictures: field pictures or MBAFF (``frame_mbs_only_flag`` 0), slice groups (FMO), SP/SI
slices, redundant slices, long-term references, ``mmco`` other than 1, ``pic_order_cnt_type`` 1, gaps in
``frame_num``, a list modification naming a picture that is not held, malformed headers.

Over-approximating is safe (a picture kept that was not needed costs time only); under-approximating returns
wrong pixels with no error from FFmpeg, so every shortcut here is conservative and the corpus test
(tests/test_h264_refs.py) reads every frame of many encoder configurations alone and compares it with a plain decode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})  # chroma_format_idc etc.
HEADER_BYTES = (48, 1024)  # parse from this many bytes, again from more when a header is longer (weight tables)
P, B, I, SP, SI = 0, 1, 2, 3, 4  # noqa: E741 - slice_type % 5, the standard's names


class Unsupported(Exception):
    """The stream uses something the analysis does not model (internal: ``analyse`` returns ``None``)."""


class _Truncated(Unsupported):
    """The bytes given end inside the header."""


class _Bits:
    """Exp-Golomb reader over one NAL unit's RBSP (emulation prevention bytes removed)."""

    def __init__(self, nal: bytes | memoryview) -> None:
        rbsp = bytes(nal).replace(b"\x00\x00\x03", b"\x00\x00")
        self.size = len(rbsp) * 8
        self.value = int.from_bytes(rbsp, "big")
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > self.size:
            raise _Truncated("header ends early")
        self.pos += n
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        rest = self.value & ((1 << (self.size - self.pos)) - 1)
        zeros = (self.size - self.pos) - rest.bit_length()
        if rest == 0:
            raise _Truncated("header ends early")
        if zeros > 31:
            raise Unsupported("bad Exp-Golomb code")
        self.pos += zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


@dataclass(frozen=True)
class Sps:
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    delta_pic_order_always_zero: bool
    max_num_ref_frames: int
    frame_mbs_only: bool
    separate_colour_plane: bool
    chroma_array_type: int


@dataclass(frozen=True)
class Pps:
    sps_id: int
    bottom_field_pic_order_present: bool
    num_ref_idx_default: tuple[int, int]
    weighted_pred: bool
    weighted_bipred_idc: int
    redundant_pic_cnt_present: bool


def _scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se()) % 256
        last = nxt or last


def _sps_head(bits: _Bits) -> tuple[int, int, int, bool]:
    """An SPS read up to ``log2_max_frame_num`` (where ``FrameNumParams`` stops): ``(sps_id, log2_max_frame_num,
    chroma_format_idc, separate_colour_plane_flag)``."""
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    sps_id = bits.ue()
    chroma_format_idc, separate = 1, False
    if profile in HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            separate = bool(bits.u(1))
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format_idc == 3 else 8):
                if bits.u(1):
                    _scaling_list(bits, 16 if i < 6 else 64)
    return sps_id, bits.ue() + 4, chroma_format_idc, separate


def parse_sps(nal: bytes | memoryview) -> tuple[int, Sps]:
    bits = _Bits(nal[1 : HEADER_BYTES[-1]])
    sps_id, log2_max_frame_num, chroma_format_idc, separate = _sps_head(bits)
    poc_type = bits.ue()
    log2_max_poc_lsb, always_zero = 0, False
    if poc_type == 0:
        log2_max_poc_lsb = bits.ue() + 4
    elif poc_type == 1:
        always_zero = bool(bits.u(1))
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        for _ in range(bits.ue()):
            bits.se()
    elif poc_type != 2:
        raise Unsupported(f"pic_order_cnt_type {poc_type}")
    max_num_ref_frames = bits.ue()
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    bits.ue()  # pic_width_in_mbs_minus1
    bits.ue()  # pic_height_in_map_units_minus1
    frame_mbs_only = bool(bits.u(1))
    if log2_max_frame_num > 16 or (poc_type == 0 and log2_max_poc_lsb > 16):
        raise Unsupported("SPS out of range")
    return sps_id, Sps(
        log2_max_frame_num,
        poc_type,
        log2_max_poc_lsb,
        always_zero,
        max_num_ref_frames,
        frame_mbs_only,
        separate,
        0 if separate else chroma_format_idc,
    )


def parse_pps(nal: bytes | memoryview) -> tuple[int, Pps]:
    bits = _Bits(nal[1 : HEADER_BYTES[-1]])
    pps_id = bits.ue()
    sps_id = bits.ue()
    bits.u(1)  # entropy_coding_mode_flag
    bottom_present = bool(bits.u(1))
    if bits.ue() != 0:
        raise Unsupported("slice groups (FMO)")
    l0, l1 = bits.ue() + 1, bits.ue() + 1
    weighted_pred = bool(bits.u(1))
    weighted_bipred_idc = bits.u(2)
    bits.se()  # pic_init_qp_minus26
    bits.se()  # pic_init_qs_minus26
    bits.se()  # chroma_qp_index_offset
    bits.u(1)  # deblocking_filter_control_present_flag
    bits.u(1)  # constrained_intra_pred_flag
    redundant = bool(bits.u(1))
    return pps_id, Pps(sps_id, bottom_present, (l0, l1), weighted_pred, weighted_bipred_idc, redundant)


def avcc_parameter_sets(extradata: bytes) -> list[bytes]:
    """The SPS and PPS NAL units of an ``avcC`` box (ISO/IEC 14496-15 5.3.3.1), in order; ``Unsupported`` when it
    is malformed (a count or length past its end, an empty unit)."""
    units: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):
        if pos >= len(extradata):
            raise Unsupported("malformed avcC")
        count = extradata[pos] & count_mask
        pos += 1
        for _ in range(count):
            n = int.from_bytes(extradata[pos : pos + 2], "big")
            if pos + 2 + n > len(extradata) or n < 1:
                raise Unsupported("malformed avcC")
            units.append(bytes(extradata[pos + 2 : pos + 2 + n]))
            pos += 2 + n
    return units


@dataclass
class ParameterSets:
    """The SPS and PPS in force, by id (from the avcC extradata, then in-band ones in decode order)."""

    sps: dict[int, Sps] = field(default_factory=dict)
    pps: dict[int, Pps] = field(default_factory=dict)

    def add(self, nal: bytes | memoryview) -> None:
        kind = nal[0] & 0x1F
        if kind == 7:
            sps_id, sps = parse_sps(nal)
            self.sps[sps_id] = sps
        elif kind == 8:
            pps_id, pps = parse_pps(nal)
            self.pps[pps_id] = pps

    @classmethod
    def from_avcc(cls, extradata: bytes) -> ParameterSets:
        """The parameter sets of an ``avcC`` box (ISO/IEC 14496-15 5.3.3.1)."""
        out = cls()
        for nal in avcc_parameter_sets(extradata):
            out.add(nal)
        return out


@dataclass(frozen=True)
class Slice:
    slice_type: int  # P, B, I
    frame_num: int
    poc_lsb: int  # pic_order_cnt_lsb (pic_order_cnt_type 0; else 0)
    num_ref_idx_l0: int
    modifications_l0: tuple[tuple[int, int], ...]  # (modification_of_pic_nums_idc, value)


@dataclass(frozen=True)
class PictureHeader:
    """What the analysis needs of one picture (its first slice's marking; every slice's lists)."""

    idr: bool
    reference: bool  # nal_ref_idc != 0
    frame_num: int
    mmco: tuple[tuple[int, int], ...] | None  # None: sliding window; otherwise the commands (op, difference)
    slices: tuple[Slice, ...]
    sps: Sps


def _modifications(bits: _Bits) -> tuple[tuple[int, int], ...]:
    ops: list[tuple[int, int]] = []
    if bits.u(1):
        while (idc := bits.ue()) != 3:
            if idc > 2:
                raise Unsupported(f"modification_of_pic_nums_idc {idc}")
            ops.append((idc, bits.ue()))
            if len(ops) > 32:
                raise Unsupported("too many list modifications")
    return tuple(ops)


def _weights(bits: _Bits, chroma: bool, counts: Iterable[int]) -> None:
    bits.ue()  # luma_log2_weight_denom
    if chroma:
        bits.ue()
    for n in counts:
        for _ in range(n):
            if bits.u(1):
                bits.se()
                bits.se()
            if chroma and bits.u(1):
                for _ in range(4):
                    bits.se()


SliceInfo = tuple[Slice, bool, bool, tuple[tuple[int, int], ...] | None, Sps]


def parse_slice(nal: bytes | memoryview, params: ParameterSets) -> SliceInfo:
    """``(slice, idr, reference, mmco, sps)`` of one coded slice NAL unit (type 1 or 5)."""
    for limit in HEADER_BYTES:
        try:
            return _parse_slice(nal, params, limit)
        except _Truncated:
            if limit >= len(nal):
                break
    raise Unsupported("slice header longer than the slice")


def _parse_slice(nal: bytes | memoryview, params: ParameterSets, limit: int) -> SliceInfo:
    kind, ref_idc = nal[0] & 0x1F, (nal[0] >> 5) & 3
    idr = kind == 5
    bits = _Bits(nal[1:limit])
    bits.ue()  # first_mb_in_slice
    slice_type = bits.ue() % 5
    if slice_type in (SP, SI):
        raise Unsupported("SP/SI slices")
    pps = params.pps.get(bits.ue())
    if pps is None or pps.sps_id not in params.sps:
        raise Unsupported("slice names a missing parameter set")
    sps = params.sps[pps.sps_id]
    if not sps.frame_mbs_only:
        raise Unsupported("field or MBAFF coding")
    if sps.separate_colour_plane:
        bits.u(2)
    frame_num = bits.u(sps.log2_max_frame_num)
    if idr:
        bits.ue()  # idr_pic_id
    poc_lsb = 0
    if sps.poc_type == 0:
        poc_lsb = bits.u(sps.log2_max_poc_lsb)
        if pps.bottom_field_pic_order_present:
            bits.se()
    elif sps.poc_type == 1 and not sps.delta_pic_order_always_zero:
        bits.se()
        if pps.bottom_field_pic_order_present:
            bits.se()
    if pps.redundant_pic_cnt_present and bits.ue() > 0:
        raise Unsupported("redundant slices")
    if slice_type == B:
        bits.u(1)  # direct_spatial_mv_pred_flag
    l0, l1 = pps.num_ref_idx_default
    if slice_type in (P, B) and bits.u(1):  # num_ref_idx_active_override_flag
        l0 = bits.ue() + 1
        if slice_type == B:
            l1 = bits.ue() + 1
    if l0 > 32 or l1 > 32:
        raise Unsupported("num_ref_idx out of range")
    mods: tuple[tuple[int, int], ...] = ()
    if slice_type != I:
        mods = _modifications(bits)
        if slice_type == B:
            _modifications(bits)
    if (pps.weighted_pred and slice_type == P) or (pps.weighted_bipred_idc == 1 and slice_type == B):
        _weights(bits, sps.chroma_array_type != 0, (l0, l1) if slice_type == B else (l0,))
    mmco: tuple[tuple[int, int], ...] | None = None
    if ref_idc:
        if idr:
            bits.u(1)  # no_output_of_prior_pics_flag
            if bits.u(1):
                raise Unsupported("long-term reference IDR")
        elif bits.u(1):  # adaptive_ref_pic_marking_mode_flag
            ops: list[tuple[int, int]] = []
            while (op := bits.ue()) != 0:
                if op != 1:
                    raise Unsupported(f"memory_management_control_operation {op}")
                ops.append((op, bits.ue()))
                if len(ops) > 64:
                    raise Unsupported("too many mmco")
            mmco = tuple(ops)
    return Slice(slice_type, frame_num, poc_lsb, l0, mods), idr, bool(ref_idc), mmco, sps


def nal_units(packet: bytes | memoryview, length_size: int) -> list[memoryview]:
    """The NAL units of one length-prefixed packet (views into it, not copies)."""
    packet = memoryview(packet)
    out, pos, size = [], 0, len(packet)
    while pos + length_size <= size:
        n = int.from_bytes(packet[pos : pos + length_size], "big")
        pos += length_size
        if n < 1 or pos + n > size:
            raise Unsupported("malformed packet")
        out.append(packet[pos : pos + n])
        pos += n
    if pos != size:
        raise Unsupported("malformed packet")
    return out


def picture_header(packet: bytes | memoryview, length_size: int, params: ParameterSets) -> PictureHeader:
    """Parse one packet holding one picture; in-band SPS/PPS update ``params`` first."""
    slices: list[Slice] = []
    first: tuple[bool, bool, tuple[tuple[int, int], ...] | None, Sps] | None = None
    for nal in nal_units(packet, length_size):
        kind = nal[0] & 0x1F
        if kind in (7, 8):
            params.add(nal)
        elif kind in (2, 3, 4):
            raise Unsupported("data partitioning")
        elif kind in (1, 5):
            s, idr, ref, mmco, sps = parse_slice(nal, params)
            if first is None:
                first = (idr, ref, mmco, sps)
            elif (idr, ref) != first[:2] or s.frame_num != slices[0].frame_num:
                raise Unsupported("slices of one picture disagree")
            slices.append(s)
    if first is None:
        raise Unsupported("packet without a slice")
    idr, ref, mmco, sps = first
    return PictureHeader(idr, ref, slices[0].frame_num, mmco, tuple(slices), sps)


FRAME_NUM_BYTES = 24  # first_mb_in_slice, slice_type, pic_parameter_set_id, colour_plane_id, frame_num fit here


@dataclass
class FrameNumParams:
    """What a slice's ``frame_num`` needs of the parameter sets, by id: SPS -> (log2_max_frame_num,
    separate_colour_plane_flag), PPS -> its SPS. Read only as far as those fields (libvtc's ``FrameNumParams``, the
    same rule): an SPS or PPS that does not parse that far is ``Unsupported``."""

    sps: dict[int, tuple[int, bool]] = field(default_factory=dict)
    pps: dict[int, int] = field(default_factory=dict)

    def add(self, nal: bytes | memoryview) -> None:
        kind = nal[0] & 0x1F
        bits = _Bits(nal[1 : HEADER_BYTES[-1]])
        if kind == 7:
            sps_id, log2_max_frame_num, _, separate = _sps_head(bits)
            if sps_id > 31 or log2_max_frame_num > 16:
                raise Unsupported("SPS out of range")
            self.sps[sps_id] = (log2_max_frame_num, separate)
        elif kind == 8:
            pps_id, sps_id = bits.ue(), bits.ue()
            if pps_id > 255 or sps_id > 31:
                raise Unsupported("PPS out of range")
            self.pps[pps_id] = sps_id

    @classmethod
    def from_avcc(cls, extradata: bytes) -> FrameNumParams:
        """The parameter sets of an ``avcC`` box (ISO/IEC 14496-15 5.3.3.1)."""
        out = cls()
        for nal in avcc_parameter_sets(extradata):
            out.add(nal)
        return out


def frame_num(packet: bytes | memoryview, length_size: int, params: FrameNumParams) -> tuple[int, int]:
    """``(frame_num, MaxFrameNum)`` of the first slice of one packet; in-band SPS/PPS before it update ``params``
    first. Raises ``Unsupported`` where it does not parse (malformed, a missing parameter set)."""
    for nal in nal_units(packet, length_size):
        kind = nal[0] & 0x1F
        if kind in (7, 8):
            params.add(nal)
        elif kind in (1, 5):
            for limit in (FRAME_NUM_BYTES, len(nal)):
                try:
                    bits = _Bits(nal[1:limit])
                    bits.ue()  # first_mb_in_slice
                    bits.ue()  # slice_type
                    sps_id = params.pps.get(bits.ue())
                    if sps_id is None or sps_id not in params.sps:
                        raise Unsupported("slice names a missing parameter set")
                    log2_max_frame_num, separate = params.sps[sps_id]
                    if separate:
                        bits.u(2)  # colour_plane_id
                    return bits.u(log2_max_frame_num), 1 << log2_max_frame_num
                except _Truncated:
                    if limit >= len(nal):
                        break
            raise Unsupported("slice header longer than the slice")
    raise Unsupported("packet without a slice")


class NonReferenceCheck:
    """Whether a non-reference picture may be skipped (``skip_frame`` NONREF) without changing what the decoder does
    next (libvtc's ``NonReferenceCheck``, the same rule): in a valid stream its ``frame_num`` is the previous
    reference picture's plus one (7.4.3), and skipping it changes nothing else. A damaged one with another
    ``frame_num`` makes FFmpeg fill a frame_num gap when it decodes it (placeholder references that push real ones
    out, then wrong pixels in later frames, without an error): a plain decode does that, a decoder that skipped it
    would not. So such a picture is decoded, and so is every later non-reference picture of the run (found by
    tests/fuzz_decode.py: one damaged slice-header byte in carphone_distorted.mp4). Fed every packet of a decode run
    in order, from its IDR picture; anything that does not parse ends the skipping too."""

    def __init__(self, params: FrameNumParams | None, length_size: int) -> None:
        self.params = FrameNumParams(dict(params.sps), dict(params.pps)) if params is not None else None
        self.length_size = length_size
        self.prev_ref: int | None = None  # frame_num of the latest reference picture
        self.ok = params is not None

    def skippable(self, packet: bytes | memoryview, reference: bool) -> bool:
        """Note one packet (``reference``: it holds a reference picture); for a non-reference picture, whether it may
        be skipped."""
        if not self.ok or self.params is None:
            return False
        try:
            number, limit = frame_num(packet, self.length_size, self.params)
        except Unsupported:
            self.ok = False
            return False
        if reference:
            self.prev_ref = number
            return False
        self.ok = self.prev_ref is not None and number == (self.prev_ref + 1) % limit
        return self.ok


@dataclass(frozen=True)
class _Decoded:
    """One picture as a conforming decoder decodes the whole stream."""

    refs: frozenset[int]  # positions of the pictures it may predict from
    held: frozenset[int]  # short-term reference pictures held when it is decoded
    lists: tuple[tuple[int, ...], ...]  # each P slice's active L0 list (positions)
    poc_msb: int  # PicOrderCntMsb (pic_order_cnt_type 0)
    drop_mode: str | None  # skip_frame value that drops it; None: never dropped (IDR, I, non-reference)


def _pic_num(frame_num: int, curr: int, max_frame_num: int) -> int:
    return frame_num - max_frame_num if frame_num > curr else frame_num  # FrameNumWrap = PicNum for frames


def _find(held: list[tuple[int, int]], number: int, curr: int, max_frame_num: int) -> tuple[int, int]:
    for entry in held:
        if _pic_num(entry[0], curr, max_frame_num) == number:
            return entry
    raise Unsupported("a command names a picture that is not held")


def _p_list(held: list[tuple[int, int]], s: Slice, curr: int, max_frame_num: int) -> list[tuple[int, int]]:
    """RefPicList0 of a P slice (8.2.4.2.1 and 8.2.4.3.1, frames, short-term only), ``num_ref_idx_l0`` long."""
    lst = sorted(held, key=lambda e: -_pic_num(e[0], curr, max_frame_num))[: s.num_ref_idx_l0]
    pred = curr
    for index, (idc, value) in enumerate(s.modifications_l0):
        if idc == 2:
            raise Unsupported("long-term reference in a list modification")
        pred = (pred - (value + 1) if idc == 0 else pred + (value + 1)) % max_frame_num
        entry = _find(held, pred - max_frame_num if pred > curr else pred, curr, max_frame_num)
        lst = lst[:index] + [entry] + [e for e in lst[index:] if e != entry]
    return lst[: s.num_ref_idx_l0]


def _mark(held: list[tuple[int, int]], pic: PictureHeader, entry: tuple[int, int], max_refs: int) -> None:
    """Decoded reference picture marking (8.2.5) of a non-IDR reference picture, then store it."""
    curr, max_frame_num = pic.frame_num, 1 << pic.sps.log2_max_frame_num
    if pic.mmco is None:
        if len(held) >= max_refs:
            held.remove(min(held, key=lambda e: _pic_num(e[0], curr, max_frame_num)))
    else:
        for _, difference in pic.mmco:
            held.remove(_find(held, curr - (difference + 1), curr, max_frame_num))
    held.append(entry)


def _msb(lsb: int, prev: tuple[int, int], max_lsb: int) -> int:
    """PicOrderCntMsb from the previous reference picture's (msb, lsb) (8.2.1.1)."""
    prev_msb, prev_lsb = prev
    if lsb < prev_lsb and prev_lsb - lsb >= max_lsb // 2:
        return prev_msb + max_lsb
    if lsb > prev_lsb and lsb - prev_lsb > max_lsb // 2:
        return prev_msb - max_lsb
    return prev_msb


class Analysis:
    """The reference structure of pictures in decode order from an IDR picture (``analyse``)."""

    def __init__(self, headers: Sequence[PictureHeader]) -> None:
        if not headers or not headers[0].idr:
            raise Unsupported("the analysis starts at an IDR picture")
        self.headers = headers
        held: list[tuple[int, int]] = []  # short-term reference frames: (frame_num, position)
        prev_ref_frame_num, prev_poc = 0, (0, 0)
        self.pictures: list[_Decoded] = []
        for pos, pic in enumerate(headers):
            sps, curr = pic.sps, pic.frame_num
            if sps.poc_type == 1:
                raise Unsupported("pic_order_cnt_type 1")
            max_frame_num = 1 << sps.log2_max_frame_num
            refs: set[int] = set()
            lists: list[tuple[int, ...]] = []
            if pic.idr:
                held, prev_poc = [], (0, 0)
            elif curr != (prev_ref_frame_num + 1) % max_frame_num:
                raise Unsupported("gap in frame_num")
            msb = _msb(pic.slices[0].poc_lsb, prev_poc, 1 << sps.log2_max_poc_lsb) if sps.poc_type == 0 else 0
            for s in pic.slices:
                if s.slice_type == B:
                    refs.update(p for _, p in held)
                elif s.slice_type == P:
                    lists.append(tuple(p for _, p in _p_list(held, s, curr, max_frame_num)))
                    refs.update(lists[-1])
            types = {s.slice_type for s in pic.slices}
            drop_mode = None
            if pic.reference and not pic.idr and len(types) == 1:
                drop_mode = {B: "BIDIR", P: "NONINTRA"}.get(types.pop())
            self.pictures.append(_Decoded(frozenset(refs), frozenset(p for _, p in held), tuple(lists), msb, drop_mode))
            if pic.reference:
                if pic.idr:
                    held = [(curr, pos)]
                else:
                    _mark(held, pic, (curr, pos), max(sps.max_num_ref_frames, 1))
                prev_ref_frame_num, prev_poc = curr, (msb, pic.slices[0].poc_lsb)

    def droppable(self, wanted: Iterable[int]) -> dict[int, str]:
        """``{position: skip_frame mode}`` of reference pictures that no wanted picture depends on and whose
        dropping leaves every picture that is decoded with the same references and picture order count (checked
        by ``_first_difference``; where it is not, the latest drop before the difference is given up)."""
        wanted = set(wanted)
        needed: set[int] = set()
        stack = list(wanted)
        while stack:
            pos = stack.pop()
            if pos not in needed:
                needed.add(pos)
                stack.extend(self.pictures[pos].refs - needed)
        last = max(wanted, default=-1)
        drops = {
            pos: pic.drop_mode
            for pos, pic in enumerate(self.pictures[: last + 1])
            if pic.drop_mode is not None and pos not in needed
        }
        snapshots: dict[int, _Replay] = {}  # the replay's state just before each dropped picture
        replay, start = _Replay([], 0, (0, 0)), 0
        while drops:
            at = self._first_difference(replay, start, drops.keys(), wanted, last, snapshots)
            if at is None:
                break
            before = [pos for pos in drops if pos < at]
            if not before:
                return {}
            start = max(before)
            del drops[start]
            replay = snapshots[start].copy()  # replay again from there, now decoding that picture
        return drops

    def _first_difference(
        self,
        replay: _Replay,
        start: int,
        drops: Iterable[int],
        wanted: set[int],
        last: int,
        snapshots: dict[int, _Replay],
    ) -> int | None:
        """Replay FFmpeg's H.264 decoder from ``start`` (state ``replay``) when the pictures in ``drops`` and the
        non-reference pictures that are not wanted are skipped (``skip_frame``: the picture never starts, so its
        marking and picture order count are not applied; at the next decoded picture the frame_num gap is filled
        with placeholder frames, each marked by the sliding window). Returns the first decoded picture whose
        reference lists, held pictures (B slices: exactly those of the full decode), marking commands or picture
        order count would differ from the full decode, or ``None``."""
        dropped = set(drops)
        for pos in range(start, last + 1):
            pic, full = self.headers[pos], self.pictures[pos]
            if pos in dropped:
                snapshots[pos] = replay.copy()
            if pos not in wanted and (not pic.reference or pos in dropped):
                continue
            if not replay.decode(pos, pic, full):
                return pos
        return None


@dataclass
class _Replay:
    """FFmpeg's reference state while pictures are skipped (``Analysis._first_difference``)."""

    held: list[tuple[int, int]]  # (frame_num, position); position -1: a placeholder for a skipped picture
    prev_frame_num: int
    prev_poc: tuple[int, int]  # (PicOrderCntMsb, pic_order_cnt_lsb) of the last decoded reference picture

    def copy(self) -> _Replay:
        return _Replay(list(self.held), self.prev_frame_num, self.prev_poc)

    def decode(self, pos: int, pic: PictureHeader, full: _Decoded) -> bool:
        """Decode one picture; False when it would not be decoded as in the full decode."""
        sps, curr, held = pic.sps, pic.frame_num, self.held
        max_frame_num, max_refs = 1 << sps.log2_max_frame_num, max(sps.max_num_ref_frames, 1)
        if pic.idr:
            held.clear()
            self.prev_poc = (0, 0)
        else:
            while curr != self.prev_frame_num and curr != (self.prev_frame_num + 1) % max_frame_num:
                gap = self.prev_frame_num = (self.prev_frame_num + 1) % max_frame_num
                if gap == 0:
                    return False  # a gap across the frame_num wrap (FrameNumOffset): not modelled
                if len(held) >= max_refs:
                    held.remove(min(held, key=lambda e: _pic_num(e[0], gap, max_frame_num)))
                held.append((gap, -1))
            max_lsb = 1 << sps.log2_max_poc_lsb
            if sps.poc_type == 0 and _msb(pic.slices[0].poc_lsb, self.prev_poc, max_lsb) != full.poc_msb:
                return False
            if any(s.slice_type == B for s in pic.slices) and {p for _, p in held} != full.held:
                return False
            try:
                lists = [
                    tuple(p for _, p in _p_list(held, s, curr, max_frame_num)) for s in pic.slices if s.slice_type == P
                ]
            except Unsupported:
                return False
            if tuple(lists) != full.lists:
                return False
        if pic.reference:
            if pic.idr:
                held[:] = [(curr, pos)]
            else:
                try:
                    _mark(held, pic, (curr, pos), max_refs)
                except Unsupported:
                    return False
                if len(held) > max_refs:
                    return False
            self.prev_poc = (full.poc_msb, pic.slices[0].poc_lsb)
        self.prev_frame_num = curr
        return True


def analyse(headers: Sequence[PictureHeader]) -> Analysis:
    """The reference structure of ``headers`` (decode order, ``headers[0]`` an IDR picture); raises
    ``Unsupported`` for what it does not model (module docstring)."""
    return Analysis(headers)
