"""CLIP's byte-level BPE tokenizer without torch: the same token ids as open_clip's ``tokenize`` (tested on every
bundled class name, prompt templates, unicode and over-long strings).

Owns: ``ClipTokenizer`` and ``tokenize``. The vocabulary is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), bundled
as package data. Text is cleaned as open_clip's default ``lower`` mode does: ftfy, HTML unescaped twice, whitespace
collapsed, lower-cased. Each text becomes ``<start_of_text> ... <end_of_text>``, zero-padded to the context length;
longer texts are cut to the context length with ``<end_of_text>`` kept as the last token.
Imports: numpy, ftfy, regex, the standard library (torch-free).
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np

SOT, EOT = "<start_of_text>", "<end_of_text>"
CONTEXT_LENGTH = 77
MERGES = 49152 - 256 - 2  # merges used by the CLIP vocabulary


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """Every byte to a printable unicode character (printable Latin-1 bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class ClipTokenizer:
    """Lower-casing CLIP BPE tokenizer; ``encode`` gives BPE ids, calling it gives padded ``int64 [N, L]``."""

    def __init__(self, context_length: int = CONTEXT_LENGTH) -> None:
        import regex

        raw = resources.files("vtc_deploy").joinpath("data", "bpe_simple_vocab_16e6.txt.gz").read_bytes()
        lines = gzip.decompress(raw).decode("utf-8").split("\n")[1 : MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        symbols = list(_byte_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.sot, self.eot = self.ids[SOT], self.ids[EOT]
        self.context_length = context_length
        self._bytes = _byte_to_unicode()
        self._cache: dict[str, list[str]] = {SOT: [SOT], EOT: [EOT]}
        self._pattern = regex.compile(
            rf"{SOT}|{EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE
        )

    @staticmethod
    def clean(text: str) -> str:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def _bpe(self, token: str) -> list[str]:
        """Merge the symbols of one pre-token by merge rank until no known pair is left."""
        if token in self._cache:
            return self._cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, len(self.ranks)))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` (cleaned), without the start/end tokens."""
        ids: list[int] = []
        for piece in self._pattern.findall(self.clean(text)):
            symbols = "".join(self._bytes[b] for b in piece.encode("utf-8"))
            ids.extend(self.ids[s] for s in self._bpe(symbols))
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """``int64 [N, context_length]``: start, ids, end, zero padding; cut to length keeping the end token."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot, *self.encode(text), self.eot]
            if len(tokens) > length:
                tokens = tokens[:length]
                tokens[-1] = self.eot
            out[row, : len(tokens)] = tokens
        return out


@lru_cache(maxsize=4)
def get_tokenizer(context_length: int = CONTEXT_LENGTH) -> ClipTokenizer:
    return ClipTokenizer(context_length)


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    return get_tokenizer(context_length)(texts)
