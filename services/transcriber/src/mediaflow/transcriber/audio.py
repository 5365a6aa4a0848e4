"""Any container/codec -> 16 kHz mono float32, decoded and resampled in a stream.

Multi-hour media must not be loaded whole (whisperx.load_audio does exactly that): `windows()` yields
the audio in fixed windows so the pipeline's memory does not grow with the media's length.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from mediaflow.common.errors import MediaError

SAMPLE_RATE = 16_000


@dataclass
class AudioWindow:
    offset: float  # seconds from the start of the media
    samples: np.ndarray  # float32 mono at SAMPLE_RATE
    last: bool

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class WindowSink:
    """Gets each window's audio and its speech regions as the ASR goes (the offline diarizer)."""

    def add_window(self, audio: np.ndarray, offset: float, speech: list[tuple[float, float]]) -> None: ...


def _open(path: Path | str) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"the media could not be decoded: {exc}", code="undecodable_media") from None


def media_duration(path: Path | str) -> float:
    """Duration of the first audio stream (container duration as a fallback); raises the same
    error codes as decoding."""
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError("the media has no audio stream", code="no_audio_stream")
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration / av.time_base) if container.duration else 0.0


def stream_pcm(
    path: Path | str, block_seconds: float = 10.0, start: float = 0.0, end: float | None = None
) -> Iterator[np.ndarray]:
    """Decode the first audio stream to 16 kHz mono float32 blocks of about `block_seconds`.

    With `start`/`end` (seconds from the stream's first sample) only that range is decoded: the
    container is seeked to just before `start` (a key frame at or before it), samples before `start`
    are dropped (or silence is prepended if the seek landed after it), so the first sample yielded is
    the one at `start`, and decoding stops at `end`."""
    container = _open(path)
    with container:
        if not container.streams.audio:
            raise MediaError("the media has no audio stream", code="no_audio_stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        origin = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
        if start > 0 and stream.time_base is not None:
            # not seekable: decode from the start and trim (the first frame's time says where it is)
            with contextlib.suppress(av.error.FFmpegError):
                container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
        skip: int | None = None if start > 0 else 0  # samples still to drop before `start`
        remaining = None if end is None else round((end - start) * SAMPLE_RATE)
        block: list[np.ndarray] = []
        have = 0
        target = int(block_seconds * SAMPLE_RATE)
        decoded_any = False

        def take(pcm: np.ndarray) -> None:
            nonlocal have, remaining
            if remaining is not None:
                pcm = pcm[:remaining]
                remaining -= len(pcm)
            if len(pcm):
                block.append(pcm)
                have += len(pcm)

        try:
            for frame in container.decode(stream):
                decoded_any = True
                if skip is None:  # the first frame after the seek tells where decoding resumed
                    at = (float(frame.time) - origin) if frame.time is not None else 0.0
                    skip = round((start - at) * SAMPLE_RATE)
                    if skip < 0:  # the seek landed after `start`: silence up to the first frame
                        take(np.zeros(-skip, np.float32))
                        skip = 0
                for out in resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1)
                    if skip:
                        dropped = min(skip, len(pcm))
                        pcm, skip = pcm[dropped:], skip - dropped
                    take(pcm)
                if have >= target:
                    yield np.concatenate(block)
                    block, have = [], 0
                if remaining is not None and remaining <= 0:
                    break
            else:
                for out in resampler.resample(None):
                    pcm = out.to_ndarray().reshape(-1)
                    if skip:
                        dropped = min(skip, len(pcm))
                        pcm, skip = pcm[dropped:], skip - dropped
                    take(pcm)
        except av.error.FFmpegError as exc:
            if not decoded_any:
                raise MediaError(f"the audio could not be decoded: {exc}", code="undecodable_media") from None
            # A damaged tail: keep what decoded (the transcript of the intact part is still useful).
        if block:
            yield np.concatenate(block)


def windows(
    path: Path | str, window_seconds: float, start: float = 0.0, end: float | None = None
) -> Iterator[AudioWindow]:
    """Fixed windows of the decoded audio (of [start, end) only when given; offsets stay absolute);
    raises `empty_audio` when nothing decodes."""
    size = int(window_seconds * SAMPLE_RATE)
    pending: list[np.ndarray] = []
    have = 0
    offset = 0
    total = 0
    held: np.ndarray | None = None  # one window held back so the last one can be flagged
    for block in stream_pcm(path, start=start, end=end):
        total += len(block)
        pending.append(block)
        have += len(block)
        while have >= size:
            joined = np.concatenate(pending)
            window, rest = joined[:size], joined[size:]
            pending, have = ([rest] if len(rest) else []), len(rest)
            if held is not None:
                yield AudioWindow(start + offset / SAMPLE_RATE, held, last=False)
                offset += len(held)
            held = window
    tail = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    if total == 0:
        raise MediaError("the media has no audio samples", code="empty_audio")
    if held is not None and len(tail):
        yield AudioWindow(start + offset / SAMPLE_RATE, held, last=False)
        offset += len(held)
        yield AudioWindow(start + offset / SAMPLE_RATE, tail, last=True)
    elif held is not None:
        yield AudioWindow(start + offset / SAMPLE_RATE, held, last=True)
    else:
        yield AudioWindow(start, tail, last=True)


def load_pcm(path: Path | str) -> np.ndarray:
    """The whole decoded audio (for short media only: the synchronous route, tests)."""
    blocks = list(stream_pcm(path))
    if not blocks or sum(len(b) for b in blocks) == 0:
        raise MediaError("the media has no audio samples", code="empty_audio")
    return np.concatenate(blocks)
