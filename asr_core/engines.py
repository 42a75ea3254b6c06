"""One recognizer interface for every backbone: what the backend (and the CLI) use.

    from asr_core.engines import EngineSettings, load_engine

    rec = load_engine("whisper-tiny")                     # or "whisper-base", "small"
    rec.transcribe(audio, 8000, params=None)              # one segment -> Transcript
    rec.transcribe_batch([a1, a2], 8000, params=[p1, None])   # concurrent segments of several callers
    s = rec.stream(8000, params=None); s.accept(chunk)    # live partials of one growing segment
    rec.accept_batch([s1, s2], [c1, c2])                  # several calls' partials at once
    rec.initial_params(); rec.param_shapes()              # a caller's adaptive group without a profile
    rec.adapt(audios, texts_or_None, 8000, start=None, cfg=AdaptationConfig(...))   # one caller
    rec.model_version                                     # the weights' SHA-256 (profiles are keyed by it)

`SpeechRecognizer` is the contract (tests/asr_core/test_engines.py checks it once per backbone);
`SmallEngine` and `WhisperEngine` implement it on top of the backbones' own recognizers, which
stay usable alone. Backbone-specific habits are attributes, so callers never test the type:

- `label_free_min_confidence`: label-free pseudo-labels below this word confidence are dropped
  (Whisper's token probabilities run lower than the CTC model's);
- `reference_text(text)`: a verified transcript as this backbone is taught (Whisper: written text
  as written; the small model: normalized lowercase letters);
- `pretrained_on_real_speech`: True for Whisper; the small model learned synthesized voices only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from asr_core.adaptation import AdaptationConfig, AdaptationResult, adapt_caller
from asr_core.transcript import Transcript
from asr_core.small.decoder import greedy_decode
from asr_core.errors import BackboneError
from asr_core.defaults import (BACKBONES, PARTIAL_ENCODER, WHISPER_BEAM_SIZE, WHISPER_INT8, WHISPER_LIVE_MARGIN_S,
                               WHISPER_TAIL_POOL, WHISPER_TRIM_S)
from asr_core.meta import initial_params as small_initial_params
from asr_core.small.recognizer import Recognizer
from asr_core.text import normalize
from asr_core.whisper.adapt import LABEL_FREE_MIN_CONFIDENCE as WHISPER_LABEL_FREE_MIN_CONFIDENCE
from asr_core.whisper.adapt import adapt_whisper_caller, initial_whisper_params
from asr_core.whisper.recognizer import WhisperRecognizer, partial_load_args

logger = logging.getLogger(__name__)

Params = dict[str, Tensor]


class PartialStream(Protocol):
    def accept(self, chunk: Tensor) -> Transcript:
        """Feed (samples,) float audio at the stream's rate; returns the current partial hypothesis."""


@runtime_checkable
class SpeechRecognizer(Protocol):
    """What every backbone does for the backend."""

    backbone: str
    meta: dict
    label_free_min_confidence: float
    pretrained_on_real_speech: bool

    @property
    def model_version(self) -> str: ...

    @property
    def scoring_key(self) -> str | None:
        """What a transcript's `avg_logprob` is comparable under (weights and decoding settings), or
        None where the backbone gives no such score (the small model)."""
        ...

    @property
    def batch_shares_work(self) -> bool:
        """True when `transcribe_batch` computes its segments together (they finish together);
        False when it recognizes them one by one (a caller can then have each result sooner by
        giving it one segment at a time)."""
        ...

    @property
    def sample_rate(self) -> int: ...

    def transcribe(self, audio: Tensor, sample_rate: int, *, params: Params | None = None) -> Transcript: ...

    def transcribe_batch(self, audios: list[Tensor], sample_rate: int, *,
                         params: list[Params | None] | None = None,
                         vocabularies: list[list[str] | None] | None = None) -> list[Transcript]: ...

    def warm_up(self) -> None:
        """Make what the first segment would otherwise wait for (a worker calls it as it starts)."""
        ...

    def stream(self, sample_rate: int, *, params: Params | None = None) -> PartialStream: ...

    def accept_batch(self, streams: list[PartialStream], chunks: list[Tensor]) -> list[Transcript]:
        """Advance several streams of this recognizer (concurrent calls) by one chunk each: what
        each one's `accept` returns, computed together where the backbone can (Whisper: one
        decoding batch; each segment keeps its own window)."""
        ...

    def initial_params(self) -> Params: ...

    def param_shapes(self) -> dict[str, tuple[int, ...]]: ...

    def adapt(self, audios: list[Tensor], texts: list[str] | None, sample_rate: int, *,
              start: Params | None = None, cfg: AdaptationConfig = AdaptationConfig(),
              hypotheses: list[str] | None = None,
              hypothesis_scores: list[float | None] | None = None) -> AdaptationResult: ...

    def adaptation_config(self, mode: str, segments: int) -> AdaptationConfig: ...

    def reference_text(self, text: str) -> str: ...


@dataclass(frozen=True)
class EngineSettings:
    """How a backbone is loaded. Whisper: int8 linear layers (none, the decoder's, all), beam size,
    window trim (None: the full 30 s window), the live margin in the full window (None: the whole
    window computed; `WhisperRecognizer`), the pooling of the padding after it, the meta-learned adaptation file. Small model: its decoder
    ('beam' with the lexicon and LM, or 'greedy'). `partials`: the live partials' recognizer
    (Whisper: greedy, int8 decoder, its encoder `partial_encoder`)."""
    int8: str = WHISPER_INT8   # INT8_MODES: "off", "decoder", "all"
    partial_encoder: str = PARTIAL_ENCODER   # PARTIAL_ENCODERS: "auto", "int8", "bfloat16", "float32"
    beam_size: int = WHISPER_BEAM_SIZE
    trim_seconds: float | None = WHISPER_TRIM_S
    live_margin_s: float | None = WHISPER_LIVE_MARGIN_S
    tail_pool: int = WHISPER_TAIL_POOL
    adaptation: str | None = None
    decoder: str = "beam"
    partials: bool = False


class _Common:
    """The interface methods both backbones share."""

    backbone: str
    meta: dict
    decoder_fallbacks = 0   # segments the small model's beam search failed on (decoded greedily instead)

    @property
    def model_version(self) -> str:
        return self.meta["sha256"]

    batch_shares_work = False

    def warm_up(self) -> None:
        return None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.initial_params().items()}

    def transcribe_batch(self, audios: list[Tensor], sample_rate: int, *,
                         params: list[Params | None] | None = None,
                         vocabularies: list[list[str] | None] | None = None) -> list[Transcript]:
        """vocabularies: each segment's words and names to favour (a line's vocabulary), or None:
        the small model's hotword boost (shallow fusion in its beam search)."""
        params, vocabularies = _per_segment(audios, params, vocabularies)
        return [self.transcribe(a, sample_rate, params=p, hotwords=v or None)
                for a, p, v in zip(audios, params, vocabularies)]


def _per_segment(audios: list, params: list | None, vocabularies: list | None) -> tuple[list, list]:
    params = params if params is not None else [None] * len(audios)
    vocabularies = vocabularies if vocabularies is not None else [None] * len(audios)
    if len(params) != len(audios) or len(vocabularies) != len(audios):
        raise ValueError(f"{len(audios)} segments but {len(params)} parameter sets and {len(vocabularies)} vocabularies")
    return params, vocabularies


class SmallEngine(_Common, Recognizer):
    """The small streaming CTC model (trained on synthesized voices: 93 % WER on a real speaker)."""

    backbone = "small"
    label_free_min_confidence = AdaptationConfig.min_confidence
    pretrained_on_real_speech = False
    scoring_key = None       # its transcripts carry no search score

    def transcribe(self, audio: Tensor, sample_rate: int | None = None, *, params: Params | None = None,
                   hotwords: list[str] | None = None) -> Transcript:
        """The beam decoder can fail on a hypothesis whose timesteps run past the last frame
        (IndexError in its word timing); that segment is then decoded greedily rather than lost."""
        try:
            return super().transcribe(audio, sample_rate, params=params, hotwords=hotwords)
        except IndexError as exc:
            logger.warning("beam search failed on a segment (%s): using the greedy decoder for it", exc)
            self.decoder_fallbacks += 1
            return greedy_decode(self.log_probs(self.prepare(audio, sample_rate), params), self.model.cfg.frame_seconds)

    def stream(self, sample_rate: int = 8000, *, params: Params | None = None,
               hotwords: list[str] | None = None):
        return super().stream(sample_rate, params, hotwords)

    def accept_batch(self, streams: list, chunks: list[Tensor]) -> list[Transcript]:
        """One by one: the streaming model carries each stream's state, so a partial costs only its new audio."""
        if len(streams) != len(chunks):
            raise ValueError(f"{len(streams)} streams but {len(chunks)} chunks")
        return [s.accept(c) for s, c in zip(streams, chunks)]

    def initial_params(self) -> Params:
        return small_initial_params(self.model)

    def adapt(self, audios: list[Tensor], texts: list[str] | None, sample_rate: int, *,
              start: Params | None = None, cfg: AdaptationConfig = AdaptationConfig(),
              hypotheses: list[str] | None = None,
              hypothesis_scores: list[float | None] | None = None) -> AdaptationResult:
        """hypotheses (the segments' stored texts) and their scores are not used: label-free, the
        small model's pseudo-labels are its own confident hypotheses."""
        xs = [self.prepare(a, sample_rate) for a in audios]
        return adapt_caller(self, xs, texts, start=start, cfg=cfg)

    def adaptation_config(self, mode: str, segments: int) -> AdaptationConfig:
        """Supervised: the guard holds out chunks of a third of the verified segments (1 to 3),
        each in turn; label-free: its confidence guard (5 chunks of 2) with the small model's
        threshold (0.75, chosen on tuning callers: model card)."""
        if mode == "label-free":
            return AdaptationConfig(mode=mode, min_confidence=self.label_free_min_confidence)
        return AdaptationConfig(mode=mode, holdout=max(1, min(3, segments // 3)))

    def reference_text(self, text: str) -> str:
        return normalize(text)


class WhisperEngine(_Common, WhisperRecognizer):
    """Whisper tiny or base, pretrained on real speech (the default)."""

    backbone = "whisper"        # load_engine sets the size: 'whisper-tiny', 'whisper-base'
    label_free_min_confidence = WHISPER_LABEL_FREE_MIN_CONFIDENCE
    pretrained_on_real_speech = True

    def transcribe(self, audio: Tensor, sample_rate: int | None = None, *, params: Params | None = None,
                   **options) -> Transcript:
        return super().transcribe(audio, sample_rate, params=params, **options)

    def warm_up(self) -> None:
        """The padding's encoding of the live margin (about one whole-window encoder pass)."""
        if self.uses_live_margin:
            self.padding_context()

    @property
    def batch_shares_work(self) -> bool:
        """Only the whole 30 s window with a float encoder is encoded as one batch (see
        `WhisperRecognizer.transcribe_batch`)."""
        return self.trim_seconds is None and not self.uses_live_margin and self.int8 != "all"

    def transcribe_batch(self, audios: list[Tensor], sample_rate: int, *,
                         params: list[Params | None] | None = None,
                         vocabularies: list[list[str] | None] | None = None) -> list[Transcript]:
        """Segments of callers without a profile share one batched pass (`WhisperRecognizer.transcribe_batch`); a
        caller's adapted parameters change the model, so those segments are recognized one by one.
        vocabularies: each segment's words and names to favour, given to Whisper as a prompt;
        segments with a vocabulary are recognized one by one too."""
        params, vocabularies = _per_segment(audios, params, vocabularies)
        out: list[Transcript | None] = [None] * len(audios)
        plain = [i for i, (p, v) in enumerate(zip(params, vocabularies)) if not p and not v]
        if len(plain) > 1:
            for i, t in zip(plain, WhisperRecognizer.transcribe_batch(self, [audios[i] for i in plain], sample_rate)):
                out[i] = t
        for i, t in enumerate(out):
            if t is None:
                prompt = ", ".join(vocabularies[i]) if vocabularies[i] else None
                out[i] = self.transcribe(audios[i], sample_rate, params=params[i], prompt=prompt)
        return out  # type: ignore[return-value]

    def stream(self, sample_rate: int = 8000, *, params: Params | None = None):
        return super().stream(sample_rate, params)

    def initial_params(self) -> Params:
        return initial_whisper_params(self)

    def adapt(self, audios: list[Tensor], texts: list[str] | None, sample_rate: int, *,
              start: Params | None = None, cfg: AdaptationConfig = AdaptationConfig(),
              hypotheses: list[str] | None = None,
              hypothesis_scores: list[float | None] | None = None) -> AdaptationResult:
        """hypotheses: the segments' stored texts; label-free pseudo-labels start from them, each
        used only where Whisper's own greedy pass of the segment agrees (so a text another
        recognizer made cannot teach it). hypothesis_scores: their stored `Transcript.avg_logprob`
        where it was made under this `scoring_key` with `start` (else None): the guard takes them
        instead of searching those segments again."""
        label_free = cfg.mode == "label-free"
        return adapt_whisper_caller(self, audios, texts, sample_rate, start=start, cfg=cfg,
                                    hypotheses=hypotheses if label_free else None,
                                    hypothesis_scores=hypothesis_scores if label_free and hypotheses else None)

    def adaptation_config(self, mode: str, segments: int) -> AdaptationConfig:
        """asr_core.whisper.adapt's guard (2 folds of half the segments); label-free pseudo-labels
        from Whisper's beam output above its confidence threshold."""
        if mode == "label-free":
            return AdaptationConfig(mode=mode, min_confidence=self.label_free_min_confidence)
        return AdaptationConfig(mode=mode)

    def reference_text(self, text: str) -> str:
        """Whisper is taught written text, as it writes it (empty when nothing speakable is left)."""
        return " ".join(text.split()) if normalize(text) else ""


def load_engine(backbone: str, *, path: str | None = None, settings: EngineSettings = EngineSettings()
                ) -> SpeechRecognizer:
    """The recognizer of `backbone` ('small', 'whisper-tiny', 'whisper-base'). path: its checkpoint
    (default: the small model's shipped checkpoint, or the converted Whisper file of that name).
    Raises CheckpointError for a missing or corrupt checkpoint, BackboneError for an unknown backbone."""
    if backbone not in BACKBONES:
        raise BackboneError(f"unknown backbone {backbone!r}: one of {', '.join(BACKBONES)}")
    if backbone == "small":
        return SmallEngine.load(path, decoder="greedy" if settings.partials else settings.decoder)
    precision = partial_load_args(settings.partial_encoder) if settings.partials else {"quantize": settings.int8}
    rec = WhisperEngine.load(path or backbone, beam_size=1 if settings.partials else settings.beam_size,
                             trim_seconds=settings.trim_seconds, live_margin_s=settings.live_margin_s,
                             adaptation=settings.adaptation, tail_pool=settings.tail_pool, **precision)
    rec.backbone = backbone
    return rec


def threads(n: int) -> None:
    """Set this thread's torch thread count (OpenMP is per thread) when it differs."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
