"""Who sees which calls on the agent page and on the agents' feed.

- A **supervisor** (a staff user, or a user with the ``calls.view_call``
  permission, e.g. through a "Supervisors" group) sees every call.
- An **agent** (a user with an ``Agent`` row, added in the admin under
  *Agents*) sees the calls assigned to them and the unassigned queue: the
  unassigned calls that are live or ended less than ``QUEUE_WINDOW`` ago.
  An older unassigned call is nobody's to see but a supervisor's.
- Any other logged-in user is refused (``Forbidden``).

A call gets its agent either from the telephony side (the stream's custom
parameter ``agent``: a username) or when an agent takes it from the queue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from callcenter.errors import Forbidden

SUPERVISOR_PERMISSION = "calls.view_call"
# An unassigned call stays in the queue (listed, and open to every agent)
# while it is live and this long after it ended.
QUEUE_WINDOW = dt.timedelta(minutes=30)


def in_queue_window(*, ended_at: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    """Whether a call that ended at ``ended_at`` (None: live) is still in the queue."""
    if ended_at is None:
        return True
    from django.utils import timezone

    return ended_at >= (now or timezone.now()) - QUEUE_WINDOW


@dataclass(frozen=True)
class Viewer:
    user_id: int
    username: str
    agent_id: int | None
    supervisor: bool

    def sees(self, *, agent_id: int | None, ended_at: dt.datetime | None, now: dt.datetime | None = None) -> bool:
        """Whether a call assigned to ``agent_id`` (None: unassigned) that
        ended at ``ended_at`` (None: live) is visible."""
        if self.supervisor or (agent_id is not None and agent_id == self.agent_id):
            return True
        return agent_id is None and in_queue_window(ended_at=ended_at, now=now)

    def sees_username(self, agent: str | None) -> bool:
        """The same, for a call message (a live event: its call is in the
        queue window) that names its agent by username."""
        return self.supervisor or agent is None or (self.agent_id is not None and agent == self.username)


def session_still_valid(*, session_key: str | None, user_id: int) -> bool:
    """Whether a login session still logs ``user_id`` in, as Django's
    ``auth.get_user`` would decide on its next request: the session exists
    and names the user, the user exists and may log in (is active), and the
    session's password hash is the user's current one (or one made with a
    fallback secret). Read-only: unlike ``get_user`` it neither flushes nor
    cycles the session (database reads: call it off the event loop)."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
    from django.utils.crypto import constant_time_compare

    if not session_key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    backend_path, session_hash = session.get(BACKEND_SESSION_KEY), session.get(HASH_SESSION_KEY)
    if str(session.get(SESSION_KEY)) != str(user_id) or not session_hash:
        return False
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return False
    user = load_backend(backend_path).get_user(user_id)  # None for an inactive user (ModelBackend)
    if user is None or not getattr(user, "is_active", True):
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(session_hash, h) for h in hashes)


def viewer_for_user(user) -> Viewer:
    """The viewer a logged-in user is (database reads: call it off the event
    loop); ``Forbidden`` for a user who is neither agent nor supervisor."""
    from callcenter.calls import selectors

    agent = selectors.agent_for_user(user_id=user.pk)
    supervisor = bool(user.is_active and (user.is_staff or user.has_perm(SUPERVISOR_PERMISSION)))
    if agent is None and not supervisor:
        raise Forbidden(
            f"{user.get_username()!r} is not an agent: a supervisor adds agents in the admin (Agents, Add)",
            user=user.get_username(),
        )
    return Viewer(user_id=user.pk, username=user.get_username(), agent_id=agent.pk if agent else None,
                  supervisor=supervisor)  # fmt: skip
