"""Calls: start, end (which schedules the caller's adaptation), and an agent taking one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from callcenter.errors import Conflict, DuplicateCall, InvalidInput, InvalidState, NotFound

from ..models import MAX_VOCABULARY, Agent, Call, Customer, Line, split_vocabulary
from ._common import require_choice
from .adaptation import adaptation_schedule_after_call
from .enqueue import analytics_call_enqueue


def call_start(
    *,
    protocol: str,
    external_id: str = "",
    direction: str = Call.Direction.INBOUND,
    customer_id: int | None = None,
    agent_id: int | None = None,
    line_id: int | None = None,
    started_at: dt.datetime | None = None,
    vocabulary: Sequence[str] = (),
) -> Call:
    """Record a call that has just started (status ``live``). Its vocabulary (words and names the
    recognizer favours) is the line's followed by the stream's own ``vocabulary``."""
    require_choice(protocol, Call.Protocol, "protocol")
    require_choice(direction, Call.Direction, "direction")
    external_id = (external_id or "").strip()
    if customer_id is not None and not Customer.objects.filter(pk=customer_id).exists():
        raise NotFound(f"customer #{customer_id} does not exist", customer_id=customer_id)
    if agent_id is not None and not Agent.objects.filter(pk=agent_id).exists():
        raise NotFound(f"agent #{agent_id} does not exist", agent_id=agent_id)
    line = Line.objects.filter(pk=line_id).first() if line_id is not None else None
    if line_id is not None and line is None:
        raise NotFound(f"line #{line_id} does not exist", line_id=line_id)
    # The line's phrases first; a list over the limit keeps its first phrases.
    phrases = split_vocabulary("\n".join([*(line.vocabulary_list() if line else []), *vocabulary]))[:MAX_VOCABULARY]
    try:
        with transaction.atomic():
            return Call.objects.create(
                protocol=protocol,
                external_id=external_id,
                direction=direction,
                customer_id=customer_id,
                agent_id=agent_id,
                line_id=line_id,
                started_at=started_at or timezone.now(),
                vocabulary=phrases,
            )
    except IntegrityError:
        if external_id and Call.objects.filter(protocol=protocol, external_id=external_id).exists():
            raise DuplicateCall(
                f"a {protocol} call with external id {external_id!r} already exists",
                protocol=protocol,
                external_id=external_id,
            ) from None
        raise


def call_end(
    *,
    call_id: int,
    status: str = Call.Status.ENDED,
    failure_reason: str = "",
    ended_at: dt.datetime | None = None,
) -> Call:
    """Close a live call as ``ended`` or ``failed``. Ending it again with the
    same status changes nothing (idempotent); with another status it is an
    ``InvalidState``."""
    if status not in (Call.Status.ENDED, Call.Status.FAILED):
        raise InvalidInput(f"a call ends as 'ended' or 'failed', not {status!r}", status=status)
    with transaction.atomic():
        call = Call.objects.select_for_update().filter(pk=call_id).first()
        if call is None:
            raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
        if call.status == status:
            return call
        if call.status != Call.Status.LIVE:
            raise InvalidState(f"call #{call_id} is already {call.status}, cannot mark it {status}", call_id=call_id)
        call.status = status
        call.failure_reason = failure_reason
        call.ended_at = max(ended_at or timezone.now(), call.started_at)
        call.save(update_fields=["status", "failure_reason", "ended_at"])
        if call.customer_id is not None and settings.ADAPTATION_AFTER_CALL:
            adaptation_schedule_after_call(call=call)
        transaction.on_commit(partial(analytics_call_enqueue, call_id=call.pk))
        return call


def call_assign_agent(*, call_id: int, agent_id: int) -> Call:
    """An agent takes a live call that nobody has taken yet. Taking a call
    that is already the agent's changes nothing (idempotent); a call another
    agent has, or one that is over, is refused."""
    with transaction.atomic():
        call = Call.objects.select_for_update().filter(pk=call_id).first()
        if call is None:
            raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
        if not Agent.objects.filter(pk=agent_id).exists():
            raise NotFound(f"agent #{agent_id} does not exist", agent_id=agent_id)
        if call.agent_id == agent_id:
            return call
        if call.agent_id is not None:
            raise Conflict(f"call #{call_id} is already taken by another agent", call_id=call_id)
        if call.status != Call.Status.LIVE:
            raise InvalidState(f"call #{call_id} is {call.status}: only a live call can be taken", call_id=call_id)
        call.agent_id = agent_id
        call.save(update_fields=["agent"])
        return call
