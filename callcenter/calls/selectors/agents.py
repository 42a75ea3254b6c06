"""Agents: by their logged-in user or by username."""

from __future__ import annotations

from ..models import Agent


def agent_for_user(*, user_id: int) -> Agent | None:
    """The agent a logged-in user is, or None."""
    return Agent.objects.select_related("user").filter(user_id=user_id).first()


def agent_by_username(*, username: str) -> Agent | None:
    """The agent whose user has this username (as telephony passes it in a
    stream's parameters), or None."""
    return Agent.objects.select_related("user").filter(user__username=username).first()
