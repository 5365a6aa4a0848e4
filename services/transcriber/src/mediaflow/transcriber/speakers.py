"""Speaker names across files: voice prints, matching them with the tenant's enrolled speakers, and
the two registry jobs (`enroll`: a clip's voice print; `relabel`: rename a transcript's speakers and
rewrite its captions without running ASR again).

A voice print is a diarized speaker's mean CAM++ embedding (diarize.py, `NeuralDiarizer.prints`),
unit-normalised, so two prints compare by their dot product (cosine similarity).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mediaflow.common.errors import Conflict, MediaError, NotFound
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.jobs.search import SearchIndex
from mediaflow.common.jobs.voices import SPEAKERS_ARTIFACT, TRANSCRIPT_ARTIFACT, Voice, VoiceRegistry
from mediaflow.common.options import parse_options
from mediaflow.common.options.speakers import EnrollOptions, RelabelOptions
from mediaflow.common.options.transcribe import TranscribeOptions
from mediaflow.common.runtime.context import JobContext

from .audio import windows
from .diarize import NeuralDiarizer
from .transcript import Transcript
from .transcript import Voice as SpeakerVoice

log = logging.getLogger("mediaflow.transcriber")

# Cosine similarity from which a diarized speaker takes an enrolled speaker's name: the middle of
# the range that separated every same-voice pair (>= 0.79) from every other (<= 0.49) on the fit set
# of `python -m bench.speaker_id` (conversations cut from long_dev_en; never the report set); see
# docs/transcriber.md, "Speaker names".
MATCH_THRESHOLD = 0.64
MIN_ENROLL_SECONDS = 1.0  # a clip's main speaker needs this much speech to give a usable print
WINDOW_SECONDS = 300.0


def voice_prints(transcript: Transcript, prints: dict[str, np.ndarray], labels: dict[str, str]) -> list[SpeakerVoice]:
    """The transcript's speakers with their prints: `prints` by diarizer label, `labels` diarizer
    label -> SPEAKER_xx (from `apply_speakers`); seconds from the diarization."""
    seconds: dict[str, float] = {}
    for turn in transcript.diarization:
        seconds[turn.speaker] = seconds.get(turn.speaker, 0.0) + turn.end - turn.start
    return sorted(
        (
            SpeakerVoice(label=label, seconds=round(seconds.get(label, 0.0), 3), embedding=prints[raw].tolist())
            for raw, label in labels.items()
            if raw in prints and label in transcript.speakers
        ),
        key=lambda v: v.label,
    )


def match(voices: list[SpeakerVoice], enrolled: list[Voice], threshold: float = MATCH_THRESHOLD) -> None:
    """Name each speaker after the enrolled voice it resembles most, at `threshold` or above; one
    enrolled voice names at most one speaker of a transcript (the pairing maximises similarity)."""
    from scipy.optimize import linear_sum_assignment

    if not voices or not enrolled:
        return
    found = np.array([v.embedding for v in voices], dtype=np.float32)
    known = np.array([e.embedding for e in enrolled], dtype=np.float32)
    sim = found @ known.T
    for i, j in zip(*linear_sum_assignment(-sim), strict=True):
        if sim[i, j] >= threshold:
            voices[i].name, voices[i].speaker_id = enrolled[j].name, enrolled[j].id
            voices[i].similarity = round(float(sim[i, j]), 4)


def apply_names(transcript: Transcript) -> None:
    """Carry the voices' names onto the segments (each segment has one speaker)."""
    names = {v.label: v.name for v in transcript.voices}
    for seg in transcript.segments:
        seg.speaker_name = names.get(seg.speaker) if seg.speaker else None


def rename(transcript: Transcript, names: dict[str, str | None]) -> None:
    """Names given by hand (None drops a name). Raises `speaker_label_not_found` for a label the
    transcript does not have."""
    unknown = sorted(set(names) - set(transcript.speakers))
    if unknown:
        have = ", ".join(transcript.speakers) or "none (not diarized)"
        raise NotFound(
            f"no speaker {', '.join(unknown)} in this transcript (speakers: {have})", code="speaker_label_not_found"
        )
    by_label = {v.label: v for v in transcript.voices}
    for label, name in names.items():
        voice = by_label.get(label)
        if voice is None:  # diarized without prints (pyannote backend): the name alone
            voice = by_label[label] = SpeakerVoice(label=label, seconds=0.0)
            transcript.voices.append(voice)
        voice.name, voice.similarity, voice.speaker_id = name, None, None
    transcript.voices.sort(key=lambda v: v.label)
    apply_names(transcript)


def clip_print(path: Path) -> tuple[np.ndarray, float]:
    """The voice print of a clip's main speaker (the one with the most speech) and its seconds."""
    diarizer = NeuralDiarizer()
    for window in windows(path, WINDOW_SECONDS):
        diarizer.add_window(window.samples, window.offset, [])
    return main_voice(diarizer)


def main_voice(diarizer: NeuralDiarizer) -> tuple[np.ndarray, float]:
    """The print and speech seconds of the speaker a fed diarizer heard most."""
    seconds: dict[str, float] = {}
    for turn in diarizer.turns(None, None, None):
        seconds[turn.speaker] = seconds.get(turn.speaker, 0.0) + turn.end - turn.start
    main = max(seconds, key=seconds.__getitem__, default=None)
    if main is None or main not in diarizer.prints or seconds[main] < MIN_ENROLL_SECONDS:
        heard = seconds.get(main, 0.0) if main else 0.0
        raise MediaError(
            f"the clip holds {heard:.1f} s of speech from one speaker; at least {MIN_ENROLL_SECONDS:.0f} s is needed",
            code="too_little_speech",
        )
    return diarizer.prints[main], round(seconds[main], 3)


# ---- job handlers ---------------------------------------------------------------------------------
async def name_speakers(ctx: JobContext, transcript: Transcript) -> None:
    """A transcribe job's found speakers take the names of the tenant's enrolled voices they match."""
    if not transcript.voices:
        return
    enrolled = await VoiceRegistry(ctx.store.redis).ready(ctx.job.tenant)
    match(transcript.voices, enrolled)
    apply_names(transcript)


async def enroll(ctx: JobContext) -> dict[str, Any]:
    """`enroll` job: embed the clip (the job's input) and make the registry entry ready."""
    options = parse_options(JobType.enroll, ctx.job.options)
    assert isinstance(options, EnrollOptions)
    registry = VoiceRegistry(ctx.store.redis)
    voice = await registry.get(ctx.job.tenant, options.speaker_id)
    await ctx.progress(0.0, "embedding", force=True)
    with ctx.stage("embed"):
        async with ctx.media_path() as path:
            embedding, seconds = await ctx.run_blocking(clip_print, path)
    voice.embedding, voice.seconds, voice.state = [round(float(x), 6) for x in embedding], seconds, "ready"
    if not await registry.update(ctx.job.tenant, voice):
        log.info("speaker %s was deleted while its clip was embedded", voice.id)
    return {"speaker_id": voice.id, "name": voice.name, "seconds": seconds}


async def relabel(ctx: JobContext) -> dict[str, Any]:
    """`relabel` job: rename speakers of a succeeded transcribe job and rewrite its transcript and
    caption artifacts in place from transcript.json (no ASR)."""
    from .captions import ARTIFACT_NAMES, render

    options = parse_options(JobType.relabel, ctx.job.options)
    assert isinstance(options, RelabelOptions)
    target = await ctx.store.get(options.job_id, ctx.job.tenant)
    if target.type != JobType.transcribe or target.state != JobState.succeeded:
        raise Conflict(f"job {target.id} is not a succeeded transcribe job", code="job_not_finished")
    have = {a.name for a in target.artifacts}
    if TRANSCRIPT_ARTIFACT not in have:
        raise Conflict(f"job {target.id} kept no {TRANSCRIPT_ARTIFACT}", code="transcript_unavailable")
    transcribe = parse_options(JobType.transcribe, target.options)
    assert isinstance(transcribe, TranscribeOptions)

    def rewrite() -> tuple[dict[str, int], Transcript]:
        transcript = Transcript.model_validate_json(_read(ctx, target.id, TRANSCRIPT_ARTIFACT))
        if SPEAKERS_ARTIFACT in have:  # transcript.json leaves the prints out
            stored = json.loads(_read(ctx, target.id, SPEAKERS_ARTIFACT))["speakers"]
            prints = {s["label"]: s.get("embedding", []) for s in stored}
            for voice in transcript.voices:
                voice.embedding = prints.get(voice.label, [])
        rename(transcript, dict(options.names))
        files = render(transcript, list(transcribe.formats), transcribe.captions)
        wanted = {*ARTIFACT_NAMES.values(), SPEAKERS_ARTIFACT} & have
        sizes = {}
        for name, (data, _type) in files.items():
            if name in wanted:  # only the job's own files (formats it asked for) that names change
                with ctx.storage.writer(keys.artifact(target.id, name)) as out:
                    out.write(data)
                sizes[name] = len(data)
        return sizes, transcript

    await ctx.progress(0.0, "relabel", force=True)
    with ctx.stage("captions"):
        sizes, transcript = await ctx.run_blocking(rewrite)
    # search hits name the speakers too (the index keeps the job's place in the order)
    await SearchIndex(ctx.store).index_transcript(target.tenant, target.id, transcript.segments)

    def resize(job: Job) -> list[tuple[str, dict[str, Any]]]:  # the record's sizes follow the files
        job.artifacts = [a.model_copy(update={"size": sizes.get(a.name, a.size)}) for a in job.artifacts]
        return []

    await ctx.store.update(target.id, resize)
    return {"job_id": target.id, "names": dict(options.names), "rewritten": sorted(sizes)}


def _read(ctx: JobContext, job_id: str, name: str) -> bytes:
    with ctx.storage.open(keys.artifact(job_id, name)) as f:
        return f.read()
