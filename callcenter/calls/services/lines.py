"""Media lines: each has a secret token (only its SHA-256 is stored) that the
telephony side puts in the media URL."""

from __future__ import annotations

import hashlib
import secrets

from django.db import IntegrityError, transaction

from callcenter.errors import Conflict, InvalidInput, InvalidToken, LineDisabled, NotFound

from ..models import Line

# A token is made by `line_create` (43 characters); a longer one is refused before any lookup.
MAX_TOKEN_CHARS = 200


def line_token_hash(*, token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def line_create(*, name: str, enabled: bool = True, vocabulary: str = "") -> tuple[Line, str]:
    """Create a media line; returns it and its secret token, which is not
    stored (only its SHA-256 is) and cannot be shown again. ``vocabulary``:
    words and names the recognizer favours on its calls (one per line or comma)."""
    name = name.strip()
    if not name:
        raise InvalidInput("a line needs a name")
    if len(name) > 100:
        raise InvalidInput("a line name is at most 100 characters", name=name)
    token = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            line = Line.objects.create(
                name=name, token_hash=line_token_hash(token=token), enabled=enabled, vocabulary=vocabulary
            )
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
    if not token:
        raise InvalidToken("a valid line token is required in the media URL")
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken(f"this line token is not valid (longer than {MAX_TOKEN_CHARS} characters)")
    line = Line.objects.filter(token_hash=line_token_hash(token=token)).first()
    if line is None:
        raise InvalidToken("this line token is not valid")
    if not line.enabled:
        raise LineDisabled(f"line {line.name!r} is disabled", line=line.name)
    return line
