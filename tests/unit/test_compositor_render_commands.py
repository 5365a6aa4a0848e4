"""The exact ffmpeg options of chunked renders: chunks keep their audio as PCM, and the join encodes
AAC once over the whole timeline while the video is stream-copied."""

from __future__ import annotations

from pathlib import Path

from mediaflow.compositor.encoders import output_args
from mediaflow.compositor.render import chunk_output_args, concat_join_args


def test_chunk_output_args_keep_the_video_encoder_and_pcm_audio():
    assert chunk_output_args(output_args("libx264", 1080, "high", 30), near_lossless_video=False) == {
        "c:v": "libx264",
        "preset": "veryfast",
        "crf": 20,
        "maxrate": "20M",
        "bufsize": "40M",
        "profile:v": "high",
        "g": 60,
        "pix_fmt": "yuv420p",
        "c:a": "pcm_s16le",
        "ar": 48000,
        "ac": 2,
    }


def test_chunks_for_a_final_graph_are_near_lossless_x264_and_nvenc_is_kept():
    x264 = chunk_output_args(output_args("libx264", 1080, "standard", 25), near_lossless_video=True)
    assert (x264["preset"], x264["crf"], x264["c:a"]) == ("ultrafast", 12, "pcm_s16le")
    assert chunk_output_args(output_args("h264_nvenc", 2160, "high", 30), near_lossless_video=True) == {
        "c:v": "h264_nvenc",
        "preset": "p5",
        "tune": "hq",
        "rc": "vbr",
        "b:v": "40M",
        "maxrate": "50M",
        "bufsize": "100M",
        "profile:v": "high",
        "g": 60,
        "bf": 2,
        "spatial-aq": 1,
        "pix_fmt": "yuv420p",
        "c:a": "pcm_s16le",
        "ar": 48000,
        "ac": 2,
    }


def test_concat_join_copies_video_and_encodes_aac_once():
    args = concat_join_args(Path("/w/chunks.txt"), Path("/w/out.mp4"), output_args("libx264", 1080, "high", 30))
    assert args == [
        "-hide_banner",
        "-nostdin",
        "-y",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        "/w/chunks.txt",
        "-map",
        "0:v",
        "-map",
        "0:a",
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        "-b:a",
        "320k",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-movflags",
        "+faststart",
        "/w/out.mp4",
    ]


def test_concat_join_with_a_soft_caption_track():
    args = concat_join_args(
        Path("/w/chunks.txt"),
        Path("/w/out.mp4"),
        output_args("h264_nvenc", 1080, "high", 30),
        soft=Path("/w/captions.srt"),
        language="eng",
    )
    assert args == [
        "-hide_banner",
        "-nostdin",
        "-y",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        "/w/chunks.txt",
        "-i",
        "/w/captions.srt",
        "-map",
        "0:v",
        "-map",
        "0:a",
        "-map",
        "1:s",
        "-c:s",
        "mov_text",
        "-metadata:s:s:0",
        "language=eng",
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        "-b:a",
        "320k",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-movflags",
        "+faststart",
        "/w/out.mp4",
    ]
