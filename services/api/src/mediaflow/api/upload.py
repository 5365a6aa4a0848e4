"""Streaming multipart upload: the body goes to a temporary file chunk by chunk (never into memory),
the size limit is enforced while reading, and the file is moved into storage once it is accepted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from mediaflow.common.storage import FileStorage, Storage

from .problems import Problem

FLUSH_BYTES = 1024 * 1024
# Room for the multipart envelope (boundaries, part headers, small form fields) on top of the file.
ENVELOPE_SLACK = 64 * 1024
# After the limit is hit we read (and drop) at most this much more, so a client that is still sending
# gets its 413 instead of a reset connection; a larger remainder is cut off.
DRAIN_BYTES = 16 * 1024 * 1024


@dataclass
class Upload:
    path: Path
    filename: str
    content_type: str
    size: int


def safe_filename(name: str) -> str:
    """A storage-key-safe base name that keeps the extension (containers are often sniffed by it),
    also when the rest of the name is not ASCII ("видео.mp4" -> "upload.mp4")."""
    base = Path(name.replace("\\", "/")).name
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    ext = re.sub(r"[^A-Za-z0-9]+", "", ext)[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[: 120 - len(ext) - 1] or "upload"
    return f"{stem}.{ext}" if ext else stem


def temp_dir_for(storage: Storage) -> Path | None:
    """Uploads land next to their final place when storage is local, so accepting one is a rename."""
    if isinstance(storage, FileStorage):
        path = storage.root / ".uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return None


def too_large(limit: int) -> Problem:
    return Problem(413, "payload_too_large", f"the upload exceeds the limit of {limit} bytes", limit=limit)


class _PartCollector:
    """Callbacks for python-multipart: keeps the first file part, ignores every other field."""

    def __init__(self, sink: IO[bytes], limit: int) -> None:
        self.sink, self.limit = sink, limit
        self.buffer = bytearray()
        self.size = 0
        self.filename: str | None = None
        self.content_type = ""
        self.over_limit = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._capturing = False
        self._done = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _disposition, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        filename = params.get(b"filename")
        self._capturing = filename is not None and not self._done
        if self._capturing:
            self.filename = filename.decode("utf-8", "replace") if filename else "upload"
            self.content_type = self._headers.get(b"content-type", b"application/octet-stream").decode("latin-1")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._capturing or self.over_limit:
            return
        self.size += end - start
        if self.size > self.limit:
            self.over_limit = True
            self.buffer.clear()
            return
        self.buffer.extend(data[start:end])

    def _part_end(self) -> None:
        if self._capturing:
            self._done = True
        self._capturing = False


async def receive_upload(request: Request, limit: int, temp_dir: Path | None) -> Upload:
    """Read a multipart/form-data body (one file part; its field name does not matter) into a
    temporary file. The caller owns (and must remove) `Upload.path`."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise Problem(
            415, "multipart_required", "upload the file as multipart/form-data (e.g. curl -F file=@video.mp4)"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + ENVELOPE_SLACK:
        raise too_large(limit)

    fd, name = tempfile.mkstemp(prefix="upload-", dir=temp_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            collector = _PartCollector(sink, limit)
            parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if collector.over_limit and received > limit + DRAIN_BYTES:
                    break
                try:
                    parser.write(chunk)
                except Exception as exc:  # python-multipart raises its own error types
                    raise Problem(400, "malformed_multipart", f"the multipart body is malformed: {exc}") from None
                if len(collector.buffer) >= FLUSH_BYTES:
                    data = bytes(collector.buffer)
                    collector.buffer.clear()
                    await asyncio.to_thread(sink.write, data)
            if collector.over_limit:
                raise too_large(limit)
            if collector.buffer:
                await asyncio.to_thread(sink.write, bytes(collector.buffer))
            with contextlib.suppress(Exception):
                parser.finalize()
        if collector.filename is None:
            raise Problem(422, "file_required", "the multipart body has no file part (use -F file=@path)")
        return Upload(
            path=path,
            filename=safe_filename(collector.filename),
            content_type=collector.content_type,
            size=collector.size,
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def move_into_storage(storage: Storage, key: str, src: Path) -> int:
    """Blocking: place an accepted upload at `key` (a rename for local storage)."""
    if isinstance(storage, FileStorage):
        final = storage.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, final)
        return final.stat().st_size
    try:
        return storage.put_file(key, src)
    finally:
        src.unlink(missing_ok=True)
