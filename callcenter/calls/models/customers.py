"""Who is on a call: agents (Django users) and customers (callers)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from callcenter.calls.models.patterns import E164_REGEX


class Agent(models.Model):
    """A person who takes calls; logs in as a Django user."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent")
    display_name = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name", "id"]

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()


class Customer(models.Model):
    """A caller, identified by phone number (E.164) or by an id the telephony
    side passes in the stream's custom parameters."""

    phone = models.CharField(
        "phone number",
        max_length=16,
        unique=True,
        help_text="E.164, e.g. +4915112345678",
        error_messages={"unique": "A customer with this phone number already exists."},
    )
    name = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    external_id = models.CharField(
        "external id",
        max_length=128,
        unique=True,
        null=True,
        blank=True,
        help_text="Customer id from the telephony stream's custom parameters.",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-id"]
        permissions = [
            ("adapt_customer", "Can trigger adaptation of a caller's voice profile"),
            ("forget_customer", "Can forget a caller (delete audio, transcripts and profiles)"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(phone__regex=E164_REGEX),
                name="customer_phone_e164",
                violation_error_message="Phone number must be in E.164 form, e.g. +4915112345678.",
            ),
            models.CheckConstraint(
                condition=~Q(external_id=""),
                name="customer_external_id_not_empty",
                violation_error_message="External id must be null or non-empty.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.phone})" if self.name else self.phone
