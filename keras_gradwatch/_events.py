"""Event files -> the scalar series the report reads; light and bounded.

The report must run anywhere a log directory can be copied to, on logs it
did not write. So this reader imports neither TensorFlow nor TensorBoard's
event accumulator (which imports TensorFlow when it is installed, and
allocates whatever shape a tensor declares); it reads the TFRecord framing
itself and parses records with TensorBoard's generated protos only.

Format
    An event file is a sequence of records: ``u64`` length, ``u32`` masked
    CRC-32C of the length bytes, the data (one serialized ``Event``), ``u32``
    masked CRC-32C of the data, all little-endian. Both CRCs are checked.

Bounds
    * Only regular files whose name contains ``tfevents`` are opened (a FIFO
      or a device named like one is skipped and reported, never opened), with
      ``O_NONBLOCK`` so nothing swapped in after the check can block.
    * A file is read in chunks of at most 4 MiB; a record larger than
      `MAX_RECORD` (16 KiB; a scalar record is about 200 bytes) is never read:
      its first bytes say what it is, and if it is one of the wanted tags it
      is skipped and counted as oversized.
    * Of the wanted tags, only scalars and short texts are decoded: a
      tensor of rank 0 (or all dimensions 1) and a numeric dtype whose
      content holds exactly one element, or a string tensor of that shape
      holding one valid UTF-8 string of at most `MAX_TEXT` bytes (only for
      the ``activation/<layer>`` tags; they go to `EventFile.texts` and
      `Run.texts`). Anything else (another shape, dtype or content length)
      is skipped and counted, never allocated. Other tags are not decoded.
    * The directory walk is iterative (no recursion limit) and visits each
      directory once by ``(st_dev, st_ino)``, so symlink loops end; it has no
      depth limit.
    * At most `MAX_FILE_VALUES` (1,000,000) wanted values are read from one
      file; past that the file's note says the rest was not read. (The
      report also leaves out a run whose epochs times weights exceed
      ``keras_gradwatch._report.MAX_VALUES``.)
    * A length whose CRC fails loses the framing; reading goes on at the next
      offset where a record's length and data CRCs both hold.

Sessions
    Every event file of a run directory is one session (one writer: one
    `fit`, one process, one callback). When sessions hold values for the
    same ``(tag, step)`` (a run written again into the same directory,
    several processes, two callbacks on one run), the newest session wins:
    sessions are taken newest first (by the wall time of their first event,
    then by file name) and one that shares a ``(tag, step)`` with a session
    already taken is left out whole, so a run is never spliced from two
    trainings. Sessions with disjoint steps (a `fit` continued with
    ``initial_epoch``) are joined. Every left-out session is named in a note.

    Each session also carries what tells which training wrote it (used by
    the report to join sibling runs): the span of the wall times of its
    summary events (`EventFile.earliest`, `EventFile.latest`; a time that
    is not a finite positive number is not counted) and, from TensorFlow's file name
    ``events.out.tfevents.<time>.<host>.<pid>.<n>.v2``, its process
    (`process`).

Every problem (corrupt, truncated, oversized or invalid records, skipped
files, unreadable directories, left-out sessions) becomes a note: one line
of plain text for the user.
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

from keras_gradwatch import tags

MAX_RECORD = 16 << 10
"""Largest record (bytes of data) that is read and decoded."""
MAX_TEXT = 64
"""Longest text value decoded, in bytes of UTF-8."""
MAX_FILE_VALUES = 1_000_000
"""Wanted values read from one file, at most: memory (about 130 bytes a
value) and time stay bounded on a crafted file. A run of 600 weights logs
3,000 values per epoch."""
_CHUNK = 4 << 20
_PEEK = 512
_LENGTH = struct.Struct("<Q")
_CUT = "its last record is cut short (a file being written, or cut by a crash)"

Values = dict[str, dict[int, float]]
"""Tag -> step -> value."""
Texts = dict[str, dict[int, str]]
"""Tag -> step -> text."""
_STRING = 7  # DT_STRING
_TEXT_PREFIX = f"{tags.ACTIVATION}/"
"""Wanted tags read as text; every other wanted tag must be a scalar."""

# TensorFlow's DataType enum -> (layout of one element in tensor_content,
# TensorProto field that holds one value otherwise).
_DTYPES: dict[int, tuple[struct.Struct, str]] = {
    1: (struct.Struct("<f"), "float_val"),
    2: (struct.Struct("<d"), "double_val"),
    3: (struct.Struct("<i"), "int_val"),
    4: (struct.Struct("<B"), "int_val"),
    5: (struct.Struct("<h"), "int_val"),
    6: (struct.Struct("<b"), "int_val"),
    9: (struct.Struct("<q"), "int64_val"),
    17: (struct.Struct("<H"), "int_val"),
    19: (struct.Struct("<e"), "half_val"),
    22: (struct.Struct("<I"), "uint32_val"),
    23: (struct.Struct("<Q"), "uint64_val"),
}
_HALF = struct.Struct("<e")
_HALF_BITS = struct.Struct("<H")

# Event fields (event.proto) that never hold a summary.
_NOT_SUMMARY = {3, 4, 6, 7, 8, 9, 10}


def _crc_table() -> np.ndarray:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) byte table."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
    return table.astype(np.uint32)


_TABLE = _crc_table()


SERIAL_FROM = 256
"""Bytes, in multiples of the longest range, from which `masked_crc32c`
goes one byte per step: where both took about as long on 2 cores
(`benchmarks/event_writing.py` times the writer's use)."""


def masked_crc32c(
    buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """TFRecord's masked CRC-32C of many byte ranges of `buffer` at once.

    CRC-32C has no fast implementation in the standard library; a Python
    loop over bytes runs at a few MB/s. Here every range is cut into chunks
    of C bytes (C about the square root of the longest range), the CRC
    register of every chunk of every range advances one byte per NumPy step
    (C steps), and each range then folds its chunks' registers together,
    one chunk per step: the register after A then B is that after A moved
    through len(B) zero bytes, XOR that of B from zero, and moving through
    C zero bytes is a linear map of the register, four table lookups
    (`_zeros`). The start value 0xFFFFFFFF is the same as the first four
    bytes XORed with 0xFF and a start of 0. Ranges shorter than 4 bytes, and
    work with as many bytes as `SERIAL_FROM` of the longest ranges or more
    (there the serial loop's steps are full and its per-byte cost lower),
    go one byte per step (`_serial_crc32c`).

    Args:
        buffer: ``uint8`` array.
        starts: Offset of each range in `buffer`.
        lengths: Length of each range.

    Returns:
        The masked CRC of each range, ``uint32``, in the order given.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    crc = np.zeros(lengths.size, dtype=np.uint32)
    short = lengths < 4
    if short.any():
        crc[short] = _serial_crc32c(buffer, starts[short], lengths[short])
    long = ~short
    if long.any():
        # Both are exact; which is faster depends on the shape of the work.
        size = lengths[long]
        chunked = size.sum() < SERIAL_FROM * size.max()
        crc[long] = (_chunked_crc32c if chunked else _serial_crc32c)(
            buffer, starts[long], size
        )
    return ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)


def _serial_crc32c(
    buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Unmasked CRC-32C of each range, every range one byte per NumPy step
    (longest first, so the ranges still running are a prefix)."""
    order = np.argsort(-lengths, kind="stable")
    begin, size = starts[order], lengths[order]
    crc = np.full(size.size, 0xFFFFFFFF, dtype=np.uint32)
    longest = int(size[0]) if size.size else 0
    # running[p]: how many ranges are longer than p.
    running = np.searchsorted(-size, -np.arange(longest), side="left")
    for p in range(longest):
        k = running[p]
        state = crc[:k]
        byte = buffer[begin[:k] + p]
        crc[:k] = _TABLE[(state ^ byte) & 0xFF] ^ (state >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    out = np.empty_like(crc)
    out[order] = crc
    return out


def _zeros(chunk: int) -> np.ndarray:
    """``[4, 256]`` tables: the register r after `chunk` zero bytes is the
    XOR of ``table[k][(r >> 8k) & 0xFF]`` over k (the map is linear)."""
    state = np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4))[:, None]
    state = state.astype(np.uint32)
    for _ in range(chunk):
        state = _TABLE[state & 0xFF] ^ (state >> 8)
    return state


def _chunked_crc32c(
    buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Unmasked CRC-32C of ranges of at least 4 bytes (see `masked_crc32c`)."""
    chunk = max(8, int(np.ceil(np.sqrt(lengths.max()))))
    chunks = -(-lengths // chunk)  # per range
    padded = chunks * chunk
    # Each range right-aligned in its chunks: leading zeros leave a register
    # of 0 at 0. Row r holds `chunk` bytes from `begin[r]` on, zeros before
    # its range's start.
    owner = np.repeat(np.arange(lengths.size), chunks)
    first = np.cumsum(chunks) - chunks
    index = np.arange(owner.size) - first[owner]
    begin = starts[owner] + index * chunk - (padded - lengths)[owner]
    at = begin[:, None] + np.arange(chunk)
    inside = at >= starts[owner][:, None]
    rows = np.where(inside, buffer[np.maximum(at, 0)], np.uint8(0))
    # The start value: the range's first four bytes XOR 0xFF.
    head = at - starts[owner][:, None]
    rows ^= np.where((head >= 0) & (head < 4), np.uint8(0xFF), np.uint8(0))
    state = np.zeros(rows.shape[0], dtype=np.uint32)
    for p in range(chunk):
        state = _TABLE[(state ^ rows[:, p]) & 0xFF] ^ (state >> 8)
    # Fold each range's chunks, right-aligned in a [ranges, most chunks] grid
    # (the missing leading chunks are zeros, which folding keeps at 0).
    most = int(chunks.max())
    grid = np.zeros((lengths.size, most), dtype=np.uint32)
    grid[owner, most - chunks[owner] + index] = state
    table = _zeros(chunk)
    crc = np.zeros(lengths.size, dtype=np.uint32)
    for j in range(most):
        crc = (
            table[0][crc & 0xFF]
            ^ table[1][(crc >> 8) & 0xFF]
            ^ table[2][(crc >> 16) & 0xFF]
            ^ table[3][crc >> 24]
            ^ grid[:, j]
        )
    return crc ^ np.uint32(0xFFFFFFFF)


@dataclass
class EventFile:
    """What one event file gave: wanted scalars and what went wrong."""

    path: str
    start: float = math.nan
    """Wall time of the first event (the session's start); NaN if none."""
    earliest: float = math.inf
    latest: float = -math.inf
    """Smallest and largest wall time of its events, of those that are finite
    and positive; ``inf, -inf`` if none is (see `timed`)."""
    values: Values = field(default_factory=dict)
    texts: Texts = field(default_factory=dict)
    """The wanted text values; not part of `keys`, so the sessions rule is
    decided by the scalars."""
    problems: Counter[str] = field(default_factory=Counter)
    """Kind of problem -> number of records it concerns."""
    stopped: str | None = None
    """Why reading ended before the end of the file, if it did."""
    count: int = 0
    """Wanted values decoded (repeats of a tag and step included)."""
    damaged: list[tuple[int, int]] = field(default_factory=list)
    """``(offset, bytes)`` of each damaged stretch skipped to resynchronize."""

    def keys(self) -> set[tuple[str, int]]:
        return {(tag, step) for tag, steps in self.values.items() for step in steps}

    def timed(self) -> bool:
        """Whether its events carry wall times (`earliest`, `latest`)."""
        return self.earliest <= self.latest


_TF_NAME = re.compile(r"\.out\.tfevents\.\d+\.(.+)\.(\d+)\.\d+\.v2$")


def process(path: str) -> tuple[str, str] | None:
    """``(host, pid)`` of the process that wrote the event file at `path`,
    from TensorFlow 2's file name; None for any other name."""
    match = _TF_NAME.search(os.path.basename(path))
    return None if match is None else (match[1], match[2])


def open_regular(path: str) -> int:
    """Opens `path` for reading if it is a regular file; returns the fd.

    Raises:
        OSError: it cannot be opened, or is not a regular file.
    """
    # O_NONBLOCK: a FIFO put in place after any check must not block open().
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(path: str, wanted: Callable[[str], bool]) -> EventFile:
    """Reads the scalars of the `wanted` tags from one event file.

    A record whose data CRC fails is skipped. A length whose CRC fails
    loses the framing: reading goes on at the next offset where a record's
    length and data CRCs both hold (a false match has odds of 2**-64 per
    byte), and the bytes in between are counted as damaged. A last record
    cut short (a file still being written, or cut by a crash) ends the
    file. Each is counted in `problems`, `damaged` or `stopped`.
    """
    result = EventFile(path)
    try:
        fd = open_regular(path)
    except OSError as error:
        result.stopped = f"not read ({_reason(error)})"
        return result
    try:
        size = os.fstat(fd).st_size
        position = 0
        while position < size:
            buffer = os.pread(fd, min(_CHUNK, size - position), position)
            if not buffer:
                break
            used, state = _read_chunk(fd, buffer, position, size, wanted, result)
            position += used
            if state == "damaged":
                found = _resync(fd, position + 1, size)
                if found is None:
                    result.stopped = (
                        f"damaged record length at byte {position}: the "
                        f"{size - position} bytes from there on are unreadable"
                    )
                    break
                result.damaged.append((position, found - position))
                position = found
            elif state == "stop":
                break
    except OSError as error:
        result.stopped = f"read stopped ({_reason(error)})"
    finally:
        os.close(fd)
    return result


def _read_chunk(
    fd: int,
    buffer: bytes,
    position: int,
    size: int,
    wanted: Callable[[str], bool],
    result: EventFile,
) -> tuple[int, str | None]:
    """Reads the whole records in `buffer` (the file from `position`).

    Returns:
        The bytes consumed, and None to go on, ``"stop"`` when the file ends
        here, or ``"damaged"`` when the record there has a damaged length.
    """
    heads: list[int] = []
    lengths: list[int] = []
    large = False
    offset = 0
    while offset + 12 <= len(buffer):
        (length,) = _LENGTH.unpack_from(buffer, offset)
        if length > MAX_RECORD:
            heads.append(offset)
            lengths.append(length)
            large = True
            break
        if offset + 16 + length > len(buffer):
            break
        heads.append(offset)
        lengths.append(length)
        offset += 16 + length
    data = np.frombuffer(buffer, dtype=np.uint8)
    starts = np.array(heads, dtype=np.int64)
    stored_header = data[starts[:, None] + np.arange(8, 12)].copy().view("<u4")
    header_ok = masked_crc32c(data, starts, np.full(starts.size, 8)) == (
        stored_header.reshape(-1)
    )
    bad = np.flatnonzero(~header_ok)
    damaged_at = None
    if bad.size:
        # Heads after a bad length were found with that length: none counts.
        first = int(bad[0])
        damaged_at = heads[first]
        heads, lengths, large = heads[:first], lengths[:first], False
    small = len(heads) - (1 if large else 0)
    if not _decode(data, heads[:small], lengths[:small], wanted, result):
        return 0, "stop"
    if damaged_at is not None:
        return damaged_at, "damaged"
    if large:
        start = position + heads[-1]
        end = start + 16 + lengths[-1]
        if end > size:
            result.stopped = _CUT
            return 0, "stop"
        peek = os.pread(fd, min(_PEEK, lengths[-1]), start + 12)
        if _holds_wanted(peek, wanted) is not False:
            result.problems[
                f"record(s) over {MAX_RECORD} bytes skipped unread (too large "
                "for a scalar)"
            ] += 1
        return end - position, None
    if not heads:
        # Short of a whole record: the file ends inside one.
        result.stopped = _CUT
        return 0, "stop"
    return offset, None


_RESYNC_WINDOW = 1 << 20


def _resync(fd: int, start: int, size: int) -> int | None:
    """The first offset from `start` where a whole record begins whose length
    CRC holds and, for a record small enough to be read, whose data CRC
    holds too; None if there is none before the end of the file."""
    position = start
    while position + 16 <= size:
        window = os.pread(fd, min(_RESYNC_WINDOW, size - position), position)
        data = np.frombuffer(window, dtype=np.uint8)
        count = data.size - 11  # offsets with a whole header in the window
        if count <= 0:
            return None
        # The masked CRC of the 8 bytes at every offset at once.
        crc = np.full(count, 0xFFFFFFFF, dtype=np.uint32)
        for p in range(8):
            crc = _TABLE[(crc ^ data[p : p + count]) & 0xFF] ^ (crc >> 8)
        crc ^= np.uint32(0xFFFFFFFF)
        masked = ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)
        stored = sum(
            data[8 + k : 8 + k + count].astype(np.uint32) << np.uint32(8 * k)
            for k in range(4)
        )
        for candidate in np.flatnonzero(masked == stored).tolist():
            at = position + candidate
            (length,) = _LENGTH.unpack_from(window, candidate)
            if at + 16 + length > size:
                continue
            if length > MAX_RECORD:
                return at
            record = np.frombuffer(os.pread(fd, 16 + length, at), dtype=np.uint8)
            checked = masked_crc32c(record, np.array([12]), np.array([length]))
            if int(checked[0]) == int(record[12 + length :].view("<u4")[0]):
                return at
        position += count
    return None


def _decode(
    data: np.ndarray,
    heads: list[int],
    lengths: list[int],
    wanted: Callable[[str], bool],
    result: EventFile,
) -> bool:
    """Decodes the records at `heads`; False once the file holds more than
    `MAX_FILE_VALUES` wanted values (the rest of it is not read)."""
    if not heads:
        return True
    starts = np.array(heads, dtype=np.int64) + 12
    size = np.array(lengths, dtype=np.int64)
    stored = data[(starts + size)[:, None] + np.arange(4)].copy().view("<u4")
    ok = masked_crc32c(data, starts, size) == stored.reshape(-1)
    result.problems["corrupt record(s) skipped (checksum)"] += int((~ok).sum())
    raw = data.data
    parse = event_pb2.Event.FromString
    chosen: dict[str, bool] = {}  # tag -> wanted(tag); tags repeat every step
    values = result.values
    for start, length, good in zip(starts.tolist(), lengths, ok.tolist(), strict=True):
        if not good:
            continue
        try:
            event = parse(raw[start : start + length])
        except DecodeError:
            result.problems["record(s) that are not events skipped"] += 1
            continue
        wall = event.wall_time
        if result.start != result.start:  # NaN: this is the first event
            result.start = wall
        if not event.HasField("summary"):
            continue
        if 0.0 < wall < math.inf:
            if wall < result.earliest:
                result.earliest = wall
            if wall > result.latest:
                result.latest = wall
        for value in event.summary.value:
            tag = value.tag
            take = chosen.get(tag)
            if take is None:
                take = chosen[tag] = wanted(tag)
            if not take:
                continue
            if (
                tag.startswith(_TEXT_PREFIX)
                and value.WhichOneof("value") == "tensor"
                and value.tensor.dtype == _STRING
            ):
                text = _text(value.tensor)
                if text is None:
                    result.problems[
                        f"text value(s) that are not one UTF-8 string of at "
                        f"most {MAX_TEXT} bytes skipped"
                    ] += 1
                    continue
                result.texts.setdefault(tag, {})[event.step] = text
                if _full(result):
                    return False
                continue
            number = _scalar(value)
            if number is None:
                result.problems[
                    "value(s) that are not numeric scalars skipped (shape, "
                    "dtype or content)"
                ] += 1
                continue
            steps = values.get(tag)
            if steps is None:
                steps = values[tag] = {}
            steps[event.step] = number
            if _full(result):
                return False
    return True


def _full(result: EventFile) -> bool:
    """Counts one more value read; True (and says why) when the file's
    budget of `MAX_FILE_VALUES` is spent."""
    result.count += 1
    if result.count < MAX_FILE_VALUES:
        return False
    result.stopped = (
        f"stopped after {MAX_FILE_VALUES:,} values, more than any "
        "real run logs in one file; the rest is not read"
    )
    return True


def _scalar(value: summary_pb2.Summary.Value) -> float | None:
    """The value of a scalar summary, or None if it is not a valid scalar."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":  # TF1 and tensorboardX writers
        return float(value.simple_value)
    if kind != "tensor":
        return None
    tensor = value.tensor
    known = _DTYPES.get(tensor.dtype)
    if known is None:
        return None
    shape = tensor.tensor_shape
    if shape.unknown_rank or (shape.dim and any(d.size != 1 for d in shape.dim)):
        return None
    layout, name = known
    content = tensor.tensor_content
    if content:
        if len(content) != layout.size:
            return None
        return float(layout.unpack(content)[0])
    listed = getattr(tensor, name)
    if len(listed) != 1:
        return None
    if name == "half_val":  # the float16's bits, in an int
        return float(_HALF.unpack(_HALF_BITS.pack(listed[0] & 0xFFFF))[0])
    return float(listed[0])


def _text(tensor: tensor_pb2.TensorProto) -> str | None:
    """The string of a rank-0 (or all dimensions 1) string tensor holding
    one valid UTF-8 string of at most `MAX_TEXT` bytes, else None."""
    shape = tensor.tensor_shape
    if shape.unknown_rank or (shape.dim and any(d.size != 1 for d in shape.dim)):
        return None
    if tensor.tensor_content or len(tensor.string_val) != 1:
        return None
    raw = tensor.string_val[0]
    if len(raw) > MAX_TEXT:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _holds_wanted(peek: bytes, wanted: Callable[[str], bool]) -> bool | None:
    """Whether a large record, of which `peek` is the start, is a summary of a
    wanted tag: True, False, or None when its first bytes do not say."""
    offset = 0
    try:
        while offset < len(peek):
            key, offset = _varint(peek, offset)
            number, wire = key >> 3, key & 7
            if wire == 1:
                offset += 8
            elif wire == 0:
                _, offset = _varint(peek, offset)
            elif wire == 2 and number in _NOT_SUMMARY:
                return False
            elif wire == 2 and number == 5:
                _, offset = _varint(peek, offset)  # the summary's length
                # Summary.value (1) -> Value.tag (1) come first when present.
                for _ in range(2):
                    key, offset = _varint(peek, offset)
                    if key != (1 << 3 | 2):
                        return None
                    length, offset = _varint(peek, offset)
                tag = peek[offset : offset + length]
                if len(tag) < length:
                    return None
                return wanted(tag.decode("utf-8", "replace"))
            else:
                return None
    except IndexError:
        return None
    return None


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80 or shift > 63:
            return value, offset
        shift += 7


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


@dataclass
class Listing:
    """Directories holding event files under a root, and what was skipped."""

    runs: dict[str, list[str]] = field(default_factory=dict)
    """Directory -> its event files, both sorted."""
    notes: list[str] = field(default_factory=list)


def event_files(directory: str, notes: list[str]) -> tuple[list[str], list[str]]:
    """The event files (regular ones) and sub-directories of `directory`.

    Entries named like event files that are not regular files are skipped
    with a note; an unlistable directory gives a note and nothing else.
    """
    files, subdirs = [], []
    try:
        with os.scandir(directory) as entries:
            listed = sorted(entries, key=lambda e: e.name)
    except OSError as error:
        notes.append(f"{directory}: not searched ({_reason(error)})")
        return [], []
    for entry in listed:
        try:
            if entry.is_dir():
                subdirs.append(entry.path)
            elif "tfevents" in entry.name:
                if stat.S_ISREG(os.stat(entry.path).st_mode):
                    files.append(entry.path)
                else:
                    notes.append(f"{entry.path}: skipped, not a regular file")
        except OSError as error:
            notes.append(f"{entry.path}: skipped ({_reason(error)})")
    return files, subdirs


def walk(root: str) -> Listing:
    """Every directory under `root` (itself included) that holds event files.

    Iterative, depth first in name order; symlinked directories are followed
    once each (by device and inode), so a link loop ends.
    """
    listing = Listing()
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            info = os.stat(directory)
        except OSError as error:
            listing.notes.append(f"{directory}: not searched ({_reason(error)})")
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        files, subdirs = event_files(directory, listing.notes)
        if files:
            listing.runs[directory] = files
        stack.extend(reversed(subdirs))
    listing.runs = dict(sorted(listing.runs.items()))
    return listing


@dataclass
class Run:
    """The joined sessions of one run directory."""

    values: Values
    notes: list[str]
    texts: dict[str, str] = field(default_factory=dict)
    """Wanted text tag -> its text at the latest step of the newest session
    that has it, among the sessions kept."""
    sessions: list[EventFile] = field(default_factory=list)
    """Every session read, in the order of the files given."""
    kept: list[EventFile] = field(default_factory=list)
    """The sessions the sessions rule kept, newest first."""


def read_run(name: str, files: list[str], wanted: Callable[[str], bool]) -> Run:
    """Reads and joins the event files of one run by the sessions rule (see
    the module docstring); `name` is the run's name in the notes."""
    return join(name, [read_file(path, wanted) for path in files])


def join(name: str, read: list[EventFile]) -> Run:
    """Joins sessions already read (see `read_run`). With one session kept,
    `Run.values` is that session's own dictionary, not a copy."""
    notes = []
    for f in read:
        problems = [f"{n} {problem}" for problem, n in f.problems.items() if n]
        if f.damaged:
            lost = sum(n for _, n in f.damaged)
            problems.append(
                f"{len(f.damaged)} damaged stretch(es) skipped ({lost} bytes, "
                f"the first at byte {f.damaged[0][0]}); reading went on after them"
            )
        if f.stopped is not None:
            problems.append(f.stopped)
        if problems:
            notes.append(f"{name}: {os.path.basename(f.path)}: {'; '.join(problems)}")
    newest_first = sorted(read, key=newness, reverse=True)
    taken: set[tuple[str, int]] = set()
    kept, left_out = [], []
    for f in newest_first:
        keys = f.keys()
        if keys & taken:
            left_out.append(f)
        else:
            kept.append(f)
            taken |= keys
    if left_out:
        overlapped: set[tuple[str, int]] = set().union(*(f.keys() for f in left_out))
        winners = [f for f in kept if f.keys() & overlapped]
        notes.append(
            f"{name}: {len(left_out) + len(winners)} sessions wrote the same "
            "steps (a re-run into the same directory, several writers or "
            "callbacks); the newest wins: using "
            + ", ".join(_steps(f) for f in winners)
            + ", leaving out "
            + ", ".join(_steps(f) for f in left_out)
        )
    values: Values = {}
    texts: dict[str, str] = {}
    if len(kept) == 1:
        values = kept[0].values
    else:
        for f in reversed(kept):  # oldest first: tags in first-written order
            for tag, steps in f.values.items():
                values.setdefault(tag, {}).update(steps)
    for f in reversed(kept):
        for tag, written in f.texts.items():
            texts[tag] = written[max(written)]
    return Run(values, notes, texts, list(read), kept)


def newness(f: EventFile) -> tuple[float, str]:
    """The sessions rule's order: by first event's wall time, then name."""
    return (f.start if math.isfinite(f.start) else -math.inf, f.path)


def _steps(f: EventFile) -> str:
    steps = sorted({step for steps in f.values.values() for step in steps})
    span = f"steps {steps[0]}-{steps[-1]}" if steps else "no steps"
    return f"{os.path.basename(f.path)} ({span})"
