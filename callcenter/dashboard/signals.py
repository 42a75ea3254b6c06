"""Logging out closes the agents' feed sockets of that login session: a
page left open elsewhere stops receiving transcripts at once. Deactivating a
user, deleting them or changing their password closes every feed socket of
theirs whose login session that made invalid."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from callcenter.live import messages

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


# The fields of a user whose change can end their login sessions.
SESSION_FIELDS = frozenset({"password", "is_active"})


def close_feeds_of_changed_user(sender, instance, created: bool = False, update_fields=None, **kwargs) -> None:
    """A user saved (``post_save``) or deleted (``post_delete``): once it is
    committed, each of their feed sockets checks its login session and closes
    if it is no longer valid (``AgentFeedConsumer.user_changed``). Saves that
    cannot end a session (a new user, ``last_login`` at each login) send nothing."""
    if created or (update_fields is not None and not SESSION_FIELDS & set(update_fields)):
        return
    user_id = instance.pk
    transaction.on_commit(lambda: _tell_feeds(user_id))


def _tell_feeds(user_id: int) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(messages.user_group(user_id), {"type": messages.USER_CHANGED})
    except Exception:
        # The change itself is stored; a socket left open is closed at its next reconnect.
        logger.exception("could not tell the feed sockets of user #%s that their login may have ended", user_id)
