"""Segments: created at speech onset, finished with their audio (which queues
their recognition), the recognizer's result, and supervisors' review."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import partial

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from callcenter import privacy
from callcenter.ops import metrics
from callcenter.errors import DuplicateSegment, InvalidInput, InvalidState, NotFound

from ..models import Call, Segment, VoiceProfile
from ._common import require_permission
from .enqueue import analytics_final_enqueue, recognition_enqueue


def segment_create(
    *,
    call_id: int,
    index: int,
    start_ms: int,
    end_ms: int,
    sample_rate: int,
    audio: bytes = b"",
    audio_extension: str = "wav",
    speaker: str = Segment.Speaker.CUSTOMER,
) -> Segment:
    """Store one endpointed segment (status ``pending``) of ``speaker``, and its audio file."""
    if speaker not in Segment.Speaker.values:
        raise InvalidInput(
            f"speaker must be one of {', '.join(Segment.Speaker.values)}, got {speaker!r}", speaker=speaker
        )
    if index < 0:
        raise InvalidInput(f"segment index must be >= 0, got {index}", index=index)
    if not 0 <= start_ms <= end_ms:
        raise InvalidInput(
            f"segment times must satisfy 0 <= start_ms <= end_ms, got {start_ms}..{end_ms}",
            start_ms=start_ms,
            end_ms=end_ms,
        )
    if sample_rate <= 0:
        raise InvalidInput(f"sample rate must be positive, got {sample_rate}", sample_rate=sample_rate)
    if not re.fullmatch(r"[a-z0-9]{1,8}", audio_extension):
        raise InvalidInput(f"bad audio file extension {audio_extension!r}", audio_extension=audio_extension)
    if not Call.objects.filter(pk=call_id).exists():
        raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
    try:
        with transaction.atomic():
            segment = Segment.objects.create(
                call_id=call_id, index=index, start_ms=start_ms, end_ms=end_ms, sample_rate=sample_rate,
                speaker=speaker,
            )  # fmt: skip
    except IntegrityError:
        if Segment.objects.filter(call_id=call_id, index=index).exists():
            raise DuplicateSegment(
                f"call #{call_id} already has segment {index}", call_id=call_id, index=index
            ) from None
        raise
    if audio:
        segment.audio.save(f"call{call_id}-seg{index}.{audio_extension}", ContentFile(audio), save=True)
    return segment


def segment_finish(
    *,
    segment_id: int,
    end_ms: int,
    audio: bytes,
    endpoint_at: float | None = None,
    speech_start_ms: int | None = None,
    speech_end_ms: int | None = None,
) -> Segment:
    """Close a segment opened at speech onset: set its end, store its audio
    (a WAV file, written once) and queue its recognition once the
    transaction commits. ``endpoint_at`` (Unix time the endpoint was
    detected) travels with the task so that latency can be measured.
    ``speech_start_ms``/``speech_end_ms``: where the voiced audio lies
    (the endpointer's; talk-time analytics use it)."""
    if not audio:
        raise InvalidInput("a finished segment needs its audio", segment_id=segment_id)
    with transaction.atomic():
        segment = _segment_locked(segment_id)
        if segment.audio:
            raise InvalidState(f"segment #{segment_id} already has its audio", segment_id=segment_id)
        if end_ms < segment.start_ms:
            raise InvalidInput(
                f"segment end {end_ms} ms is before its start {segment.start_ms} ms", segment_id=segment_id
            )
        if (speech_start_ms is None) != (speech_end_ms is None) or (
            speech_start_ms is not None and not segment.start_ms <= speech_start_ms <= speech_end_ms <= end_ms
        ):
            raise InvalidInput(
                f"the voiced part {speech_start_ms}..{speech_end_ms} ms must lie within the segment "
                f"{segment.start_ms}..{end_ms} ms", segment_id=segment_id,
            )  # fmt: skip
        segment.end_ms = end_ms
        segment.speech_start_ms, segment.speech_end_ms = speech_start_ms, speech_end_ms
        segment.audio.save(f"call{segment.call_id}-seg{segment.index}.wav", ContentFile(audio), save=False)
        segment.save(update_fields=["end_ms", "speech_start_ms", "speech_end_ms", "audio", "updated"])
        transaction.on_commit(lambda: recognition_enqueue(segment_id=segment.pk, endpoint_at=endpoint_at))
        return segment


def segments_requeue(*, segment_ids: Sequence[int]) -> int:
    """Queue recognition again for those of the segments that have audio and
    are not recognized (failed, or pending with a lost task). Returns how
    many were queued."""
    ids = list(
        Segment.objects.filter(pk__in=segment_ids)
        .exclude(status=Segment.Status.RECOGNIZED)
        .exclude(audio="")
        .values_list("pk", flat=True)
    )
    with transaction.atomic():
        Segment.objects.filter(pk__in=ids).update(status=Segment.Status.PENDING, failure_reason="")
        for segment_id in ids:
            transaction.on_commit(lambda sid=segment_id: recognition_enqueue(segment_id=sid, endpoint_at=None))
    return len(ids)


def _segment_locked(segment_id: int) -> Segment:
    segment = Segment.objects.select_for_update().filter(pk=segment_id).first()
    if segment is None:
        raise NotFound(f"segment #{segment_id} does not exist", segment_id=segment_id)
    return segment


def _words_clean(words: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    cleaned = []
    for position, word in enumerate(words):
        try:
            item = {
                "w": str(word["w"]),
                "start": float(word["start"]),
                "end": float(word["end"]),
                "conf": float(word["conf"]),
            }
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(
                f"word {position} needs w, start, end and conf, got {word!r}", position=position
            ) from None
        if not (0 <= item["start"] <= item["end"] and 0 <= item["conf"] <= 1):
            raise InvalidInput(f"word {position} has bad times or confidence: {item!r}", position=position)
        cleaned.append(item)
    return cleaned


def segment_store_result(
    *,
    segment_id: int,
    text: str,
    words: Sequence[Mapping[str, object]],
    confidence: float | None,
    voice_profile_id: int | None = None,
    avg_logprob: float | None = None,
    scored_by: str = "",
) -> Segment:
    """Store the recognizer's result (and the caller's profile it used, if
    any); status becomes ``recognized``. Storing again overwrites (a task
    that runs twice stores one result). Card numbers are redacted when
    ``PRIVACY_REDACT_CARD_NUMBERS`` is on. ``avg_logprob`` and ``scored_by``:
    the search's score of the text and the recognizer's scoring key (the
    adaptation guard takes the score instead of searching the segment again);
    not kept for a redacted text, which is no longer what was scored."""
    if confidence is not None and not 0 <= confidence <= 1:
        raise InvalidInput(f"confidence must be within 0..1, got {confidence}", confidence=confidence)
    if avg_logprob is not None and not (isinstance(avg_logprob, (int, float)) and not isinstance(avg_logprob, bool)
                                        and math.isfinite(avg_logprob) and avg_logprob <= 0):
        raise InvalidInput(f"avg_logprob must be a finite log-probability (<= 0), got {avg_logprob!r}",
                           avg_logprob=avg_logprob)
    scored_by = scored_by or ""
    if len(scored_by) > Segment._meta.get_field("scored_by").max_length:
        raise InvalidInput(f"scored_by is too long: {scored_by!r}", scored_by=scored_by)
    if avg_logprob is None or not scored_by:
        avg_logprob, scored_by = None, ""
    cleaned = _words_clean(words)
    text = text.strip()
    if settings.PRIVACY_REDACT_CARD_NUMBERS:
        redacted = privacy.redact_text(text)
        if redacted != text:
            metrics.REDACTIONS.labels("transcript").inc()
            text, cleaned = redacted, privacy.redact_words(cleaned)
            avg_logprob, scored_by = None, ""
    with transaction.atomic():
        segment = _segment_locked(segment_id)
        segment.text = text
        segment.words = cleaned
        segment.confidence = confidence
        segment.avg_logprob, segment.scored_by = avg_logprob, scored_by
        segment.status = Segment.Status.RECOGNIZED
        segment.failure_reason = ""
        segment.voice_profile_id = (
            voice_profile_id
            if voice_profile_id is not None and VoiceProfile.objects.filter(pk=voice_profile_id).exists()
            else None
        )
        segment.save(
            update_fields=["text", "words", "confidence", "avg_logprob", "scored_by", "status", "failure_reason",
                           "voice_profile", "updated"]
        )
        # Category rules match on each final (``analytics.final``: live alerts).
        transaction.on_commit(partial(analytics_final_enqueue, segment_id=segment.pk))
        return segment


def segment_mark_failed(*, segment_id: int, reason: str) -> Segment:
    """Record that recognition gave up on a segment, and why."""
    with transaction.atomic():
        segment = _segment_locked(segment_id)
        segment.status = Segment.Status.FAILED
        segment.failure_reason = reason
        segment.save(update_fields=["status", "failure_reason", "updated"])
        return segment


VERIFIED_TEXT_MAX_CHARS = 10_000


def segment_verify(*, segment_id: int, text: str, user: AbstractBaseUser) -> Segment:
    """A reviewer's transcript of the segment (may equal the recognized
    text); records who verified it and when. Empty text is refused (a
    segment without speech is deleted, not verified). Card numbers are
    redacted as in recognized text."""
    require_permission(user, "calls.verify_segment", "verify transcripts")
    text = " ".join((text or "").split())
    if not text:
        raise InvalidInput(
            "a verified transcript cannot be empty: type what the caller said", segment_id=segment_id
        )
    if len(text) > VERIFIED_TEXT_MAX_CHARS:
        raise InvalidInput(
            f"a verified transcript is at most {VERIFIED_TEXT_MAX_CHARS} characters", segment_id=segment_id
        )
    if settings.PRIVACY_REDACT_CARD_NUMBERS:
        text = privacy.redact_text(text)
    with transaction.atomic():
        segment = _segment_locked(segment_id)
        segment.verified_text = text
        segment.verified_by = user
        segment.verified_at = timezone.now()
        segment.save(update_fields=["verified_text", "verified_by", "verified_at", "updated"])
        return segment


def segments_verify_as_recognized(*, segment_ids: Sequence[int], user: AbstractBaseUser) -> tuple[int, int]:
    """Bulk "mark verified": each segment's recognized text becomes its
    verified transcript. Segments already verified are left as they are;
    segments without recognized text are skipped (they need a typed
    transcript). Returns ``(verified, skipped)``."""
    require_permission(user, "calls.verify_segment", "verify transcripts")
    verified = skipped = 0
    with transaction.atomic():
        for segment in Segment.objects.select_for_update().filter(pk__in=list(segment_ids)).order_by("pk"):
            if segment.is_verified:
                continue
            if not segment.text.strip():
                skipped += 1
                continue
            segment.verified_text = segment.text.strip()
            segment.verified_by = user
            segment.verified_at = timezone.now()
            segment.save(update_fields=["verified_text", "verified_by", "verified_at", "updated"])
            verified += 1
    return verified, skipped


def segments_rerecognize(*, segment_ids: Sequence[int], user: AbstractBaseUser) -> int:
    """Recognize segments again (recognized ones too, e.g. after the
    caller's profile improved); verified transcripts are kept. Returns how
    many were queued."""
    require_permission(user, "calls.rerecognize_segment", "recognize segments again")
    ids = list(Segment.objects.filter(pk__in=list(segment_ids)).exclude(audio="").values_list("pk", flat=True))
    with transaction.atomic():
        Segment.objects.filter(pk__in=ids).update(status=Segment.Status.PENDING, failure_reason="")
        for segment_id in ids:
            transaction.on_commit(lambda sid=segment_id: recognition_enqueue(segment_id=sid, endpoint_at=None))
    return len(ids)
