"""Customers: phone numbers in E.164 form, and the caller a live call belongs to."""

from __future__ import annotations

import logging
import re

from django.db import IntegrityError, transaction

from callcenter.errors import DuplicateCustomer, InvalidInput, InvalidPhoneNumber

from ..models import E164_REGEX, Customer

logger = logging.getLogger(__name__)

_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_E164 = re.compile(E164_REGEX)


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
