"""The small model's CTC decoding: greedy (always available) and lexicon + n-gram beam search.

Both return a `Transcript`: text plus words with start/end seconds and a
confidence in [0, 1] (mean of the best-path posteriors over the word's frames).
"""
from __future__ import annotations

import math
import os

import torch

from asr_core.text import SPACE, VOCAB
from asr_core.transcript import Transcript, Word


def _words_from_path(tokens: list[int], frame_ids: list[int], probs: torch.Tensor,
                     frame_seconds: float, offset: float) -> list[Word]:
    """Group emitted (token, frame) pairs into words split at the word-boundary token."""
    space = VOCAB.index(SPACE)
    words, chars, frames = [], [], []

    def close() -> None:
        if chars:
            conf = float(probs[frames].mean())
            words.append(Word("".join(chars), offset + frames[0] * frame_seconds,
                              offset + (frames[-1] + 1) * frame_seconds, conf))
        chars.clear()
        frames.clear()

    for tok, fr in zip(tokens, frame_ids):
        if tok == space:
            close()
        else:
            chars.append(VOCAB[tok])
            frames.append(fr)
    close()
    return words


def greedy_decode(logp: torch.Tensor, frame_seconds: float = 0.04, offset: float = 0.0) -> Transcript:
    """logp: (T, vocab) log-probabilities -> best-path transcript."""
    if logp.numel() == 0:
        return Transcript("")
    best_p, best = logp.exp().max(dim=-1)           # (T,), (T,)
    tokens, frame_ids, prev = [], [], 0
    for t, k in enumerate(best.tolist()):
        if k != 0 and k != prev:
            tokens.append(k)
            frame_ids.append(t)
        prev = k
    words = _words_from_path(tokens, frame_ids, best_p, frame_seconds, offset)
    return Transcript(" ".join(w.w for w in words), words)


class BeamDecoder:
    """Lexicon-constrained CTC beam search with a KenLM/ARPA n-gram (torchaudio + flashlight-text).

    `hotwords` get a score bonus per call (they must be in the lexicon or are added to it).
    """

    def __init__(self, lexicon: str, lm: str | None, beam_size: int = 32, lm_weight: float = 1.0,
                 word_score: float = 0.0, unk_score: float = -math.inf, frame_seconds: float = 0.04):
        from torchaudio.models.decoder import ctc_decoder
        for p in (lexicon, lm):
            if p is not None and not os.path.isfile(p):
                raise FileNotFoundError(f"decoder resource not found: {p}")
        self.frame_seconds = frame_seconds
        self._decoder = ctc_decoder(
            lexicon=lexicon, tokens=list(VOCAB), lm=lm, nbest=8, beam_size=beam_size,
            beam_size_token=None, beam_threshold=25.0, lm_weight=lm_weight, word_score=word_score,
            unk_score=unk_score, sil_score=0.0, log_add=False, blank_token=VOCAB[0], sil_token=SPACE,
            unk_word="<unk>")

    def decode(self, logp: torch.Tensor, offset: float = 0.0, hotwords: list[str] | None = None,
               bonus: float = 4.0) -> Transcript:
        """logp: (T, vocab) -> transcript; falls back to greedy when the beam finds nothing.

        Hotwords (words or phrases) boost the n-best hypotheses that contain them by `bonus` each.
        """
        if logp.shape[0] == 0:
            return Transcript("")
        hyps = [h for h in self._decoder(logp[None].float().contiguous().cpu())[0] if h.words]
        if not hyps:
            return greedy_decode(logp, self.frame_seconds, offset)

        def boosted(h) -> float:
            text = " " + " ".join(h.words) + " "
            return h.score + bonus * sum(text.count(f" {w} ") for w in hotwords or [])
        hyp = max(hyps, key=boosted)
        probs = logp.exp().max(dim=-1).values
        toks, frames = hyp.tokens.tolist(), hyp.timesteps.tolist()
        last = logp.shape[0] - 1  # flashlight may time the closing word boundary at T
        keep = [(t, min(max(f, 0), last)) for t, f in zip(toks, frames) if t != 0]
        words = _words_from_path([t for t, _ in keep], [f for _, f in keep], probs, self.frame_seconds, offset)
        if [w.w for w in words] != list(hyp.words):  # align timings to the LM's words when they differ
            words = _align_words(list(hyp.words), words, offset, self.frame_seconds, logp.shape[0])
        return Transcript(" ".join(hyp.words), words)


def _align_words(names: list[str], timed: list[Word], offset: float, fs: float, T: int) -> list[Word]:
    if len(timed) == len(names):
        return [Word(n, w.start, w.end, w.conf) for n, w in zip(names, timed)]
    span = T * fs / max(1, len(names))
    return [Word(n, offset + i * span, offset + (i + 1) * span, 0.5) for i, n in enumerate(names)]
