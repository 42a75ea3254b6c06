"""Logging out closes the agents' feed sockets of that login session: a
page left open elsewhere stops receiving transcripts at once."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from callcenter.streaming import messages

logger = logging.getLogger(__name__)


def close_feeds_on_logout(sender, request, user, **kwargs) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if not session_key:
        return
    try:
        async_to_sync(get_channel_layer().group_send)(messages.session_group(session_key),
                                                      {"type": messages.SESSION_CLOSED})  # fmt: skip
    except Exception:
        # The logout itself succeeded; a socket left open is closed at its next reconnect.
        logger.exception("could not close the agents' feed sockets of a session that logged out")
