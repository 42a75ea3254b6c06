"""Media lines (trunks) and their vocabularies."""

from __future__ import annotations

import re

from django.db import models
from django.db.models import Q

from callcenter.calls.models.patterns import SHA256_REGEX


class Line(models.Model):
    """A media line (trunk): what a telephony integrator points at the media
    endpoint. Its secret token is shown once at creation; only its SHA-256
    is stored."""

    name = models.CharField(max_length=100, unique=True)
    token_hash = models.CharField(
        "token SHA-256", max_length=64, unique=True, editable=False, help_text="Hex SHA-256 of the line's token."
    )
    enabled = models.BooleanField(default=True, help_text="A disabled line refuses new calls.")
    vocabulary = models.TextField(
        blank=True,
        help_text="Product names and words the recognizer should favour on this line, one per line "
        "(or comma-separated). A stream can add its own (PCM phrase_list, Twilio customParameters).",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(token_hash__regex=SHA256_REGEX), name="line_token_hash_sha256_hex"),
            models.CheckConstraint(condition=~Q(name=""), name="line_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name if self.enabled else f"{self.name} (disabled)"

    def vocabulary_list(self) -> list[str]:
        """The line's vocabulary: one phrase per line or comma, whitespace collapsed, no duplicates."""
        return split_vocabulary(self.vocabulary)


MAX_VOCABULARY = 100


def split_vocabulary(text: str) -> list[str]:
    """Phrases from text with one per line or comma-separated."""
    phrases: list[str] = []
    for part in re.split(r"[,\n]", text or ""):
        phrase = " ".join(part.split())
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    return phrases
