"""`Recognizer`: load a checkpoint once, transcribe whole utterances or stream audio.

    rec = Recognizer.load()                      # the shipped checkpoint, beam search + LM
    rec.transcribe(audio, sample_rate=8000)      # -> Transcript(text, words)
    s = rec.stream(sample_rate=8000)
    s.accept(chunk) -> Transcript (partial)  ...  s.finish() -> Transcript (final)

A caller's adapted parameters (a dict name -> tensor over the model's
speaker-adaptive group, see `profile.py`) are passed as `params=`; they are
applied with `torch.func.functional_call`, the shared model is never modified.
"""
from __future__ import annotations

import os
import re

import torch
from torch import Tensor, nn

from asr_core.audio import AudioError, load_audio, resample
from asr_core.small.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from asr_core.transcript import Transcript
from asr_core.small.decoder import BeamDecoder, greedy_decode
from asr_core.small.model import StreamingCTC

DEFAULT_LM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints", "lm")
HOTWORD_BONUS = 4.0


class _Step(nn.Module):
    """Lets functional_call reparametrize the model for one streaming step."""

    def __init__(self, model: StreamingCTC):
        super().__init__()
        self.model = model

    def forward(self, chunk: Tensor, state: dict, flush: bool) -> tuple[Tensor, dict]:
        return self.model.step(chunk, state, flush)


class Recognizer:
    def __init__(self, model: StreamingCTC, meta: dict | None = None, beam: BeamDecoder | None = None):
        self.model = model.eval()
        self.meta = meta or {}
        self.beam = beam
        self._step = _Step(self.model)

    @classmethod
    def load(cls, checkpoint: str | None = None, decoder: str = "beam", lm_dir: str | None = None,
             beam_size: int = 32) -> "Recognizer":
        """decoder: 'beam' (lexicon + LM, falls back to greedy if its files are missing) or 'greedy'."""
        if decoder not in ("beam", "greedy"):
            raise ValueError(f"decoder must be 'beam' or 'greedy', got {decoder!r}")
        path = checkpoint or DEFAULT_CHECKPOINT
        model, meta = load_checkpoint(path)
        meta["path"] = path
        beam = None
        lm_dir = lm_dir or DEFAULT_LM_DIR
        lex, arpa = os.path.join(lm_dir, "lexicon.txt"), os.path.join(lm_dir, "lm.arpa")
        if decoder == "beam" and os.path.isfile(lex) and os.path.isfile(arpa):
            beam = BeamDecoder(lex, arpa, beam_size=beam_size, lm_weight=meta.get("lm_weight", 0.8),
                               word_score=meta.get("word_score", 0.0), frame_seconds=model.cfg.frame_seconds)
        return cls(model, meta, beam)

    @property
    def sample_rate(self) -> int:
        return self.model.cfg.sample_rate

    def adaptive_names(self) -> list[str]:
        return self.model.adaptive_parameter_names()

    # -- whole utterance ---------------------------------------------------------------------
    def log_probs(self, audio: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        """(samples,) at the model's rate -> (T, vocab)."""
        x = audio[None]
        lengths = torch.tensor([audio.shape[0]])
        with torch.no_grad():
            if params:
                logp, _ = torch.func.functional_call(self.model, params, (x, lengths), strict=False)
            else:
                logp, _ = self.model(x, lengths)
        return logp[0]

    def decode(self, logp: Tensor, hotwords: list[str] | None = None, offset: float = 0.0) -> Transcript:
        if self.beam is None:
            return greedy_decode(logp, self.model.cfg.frame_seconds, offset)
        return self.beam.decode(logp, offset=offset, hotwords=_clean_hotwords(hotwords), bonus=HOTWORD_BONUS)

    def transcribe(self, audio: Tensor | str | bytes, sample_rate: int | None = None,
                   params: dict[str, Tensor] | None = None, hotwords: list[str] | None = None) -> Transcript:
        """Audio (tensor at `sample_rate`, or a file path / bytes) -> Transcript. Empty audio -> empty text."""
        x = self.prepare(audio, sample_rate)
        if x.numel() < self.model.cfg.n_fft:
            return Transcript("")
        return self.decode(self.log_probs(x, params), hotwords)

    def prepare(self, audio: Tensor | str | bytes, sample_rate: int | None) -> Tensor:
        if isinstance(audio, (str, bytes)):
            return load_audio(audio, self.sample_rate)
        if not isinstance(audio, Tensor):
            raise AudioError(f"expected a tensor, path or bytes, got {type(audio).__name__}")
        if sample_rate is None:
            raise AudioError("sample_rate is required with a tensor")
        x = audio.float()
        if x.dim() == 2:  # (channels, samples) -> mono
            x = x.mean(0)
        if x.dim() != 1:
            raise AudioError(f"expected (samples,) or (channels, samples) audio, got shape {tuple(audio.shape)}")
        x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)
        return resample(x, int(sample_rate), self.sample_rate)

    # -- streaming ---------------------------------------------------------------------------
    def stream(self, sample_rate: int = 8000, params: dict[str, Tensor] | None = None,
               hotwords: list[str] | None = None) -> "RecognizerStream":
        return RecognizerStream(self, sample_rate, params, hotwords)

    def _step_fn(self, chunk: Tensor, state: dict, flush: bool, params: dict[str, Tensor] | None):
        if params:
            prefixed = {f"model.{k}": v for k, v in params.items()}
            return torch.func.functional_call(self._step, prefixed, (chunk, state, flush), strict=False)
        return self.model.step(chunk, state, flush)


class RecognizerStream:
    """Incremental recognition of one audio stream; state is explicit and per stream."""

    def __init__(self, rec: Recognizer, sample_rate: int, params, hotwords):
        if sample_rate <= 0:
            raise AudioError(f"sample_rate must be positive, got {sample_rate}")
        self.rec, self.sample_rate, self.params, self.hotwords = rec, sample_rate, params, hotwords
        self.state = rec.model.initial_state()
        self.logps: list[Tensor] = []
        self.samples_in = 0

    def accept(self, chunk: Tensor) -> Transcript:
        """Feed (samples,) float audio at the stream's rate; returns the current partial hypothesis (greedy)."""
        x = self.rec.prepare(chunk, self.sample_rate)
        self.samples_in += x.numel()
        logp, self.state = self.rec._step_fn(x, self.state, False, self.params)
        if logp.shape[0]:
            self.logps.append(logp)
        return greedy_decode(self._all(), self.rec.model.cfg.frame_seconds)

    def finish(self) -> Transcript:
        """End of stream: flush the model's look-ahead and decode with the beam search."""
        logp, self.state = self.rec._step_fn(torch.zeros(0), self.state, True, self.params)
        if logp.shape[0]:
            self.logps.append(logp)
        return self.rec.decode(self._all(), self.hotwords)

    def _all(self) -> Tensor:
        return torch.cat(self.logps) if self.logps else torch.zeros(0, self.rec.model.cfg.vocab_size)


def _clean_hotwords(words: list[str] | None) -> list[str]:
    return [w for w in (re.sub(r"[^a-z' ]", "", (h or "").lower()).strip() for h in (words or [])) if w][:50]
