"""Forgetting a caller: rows deleted, then their audio files once that commits."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import transaction

from callcenter.errors import InvalidState, NotFound

from ..models import AdaptationRun, Call, Customer, Segment, VoiceProfile
from ._common import require_permission

logger = logging.getLogger(__name__)


def customer_forget(*, customer_id: int, user: AbstractBaseUser | None = None) -> dict[str, int]:
    """Forget a caller: delete their calls' audio files, transcripts
    (segments), calls, voice profiles, adaptation runs and the customer
    row. The files are deleted once the deletion of the rows commits.
    Refused while the caller is on a live call. Returns what was deleted."""
    if user is not None:
        require_permission(user, "calls.forget_customer", "forget callers")
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
