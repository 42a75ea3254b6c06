"""Reads of the calls app."""

from __future__ import annotations

import pytest

from callcenter.calls import selectors
from callcenter.errors import NotFound


@pytest.mark.django_db
def test_selectors_raise_not_found_for_missing_rows():
    with pytest.raises(NotFound) as caught:
        selectors.call_get(call_id=999999)
    assert caught.value.as_dict() == {"code": "not_found", "message": "call #999999 does not exist", "call_id": 999999}
    with pytest.raises(NotFound):
        selectors.customer_get(customer_id=999999)
    with pytest.raises(NotFound):
        selectors.segment_get(segment_id=999999)
