"""Model versions and callers' voice profiles."""

from __future__ import annotations

from django.db.models import QuerySet

from callcenter.errors import NotFound

from ..models import ModelVersion, VoiceProfile


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def model_version_get(*, model_version_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        raise NotFound(f"model version #{model_version_id} does not exist", model_version_id=model_version_id)
    return version


def voice_profile_latest(*, customer_id: int, model_version_id: int) -> VoiceProfile | None:
    return (
        VoiceProfile.objects.filter(customer_id=customer_id, model_version_id=model_version_id)
        .order_by("-version")
        .first()
    )


def voice_profile_for_model(*, customer_id: int, model_sha256: str) -> VoiceProfile | None:
    """The caller's latest profile made for the model with this SHA-256 (the
    recognizer's version), or None. Its ``state`` bytes are loaded on first
    access: workers cache parsed profiles and rarely need them."""
    return (
        VoiceProfile.objects.filter(customer_id=customer_id, model_version__sha256=model_sha256)
        .defer("state")
        .order_by("-version", "-id")
        .first()
    )


def voice_profiles_for_customer(*, customer_id: int) -> QuerySet[VoiceProfile]:
    return VoiceProfile.objects.filter(customer_id=customer_id).select_related("model_version").order_by(
        "-model_version__created", "-version"
    )
