"""Any language, end to end: real German and Spanish read speech (FLEURS clips, see
tests/fixtures/SOURCES.md) through the REST API, a real transcriber worker (in process) with the real
models (tiny.en and the multilingual Whisper base from its wheels), on a real Valkey.

Language ID with no `language`, task=translate into English, `translate_to` (Whisper's own
X -> English backend: no MT model ships in a wheel) with target-language and bilingual captions, and
the problems for languages nobody serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import jiwer
import pytest
from gateway_support import ALICE, assert_problem, running_gateway, upload, wait_terminal
from job_support import in_process_worker
from whisper_normalizer.basic import BasicTextNormalizer

from mediaflow.common.errors import MediaflowError
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import JobType
from mediaflow.common.options.languages import WHISPER_LANGUAGES
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.settings import Settings
from mediaflow.transcriber import jobs as transcriber_jobs
from mediaflow.transcriber.captions import render
from mediaflow.transcriber.model import Models
from mediaflow.transcriber.pipeline import transcribe_file
from mediaflow.transcriber.service import run_transcription

GERMAN, SPANISH = "fleurs/de-000", "fleurs/es-000"
# English words a translation of the German clip ("... Hong Kong ... the island ... Kowloon") must hold
ENGLISH = {"the", "to", "and", "of", "you", "should", "best", "view", "views"}
normalise = BasicTextNormalizer()


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-zà-ÿ]+", text.lower()))


@pytest.fixture
def gw_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})  # uploads are probed by the gateway


@pytest.fixture
async def client(redis, gw_settings):
    worker = in_process_worker(gw_settings, {JobType.transcribe: transcriber_jobs.transcribe}, keys.TRANSCRIBE_QUEUE)
    async with (
        running_gateway(gw_settings) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as c,
        worker,
    ):
        yield c


async def run_job(client: httpx.AsyncClient, source: dict, options: dict) -> dict:
    body = {"type": "transcribe", "input": source, "options": options}
    submitted = await client.post("/v1/jobs", json=body, headers=ALICE)
    assert submitted.status_code == 202, submitted.text
    return await wait_terminal(client, submitted.json()["id"], timeout=300)


async def artifact(client: httpx.AsyncClient, job: dict, name: str) -> httpx.Response:
    response = await client.get(f"/v1/jobs/{job['id']}/artifacts/{name}", headers=ALICE)
    assert response.status_code == 200, (name, response.text)
    return response


async def test_language_is_detected_on_german_and_spanish(client, media):
    uploaded = (await upload(client, media / f"{GERMAN}.ogg")).json()  # a real upload of the Opus clip
    cases = [("de", GERMAN, {"media_id": uploaded["id"]}), ("es", SPANISH, {"path": str(media / f"{SPANISH}.ogg")})]
    for language, clip, source in cases:
        job = await run_job(client, source, {"formats": ["json", "srt"]})
        assert job["state"] == "succeeded", job
        result = job["result"]
        assert result["language"] == language and result["language_probability"] > 0.8, result
        assert result["model"] == "whisper-base" and result["warnings"] == []
        transcript = (await artifact(client, job, "transcript.json")).json()
        assert (transcript["language"], transcript["language_probability"]) == (
            language,
            result["language_probability"],
        )
        reference = (media / f"{clip}.txt").read_text()
        wer = jiwer.wer(normalise(reference), normalise(transcript["text"]))
        assert wer <= 0.35, (language, wer, transcript["text"])


async def test_translate_task_gives_english(client, media):
    job = await run_job(client, {"path": str(media / f"{GERMAN}.ogg")}, {"task": "translate", "formats": ["json"]})
    assert job["state"] == "succeeded", job
    transcript = (await artifact(client, job, "transcript.json")).json()
    heard = words(transcript["text"])
    assert transcript["task"] == "translate" and transcript["language"] == "de"
    assert len(ENGLISH & heard) >= 4 and "hong" in heard, transcript["text"]
    assert not {"die", "und", "sollten", "verlassen"} & heard, transcript["text"]  # not the German


async def test_translate_to_gives_captions_in_the_target_and_bilingual(client, media):
    source = {"path": str(media / f"{GERMAN}.ogg")}
    target = await run_job(client, source, {"translate_to": "en", "formats": ["json", "srt", "vtt"]})
    both = await run_job(client, source, {"translate_to": "en", "bilingual": True, "formats": ["srt"]})
    assert target["state"] == both["state"] == "succeeded", (target, both)
    assert target["result"]["translation"]["language"] == "en"
    assert target["result"]["translation"]["backend"] == "whisper"
    transcript = (await artifact(client, target, "transcript.json")).json()
    assert transcript["language"] == "de" and "Hongkong" in transcript["text"]  # the original stays German
    translation = transcript["translation"]
    assert translation["language"] == "en" and translation["segments"]
    assert all(0 <= s["start"] < s["end"] <= transcript["duration"] + 0.5 for s in translation["segments"])
    srt = (await artifact(client, target, "captions.srt")).text
    assert len(ENGLISH & words(srt)) >= 4 and "verlassen" not in srt.lower(), srt
    assert (await artifact(client, target, "captions.vtt")).text.startswith("WEBVTT")

    bilingual = (await artifact(client, both, "captions.srt")).text
    assert "verlassen" in bilingual.lower() and len(ENGLISH & words(bilingual)) >= 4, bilingual
    cues = [c.strip().split("\n")[2:] for c in bilingual.strip().split("\n\n")]
    # each cue: the German line(s) first, then the English
    assert all(len(lines) >= 2 for lines in cues) and "verlassen" in " ".join(" ".join(c) for c in cues).lower()


async def test_languages_nobody_serves_are_problems(client, media):
    source = {"path": str(media / f"{SPANISH}.ogg")}
    for options in ({"language": "xx"}, {"translate_to": "klingon"}, {"language": "de", "translate_to": "tlh"}):
        body = {"type": "transcribe", "input": source, "options": options}
        response = await client.post("/v1/jobs", json=body, headers=ALICE)
        assert_problem(response, 422, "unsupported_language")
    caption = {"type": "caption", "input": source, "options": {"transcribe": {"language": "zz"}}}
    assert_problem(await client.post("/v1/jobs", json=caption, headers=ALICE), 422, "unsupported_language")
    # A real code no configured backend translates into (only Whisper's X -> English is here): refused
    # at submit, as a caption's transcribe options too.
    body = {"type": "transcribe", "input": source, "options": {"translate_to": "fr"}}
    refused = assert_problem(await client.post("/v1/jobs", json=body, headers=ALICE), 422, "unsupported_language")
    assert "MEDIAFLOW_TRANSLATION_MODEL" in refused["detail"]
    caption = {"type": "caption", "input": source, "options": {"transcribe": {"translate_to": "fr"}}}
    assert_problem(await client.post("/v1/jobs", json=caption, headers=ALICE), 422, "unsupported_language")


def test_the_submit_check_knows_whisper_s_languages():
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(_LANGUAGE_CODES) == WHISPER_LANGUAGES


def test_an_english_only_setup_warns_and_refuses_other_languages(media):
    """multilingual_model=none: tiny.en alone. German speech comes back as English with a warning
    (no detector to say otherwise), and German or task=translate are refused."""
    models = Models(Settings(multilingual_model="none"))
    assert models.multilingual_asr is None and models.info.multilingual_model == ""
    transcript = transcribe_file(models, media / f"{GERMAN}.ogg", TranscribeOptions())
    assert transcript.language == "en" and transcript.language_probability is None
    assert [w.code for w in transcript.warnings] == ["language_not_detected"]
    refused = [
        (TranscribeOptions(language="de"), "unsupported_language"),
        (TranscribeOptions(task="translate"), "unsupported_task"),
    ]
    for options, code in refused:
        with pytest.raises(MediaflowError) as info:
            transcribe_file(models, media / f"{GERMAN}.ogg", options)
        assert info.value.code == code


def toy_nllb(folder: Path) -> Path:
    """An NLLB-shaped CTranslate2 model made here: random weights (1 layer, d_model 16), a sentencepiece
    model trained on three sentences, NLLB's language tokens. It translates nothing; it carries the
    real backend's path (files, tokens, CTranslate2, detokenising) for want of an MT model in a wheel."""
    import ctranslate2
    import sentencepiece
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    hf, out = folder / "hf", folder / "nllb-toy"
    hf.mkdir()
    corpus = hf / "corpus.txt"
    corpus.write_text("\n".join(["für die besten aussichten auf hongkong", "se recomienda a los viajeros"] * 20))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(hf / "spm"), vocab_size=40, hard_vocab_limit=False, minloglevel=2
    )
    tokenizer = NllbTokenizer(vocab_file=str(hf / "spm.model"))
    tokenizer.save_pretrained(hf)
    config = M2M100Config(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=300,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)  # the same toy every run
    M2M100ForConditionalGeneration(config).save_pretrained(hf)
    ctranslate2.converters.TransformersConverter(str(hf)).convert(str(out))
    (out / "sentencepiece.bpe.model").write_bytes((hf / "sentencepiece.bpe.model").read_bytes())
    return out


def test_the_nllb_backend_is_used_for_other_targets(media, tmp_path):
    """MEDIAFLOW_TRANSLATION_MODEL set: translate_to=fr goes through the CTranslate2 NLLB backend, one
    translated segment per segment with its times, and bilingual captions pair them. The model is a
    random toy (see toy_nllb), so only the plumbing is checked, not the French."""
    models = Models(Settings(translation_model=str(toy_nllb(tmp_path))))
    options = TranscribeOptions(translate_to="fr", bilingual=True, formats=["srt", "json"])
    transcript = run_transcription(models, media / f"{GERMAN}.ogg", options)
    translation = transcript.translation
    assert transcript.language == "de" and translation is not None
    assert (translation.language, translation.backend) == ("fr", "nllb")
    assert [(s.start, s.end) for s in translation.segments] == [(s.start, s.end) for s in transcript.segments]
    assert all(s.text for s in translation.segments)
    files = render(transcript, ["srt", "json"], options.captions, bilingual=True)
    srt = files["captions.srt"][0].decode()
    assert "verlassen" in srt and translation.segments[0].text.split()[0][:10] in srt
    assert json.loads(files["transcript.json"][0])["translation"]["backend"] == "nllb"
