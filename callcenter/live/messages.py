"""Result messages to agents, and the channel-layer groups that carry them.

The message shapes are a stable interface (DESIGN.md)::

    {"type": "partial", "call": 12, "segment": 34, "index": 0, "text": "i would like",
     "words": [{"w": "i", "start": 0.31, "end": 0.4, "conf": 0.93}, ...], "audio_at": 1764220000.12,
     "start_ms": 1200}
    {"type": "final", "call": 12, "segment": 34, "index": 0, "text": "i would like a refund",
     "words": [...], "conf": 0.81, "status": "recognized", "start_ms": 1200, "end_ms": 3400,
     "endpoint_at": 1764220001.5, "started_at": 1764220001.52, "recognized_at": 1764220001.6}
    {"type": "call", "call": 12, "status": "live"|"ended"|"failed", "customer": 7|null,
     "caller": "+1555..."|null, "protocol": "twilio"|"pcm", "agent": "alice"|null}

``agent`` is the username of the agent the call is assigned to (null: the
unassigned queue); a call message is sent again when an agent takes a call.
An agent who is not a supervisor gets the messages of their own calls and of
unassigned ones only; when a call they saw is taken by another agent they get
``{"type": "withdrawn", "call": 12}`` and nothing more of it.

Word times are seconds from the start of the segment; ``start_ms``/``end_ms``
place the segment in the call. A final with ``"status": "failed"`` has an
empty text and an ``"error"``. The ``*_at`` fields are Unix times (server
clock) for latency measurements: the endpoint detected, the recognition
task started, the result stored.

Every message goes to the call's group and to the agents' group; a channel
layer event is ``{"type": "transcript.message", "message": <message>}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

AGENTS_GROUP = "agents"
EVENT_TYPE = "transcript.message"


def call_group(call_id: int) -> str:
    return f"call.{call_id}"


def groups_for_call(call_id: int) -> tuple[str, str]:
    return call_group(call_id), AGENTS_GROUP


def session_group(session_key: str) -> str:
    """The agents' feed sockets of one login session (closed when it logs
    out); named by a hash, so session keys never appear in Redis."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


SESSION_CLOSED = "session.closed"


def user_group(user_id: int) -> str:
    """The agents' feed sockets of one user, every login session of theirs:
    told when the user's password changes or the user is deactivated."""
    return f"user.{user_id}"


# Each socket of the user then checks its own login session and closes when
# it is no longer valid (a session kept by ``update_session_auth_hash`` stays).
USER_CHANGED = "user.changed"


def _words(words: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    return [
        {"w": w["w"], "start": round(float(w["start"]), 3), "end": round(float(w["end"]), 3),
         "conf": round(float(w["conf"]), 3)}
        for w in words
    ]  # fmt: skip


def _redacted(text: str, words: Sequence[Mapping[str, object]], *, partial: bool):
    """Card numbers out of what agents see (``PRIVACY_REDACT_CARD_NUMBERS``)."""
    from django.conf import settings

    from callcenter import privacy

    if not settings.PRIVACY_REDACT_CARD_NUMBERS:
        return text, words
    return privacy.redact_text(text, partial=partial), privacy.redact_words(words, partial=partial)


def partial_message(
    *,
    call_id: int,
    segment_id: int,
    index: int,
    text: str,
    words: Sequence[Mapping[str, object]],
    audio_at: float,
    start_ms: int | None = None,
    profile_id: int | None = None,
    speaker: str | None = None,
) -> dict[str, object]:
    text, words = _redacted(text, words, partial=True)
    message: dict[str, object] = {
        "type": "partial",
        "call": call_id,
        "segment": segment_id,
        "index": index,
        "text": text,
        "words": _words(words),
        "audio_at": round(audio_at, 4),
    }
    if start_ms is not None:
        message["start_ms"] = start_ms
    if profile_id is not None:  # the caller's voice profile shaped this partial
        message["profile"] = profile_id
    if speaker is not None:  # "customer" or "agent"
        message["speaker"] = speaker
    return message


def final_message(
    *,
    call_id: int,
    segment_id: int,
    index: int,
    text: str,
    words: Sequence[Mapping[str, object]],
    confidence: float | None,
    status: str,
    start_ms: int,
    end_ms: int,
    endpoint_at: float | None = None,
    started_at: float | None = None,
    recognized_at: float | None = None,
    error: str | None = None,
    speaker: str | None = None,
    speculative: bool = False,
) -> dict[str, object]:
    text, words = _redacted(text, words, partial=False)
    message: dict[str, object] = {
        "type": "final",
        "call": call_id,
        "segment": segment_id,
        "index": index,
        "text": text,
        "words": _words(words),
        "conf": None if confidence is None else round(confidence, 4),
        "status": status,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "endpoint_at": endpoint_at,
        "started_at": started_at,
        "recognized_at": recognized_at,
    }
    if error is not None:
        message["error"] = error
    if speaker is not None:  # "customer" or "agent"
        message["speaker"] = speaker
    if speculative:  # recognized during the pause before the endpoint (the same audio and model)
        message["speculative"] = True
    return message


def call_message(
    *, call_id: int, status: str, protocol: str, customer_id: int | None, caller: str | None, agent: str | None = None
) -> dict[str, object]:
    return {
        "type": "call",
        "call": call_id,
        "status": status,
        "protocol": protocol,
        "customer": customer_id,
        "caller": caller,
        "agent": agent,
    }


def withdrawn_message(*, call_id: int) -> dict[str, object]:
    """To an agent: a call they could see is now another agent's."""
    return {"type": "withdrawn", "call": call_id}


def layer_event(message: Mapping[str, object]) -> dict[str, object]:
    return {"type": EVENT_TYPE, "message": dict(message)}
