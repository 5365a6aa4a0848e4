"""Transcript analytics, an extractive summary and top keywords: computed locally (no network, no LLM).

Summary: sentences scored by TF-IDF weight of their content words (sentences as documents), the top
few kept in their original order. Keywords: terms (single words and two-word phrases without stop
words) ranked by TF-IDF against the sentence set, which favours words that are frequent in the
transcript but concentrated in some part of it.

Vocabulary (`vocabulary.json`, for learners): every distinct word heard, normalised rather than
lemmatised (no offline lemmatiser ships in a wheel we use): lowercased, curly apostrophes made
straight, punctuation stripped from both ends; tokens without a letter (numbers) are left out. So
"Country," and "country" are one entry, "countries" another. Each entry has `count`, `first_at` (the
start of its first occurrence, seconds from the media's start) and a `difficulty` from the word's
frequency in the transcript's language (`wordfreq`'s Zipf scale, data shipped in its wheel):
`zipf` >= 6 -> 1 (the very commonest words), 5-6 -> 2, 4-5 -> 3, 3-4 -> 4, below 3 -> 5 (rare).
Languages wordfreq does not know get `zipf` and `difficulty` null. Entries are in order of first
occurrence.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Any

import numpy as np

from .transcript import Transcript

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# fillers and contractions that the written-English stop list lacks
SPOKEN_STOP_WORDS = frozenset(
    [
        "oh",
        "uh",
        "um",
        "ah",
        "yeah",
        "yes",
        "okay",
        "ok",
        "hello",
        "hi",
        "like",
        "just",
        "really",
        "know",
        "mean",
        "gonna",
        "wanna",
        "got",
        "thing",
        "things",
        "i'm",
        "i've",
        "i'll",
        "i'd",
        "you're",
        "you've",
        "you'll",
        "we're",
        "we've",
        "they're",
        "it's",
        "that's",
        "there's",
        "don't",
        "didn't",
        "doesn't",
        "isn't",
        "wasn't",
        "aren't",
        "can't",
        "won't",
        "couldn't",
        "wouldn't",
        "shouldn't",
        "let's",
        "what's",
    ]
)
MIN_SUMMARY_WORDS = 5


def analytics(transcript: Transcript, summary: bool = True, summary_sentences: int = 3) -> dict[str, Any]:
    words = transcript.words()
    word_count = len(words) if words else len(transcript.text.split())
    speaking_time = sum(w.end - w.start for w in words) if words else sum(s.end - s.start for s in transcript.segments)
    # the rate is over what was transcribed: the range when one was given
    heard = transcript.range.end - transcript.range.start if transcript.range else transcript.duration
    minutes = heard / 60 if heard else 0.0
    per_speaker: dict[str, dict[str, float]] = defaultdict(lambda: {"words": 0, "speaking_time": 0.0, "turns": 0})
    for w in words:
        if w.speaker:
            per_speaker[w.speaker]["words"] += 1
            per_speaker[w.speaker]["speaking_time"] += w.end - w.start
    for turn in transcript.turns:
        per_speaker[turn.speaker]["turns"] += 1
    speakers = {}
    for name, stats in sorted(per_speaker.items()):
        talk_minutes = stats["speaking_time"] / 60
        speakers[name] = {
            "words": int(stats["words"]),
            "speaking_time": round(stats["speaking_time"], 2),
            "turns": int(stats["turns"]),
            "words_per_minute": round(stats["words"] / talk_minutes, 1) if talk_minutes else 0.0,
        }
    result: dict[str, Any] = {
        "word_count": word_count,
        "duration": round(transcript.duration, 3),
        "speaking_time": round(speaking_time, 2),
        "words_per_minute": round(word_count / minutes, 1) if minutes else 0.0,
        "speaker_count": len(transcript.speakers),
        "speakers": speakers,
    }
    if summary:
        result["summary"] = extractive_summary(transcript.text, max_sentences=summary_sentences)
        result["keywords"] = keywords(transcript.text)
    return result


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def _tfidf(docs: list[str], ngram_range: tuple[int, int]):
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    vectorizer = TfidfVectorizer(
        stop_words=sorted(ENGLISH_STOP_WORDS | SPOKEN_STOP_WORDS),
        ngram_range=ngram_range,
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z']+\b",
        sublinear_tf=True,
    )
    try:
        matrix = vectorizer.fit_transform(docs)
    except ValueError:  # nothing but stop words
        return None, None
    return matrix, vectorizer.get_feature_names_out()


def extractive_summary(text: str, max_sentences: int = 3) -> str:
    sents = sentences(text)
    if len(sents) <= max_sentences:
        return " ".join(sents)
    matrix, _ = _tfidf(sents, (1, 1))
    if matrix is None:
        return " ".join(sents[:max_sentences])
    lengths = [max(1, len(s.split())) for s in sents]
    if sum(n >= MIN_SUMMARY_WORDS for n in lengths) >= max_sentences:  # skip "Hello?"-type fragments
        matrix = matrix.multiply((np.array(lengths) >= MIN_SUMMARY_WORDS)[:, None]).tocsr()
    # mean term weight, mildly favouring fuller sentences over fragments
    scores = [matrix[i].sum() / lengths[i] ** 0.5 for i in range(len(sents))]
    keep = sorted(sorted(range(len(sents)), key=lambda i: -scores[i])[:max_sentences])
    return " ".join(sents[i] for i in keep)


def keywords(text: str, top: int = 10) -> list[str]:
    sents = sentences(text) or [text]
    matrix, terms = _tfidf(sents, (1, 2))
    if matrix is None:
        return []
    weights = matrix.sum(axis=0).A1
    ranked = sorted(range(len(terms)), key=lambda i: -weights[i])
    chosen: list[str] = []
    for i in ranked:
        term = terms[i]
        # a phrase makes its single words redundant, and the other way round
        if any(term in c.split() or c in term.split() for c in chosen):
            continue
        chosen.append(term)
        if len(chosen) == top:
            break
    return chosen


def normalise_word(text: str) -> str:
    """The vocabulary's key: lowercase, straight apostrophes, punctuation stripped from both ends;
    "" for tokens without a letter."""
    word = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    word = "".join(c for c in word if c == "'" or c == "-" or not unicodedata.category(c).startswith(("P", "S")))
    word = word.strip("'-")
    return word if any(c.isalpha() for c in word) else ""


def difficulty_band(zipf: float) -> int:
    """1 (commonest) .. 5 (rare), from the Zipf frequency (log10 of occurrences per billion words)."""
    for band, floor in enumerate((6.0, 5.0, 4.0, 3.0), start=1):
        if zipf >= floor:
            return band
    return 5


def vocabulary(transcript: Transcript) -> list[dict[str, Any]]:
    """Distinct words with count, first time heard and difficulty, in order of first occurrence."""
    entries: dict[str, dict[str, Any]] = {}
    words = transcript.words()
    if words:
        heard = [(w.text, w.start) for w in words]
    else:  # no word times (should not happen with Whisper): the segment's start
        heard = [(t, s.start) for s in transcript.segments for t in s.text.split()]
    for text, at in heard:
        for part in text.split():
            lemma = normalise_word(part)
            if not lemma:
                continue
            entry = entries.get(lemma)
            if entry is None:
                entries[lemma] = {"lemma": lemma, "count": 1, "first_at": round(at, 3)}
            else:
                entry["count"] += 1
    frequency = _zipf_lookup(transcript.language)
    for entry in entries.values():
        zipf = frequency(entry["lemma"]) if frequency else None
        entry["zipf"] = None if zipf is None else round(zipf, 2)
        entry["difficulty"] = None if zipf is None else difficulty_band(zipf)
    return list(entries.values())


def _zipf_lookup(language: str):
    from wordfreq import available_languages, zipf_frequency

    if language not in available_languages():
        return None
    return lambda word: zipf_frequency(word, language)
