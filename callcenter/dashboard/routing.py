"""Websocket route of the agent page: the agents' feed. It authenticates
with the session cookie, so it checks the Origin header."""

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from callcenter.dashboard.consumers import AgentFeedConsumer

websocket_urlpatterns = [
    re_path(r"^ws/agent/$", AllowedHostsOriginValidator(AgentFeedConsumer.as_asgi())),
]
