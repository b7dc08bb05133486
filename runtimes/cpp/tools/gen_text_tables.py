"""Generate src/rules/text_tables.inc: the character tables the C++ tokenizer needs to clean and split text exactly
as vtc_deploy.tokenizer does in Python (ftfy 6 + html.unescape + str.lower + the `regex` module's categories), and
ftfy's mojibake detector (ftfy.badness.BADNESS_RE, the gate of ftfy's fix_encoding) as tables of code-point classes.

Run with the project's venv when Python, ftfy or regex change:  .venv/bin/python runtimes/cpp/tools/gen_text_tables.py
(``--check``: write nothing, exit 1 when the committed file differs from what this environment generates).
The tables are data (Unicode properties, HTML5 entity names, ftfy's character maps), not code.
"""

from __future__ import annotations

import html
import html.entities
import re
import re._compiler as re_compiler
import re._constants as re_constants
import re._parser as re_parser
import sys
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

import ftfy
import regex
from ftfy import badness, chardata, fixes

OUT = Path(__file__).resolve().parents[1] / "src" / "rules" / "text_tables.inc"


def ranges(pred: Callable[[str], bool]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or not pred(chr(cp)):
            continue
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def cstr(s: str) -> str:
    """A C++ UTF-8 string literal."""
    parts = []
    for b in s.encode("utf-8"):
        parts.append(f"\\x{b:02x}")
    return '"' + "".join(parts) + '"'


def emit_ranges(name: str, rs: Iterable[tuple[int, int]]) -> str:
    body = ",".join(f"{{0x{a:X},0x{b:X}}}" for a, b in rs)
    return f"const CodeRange {name}[] = {{{body}}};\n"


def emit_map(name: str, items: Iterable[tuple[int, str]]) -> str:
    body = ",\n".join(f"{{0x{cp:X},{cstr(s)}}}" for cp, s in sorted(items))
    return f"const CodeMap {name}[] = {{\n{body}}};\n"


MAX_BADNESS_LEN = 8  # BadnessAlt::cls in tokenizer.cpp


def all_code_points() -> tuple[str, Callable[[int], int]]:
    """Every code point but the surrogates, as one string, and string index -> code point."""
    text = "".join(chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)
    return text, lambda i: i if i < 0xD800 else i + 0x800


def badness_tables() -> str:
    """ftfy.badness.BADNESS_RE as data: alternatives that are fixed-length sequences of code-point classes.

    The compiled pattern is parsed with Python's own parser (re._parser); each alternative must be a sequence of
    one-character items (literal, set, category, '.'), optional one-character items (x?) and '^' at its start,
    else generation fails. An optional item gives two alternatives (with and without it). The code points of each
    item are found by running that item alone, compiled by Python, over every code point, so Python's own
    semantics of \\s, \\w, '.' and negated sets decide membership. is_bad(text) is true exactly when some
    alternative matches at some position (at position 0 only for '^').
    """
    pattern = badness.BADNESS_RE
    parsed = re_parser.parse(pattern.pattern, pattern.flags)
    if len(parsed.data) != 1 or parsed.data[0][0] is not re_constants.BRANCH:
        raise SystemExit("gen_text_tables: ftfy.badness.BADNESS_RE is not a plain alternation")
    alternatives = parsed.data[0][1][1]
    everything, to_cp = all_code_points()
    class_ids: dict[tuple[tuple[int, int], ...], int] = {}
    class_ranges: list[tuple[tuple[int, int], ...]] = []

    def class_of(item: tuple[object, object]) -> int:
        if item[0] not in (re_constants.LITERAL, re_constants.IN, re_constants.ANY):
            raise SystemExit(f"gen_text_tables: unsupported item in BADNESS_RE: {item}")
        single = re_compiler.compile(re_parser.SubPattern(parsed.state, [item]), pattern.flags)
        out: list[tuple[int, int]] = []
        for m in single.finditer(everything):
            if m.end() - m.start() != 1:
                raise SystemExit(f"gen_text_tables: item {item} is not one character")
            cp = to_cp(m.start())
            if out and out[-1][1] == cp - 1:
                out[-1] = (out[-1][0], cp)
            else:
                out.append((cp, cp))
        key = tuple(out)
        if key not in class_ids:
            class_ids[key] = len(class_ranges)
            class_ranges.append(key)
        return class_ids[key]

    alts: list[tuple[bool, list[int]]] = []
    for branch in alternatives:
        variants: list[tuple[bool, list[int]]] = [(False, [])]
        for i, (op, av) in enumerate(branch.data):
            if op is re_constants.AT:
                if av is not re_constants.AT_BEGINNING or i != 0:
                    raise SystemExit(f"gen_text_tables: unsupported anchor in BADNESS_RE: {op} {av}")
                variants = [(True, cls) for _, cls in variants]
            elif op is re_constants.MAX_REPEAT:
                lo, hi, sub = av
                if (lo, hi) != (0, 1) or len(sub.data) != 1:
                    raise SystemExit(f"gen_text_tables: unsupported repeat in BADNESS_RE: {av}")
                k = class_of(sub.data[0])
                variants = [v for at, cls in variants for v in ((at, cls), (at, [*cls, k]))]
            else:
                k = class_of((op, av))
                variants = [(at, [*cls, k]) for at, cls in variants]
        alts += variants
    if any(not 1 <= len(cls) <= MAX_BADNESS_LEN for _, cls in alts):
        raise SystemExit("gen_text_tables: a BADNESS_RE alternative is empty or too long")
    flat: list[tuple[int, int]] = []
    offsets: list[tuple[int, int]] = []
    for rs in class_ranges:
        offsets.append((len(flat), len(rs)))
        flat += rs
    return (
        f"// ftfy.badness.BADNESS_RE: {len(alternatives)} alternatives -> {len(alts)} fixed-length sequences of "
        f"{len(class_ranges)} code-point classes.\n"
        + emit_ranges("kBadnessRanges", flat)
        + "const BadnessClass kBadnessClasses[] = {"
        + ",".join(f"{{{o},{n}}}" for o, n in offsets)
        + "};\n"
        + "const BadnessAlt kBadnessAlts[] = {\n"
        + ",\n".join(f"{{{'true' if at else 'false'},{len(cls)},{{{','.join(map(str, cls))}}}}}" for at, cls in alts)
        + "};\n"
    )


def main() -> None:
    # the classes as vtc_deploy.tokenizer's pattern uses them: with IGNORECASE, so a character also belongs to a class
    # when a case variant of it does (U+0345 COMBINING GREEK YPOGEGRAMMENI counts as a letter through iota)
    letter = regex.compile(r"[\p{L}]", regex.IGNORECASE)
    number = regex.compile(r"[\p{N}]", regex.IGNORECASE)
    other = regex.compile(r"[^\s\p{L}\p{N}]", regex.IGNORECASE)
    re_digit = re.compile(r"\d")
    lower = [
        (cp, chr(cp).lower()) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF and chr(cp).lower() != chr(cp)
    ]
    lower = [(cp, s) for cp, s in lower if cp != 0x3A3]  # capital sigma: context-dependent, handled in code
    html5 = sorted(html.entities.html5.items())
    invalid_charrefs = sorted(html._invalid_charrefs.items())  # type: ignore[attr-defined]
    invalid_codepoints = sorted(html._invalid_codepoints)  # type: ignore[attr-defined]
    c1 = [(cp, fixes.fix_c1_controls(chr(cp))) for cp in range(0x80, 0xA0)]
    ligatures = [(cp, s) for cp, s in chardata.LIGATURES.items()]
    width = [(cp, s) for cp, s in chardata.WIDTH_MAP.items()]
    control = sorted(chardata.CONTROL_CHARS)
    ftfy_entities = sorted(chardata.HTML_ENTITIES.items())
    text = [
        "// Generated by runtimes/cpp/tools/gen_text_tables.py; do not edit.\n",
        f"// Python {sys.version.split()[0]} (Unicode {unicodedata.unidata_version}), regex {regex.__version__}, "
        f"ftfy {ftfy.__version__}.\n",
        emit_ranges("kLetter", ranges(lambda ch: letter.match(ch) is not None)),
        emit_ranges("kNumber", ranges(lambda ch: number.match(ch) is not None)),
        emit_ranges("kOther", ranges(lambda ch: other.match(ch) is not None)),
        emit_ranges("kPySpace", ranges(str.isspace)),
        emit_ranges("kDecimal", ranges(lambda ch: re_digit.match(ch) is not None)),
        emit_map("kLower", lower),
        "const EntityEntry kHtml5[] = {\n" + ",\n".join(f"{{{cstr(k)},{cstr(v)}}}" for k, v in html5) + "};\n",
        "const EntityEntry kFtfyEntities[] = {\n"
        + ",\n".join(f"{{{cstr(k)},{cstr(v)}}}" for k, v in ftfy_entities)
        + "};\n",
        emit_map("kInvalidCharrefs", invalid_charrefs),
        "const uint32_t kInvalidCodepoints[] = {" + ",".join(f"0x{c:X}" for c in invalid_codepoints) + "};\n",
        emit_map("kC1", c1),
        emit_map("kLigatures", ligatures),
        emit_map("kWidth", width),
        "const uint32_t kControlChars[] = {" + ",".join(f"0x{c:X}" for c in control) + "};\n",
        badness_tables(),
    ]
    generated = "".join(text)
    if "--check" in sys.argv[1:]:  # tests/test_cpp_rules.py: the committed tables are what this Python would write

        def body(text: str) -> list[str]:  # the tables, without the header naming the versions used
            return [line for line in text.splitlines() if not line.startswith("//")]

        if body(OUT.read_text()) != body(generated):
            raise SystemExit(f"{OUT} is stale for this Python/ftfy/regex: rerun {Path(__file__).name}")
        return
    OUT.write_text(generated)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
