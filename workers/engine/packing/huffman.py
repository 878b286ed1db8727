"""Canonical, length-limited Huffman coding of byte symbols (int8/uint8 weights) with numpy only.

Hand-written because no maintained library does this at array speed from Python: `constriction`
(checked: 0.5.0) has a fast Rust core, but its symbol-code API is one `encode_symbol` /
`decode_symbol` call per symbol (~23 M Python calls for MiniLM), and its trees are neither canonical
nor length-limited; `dahuffman` is pure Python. Encoding here is vectorised over all symbols;
decoding splits each tensor into blocks with a stored bit length each and decodes every block of
every tensor in lockstep through one peek table, so the Python loop runs `block_size` times in all.

A tensor with at most 16 distinct values (cluster indices) can instead be coded two symbols at a
time: each pair of value indices is one symbol of the same 256-value alphabet. An integer-length
code loses up to a bit per coded symbol against the entropy; over pairs that loss is shared by two
weights (all-MiniLM-L6-v2 clustered to 2-3 bits: 3.4% above entropy per symbol).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHABET = 256
# 16 bits keeps the decoder's peek table at 64 K entries per tensor and lets a peek come from
# 3 bytes. Its cost over an unlimited Huffman code is ~0.01% on int8 weights (measured on MiniLM).
MAX_CODE_LENGTH = 16
# One 4-byte bit length per 4096 symbols costs 0.008 bits per weight; smaller blocks buy more
# decoding parallelism (few tensors) at more index overhead.
BLOCK_SIZE = 4096
# Symbols encoded per pass: bounds the encoder's temporary arrays to ~60 MB whatever the tensor.
_ENCODE_CHUNK = 1 << 20
# Tensors with at most this many distinct values may be coded as pairs: 16 * 16 = ALPHABET.
PAIR_VALUES = 16


class HuffmanError(ValueError):
    """Coded data that cannot be decoded (inconsistent code lengths, block index or payload)."""


@dataclass(frozen=True)
class HuffmanCoded:
    """One tensor's code. `code_lengths[s]` is coded symbol s's length in bits (0: absent). A table
    with a single nonzero entry means a constant coded stream: that symbol repeated, with no payload.

    With `pair_values` (uint8[16]) each coded symbol 16 * a + b stands for the two tensor values
    `pair_values[a], pair_values[b]`; an odd tensor's last pair is padded with index 0 and `count`,
    always the tensor's own length, says where to stop. Blocks then count coded pairs."""

    count: int
    code_lengths: np.ndarray  # uint8[256]
    block_bits: np.ndarray  # uint32, one per block of `block_size` coded symbols; empty if constant
    payload: bytes
    block_size: int = BLOCK_SIZE
    max_code_length: int = MAX_CODE_LENGTH
    pair_values: np.ndarray | None = None

    @property
    def coded_count(self) -> int:
        """Coded symbols: the tensor's values, or their pairs."""
        return self.count if self.pair_values is None else -(-self.count // 2)

    @property
    def coded_bits(self) -> int:
        """Everything a decoder needs: payload, the 256-byte length table, the block index and, for
        pairs, the 16-byte value table."""
        table_bytes = 0 if self.pair_values is None else self.pair_values.nbytes
        return 8 * (len(self.payload) + self.code_lengths.nbytes + self.block_bits.nbytes + table_bytes)


def entropy_bits(symbols: np.ndarray) -> float:
    """Zero-order Shannon bound, in bits, for coding `symbols` with their own distribution."""
    counts = np.bincount(symbols.reshape(-1).view(np.uint8), minlength=ALPHABET).astype(np.float64)
    counts = counts[counts > 0]
    total = counts.sum()
    if total == 0:
        return 0.0
    return float((counts * np.log2(total / counts)).sum())


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal length-limited code lengths by package-merge (Larmore and Hirschberg, 1990).

    Equals Huffman's cost whenever the limit does not bind, so there is one path, not a Huffman
    code plus a repair. It costs O(n * max_length) package steps over <= 256 symbols: milliseconds.
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(ALPHABET, dtype=np.uint8)
    present = np.flatnonzero(counts)
    if present.size <= 1:
        lengths[present] = 1  # the constant-tensor marker, see HuffmanCoded
        return lengths
    if 1 << max_length < present.size:
        raise ValueError(f"{present.size} symbols do not fit a code limited to {max_length} bits")
    order = present[np.argsort(counts[present], kind="stable")]
    leaf_weights = counts[order]
    # Each item carries how often every leaf occurs inside it; a leaf's final count is its length.
    leaf_members = np.eye(order.size, dtype=np.int32)
    weights, members = leaf_weights, leaf_members
    for _ in range(max_length - 1):
        pairs = weights.size // 2 * 2
        package_weights = weights[0:pairs:2] + weights[1:pairs:2]
        package_members = members[0:pairs:2] + members[1:pairs:2]
        weights = np.concatenate([leaf_weights, package_weights])
        members = np.concatenate([leaf_members, package_members])
        merged = np.argsort(weights, kind="stable")
        weights, members = weights[merged], members[merged]
    lengths[order] = members[: 2 * order.size - 2].sum(axis=0)
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Codes assigned in (length, symbol) order, so the lengths alone define the code."""
    codes = np.zeros(ALPHABET, dtype=np.uint64)
    code = 0
    previous = 0
    for symbol in np.lexsort((np.arange(ALPHABET), lengths)):
        length = int(lengths[symbol])
        if length == 0:
            continue
        code <<= length - previous
        codes[symbol] = code
        code += 1
        previous = length
    return codes


def _check_lengths(lengths: np.ndarray, max_length: int) -> int:
    """The number of symbols in the code; a code of two or more must be complete (Kraft sum 1),
    so every peek-table entry decodes to something."""
    if lengths.shape != (ALPHABET,) or int(lengths.max(initial=0)) > max_length:
        raise HuffmanError(f"code lengths must be {ALPHABET} values of at most {max_length} bits")
    used = lengths[lengths > 0].astype(np.int64)
    if used.size >= 2 and int((1 << (max_length - used)).sum()) != 1 << max_length:
        raise HuffmanError("code lengths do not form a complete prefix code")
    if used.size == 1 and int(used[0]) != 1:
        raise HuffmanError("a constant tensor's code length must be 1")
    return int(used.size)


def _write_bits(words: np.ndarray, codes: np.ndarray, lengths: np.ndarray, start: int) -> None:
    """ORs each code into 64-bit big-endian words, MSB first, beginning at bit `start`.

    A code of <= 16 bits touches at most two words. Positions only grow, so the pieces for one word
    are contiguous and one `bitwise_or.reduceat` merges them; no per-symbol Python work."""
    ends = np.cumsum(lengths, dtype=np.int64) + start
    starts = ends - lengths
    word = starts >> 6
    spill = (starts & 63) + lengths - 64  # > 0: the bits that run into the next word
    head = np.where(spill > 0, codes >> np.maximum(spill, 0).astype(np.uint64),
                    codes << np.maximum(-spill, 0).astype(np.uint64))
    tail = np.where(spill > 0, codes << (64 - np.clip(spill, 1, 63)).astype(np.uint64), np.uint64(0))
    segment = np.flatnonzero(np.diff(word)) + 1
    segment = np.concatenate([[0], segment])
    targets = word[segment]
    words[targets] |= np.bitwise_or.reduceat(head, segment)
    words[targets + 1] |= np.bitwise_or.reduceat(tail, segment)


def _pair_symbols(flat: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each two consecutive values as one symbol 16 * index(a) + index(b); an odd end pads index 0."""
    index = np.zeros(ALPHABET, dtype=np.uint8)
    index[values] = np.arange(values.size, dtype=np.uint8)
    indices = index[flat]
    if indices.size % 2:
        indices = np.concatenate([indices, np.zeros(1, np.uint8)])
    return indices[0::2] * np.uint8(PAIR_VALUES) + indices[1::2]


def _stored_bits(counts: np.ndarray, lengths: np.ndarray, block_size: int) -> int:
    """What `_encode_stream` will store for a stream with these symbol counts: payload, code table
    and block index, computed from the lengths alone."""
    if np.count_nonzero(lengths) <= 1:
        return 8 * ALPHABET
    payload_bits = int((counts.astype(np.int64) * lengths).sum())
    blocks = -(-int(counts.sum()) // block_size)
    return 8 * ((payload_bits + 7) // 8 + ALPHABET + 4 * blocks)


def _encode_stream(coded: np.ndarray, lengths: np.ndarray, block_size: int) -> tuple[np.ndarray, bytes]:
    """The block index and payload of the uint8 stream `coded` under a code with these lengths."""
    if np.count_nonzero(lengths) <= 1:
        return np.zeros(0, np.uint32), b""
    codes = canonical_codes(lengths)
    symbol_bits = lengths[coded]
    block_bits = np.add.reduceat(symbol_bits, np.arange(0, coded.size, block_size), dtype=np.int64).astype(np.uint32)
    total = int(block_bits.sum(dtype=np.int64))
    words = np.zeros(total // 64 + 2, dtype=np.uint64)
    position = 0
    for begin in range(0, coded.size, _ENCODE_CHUNK):
        chunk = coded[begin : begin + _ENCODE_CHUNK]
        chunk_bits = symbol_bits[begin : begin + _ENCODE_CHUNK].astype(np.int64)
        _write_bits(words, codes[chunk], chunk_bits, position)
        position += int(chunk_bits.sum())
    return block_bits, words.astype(">u8").tobytes()[: (total + 7) // 8]


def encode(
    symbols: np.ndarray,
    max_length: int = MAX_CODE_LENGTH,
    block_size: int = BLOCK_SIZE,
    pairs: bool | None = None,
) -> HuffmanCoded:
    """Codes the bytes of an int8 or uint8 array (any shape, read in C order) with its own table.

    `pairs=None` codes value pairs when the tensor has 2..16 distinct values and that is smaller;
    True forces pairs (a ValueError above 16 values), False forces one symbol per value.
    """
    flat = np.ascontiguousarray(symbols).reshape(-1).view(np.uint8)
    counts = np.bincount(flat, minlength=ALPHABET)
    values = np.flatnonzero(counts).astype(np.uint8)
    if pairs and values.size > PAIR_VALUES:
        raise ValueError(f"{values.size} distinct values cannot be coded as pairs (at most {PAIR_VALUES})")
    lengths = code_lengths(counts, max_length)
    if pairs is not False and (pairs or 2 <= values.size <= PAIR_VALUES):
        paired = _pair_symbols(flat, values)
        pair_counts = np.bincount(paired, minlength=ALPHABET)
        pair_lengths = code_lengths(pair_counts, max_length)
        pair_bits = _stored_bits(pair_counts, pair_lengths, block_size) + 8 * PAIR_VALUES
        if pairs or pair_bits < _stored_bits(counts, lengths, block_size):
            table = np.zeros(PAIR_VALUES, np.uint8)
            table[: values.size] = values
            block_bits, payload = _encode_stream(paired, pair_lengths, block_size)
            return HuffmanCoded(flat.size, pair_lengths, block_bits, payload, block_size, max_length, table)
    block_bits, payload = _encode_stream(flat, lengths, block_size)
    return HuffmanCoded(flat.size, lengths, block_bits, payload, block_size, max_length)


def _decode_table(lengths: np.ndarray, max_length: int) -> np.ndarray:
    """Peek table: entry i = (length << 8) | symbol of the code that prefixes the max_length bits i."""
    codes = canonical_codes(lengths)
    table = np.zeros(1 << max_length, dtype=np.uint16)
    for symbol in np.flatnonzero(lengths):
        shift = max_length - int(lengths[symbol])
        first = int(codes[symbol]) << shift
        table[first : first + (1 << shift)] = (int(lengths[symbol]) << 8) | int(symbol)
    return table


def _decode_streams(items: Sequence[HuffmanCoded]) -> list[np.ndarray]:
    """The coded symbol streams of several tensors; all blocks advance in one lockstep loop."""
    results: list[np.ndarray | None] = [None] * len(items)
    lockstep = []
    for index, item in enumerate(items):
        present = _check_lengths(item.code_lengths, item.max_code_length)
        if item.coded_count == 0:
            results[index] = np.zeros(0, np.uint8)
        elif present == 0:
            raise HuffmanError("a non-empty tensor has an empty code")
        elif present == 1:
            results[index] = np.full(item.coded_count, int(np.flatnonzero(item.code_lengths)[0]), np.uint8)
        else:
            blocks = -(-item.coded_count // item.block_size)
            if item.block_bits.shape != (blocks,):
                raise HuffmanError(f"the block index holds {item.block_bits.size} entries, not {blocks}")
            total = int(item.block_bits.sum(dtype=np.int64))
            if (total + 7) // 8 != len(item.payload):
                raise HuffmanError("the block index does not match the payload length")
            lockstep.append(index)
    if not lockstep:
        return results  # type: ignore[return-value]
    if len({(items[i].block_size, items[i].max_code_length) for i in lockstep}) != 1:
        raise HuffmanError("tensors decoded together must share block size and code length limit")
    block_size, max_length = items[lockstep[0]].block_size, items[lockstep[0]].max_code_length
    if max_length > 17:
        raise HuffmanError("code lengths above 17 bits are not supported by this decoder")

    tables, positions, bases, byte_offset = [], [], [], 0
    for table_index, index in enumerate(lockstep):
        item = items[index]
        tables.append(_decode_table(item.code_lengths, max_length))
        starts = np.concatenate([[0], np.cumsum(item.block_bits[:-1], dtype=np.int64)])
        positions.append(starts + 8 * byte_offset)
        bases.append(np.full(starts.size, table_index << max_length, dtype=np.int64))
        byte_offset += len(item.payload)
    table = np.concatenate(tables)
    position = np.concatenate(positions)
    base = np.concatenate(bases)
    # Short last blocks decode on past their end (the garbage is dropped); the zero padding keeps
    # those reads inside the buffer: at most max_length bits per step.
    padding = block_size * max_length // 8 + 4
    buffer = np.frombuffer(b"".join(items[i].payload for i in lockstep) + bytes(padding), dtype=np.uint8)
    buffer = buffer.astype(np.uint32)
    out = np.empty((block_size, position.size), dtype=np.uint8)
    peek_shift = 24 - max_length
    peek_mask = np.uint32((1 << max_length) - 1)
    for step in range(block_size):
        byte = position >> 3
        window = (buffer[byte] << 16) | (buffer[byte + 1] << 8) | buffer[byte + 2]
        peek = (window >> (peek_shift - (position & 7)).astype(np.uint32)) & peek_mask
        entry = table[base + peek]
        out[step] = (entry & 0xFF).astype(np.uint8)
        position += entry >> 8
    # A full block must end exactly where the index says; anything else is a corrupt payload.
    full = np.concatenate([items[i].block_bits.astype(np.int64) for i in lockstep])
    lengths_decoded = position - np.concatenate(positions)
    is_full = np.concatenate([np.arange(items[i].block_bits.size) * items[i].block_size + items[i].block_size
                              <= items[i].coded_count for i in lockstep])
    if not np.array_equal(lengths_decoded[is_full], full[is_full]):
        raise HuffmanError("a coded block does not end where the block index says: the payload is corrupt")
    blocks = out.T
    first = 0
    for index in lockstep:
        item = items[index]
        count = item.block_bits.size
        results[index] = blocks[first : first + count].reshape(-1)[: item.coded_count].copy()
        first += count
    return results  # type: ignore[return-value]


def _unpair(coded: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """The `count` tensor values of a stream of coded pairs (see HuffmanCoded)."""
    if values.shape != (PAIR_VALUES,) or values.dtype != np.uint8:
        raise HuffmanError(f"a pair code needs a table of {PAIR_VALUES} byte values")
    out = np.empty(2 * coded.size, np.uint8)
    out[0::2] = values[coded // PAIR_VALUES]
    out[1::2] = values[coded % PAIR_VALUES]
    return out[:count]


def decode_many(items: Sequence[HuffmanCoded]) -> list[np.ndarray]:
    """Decodes several tensors at once (uint8 arrays)."""
    streams = _decode_streams(items)
    return [stream if item.pair_values is None else _unpair(stream, item.pair_values, item.count)
            for item, stream in zip(items, streams, strict=True)]


def decode(item: HuffmanCoded) -> np.ndarray:
    return decode_many([item])[0]
