"""Media metadata read with PyAV (used by the gateway to sniff uploads and by the compositor's Probe)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from .errors import MediaError


def probe_file(path: Path | str) -> dict[str, Any]:
    """Duration, container format and streams of a media file. Non-media raises MediaError
    (`unsupported_media`)."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"not a media file we can read: {exc}", code="unsupported_media", status=415) from None
    with container:
        streams: list[dict[str, Any]] = []
        for s in container.streams:
            kind = s.type
            if kind not in ("video", "audio", "subtitle"):
                continue
            info: dict[str, Any] = {
                "index": s.index,
                "kind": kind,
                "codec": s.codec_context.name if s.codec_context else "",
            }
            if s.duration is not None and s.time_base is not None:
                info["duration"] = float(s.duration * s.time_base)
            cc: Any = s.codec_context  # its kind's codec context (av types it as the base class)
            if kind == "video":
                info["width"], info["height"] = cc.width, cc.height
                rate = s.average_rate or s.guessed_rate
                info["fps"] = float(rate) if rate else 0.0
                sar = cc.sample_aspect_ratio or Fraction(1, 1)
                dar = Fraction(cc.width * sar.numerator, max(1, cc.height * sar.denominator)) if cc.height else 0
                info["display_aspect_ratio"] = f"{dar.numerator}:{dar.denominator}" if dar else ""
                info["sample_aspect_ratio"] = f"{sar.numerator}:{sar.denominator}"
            elif kind == "audio":
                info["sample_rate"], info["channels"] = cc.sample_rate, cc.channels
                info["channel_layout"] = cc.layout.name if cc.layout else ""
            streams.append(info)
        if not streams:
            raise MediaError("the file has no audio or video stream", code="unsupported_media", status=415)
        duration = (
            float(container.duration / av.time_base)
            if container.duration
            else max((s.get("duration", 0.0) for s in streams), default=0.0)
        )
        return {
            "duration": duration,
            "format": container.format.name,
            "size": Path(path).stat().st_size,
            "streams": streams,
        }
