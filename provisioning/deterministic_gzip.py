"""A gzip encoding whose bytes are a function of the input alone.

Why not ``gzip.compress``: its header's OS byte comes from the zlib build (3 on Linux, 19 on
macOS, python/cpython#112346), and zlib, zlib-ng and ISA-L emit different deflate streams for
the same input and level. The user-data must be the same bytes on every operator's machine,
or ``pulumi up`` from another laptop replaces the host. So the encoder here is fully specified
by this module: RFC 1952 header with every field fixed (no name, mtime 0, OS 255 "unknown"),
one RFC 1951 block with the fixed Huffman codes, LZ77 matches chosen by a deterministic
search (hash chains of 3-byte prefixes, nearest first, one step of lazy matching). Any inflate
decodes it; nothing in it depends on zlib, which is used for nothing here (the CRC-32 is
``binascii.crc32``, a mathematical function).

It compresses less than zlib at level 9 (fixed codes, bounded search), which is fine for a
document that stays far below EC2's 16 KB: the unit suite checks the headroom.
"""

from __future__ import annotations

import binascii
import struct
from bisect import bisect_right

# RFC 1952 header: magic, CM=8 (deflate), FLG=0, MTIME=0, XFL=0, OS=255 (unknown).
GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255])

MIN_MATCH = 3
MAX_MATCH = 258
WINDOW = 32768
MAX_CHAIN = 128  # candidates tried per position: bounds time, fixed so the output is too

# RFC 1951 3.2.5: length codes 257..285 and distance codes 0..29, base and extra bits.
_LENGTH_BASE = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
                99, 115, 131, 163, 195, 227, 258)
_LENGTH_EXTRA = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5,
                 5, 5, 0)
_DIST_BASE = (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
              1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577)
_DIST_EXTRA = (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
               12, 12, 13, 13)
_END_OF_BLOCK = 256


def _reversed(code: int, length: int) -> int:
    """Huffman codes are packed most significant bit first into an LSB-first stream."""
    return int(format(code, f"0{length}b")[::-1], 2)


def _fixed_literal_code(symbol: int) -> tuple[int, int]:
    """RFC 1951 3.2.6: the fixed literal/length code, as (bits to write, bit count)."""
    if symbol < 144:
        code, length = 0x30 + symbol, 8
    elif symbol < 256:
        code, length = 0x190 + symbol - 144, 9
    elif symbol < 280:
        code, length = symbol - 256, 7
    else:
        code, length = 0xC0 + symbol - 280, 8
    return _reversed(code, length), length


_LITERAL_CODES = tuple(_fixed_literal_code(s) for s in range(288))
_DIST_CODES = tuple((_reversed(d, 5), 5) for d in range(30))


class _BitWriter:
    """Accumulates an LSB-first bit stream in one integer."""

    def __init__(self) -> None:
        self._value = 0
        self._count = 0

    def write(self, bits: int, count: int) -> None:
        self._value |= bits << self._count
        self._count += count

    def to_bytes(self) -> bytes:
        return self._value.to_bytes((self._count + 7) // 8, "little")


def _longest_match(data: bytes, pos: int, candidates: list[int]) -> tuple[int, int]:
    """(length, distance) of the longest earlier match at ``pos``, nearest first on ties."""
    limit = min(MAX_MATCH, len(data) - pos)
    best_len, best_dist = 0, 0
    tried = 0
    for start in reversed(candidates):
        if pos - start > WINDOW or tried == MAX_CHAIN:
            break
        tried += 1
        if best_len and data[start + best_len] != data[pos + best_len]:
            continue
        length = 0
        while length < limit and data[start + length] == data[pos + length]:
            length += 1
        if length > best_len:
            best_len, best_dist = length, pos - start
            if length == limit:
                break
    return (best_len, best_dist) if best_len >= MIN_MATCH else (0, 0)


def _tokens(data: bytes) -> list[tuple[int, int]]:
    """LZ77 tokens: (literal byte, 0) or (length, distance)."""
    chains: dict[bytes, list[int]] = {}
    out: list[tuple[int, int]] = []

    def insert(at: int) -> None:
        if at + MIN_MATCH <= len(data):
            chains.setdefault(data[at:at + MIN_MATCH], []).append(at)

    def match_at(at: int) -> tuple[int, int]:
        if at + MIN_MATCH > len(data):
            return 0, 0
        return _longest_match(data, at, chains.get(data[at:at + MIN_MATCH], []))

    pos = 0
    pending = match_at(0)
    while pos < len(data):
        length, dist = pending
        insert(pos)
        following = match_at(pos + 1) if length else (0, 0)
        if length and following[0] <= length:
            out.append((length, dist))
            for skipped in range(pos + 1, pos + length):
                insert(skipped)
            pos += length
            pending = match_at(pos)
        else:
            # No match, or a longer one starts at the next byte (lazy matching).
            out.append((data[pos], 0))
            pos += 1
            pending = following if length else match_at(pos)
    return out


def deflate(data: bytes) -> bytes:
    """One final fixed-Huffman deflate block (RFC 1951) of ``data``."""
    writer = _BitWriter()
    writer.write(1, 1)  # BFINAL
    writer.write(1, 2)  # BTYPE 01: fixed Huffman codes
    for value, dist in _tokens(data):
        if dist == 0:
            writer.write(*_LITERAL_CODES[value])
            continue
        index = bisect_right(_LENGTH_BASE, value) - 1
        writer.write(*_LITERAL_CODES[257 + index])
        writer.write(value - _LENGTH_BASE[index], _LENGTH_EXTRA[index])
        dindex = bisect_right(_DIST_BASE, dist) - 1
        writer.write(*_DIST_CODES[dindex])
        writer.write(dist - _DIST_BASE[dindex], _DIST_EXTRA[dindex])
    writer.write(*_LITERAL_CODES[_END_OF_BLOCK])
    return writer.to_bytes()


def compress(data: bytes) -> bytes:
    """The gzip member (RFC 1952) of ``data``: the same bytes for the same input, anywhere."""
    trailer = struct.pack("<II", binascii.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return GZIP_HEADER + deflate(data) + trailer
