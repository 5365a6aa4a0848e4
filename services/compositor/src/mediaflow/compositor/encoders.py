"""Video encoders: h264_nvenc (VBR) when this worker can really use it, libx264 otherwise.

NVENC is chosen only after a one-frame test encode succeeds at worker start: `ffmpeg -encoders`
lists h264_nvenc on every build, but datacenter GPUs (A100, H100, H200) have no NVENC block, and a
container sees the encoder only with NVIDIA_DRIVER_CAPABILITIES including `video`.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass

from mediaflow.common.errors import MediaflowError

log = logging.getLogger("mediaflow.compositor.encoders")

# (target, max) video bitrates of the NVENC VBR profile, by output height.
NVENC_BITRATES = {2160: ("40M", "50M"), 1080: ("16M", "20M"), 720: ("8M", "10M")}
AUDIO_ARGS = {"c:a": "aac", "b:a": "320k", "ar": 48000, "ac": 2}
# libx264 at a quality comparable to the NVENC profile: CRF with the same peak-rate cap.
X264_QUALITY = {"draft": ("ultrafast", 28), "standard": ("veryfast", 23), "high": ("veryfast", 20)}
NVENC_PRESET = {"draft": "p1", "standard": "p4", "high": "p5"}


@dataclass(frozen=True)
class EncoderChoice:
    name: str  # h264_nvenc | libx264
    reason: str

    @property
    def nvenc(self) -> bool:
        return self.name == "h264_nvenc"


def _bitrates(height: int) -> tuple[str, str]:
    for h in sorted(NVENC_BITRATES, reverse=True):
        if height >= h:
            return NVENC_BITRATES[h]
    return NVENC_BITRATES[720]


def video_args(encoder: str, height: int, quality: str, fps: int) -> dict[str, object]:
    """Output options for the video stream (ffmpeg-python keyword form: {"c:v": ..., ...})."""
    target, peak = _bitrates(height)
    gop = fps * 2  # a keyframe every 2 s: seekable output, segment-friendly
    if encoder == "h264_nvenc":
        bufsize = f"{int(peak[:-1]) * 2}M"
        return {
            "c:v": "h264_nvenc",
            "preset": NVENC_PRESET[quality],
            "tune": "hq",
            "rc": "vbr",
            "b:v": target,
            "maxrate": peak,
            "bufsize": bufsize,
            "profile:v": "high",
            "g": gop,
            "bf": 2,
            "spatial-aq": 1,
            "pix_fmt": "yuv420p",
        }
    preset, crf = X264_QUALITY[quality]
    return {
        "c:v": "libx264",
        "preset": preset,
        "crf": crf,
        "maxrate": peak,
        "bufsize": f"{int(peak[:-1]) * 2}M",
        "profile:v": "high",
        "g": gop,
        "pix_fmt": "yuv420p",
    }


def output_args(encoder: str, height: int, quality: str, fps: int) -> dict[str, object]:
    return {**video_args(encoder, height, quality, fps), **AUDIO_ARGS, "movflags": "+faststart"}


def nvenc_test_command(ffmpeg: str = "ffmpeg") -> list[str]:
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=256x144:r=30:d=0.1",
        "-frames:v",
        "1",
        "-c:v",
        "h264_nvenc",
        "-f",
        "null",
        "-",
    ]


def detect_encoder(ffmpeg: str = "ffmpeg", timeout: float = 15.0, driver_capabilities: str = "") -> EncoderChoice:
    """What `auto` resolves to on this machine, and why (run once at worker start).
    `driver_capabilities` is NVIDIA_DRIVER_CAPABILITIES (Settings), named in the reason."""
    caps = driver_capabilities
    try:
        proc = subprocess.run(nvenc_test_command(ffmpeg), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EncoderChoice("libx264", f"one-frame NVENC test encode did not run: {exc}")
    if proc.returncode == 0:
        return EncoderChoice("h264_nvenc", "one-frame NVENC test encode succeeded")
    err = " ".join(proc.stderr.strip().splitlines()[-2:])[:300] or f"exit {proc.returncode}"
    hint = ""
    if caps and "video" not in caps and "all" not in caps:
        hint = f" (NVIDIA_DRIVER_CAPABILITIES={caps} lacks 'video')"
    return EncoderChoice("libx264", f"one-frame NVENC test encode failed: {err}{hint}")


def choose(requested: str, detected: EncoderChoice) -> EncoderChoice:
    """The encoder for one job: `auto` follows the start-up test; `nvenc` fails clearly where it
    cannot work instead of silently producing nothing."""
    if requested == "x264":
        return EncoderChoice("libx264", "requested x264")
    if requested == "nvenc":
        if not detected.nvenc:
            raise MediaflowError(
                f"NVENC requested but unavailable on this worker: {detected.reason}", code="encoder_unavailable"
            )
        return EncoderChoice("h264_nvenc", "requested nvenc; " + detected.reason)
    return EncoderChoice(detected.name, "auto: " + detected.reason)
