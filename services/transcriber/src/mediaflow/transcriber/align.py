"""Word times from a wav2vec2 CTC model (forced alignment), used when `MEDIAFLOW_ALIGN_MODEL` is set.

The model is a local Hugging Face directory (`Wav2Vec2ForCTC` + `Wav2Vec2Processor`), never a
download. Each Whisper segment's characters are force-aligned to the model's frame-wise character
probabilities with whisperx's trellis/backtrack (its `align()` itself is not used: it needs NLTK's
punkt data, which it downloads, and it re-splits segments into sentences, while here Whisper's
segments and words are kept and only their times refined). Words with no character the model knows
(numbers, other scripts) keep Whisper's times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .transcript import Segment

WORD_DELIMITER = "|"
MIN_SAMPLES = 400  # the shortest input wav2vec2's convolutional front end accepts


class Aligner:
    def __init__(self, model_dir: str, device: str) -> None:
        from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

        if not Path(model_dir).is_dir():
            raise ValueError(f"MEDIAFLOW_ALIGN_MODEL must be a local model directory, not {model_dir!r}")
        processor = Wav2Vec2Processor.from_pretrained(model_dir, local_files_only=True)
        self.model = Wav2Vec2ForCTC.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        self.device = device
        self.dictionary = {token.lower(): index for token, index in processor.tokenizer.get_vocab().items()}
        self.blank_id = processor.tokenizer.pad_token_id

    def align_segment(self, segment: Segment, audio: np.ndarray, offset: float) -> None:
        """Refine `segment`'s word times in place; `audio` is the window that starts at `offset` s."""
        import torch
        from whisperx.alignment import backtrack, get_trellis

        first = max(0, int((segment.start - offset) * SAMPLE_RATE))
        last = min(len(audio), int((segment.end - offset) * SAMPLE_RATE))
        if last - first < MIN_SAMPLES:
            return
        tokens, owners = self._tokens(segment)
        if not tokens:
            return
        waveform = torch.from_numpy(np.ascontiguousarray(audio[first:last])).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            emission = torch.log_softmax(self.model(waveform).logits, dim=-1)[0].float().cpu()
        if emission.size(0) < len(tokens):
            return  # fewer frames than characters: no valid path
        trellis = get_trellis(emission, tokens, self.blank_id)
        path = backtrack(trellis, emission, tokens, self.blank_id)
        if path is None:
            return
        seconds_per_frame = (last - first) / SAMPLE_RATE / (trellis.size(0) - 1)
        start = offset + first / SAMPLE_RATE
        frames: dict[int, list[int]] = {}  # word index -> frames of its characters
        for point in path:
            word = owners[point.token_index]
            if word is not None:
                frames.setdefault(word, []).append(point.time_index)
        for index, spans in frames.items():
            segment.words[index].start = round(start + min(spans) * seconds_per_frame, 3)
            segment.words[index].end = round(start + (max(spans) + 1) * seconds_per_frame, 3)

    def _tokens(self, segment: Segment) -> tuple[list[int], list[int | None]]:
        """The segment's characters as model tokens, and the word each belongs to (None: delimiter)."""
        tokens: list[int] = []
        owners: list[int | None] = []
        for index, word in enumerate(segment.words):
            chars = [self.dictionary[c] for c in word.text.lower() if c in self.dictionary]
            if not chars:
                continue
            if tokens and WORD_DELIMITER in self.dictionary:
                tokens.append(self.dictionary[WORD_DELIMITER])
                owners.append(None)
            tokens += chars
            owners += [index] * len(chars)
        return tokens, owners
