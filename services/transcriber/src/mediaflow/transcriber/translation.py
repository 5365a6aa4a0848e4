"""The transcript in a second language (`options.translate_to`), behind a small backend protocol.

A backend turns the transcript's segments into segments in the target language with the same kind of
times, so captions can be built from them (or paired with the original, `options.bilingual`):

- `NllbTranslation`: any to any of NLLB-200's languages, a CTranslate2 model directory configured
  as MEDIAFLOW_TRANSLATION_MODEL (with its `sentencepiece.bpe.model`); texts translated, times kept.
- `WhisperTranslation`: any to English with Whisper's own translate task, the audio decoded again by
  the multilingual model; no text model needed. This is the one that ships: no MT model comes in a
  wheel (see docs/transcriber.md, "Languages").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mediaflow.common.errors import InvalidInput
from mediaflow.common.options.transcribe import TranscribeOptions

from .model import Models
from .transcript import Transcript, TranslatedSegment, Translation

# Whisper's codes -> NLLB-200's (FLORES-200) codes.
FLORES = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "as": "asm_Beng", "az": "azj_Latn", "ba": "bak_Cyrl",
    "be": "bel_Cyrl", "bg": "bul_Cyrl", "bn": "ben_Beng", "bo": "bod_Tibt", "bs": "bos_Latn", "ca": "cat_Latn",
    "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn",
    "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fo": "fao_Latn",
    "fr": "fra_Latn", "gl": "glg_Latn", "gu": "guj_Gujr", "ha": "hau_Latn", "he": "heb_Hebr", "hi": "hin_Deva",
    "hr": "hrv_Latn", "ht": "hat_Latn", "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "is": "isl_Latn",
    "it": "ita_Latn", "ja": "jpn_Jpan", "jw": "jav_Latn", "ka": "kat_Geor", "kk": "kaz_Cyrl", "km": "khm_Khmr",
    "kn": "kan_Knda", "ko": "kor_Hang", "lb": "ltz_Latn", "ln": "lin_Latn", "lo": "lao_Laoo", "lt": "lit_Latn",
    "lv": "lvs_Latn", "mg": "plt_Latn", "mi": "mri_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl",
    "mr": "mar_Deva", "ms": "zsm_Latn", "mt": "mlt_Latn", "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn",
    "nn": "nno_Latn", "no": "nob_Latn", "oc": "oci_Latn", "pa": "pan_Guru", "pl": "pol_Latn", "ps": "pbt_Arab",
    "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sa": "san_Deva", "sd": "snd_Arab", "si": "sin_Sinh",
    "sk": "slk_Latn", "sl": "slv_Latn", "sn": "sna_Latn", "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl",
    "su": "sun_Latn", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "tg": "tgk_Cyrl",
    "th": "tha_Thai", "tk": "tuk_Latn", "tl": "tgl_Latn", "tr": "tur_Latn", "tt": "tat_Cyrl", "uk": "ukr_Cyrl",
    "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn", "yi": "ydd_Hebr", "yo": "yor_Latn", "zh": "zho_Hans",
    "yue": "yue_Hant",
}  # fmt: skip


@dataclass
class TranslationRequest:
    transcript: Transcript  # source language: transcript.language
    target: str  # a Whisper language code
    media: Path  # the media transcribed, for backends that listen rather than read
    options: TranscribeOptions  # the transcription's options (its range, prompt)


class TranslationBackend(Protocol):
    name: str

    def supports(self, source: str | None, target: str) -> bool:
        """Whether it translates `source` (None: some language not known yet) into `target`."""
        ...

    def translate(self, request: TranslationRequest) -> list[TranslatedSegment]: ...


class WhisperTranslation:
    """Any -> English: the multilingual Whisper decodes the audio again with task=translate."""

    name = "whisper"

    def __init__(self, models: Models) -> None:
        self.models = models

    def supports(self, source: str | None, target: str) -> bool:
        return target == "en" and self.models.multilingual_asr is not None

    def translate(self, request: TranslationRequest) -> list[TranslatedSegment]:
        from .pipeline import transcribe_file

        options = request.options.model_copy(update={"task": "translate", "language": request.transcript.language})
        english = transcribe_file(self.models, request.media, options)
        return [TranslatedSegment(start=s.start, end=s.end, text=s.text) for s in english.segments]


class NllbTranslation:
    """Any -> any of NLLB-200's languages: segment texts translated in batches, their times kept."""

    name = "nllb"

    def __init__(self, path: str, device: str) -> None:
        import ctranslate2
        import sentencepiece

        self.translator = ctranslate2.Translator(path, device=device, compute_type="auto")
        self.spm = sentencepiece.SentencePieceProcessor(model_file=str(Path(path) / "sentencepiece.bpe.model"))

    def supports(self, source: str | None, target: str) -> bool:
        return (source is None or source in FLORES) and target in FLORES

    def translate(self, request: TranslationRequest) -> list[TranslatedSegment]:
        segments = request.transcript.segments
        source, target = FLORES[request.transcript.language], FLORES[request.target]
        # NLLB's input: source language token, pieces, end of sentence; output starts with the target's token
        batch = [[source, *self.spm.encode(s.text, out_type=str), "</s>"] for s in segments]
        results = self.translator.translate_batch(
            batch, target_prefix=[[target]] * len(batch), beam_size=4, max_batch_size=16, max_decoding_length=256
        )
        return [
            TranslatedSegment(start=s.start, end=s.end, text=self.spm.decode(r.hypotheses[0][1:]).strip())
            for s, r in zip(segments, results, strict=True)
        ]


@functools.cache
def _nllb(path: str, device: str) -> NllbTranslation:
    return NllbTranslation(path, device)


def backends(models: Models) -> list[TranslationBackend]:
    """The configured backends, preferred first."""
    found: list[TranslationBackend] = []
    if models.settings.translation_model:
        found.append(_nllb(models.settings.translation_model, models.device))
    found.append(WhisperTranslation(models))
    return found


def check_target(models: Models, options: TranscribeOptions) -> None:
    """Before any decoding: `unsupported_language` for a target no backend could produce from any
    source (the source language may not be known yet)."""
    if options.translate_to is None:
        return
    target, source = options.translate_to.lower(), (options.language or "").lower() or None
    if target == source:
        return
    if not any(b.supports(source, target) for b in backends(models)):
        raise InvalidInput(
            f"translate_to {target!r}: no translation backend serves it (Whisper translates into English only; "
            "configure MEDIAFLOW_TRANSLATION_MODEL for other targets)",
            code="unsupported_language",
        )


def translate(models: Models, transcript: Transcript, media: Path, options: TranscribeOptions) -> Translation:
    """`transcript` in `options.translate_to` (the same segments when it is already in that language)."""
    assert options.translate_to is not None
    target, source = options.translate_to.lower(), transcript.language
    if source == target:
        segments = [TranslatedSegment(start=s.start, end=s.end, text=s.text) for s in transcript.segments]
        return Translation(language=target, backend="none", segments=segments)
    backend = next((b for b in backends(models) if b.supports(source, target)), None)
    if backend is None:
        raise InvalidInput(f"no translation backend serves {source!r} -> {target!r}", code="unsupported_language")
    segments = backend.translate(TranslationRequest(transcript, target, media, options))
    return Translation(language=target, backend=backend.name, segments=segments)
