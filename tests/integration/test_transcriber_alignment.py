"""wav2vec2 word alignment (`MEDIAFLOW_ALIGN_MODEL`) through the real pipeline.

No model can be downloaded here, so the aligner is a tiny randomly initialised `Wav2Vec2ForCTC` with a
character vocabulary, saved to a local directory: its alignments are meaningless but well formed, so
this checks the plumbing (loading, per-window offsets, word times kept sane), not the accuracy.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

from mediaflow.common.grpc import channel, start_server
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.transcriber.grpc_service import service_entry
from mediaflow.transcriber.model import Models, get_models
from mediaflow.transcriber.service import run_transcription
from mediaflow.v1 import transcriber_pb2, transcriber_pb2_grpc


def save_tiny_wav2vec2(directory: Path) -> None:
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "'": 3} | {c: i + 4 for i, c in enumerate(string.ascii_uppercase)}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(
        str(directory / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    # the real front end's strides (320 samples = 20 ms per frame), everything else tiny
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(directory)


@pytest.fixture(scope="module")
def aligned_models(tmp_path_factory) -> Models:
    directory = tmp_path_factory.mktemp("wav2vec2")
    save_tiny_wav2vec2(directory)
    return Models(Settings(align_model=str(directory)))


@pytest.fixture(scope="module")
def transcripts(aligned_models, media):
    options = TranscribeOptions()
    default = run_transcription(get_models(Settings()), media / "jfk.flac", options)
    aligned = run_transcription(aligned_models, media / "jfk.flac", options)
    return default, aligned


def test_info_reports_wav2vec2(aligned_models):
    assert aligned_models.info.alignment == "wav2vec2"
    assert get_models(Settings()).info.alignment == "whisper"


async def test_grpc_get_info_reports_wav2vec2(aligned_models, settings):
    server, port = await start_server(
        0, [service_entry(aligned_models, open_storage(settings.storage_url))], host="127.0.0.1"
    )
    try:
        async with channel(f"127.0.0.1:{port}") as ch:
            info = await transcriber_pb2_grpc.TranscriberStub(ch).GetInfo(transcriber_pb2.GetInfoRequest(), timeout=10)
        assert info.alignment == "wav2vec2"
    finally:
        await server.stop(None)


def test_aligned_text_unchanged_and_word_times_sane(transcripts):
    default, aligned = transcripts
    assert aligned.text == default.text
    assert [w.text for w in aligned.words()] == [w.text for w in default.words()]
    # the aligner actually moved word times (a random model does not reproduce Whisper's)
    assert [(w.start, w.end) for w in aligned.words()] != [(w.start, w.end) for w in default.words()]
    # each word stays inside the span of the Whisper segment it came from
    assert [s.text for s in aligned.segments] == [s.text for s in default.segments]
    previous = 0.0
    for segment, whisper_segment in zip(aligned.segments, default.segments, strict=True):
        for word in segment.words:
            assert 0.0 <= word.start <= word.end <= aligned.duration + 1e-6, word
            assert word.start >= previous - 1e-6, f"word times go backwards at {word}"
            assert whisper_segment.start - 0.05 <= word.start and word.end <= whisper_segment.end + 0.05, (
                segment.text,
                word,
            )
            previous = word.end
