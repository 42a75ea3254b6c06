"""Customers: phone numbers in E.164 form, found or created once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.calls import selectors, services
from callcenter.errors import DuplicateCustomer, InvalidPhoneNumber


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+4915112345678", "+4915112345678"),
        (" +49 151 1234-5678 ", "+4915112345678"),
        ("0049 (151) 12.34.56.78", "+4915112345678"),
        ("+1 (555) 010-0000", "+15550100000"),
    ],
)
def test_phone_normalize_accepts_common_spellings_of_e164(raw, expected):
    assert services.phone_normalize(phone=raw) == expected


@pytest.mark.parametrize("raw", ["", "015112345678", "+0151", "+49 151 abc", "+1234567890123456", "tel:+4915"])
def test_phone_normalize_refuses_what_is_not_e164(raw):
    with pytest.raises(InvalidPhoneNumber, match="E.164") as caught:
        services.phone_normalize(phone=raw)
    assert caught.value.code == "invalid_phone"


@given(
    number=st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True),
    separators=st.lists(st.sampled_from([" ", "-", ".", "(", ")"]), max_size=6),
    positions=st.lists(st.integers(min_value=1, max_value=16), max_size=6),
)
def test_phone_normalize_undoes_any_separators(number, separators, positions):
    spelled = number
    for separator, position in zip(separators, positions, strict=False):
        spelled = spelled[:position] + separator + spelled[position:]
    assert services.phone_normalize(phone=spelled) == number


@pytest.mark.django_db
def test_customer_get_or_create_creates_once_then_finds_by_phone():
    first, created = services.customer_get_or_create(phone="+15550100001", name="Ada")
    again, created_again = services.customer_get_or_create(phone="+1 555 010 0001")

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk and again.name == "Ada"


@pytest.mark.django_db
def test_customer_get_or_create_prefers_the_external_id_and_records_it():
    by_phone, _ = services.customer_get_or_create(phone="+15550100001")
    linked, created = services.customer_get_or_create(phone="+15550100001", external_id="crm-7")
    from_other_phone, _ = services.customer_get_or_create(phone="+15550100999", external_id="crm-7")

    assert not created
    assert linked.pk == by_phone.pk == from_other_phone.pk
    assert selectors.customer_find(external_id="crm-7").pk == by_phone.pk


@pytest.mark.django_db
def test_customer_create_refuses_a_taken_external_id():
    services.customer_create(phone="+15550100001", external_id="crm-7")
    with pytest.raises(DuplicateCustomer, match="external id 'crm-7'"):
        services.customer_create(phone="+15550100002", external_id="crm-7")


@pytest.mark.django_db
def test_customer_create_refuses_a_bad_phone_before_touching_the_database():
    with pytest.raises(InvalidPhoneNumber):
        services.customer_create(phone="12345")
    assert selectors.customer_count() == 0
