"""The transcriber service: audio extraction, WhisperX-style batched ASR, diarization, captions, gRPC.

A self-hosted product never phones home: these are set before anything imports huggingface_hub,
pyannote or whisperx (pyannote 4 sends telemetry unless PYANNOTE_METRICS_ENABLED=false).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
