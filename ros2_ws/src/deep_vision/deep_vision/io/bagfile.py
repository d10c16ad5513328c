"""A bag's files checked before anything reads them, and MCAP chunks read with their CRCs.

:func:`check_bag` turns every way a bag can be unusable (a missing path, a
folder that is not a bag, a missing, empty or truncated storage file, a
metadata.yaml that does not match its storage) into one :class:`BagError` line
naming the file and the fault. :class:`McapChunks` reads an MCAP file chunk by
chunk with the ``mcap`` library: a chunk whose CRC does not match its data is
damaged; its messages (listed in the intact message indexes after it) are
counted and skipped, and the rest of the bag is read. :func:`add_chunk_crcs`
writes those CRCs into a file the ``rosbags`` writer left without them (it
writes 0: "not computed").
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deep_vision.errors import BagError

logger = logging.getLogger(__name__)

MCAP_MAGIC = b"\x89MCAP0\r\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
# Chunk record: opcode u8, length u64, message_start_time u64, message_end_time u64, uncompressed_size u64,
# uncompressed_crc u32, ...: the CRC sits 33 bytes after the record's start.
_CHUNK_CRC_OFFSET = 1 + 8 + 8 + 8 + 8


@dataclass
class BagFiles:
    """A checked bag: its folder (or single file), storage plugin and storage files."""

    path: Path
    storage: str  # mcap | sqlite3
    files: list[Path]
    metadata: dict[str, Any] = field(default_factory=dict)


def _kind(file: Path) -> str:
    with file.open("rb") as f:
        head = f.read(16)
    if head.startswith(MCAP_MAGIC):
        return "mcap"
    if head == SQLITE_MAGIC:
        return "sqlite3"
    return "unknown"


def _check_storage_file(file: Path, storage: str) -> None:
    if not file.is_file():
        raise BagError(f"{file}: missing (listed in metadata.yaml)")
    size = file.stat().st_size
    if size == 0:
        raise BagError(f"{file}: empty storage file (0 bytes)")
    kind = _kind(file)
    if kind == "unknown":
        raise BagError(f"{file}: neither an MCAP nor an SQLite file (damaged header)")
    if kind != storage:
        raise BagError(f"{file}: metadata.yaml says storage {storage!r} but the file is {kind}")
    if kind == "mcap":
        with file.open("rb") as f:
            f.seek(max(size - len(MCAP_MAGIC), 0))
            if size < 2 * len(MCAP_MAGIC) or f.read() != MCAP_MAGIC:
                raise BagError(f"{file}: truncated MCAP file (no footer: the recording was cut off; "
                               "`mcap recover` can rebuild what is left)")


def check_bag(path: str | Path) -> BagFiles:
    """The bag at ``path`` (a rosbag2 folder, or a single ``.mcap`` file), checked; raises one BagError line."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag (no file or folder of that name)")
    if path.is_file():
        if path.stat().st_size == 0:
            raise BagError(f"{path}: empty file")
        kind = _kind(path)
        if kind != "mcap":
            raise BagError(f"{path}: not a bag (a rosbag2 folder or an .mcap file)")
        _check_storage_file(path, "mcap")
        return BagFiles(path, "mcap", [path])
    meta_file = path / "metadata.yaml"
    if not meta_file.is_file():
        raise BagError(f"{path}: not a rosbag2 folder (no metadata.yaml)")
    try:
        meta = (yaml.safe_load(meta_file.read_text()) or {}).get("rosbag2_bagfile_information", {})
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise BagError(f"{meta_file}{at}: not valid YAML") from None
    storage = meta.get("storage_identifier")
    names = meta.get("relative_file_paths") or []
    if storage not in ("mcap", "sqlite3") or not names:
        raise BagError(f"{meta_file}: no storage_identifier (mcap or sqlite3) or no relative_file_paths")
    files = [path / str(n) for n in names]
    for file in files:
        _check_storage_file(file, storage)
    bag = BagFiles(path, storage, files, meta)
    if storage == "mcap":
        listed = int(meta.get("message_count", -1))
        held = sum(McapChunks(f).message_count for f in files)
        if listed >= 0 and held >= 0 and listed != held:
            raise BagError(f"{meta_file}: lists {listed} messages, the storage holds {held}")
    return bag


class McapChunks:
    """An MCAP file read chunk by chunk, each checked against its CRC (where the writer stored one).

    ``damaged`` maps the offset of each chunk found damaged so far (its data does not match its CRC or cannot
    be parsed) to its message count; :meth:`messages` skips those chunks and yields the others' messages in log
    order.
    """

    def __init__(self, file: str | Path) -> None:
        from mcap.reader import make_reader

        self.file = Path(file)
        with self.file.open("rb") as f:
            try:
                summary = make_reader(f).get_summary()
            except Exception as exc:  # noqa: BLE001 - the mcap library raises several types for a bad summary
                raise BagError(f"{self.file}: unreadable MCAP summary ({type(exc).__name__}: {exc})") from None
        if summary is None:
            raise BagError(f"{self.file}: MCAP file without a summary (not finalised); `mcap recover` can fix it")
        self.summary = summary
        self.topics = {cid: (c.topic, summary.schemas[c.schema_id].name if c.schema_id in summary.schemas else "")
                       for cid, c in summary.channels.items()}
        self.chunks = sorted(summary.chunk_indexes, key=lambda c: (c.message_start_time, c.chunk_start_offset))
        stats = summary.statistics
        self.message_count = int(stats.message_count) if stats is not None else -1
        self.damaged: dict[int, int] = {}
        self.has_crcs = False

    def _chunk(self, f, index) -> Any:
        from mcap.stream_reader import StreamReader

        f.seek(index.chunk_start_offset)
        return next(iter(StreamReader(f, skip_magic=True, emit_chunks=True).records))

    def _message_count(self, f, index) -> int:
        """Messages of a chunk, from the message indexes that follow it (outside the chunk's data)."""
        from mcap.stream_reader import StreamReader

        n = 0
        for offset in index.message_index_offsets.values():
            f.seek(offset)
            try:
                record = next(iter(StreamReader(f, skip_magic=True).records))
                n += len(record.records)
            except Exception:  # noqa: BLE001 - a damaged index: count what the others say
                continue
        return n

    def messages(self, topics: Sequence[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, message type, log time, CDR bytes) of the intact chunks, in log order."""
        from mcap.records import Message
        from mcap.stream_reader import breakup_chunk

        wanted = None if topics is None else set(topics)
        with self.file.open("rb") as f:
            for index in self.chunks:
                if wanted is not None and not any(self.topics.get(cid, ("",))[0] in wanted
                                                  for cid in index.message_index_offsets):
                    continue
                try:
                    chunk = self._chunk(f, index)
                    self.has_crcs |= chunk.uncompressed_crc != 0
                    records = breakup_chunk(chunk, validate_crc=chunk.uncompressed_crc != 0)
                except Exception as exc:  # noqa: BLE001 - CRC mismatch, bad framing, bad compression
                    if index.chunk_start_offset not in self.damaged:
                        count = self._message_count(f, index)
                        self.damaged[index.chunk_start_offset] = count
                        logger.warning("%s: damaged chunk at byte %d (%s): its %d message(s) skipped", self.file,
                                       index.chunk_start_offset, type(exc).__name__, count)
                    continue
                out = [(r.log_time, r.channel_id, r.data) for r in records if isinstance(r, Message)]
                out.sort(key=lambda m: m[0])
                for log_time, cid, data in out:
                    topic, msgtype = self.topics.get(cid, ("", ""))
                    if wanted is None or topic in wanted:
                        yield topic, msgtype, int(log_time), bytes(data)

    @property
    def damaged_messages(self) -> int:
        return sum(self.damaged.values())


def add_chunk_crcs(file: str | Path) -> int:
    """Write the CRC32 of each chunk's uncompressed data where the writer left 0; returns how many it wrote."""
    from mcap.reader import make_reader

    file = Path(file)
    with file.open("r+b") as f:
        summary = make_reader(f).get_summary()
        if summary is None:
            return 0
        from mcap.stream_reader import StreamReader

        written = 0
        for index in summary.chunk_indexes:
            f.seek(index.chunk_start_offset)
            chunk = next(iter(StreamReader(f, skip_magic=True, emit_chunks=True).records))
            if chunk.uncompressed_crc != 0:
                continue
            if chunk.compression == "zstd":
                import zstandard

                data = zstandard.decompress(chunk.data, chunk.uncompressed_size)
            elif chunk.compression == "lz4":
                import lz4.frame

                data = lz4.frame.decompress(chunk.data)
            else:
                data = chunk.data
            f.seek(index.chunk_start_offset + _CHUNK_CRC_OFFSET)
            f.write(struct.pack("<I", zlib.crc32(data)))
            written += 1
    return written


class BagReader:
    """Raw messages of a checked bag, in log order: MCAP files through :class:`McapChunks` (damaged chunks
    skipped and counted in ``damaged_messages``), SQLite bags through ``rosbags``."""

    def __init__(self, path: str | Path) -> None:
        self.bag = check_bag(path)
        self.path = self.bag.path
        self._mcap = [McapChunks(f) for f in self.bag.files] if self.bag.storage == "mcap" else []
        if self._mcap:
            self.topics = {t: m for c in self._mcap for t, m in c.topics.values()}
            self.message_counts = self._counts()
        else:
            from rosbags.rosbag2 import Reader

            with Reader(self.path) as reader:
                self.topics = {c.topic: c.msgtype for c in reader.connections}
                self.message_counts = {t: sum(c.msgcount for c in reader.connections if c.topic == t)
                                       for t in self.topics}

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self._mcap:
            stats = c.summary.statistics
            per_channel = stats.channel_message_counts if stats is not None else {}
            for cid, (topic, _) in c.topics.items():
                counts[topic] = counts.get(topic, 0) + int(per_channel.get(cid, 0))
        return counts

    def messages(self, topics: Sequence[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, message type, log time, CDR bytes), in log order (one storage file after the other)."""
        if not self._mcap:
            from rosbags.rosbag2 import Reader

            with Reader(self.path) as reader:
                conns = [c for c in reader.connections if topics is None or c.topic in topics]
                if not conns:  # rosbags reads every topic when given no connection
                    return
                for conn, t, raw in reader.messages(connections=conns):
                    yield conn.topic, conn.msgtype, t, raw
            return
        for chunks in self._mcap:
            yield from chunks.messages(topics)

    @property
    def damaged_messages(self) -> int:
        """Messages in the damaged chunks found so far (MCAP with CRCs; 0 for SQLite)."""
        return sum(c.damaged_messages for c in self._mcap)
