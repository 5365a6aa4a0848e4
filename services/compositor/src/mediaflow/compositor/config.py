"""Compositor-only knobs (`MEDIAFLOW_COMPOSE_*`), kept out of the shared settings."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CompositorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAFLOW_COMPOSE_", extra="ignore")

    # Timelines longer than this render in chunks of this many items (one ffmpeg each) that are then
    # joined: one ffmpeg process never holds more than `chunk_items` decoders.
    chunk_items: int = Field(12, ge=2, le=200)
    # Chunks rendered at the same time: 2 took 0.72x the wall time of 1 for 2x the ffmpeg memory on a
    # long 1080p timeline (docs/compositor.md); the compose-heavy pool sets 2 in the chart.
    parallel_chunks: int = Field(1, ge=1, le=16)
    probe_concurrency: int = Field(4, ge=1, le=64)
    nvenc_test_timeout: float = 15.0
    min_image_size: int = 16  # pixels; smaller images (1×1 trackers) are refused
    ffmpeg_threads: int = 0  # 0 = ffmpeg's choice


@lru_cache
def get_config() -> CompositorConfig:
    return CompositorConfig()
