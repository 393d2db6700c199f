"""A gzip encoding whose bytes are a function of the input alone.

Why not ``gzip.compress``: its header's OS byte comes from the zlib build (3 on Linux, 19 on
macOS, python/cpython#112346), and zlib, zlib-ng and ISA-L emit different deflate streams for
the same input and level. The user-data must be the same bytes on every operator's machine,
or ``pulumi up`` from another laptop replaces the host. So the encoder here is fully specified
by this module: RFC 1952 header with every field fixed (no name, mtime 0, OS 255 "unknown"),
one RFC 1951 block, LZ77 matches chosen by a deterministic search (hash chains of 3-byte
prefixes, nearest first, one step of lazy matching), Huffman codes built from the block's own
symbol counts (ties broken by symbol order, lengths limited by halving the counts). Any
inflate decodes it; nothing in it depends on zlib, which is used for nothing here (the CRC-32
is ``binascii.crc32``, a mathematical function).

It compresses a little less than zlib at level 9 (one block, bounded search): the unit suite
checks the headroom under EC2's 16 KB.
"""

from __future__ import annotations

import binascii
import heapq
import struct
from bisect import bisect_right
from collections.abc import Sequence

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
# RFC 1951 3.2.7: the order in which the code-length code's lengths are sent.
_CODE_LENGTH_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)


def _reversed(code: int, length: int) -> int:
    """Huffman codes are packed most significant bit first into an LSB-first stream."""
    return int(format(code, f"0{length}b")[::-1], 2)


def code_lengths(freqs: Sequence[int], limit: int) -> list[int]:
    """Huffman code lengths for ``freqs`` (0: unused), none longer than ``limit``.

    Ties are broken by symbol order, so the lengths depend on the frequencies alone. A tree
    deeper than ``limit`` is rebuilt from halved frequencies. At least two symbols get a code,
    so every code is complete, which any inflate accepts."""
    weights = list(freqs)
    for symbol in range(len(weights)):
        if sum(1 for w in weights if w) >= 2:
            break
        weights[symbol] = weights[symbol] or 1
    while True:
        heap: list[tuple[int, int, tuple[int, ...]]] = [
            (w, symbol, (symbol,)) for symbol, w in enumerate(weights) if w]
        heapq.heapify(heap)
        lengths = [0] * len(weights)
        order = len(weights)
        while len(heap) > 1:
            w1, _, first = heapq.heappop(heap)
            w2, _, second = heapq.heappop(heap)
            for symbol in first + second:
                lengths[symbol] += 1
            heapq.heappush(heap, (w1 + w2, order, first + second))
            order += 1
        if max(lengths) <= limit:
            return lengths
        weights = [(w + 1) // 2 for w in weights]


def canonical_codes(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """RFC 1951 3.2.2: the canonical code of each symbol, as (bits to write, bit count)."""
    counts = [0] * (max(lengths) + 1)
    for length in lengths:
        counts[length] += 1
    counts[0] = 0
    next_code = [0] * (len(counts) + 1)
    code = 0
    for bits in range(1, len(counts)):
        code = (code + counts[bits - 1]) << 1
        next_code[bits] = code
    codes = []
    for length in lengths:
        if length:
            codes.append((_reversed(next_code[length], length), length))
            next_code[length] += 1
        else:
            codes.append((0, 0))
    return codes


def _run_lengths(lengths: Sequence[int]) -> list[tuple[int, int, int]]:
    """Code lengths as code-length symbols (RFC 1951 3.2.7): (symbol, extra value, extra bits);
    16 repeats the previous length 3-6 times, 17 and 18 repeat zero 3-10 and 11-138 times."""
    out: list[tuple[int, int, int]] = []
    i = 0
    while i < len(lengths):
        length, run = lengths[i], 1
        while i + run < len(lengths) and lengths[i + run] == length:
            run += 1
        if length == 0 and run >= 3:
            run = min(run, 138)
            out.append((17, run - 3, 3) if run <= 10 else (18, run - 11, 7))
            i += run
        elif length and run >= 4:
            repeat = min(run - 1, 6)
            out += [(length, 0, 0), (16, repeat - 3, 2)]
            i += 1 + repeat
        else:
            out.append((length, 0, 0))
            i += 1
    return out


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
    """One final deflate block (RFC 1951) of ``data`` with Huffman codes built for it."""
    symbols: list[tuple[int, int, int, int, int, int]] = []  # literal/length and distance
    for value, dist in _tokens(data):
        if dist == 0:
            symbols.append((value, 0, 0, -1, 0, 0))
            continue
        index = bisect_right(_LENGTH_BASE, value) - 1
        dindex = bisect_right(_DIST_BASE, dist) - 1
        symbols.append((257 + index, value - _LENGTH_BASE[index], _LENGTH_EXTRA[index],
                        dindex, dist - _DIST_BASE[dindex], _DIST_EXTRA[dindex]))
    literal_freqs, dist_freqs = [0] * 286, [0] * 30
    for literal, _, _, dsym, _, _ in symbols:
        literal_freqs[literal] += 1
        if dsym >= 0:
            dist_freqs[dsym] += 1
    literal_freqs[_END_OF_BLOCK] += 1
    literal_lengths = code_lengths(literal_freqs, 15)
    dist_lengths = code_lengths(dist_freqs, 15)
    hlit = max(i for i, n in enumerate(literal_lengths) if n) + 1
    hdist = max(i for i, n in enumerate(dist_lengths) if n) + 1
    runs = _run_lengths(literal_lengths[:hlit] + dist_lengths[:hdist])
    run_freqs = [0] * 19
    for symbol, _, _ in runs:
        run_freqs[symbol] += 1
    run_lengths = code_lengths(run_freqs, 7)
    hclen = max(4, max(i for i, s in enumerate(_CODE_LENGTH_ORDER) if run_lengths[s]) + 1)

    writer = _BitWriter()
    writer.write(1, 1)  # BFINAL
    writer.write(2, 2)  # BTYPE 10: Huffman codes in the block
    writer.write(hlit - 257, 5)
    writer.write(hdist - 1, 5)
    writer.write(hclen - 4, 4)
    for symbol in _CODE_LENGTH_ORDER[:hclen]:
        writer.write(run_lengths[symbol], 3)
    run_codes = canonical_codes(run_lengths)
    for symbol, extra, bits in runs:
        writer.write(*run_codes[symbol])
        writer.write(extra, bits)
    literal_codes, dist_codes = canonical_codes(literal_lengths), canonical_codes(dist_lengths)
    for literal, extra, bits, dsym, dextra, dbits in symbols:
        writer.write(*literal_codes[literal])
        if dsym >= 0:
            writer.write(extra, bits)
            writer.write(*dist_codes[dsym])
            writer.write(dextra, dbits)
    writer.write(*literal_codes[_END_OF_BLOCK])
    return writer.to_bytes()


def compress(data: bytes) -> bytes:
    """The gzip member (RFC 1952) of ``data``: the same bytes for the same input, anywhere."""
    trailer = struct.pack("<II", binascii.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return GZIP_HEADER + deflate(data) + trailer
