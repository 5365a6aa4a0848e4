"""Transcript analytics, an extractive summary and top keywords: computed locally (no network, no LLM).

Summary: sentences scored by TF-IDF weight of their content words (sentences as documents), the top
few kept in their original order. Keywords: terms (single words and two-word phrases without stop
words) ranked by TF-IDF against the sentence set, which favours words that are frequent in the
transcript but concentrated in some part of it.
"""

from __future__ import annotations

import re
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


def analytics(transcript: Transcript, summary: bool = True) -> dict[str, Any]:
    words = transcript.words()
    word_count = len(words) if words else len(transcript.text.split())
    speaking_time = sum(w.end - w.start for w in words) if words else sum(s.end - s.start for s in transcript.segments)
    minutes = transcript.duration / 60 if transcript.duration else 0.0
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
        result["summary"] = extractive_summary(transcript.text)
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
