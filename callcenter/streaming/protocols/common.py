"""What both media protocols share: the websocket close codes,
``ProtocolError`` and the checks of JSON fields (pure functions, no sockets,
no Django)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from callcenter.errors import InvalidInput

# --- Close codes (documented in the README) ---------------------------------

CLOSE_NORMAL = 1000
# Daphne only sends 1000 and 3000-4999 itself: an internal error has a code
# in the application range (the websocket form of HTTP 500).
CLOSE_INTERNAL_ERROR = 4500
CLOSE_PROTOCOL_ERROR = 4400
CLOSE_BAD_TOKEN = 4401
CLOSE_LINE_DISABLED = 4403
CLOSE_START_TIMEOUT = 4408
CLOSE_DUPLICATE_STREAM = 4409
CLOSE_FRAME_TOO_LARGE = 4413
CLOSE_UNSUPPORTED_MEDIA = 4415
# The agents' feed: no session / not staff.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403

MAX_ID_LENGTH = 128
MAX_PARAMETERS = 32
MAX_PARAMETER_LENGTH = 256


class ProtocolError(InvalidInput):
    """Bad input on a media socket: ``code`` for programs, ``message`` for
    people, ``close_code`` for the websocket."""

    def __init__(self, code: str, message: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


def _load_json(text: str | bytes | None, *, max_bytes: int) -> dict:
    if text is None:
        raise ProtocolError("binary_frame", "expected a JSON text frame, got a binary frame")
    if isinstance(text, (bytes, bytearray)):
        raise ProtocolError("binary_frame", "expected a JSON text frame, got a binary frame")
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError(
            "frame_too_large", f"frame is larger than {max_bytes} bytes", close_code=CLOSE_FRAME_TOO_LARGE
        )
    try:
        value = json.loads(text)
    except RecursionError:
        raise ProtocolError("invalid_json", "frame is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        # the parser's reason: where the syntax breaks, or a number too long to read
        reason = "a number has too many digits" if "digits" in str(exc) else str(exc)[:200]
        raise ProtocolError("invalid_json", f"frame is not valid JSON: {reason}") from None
    if not isinstance(value, dict):
        raise ProtocolError("invalid_message", f"expected a JSON object, got {type(value).__name__}")
    return value


def _object(message: Mapping, key: str, *, required: bool = True) -> Mapping:
    value = message.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("invalid_message", f"{key!r} must be an object")
    return value


# Characters no identifier, number or name from a telephony client contains:
# NUL and the other C0/C1 controls, and lone UTF-16 surrogates ("\ud800" is
# valid JSON, but cannot be stored, logged as UTF-8 or compared safely).
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _string(value: object, what: str, *, max_length: int = MAX_ID_LENGTH, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ProtocolError("invalid_message", f"{what} must be a string")
    text = str(value)
    if _FORBIDDEN_CHARACTERS.search(text):
        raise ProtocolError("invalid_message", f"{what} contains a control character or a lone surrogate")
    if required and not text.strip():
        raise ProtocolError("invalid_message", f"{what} must not be empty")
    if len(text) > max_length:
        raise ProtocolError("invalid_message", f"{what} is longer than {max_length} characters")
    return text


def _counter(value: object, what: str) -> int | None:
    """Twilio sends its counters as strings of digits ("3"); accept ints too."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ProtocolError("invalid_message", f"{what} must be a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
        number = int(value)
    else:
        raise ProtocolError("invalid_message", f"{what} must be a whole number, got {str(value)[:20]!r}")
    if number < 0:
        raise ProtocolError("invalid_message", f"{what} must not be negative")
    return number


# Vocabulary lists (both protocols).
MAX_PHRASES = 100
MAX_PHRASE_LENGTH = 100


def phrases_clean(values: Sequence[object], *, what: str) -> tuple[str, ...]:
    """A vocabulary list: non-empty strings, whitespace collapsed, duplicates dropped, bounded."""
    out: list[str] = []
    for value in values:
        phrase = " ".join(_string(value, f"a phrase of {what}", max_length=MAX_PHRASE_LENGTH, required=False).split())
        if phrase and phrase not in out:
            out.append(phrase)
    if len(out) > MAX_PHRASES:
        raise ProtocolError("invalid_message", f"{what} has more than {MAX_PHRASES} phrases")
    return tuple(out)
