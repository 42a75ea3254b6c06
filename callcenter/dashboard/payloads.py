"""The JSON the agent page reads: pure functions from rows to dicts.

A segment has the keys of a final message on the agents' feed
(``live.messages``), so the page renders both the same way."""

from __future__ import annotations

import datetime as dt

from callcenter.calls.models import Call, Customer, Segment


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def customer_json(customer: Customer | None) -> dict | None:
    if customer is None:
        return None
    return {"id": customer.pk, "name": customer.name, "phone": customer.phone}


def call_json(call: Call, *, viewer_agent_id: int | None = None) -> dict:
    return {
        "id": call.pk,
        "status": call.status,
        "protocol": call.protocol,
        "caller": (call.customer.name or call.customer.phone) if call.customer else None,
        "customer": customer_json(call.customer),
        "agent": call.agent.user.get_username() if call.agent_id else None,
        "mine": call.agent_id is not None and call.agent_id == viewer_agent_id,
        "started_at": _iso(call.started_at),
        "ended_at": _iso(call.ended_at),
    }


def segment_json(segment: Segment) -> dict:
    pending = segment.status == Segment.Status.PENDING
    return {
        "type": "pending" if pending else "final",
        "call": segment.call_id,
        "segment": segment.pk,
        "index": segment.index,
        "status": segment.status,
        "text": segment.best_text,
        "words": [] if pending else list(segment.words or []),
        "conf": segment.confidence,
        "start_ms": segment.start_ms,
        "end_ms": segment.end_ms,
        "speaker": segment.speaker,
        "verified": segment.is_verified,
    }


def history_json(history: dict) -> dict:
    return {
        "customer": customer_json(history["customer"]),
        "calls_total": history.get("calls_total"),
        "earlier_calls": [
            {
                "id": call.pk,
                "started_at": _iso(call.started_at),
                "status": call.status,
                "duration_s": call.duration_s,
                "agent": call.agent.user.get_username() if call.agent_id else None,
                "summary": summary,
            }
            for call, summary in history["earlier_calls"]
        ],
        "profile": history["profile"],
    }
