"""Facts about the CPU that decide reduced-precision numbers: its model name and its ISA class.

Owns: ``cpu_facts`` (model name, ISA class, where the facts came from) and ``ISA_CLASSES``.
Imports: the standard library only (torch-free, numpy-free).

Why: ONNX Runtime picks its int8 kernels by instruction set. Its U8S8 kernels (uint8 activations x int8 weights)
saturate a 16-bit intermediate on AVX2 and on AVX-512 without VNNI (``vpmaddubsw``); with VNNI (``vpdpbusd``) or AMX
they accumulate exactly. A parity gate therefore holds for the ISA class it ran on, which the manifest records.

Classes, best first: ``amx`` (AMX-INT8), ``avx512-vnni``, ``avx-vnni`` (VEX VNNI without AVX-512, e.g. Alder Lake),
``avx512`` (AVX-512BW, no VNNI), ``avx2``, ``sse`` (none of those), ``arm64`` / ``other`` off x86.

On x86-64 Linux and macOS the flags come from the CPUID instruction itself (a few bytes of machine code run through
ctypes), so that an emulated CPU (``qemu-x86_64 -cpu Haswell``, whose ``/proc/cpuinfo`` is the host's) reports what
the emulator offers -- which is what ONNX Runtime sees too. AVX state must also be enabled by the OS (XGETBV). Where
running code that way is not possible, ``/proc/cpuinfo`` is read instead (``source`` says which).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

IsaClass = Literal["amx", "avx512-vnni", "avx-vnni", "avx512", "avx2", "sse", "arm64", "other"]
ISA_CLASSES: tuple[str, ...] = ("amx", "avx512-vnni", "avx-vnni", "avx512", "avx2", "sse", "arm64", "other")

# System V x86-64: cpuid(eax=leaf, ecx=subleaf) -> uint32 out[4] = eax, ebx, ecx, edx.
_CPUID = bytes.fromhex(
    "53"  # push rbx
    "89f8"  # mov eax, edi
    "89f1"  # mov ecx, esi
    "4989d0"  # mov r8, rdx
    "0fa2"  # cpuid
    "418900"  # mov [r8], eax
    "41895804"  # mov [r8+4], ebx
    "41894808"  # mov [r8+8], ecx
    "4189500c"  # mov [r8+12], edx
    "5b"  # pop rbx
    "c3"  # ret
)
# xgetbv(ecx=0) -> edx:eax as uint64 (the OS-enabled register state, XCR0).
_XGETBV = bytes.fromhex("31c90f01d048c1e2204809d0c3")


@dataclass(frozen=True)
class CpuFacts:
    model: str  # e.g. "AMD EPYC 7B13" or "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    isa: str  # one of ISA_CLASSES
    source: str  # "cpuid", "/proc/cpuinfo" or "platform"


def _run_code(code: bytes, restype: type, argtypes: list[type], *args: object) -> object:
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        buf.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        fn = ctypes.CFUNCTYPE(restype, *argtypes)(address)
        result = fn(*args)
        del fn
        return result
    finally:
        with contextlib.suppress(BufferError):  # a ctypes view still alive: the page goes with the process
            buf.close()


def _cpuid_flags() -> tuple[set[str], str]:
    """Flags named as in /proc/cpuinfo, and the brand string, from CPUID/XGETBV."""

    def cpuid(leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
        out = (ctypes.c_uint32 * 4)()
        _run_code(_CPUID, ctypes.c_void_p, [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p], leaf, sub, out)
        return out[0], out[1], out[2], out[3]

    max_leaf = cpuid(0)[0]
    _, _, ecx1, _ = cpuid(1)
    flags: set[str] = set()
    osxsave = bool(ecx1 >> 27 & 1)
    xcr0 = int(_run_code(_XGETBV, ctypes.c_uint64, []) or 0) if osxsave else 0  # type: ignore[call-overload]
    ymm = xcr0 & 0b110 == 0b110  # SSE + AVX state
    zmm = ymm and xcr0 & 0b11100000 == 0b11100000  # opmask + ZMM state
    tiles = xcr0 & (0b11 << 17) == (0b11 << 17)  # AMX tile config + data
    if ecx1 >> 28 & 1 and ymm:
        flags.add("avx")
    if ecx1 >> 19 & 1:
        flags.add("sse4_1")
    if max_leaf >= 7:
        _, ebx7, ecx7, edx7 = cpuid(7, 0)
        eax71 = cpuid(7, 1)[0]
        if ebx7 >> 5 & 1 and ymm:
            flags.add("avx2")
        if eax71 >> 4 & 1 and ymm:
            flags.add("avx_vnni")
        if zmm:
            if ebx7 >> 16 & 1:
                flags.add("avx512f")
            if ebx7 >> 30 & 1:
                flags.add("avx512bw")
            if ecx7 >> 11 & 1:
                flags.add("avx512_vnni")
        if tiles and edx7 >> 25 & 1:
            flags.add("amx_int8")
    brand = b""
    if cpuid(0x80000000)[0] >= 0x80000004:
        for leaf in (0x80000002, 0x80000003, 0x80000004):
            brand += b"".join(r.to_bytes(4, "little") for r in cpuid(leaf))
    return flags, brand.split(b"\0")[0].decode("ascii", "replace").strip()


def _proc_cpuinfo() -> tuple[set[str], str]:
    flags: set[str] = set()
    model = ""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return flags, model
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "model name" and not model:
            model = value.strip()
    return flags, model


def isa_class(flags: set[str], machine: str = "x86_64") -> str:
    """The ISA class of a CPU with these /proc/cpuinfo-style flags (see the module docstring)."""
    if machine.lower() in ("aarch64", "arm64"):
        return "arm64"
    if machine.lower() not in ("x86_64", "amd64"):
        return "other"
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "sse"


@functools.lru_cache(maxsize=1)
def cpu_facts() -> CpuFacts:
    """This machine's CPU model name and ISA class (cached for the process)."""
    machine = platform.machine()
    x86 = machine.lower() in ("x86_64", "amd64")
    proc_flags, proc_model = _proc_cpuinfo()
    if x86 and sys.platform in ("linux", "darwin"):
        try:
            flags, brand = _cpuid_flags()
        except (OSError, ValueError, TypeError, AttributeError):  # no executable memory (hardened kernels)
            pass
        else:
            return CpuFacts(model=brand or proc_model or platform.processor(), isa=isa_class(flags), source="cpuid")
    if proc_flags or proc_model:
        return CpuFacts(
            model=proc_model or platform.processor(), isa=isa_class(proc_flags, machine), source="/proc/cpuinfo"
        )
    return CpuFacts(
        model=platform.processor() or machine, isa=isa_class(set(), machine) if not x86 else "other", source="platform"
    )


if __name__ == "__main__":  # python -m vtc_deploy.cpuinfo: one line, for scripts and emulator checks
    facts = cpu_facts()
    print(f"{facts.isa}\t{facts.model}\t{facts.source}")
