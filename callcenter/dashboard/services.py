"""Writes of the agent page: an agent takes a call from the queue."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from callcenter.calls import services as calls_services
from callcenter.calls.models import Call
from callcenter.errors import Forbidden
from callcenter.live import messages

from .access import Viewer

logger = logging.getLogger(__name__)


def call_take(*, viewer: Viewer, call_id: int) -> Call:
    """Assign a live, unassigned call to the viewing agent and tell every
    agent's page (the call leaves the others' queue). Supervisors who are not
    agents cannot take calls."""
    if viewer.agent_id is None:
        raise Forbidden("only agents take calls: this user is not an agent", user=viewer.username)
    with transaction.atomic():
        call = calls_services.call_assign_agent(call_id=call_id, agent_id=viewer.agent_id)
        message = messages.call_message(
            call_id=call.pk,
            status=call.status,
            protocol=call.protocol,
            customer_id=call.customer_id,
            caller=call.customer.phone if call.customer_id else None,
            agent=viewer.username,
        )
        transaction.on_commit(lambda: _publish(message))
    logger.info("call #%s taken by agent %r", call.pk, viewer.username)
    return call


def _publish(message: dict) -> None:
    """To the call's group and the agents' group; a channel-layer failure is
    logged (the assignment is stored; pages see it on their next refresh)."""
    layer = get_channel_layer()
    try:
        for group in messages.groups_for_call(int(message["call"])):
            async_to_sync(layer.group_send)(group, messages.layer_event(message))
    except Exception:
        logger.exception("call #%s: could not publish its new agent", message["call"])
