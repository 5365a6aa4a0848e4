"""Language codes the transcriber understands (Whisper's), checked when a job is submitted.

The gateway cannot ask a worker which models it loaded, so it checks what no configuration can make
valid (a code Whisper does not know); the worker checks the rest (an English-only model, a target
no translation backend serves) and fails the job with the same `unsupported_language` code.
"""

from __future__ import annotations

from pydantic import BaseModel

from ..errors import InvalidInput

# Whisper's language codes (ISO 639-1, plus haw, yue); tests check them against faster-whisper's list.
WHISPER_LANGUAGES = frozenset(
    {
        "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy", "da", "de", "el",
        "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw", "he", "hi", "hr", "ht", "hu",
        "hy", "id", "is", "it", "ja", "jw", "ka", "kk", "km", "kn", "ko", "la", "lb", "ln", "lo", "lt", "lv", "mg",
        "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "ne", "nl", "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro",
        "ru", "sa", "sd", "si", "sk", "sl", "sn", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk",
        "tl", "tr", "tt", "uk", "ur", "uz", "vi", "yi", "yo", "zh", "yue",
    }
)  # fmt: skip


def check_languages(options: BaseModel) -> None:
    """422 `unsupported_language` for a `language` or `translate_to` that is not a Whisper code, in
    transcribe options or in the `transcribe` options a caption job carries."""
    nested = getattr(options, "transcribe", None)
    if isinstance(nested, BaseModel):
        check_languages(nested)
    for field in ("language", "translate_to"):
        code = getattr(options, field, None)
        if code is not None and code.lower() not in WHISPER_LANGUAGES:
            raise InvalidInput(
                f"{field}: unsupported language {code!r} (one of Whisper's codes, e.g. en, de, es)",
                code="unsupported_language",
                detail={"errors": [{"loc": field, "msg": "unsupported language"}]},
            )
