"""Encoder selection and the exact command lines (NVENC cannot run on this machine: its command
line is what we can check)."""

from __future__ import annotations

import pytest

from mediaflow.common.errors import MediaflowError
from mediaflow.compositor import encoders
from mediaflow.compositor.encoders import EncoderChoice, choose, detect_encoder, output_args


def test_nvenc_1080p_command_line():
    assert output_args("h264_nvenc", 1080, "high", 30) == {
        "c:v": "h264_nvenc",
        "preset": "p5",
        "tune": "hq",
        "rc": "vbr",
        "b:v": "16M",
        "maxrate": "20M",
        "bufsize": "40M",
        "profile:v": "high",
        "g": 60,
        "bf": 2,
        "spatial-aq": 1,
        "pix_fmt": "yuv420p",
        "c:a": "aac",
        "b:a": "320k",
        "ar": 48000,
        "ac": 2,
        "movflags": "+faststart",
    }


def test_nvenc_4k_command_line_in_a_full_ffmpeg_invocation(tmp_path):
    import ffmpeg

    args = ffmpeg.output(ffmpeg.input("in.mp4"), "out.mp4", **output_args("h264_nvenc", 2160, "high", 30)).get_args()
    line = " ".join(args)
    for part in (
        "-c:v h264_nvenc",
        "-rc vbr",
        "-b:v 40M",
        "-maxrate 50M",
        "-bufsize 100M",
        "-preset p5",
        "-c:a aac",
        "-b:a 320k",
        "-ar 48000",
        "-ac 2",
        "-pix_fmt yuv420p",
        "-movflags +faststart",
    ):
        assert part in line, part


def test_x264_equivalent_quality():
    args = output_args("libx264", 1080, "high", 25)
    assert (args["c:v"], args["crf"], args["maxrate"], args["bufsize"], args["g"]) == ("libx264", 20, "20M", "40M", 50)
    assert output_args("libx264", 2160, "draft", 30)["preset"] == "ultrafast"
    assert output_args("libx264", 2160, "standard", 30)["maxrate"] == "50M"
    assert args["b:a"] == "320k" and args["ar"] == 48000


def test_nvenc_test_encode_is_one_frame():
    cmd = encoders.nvenc_test_command("ffmpeg")
    assert cmd[cmd.index("-frames:v") + 1] == "1" and "h264_nvenc" in cmd


def test_detection_on_this_machine_falls_back_to_x264_with_a_reason():
    # No GPU here: the real one-frame test encode fails, and says why.
    choice = detect_encoder("ffmpeg", timeout=30)
    assert choice == EncoderChoice("libx264", choice.reason)
    assert choice.reason.startswith("one-frame NVENC test encode failed")
    missing = detect_encoder("/nonexistent/ffmpeg")
    assert missing.name == "libx264" and "did not run" in missing.reason


def test_choice_per_job():
    nv = EncoderChoice("h264_nvenc", "one-frame NVENC test encode succeeded")
    cpu = EncoderChoice("libx264", "one-frame NVENC test encode failed: No capable devices found")
    assert choose("auto", nv).name == "h264_nvenc"
    assert choose("auto", cpu) == EncoderChoice("libx264", "auto: " + cpu.reason)
    assert choose("x264", nv).name == "libx264"
    assert choose("nvenc", nv).name == "h264_nvenc"
    with pytest.raises(MediaflowError) as err:
        choose("nvenc", cpu)
    assert err.value.code == "encoder_unavailable"


def test_progress_blocks_are_parsed():
    from mediaflow.compositor.runner import parse_progress

    assert parse_progress({"out_time_us": "2500000", "fps": "30.1", "speed": "1.5x"}) == 2.5
    assert parse_progress({"out_time_us": "N/A", "out_time_ms": "1000000"}) == 1.0  # ffmpeg's _ms is µs too
    assert parse_progress({"out_time_us": "-5000"}) == 0.0
    assert parse_progress({"progress": "continue"}) is None
