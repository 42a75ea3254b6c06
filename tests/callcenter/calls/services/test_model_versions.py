"""Model versions and voice profiles."""

from __future__ import annotations

import pytest

from callcenter.calls import selectors, services
from callcenter.errors import Conflict, InvalidInput, NotFound


SHA = "0123456789abcdef" * 4


@pytest.mark.django_db
def test_model_version_promote_leaves_exactly_one_active():
    v1 = services.model_version_register(name="base-1", checkpoint="asr_core/checkpoints/base.pt", sha256=SHA)
    v2 = services.model_version_register(name="meta-2", checkpoint="var/meta-2.pt", sha256=SHA.upper())
    assert selectors.model_version_active() is None

    services.model_version_promote(model_version_id=v1.pk)
    services.model_version_promote(model_version_id=v2.pk)

    active = selectors.model_version_active()
    assert active.pk == v2.pk and active.promoted_at is not None and active.sha256 == SHA
    with pytest.raises(Conflict, match="'base-1' already exists"):
        services.model_version_register(name="base-1", checkpoint="x.pt", sha256=SHA)
    with pytest.raises(InvalidInput, match="64 hex digits"):
        services.model_version_register(name="bad", checkpoint="x.pt", sha256="abc")


@pytest.mark.django_db
def test_voice_profiles_are_numbered_per_customer_and_model():
    customer = services.customer_create(phone="+15550100001")
    model = services.model_version_register(name="base-1", checkpoint="a.pt", sha256=SHA)

    first = services.voice_profile_create(customer_id=customer.pk, model_version_id=model.pk, state=b"\x01")
    second = services.voice_profile_create(
        customer_id=customer.pk, model_version_id=model.pk, state=b"\x02", metrics={"wer_before": 0.3}
    )

    assert (first.version, second.version) == (1, 2)
    latest = selectors.voice_profile_latest(customer_id=customer.pk, model_version_id=model.pk)
    assert latest.pk == second.pk and bytes(latest.state) == b"\x02"
    with pytest.raises(NotFound):
        services.voice_profile_create(customer_id=customer.pk, model_version_id=999999, state=b"")
