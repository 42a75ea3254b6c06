"""Websocket routes of live calls.

The media endpoints take the line token as the last path segment (Twilio
cannot send headers or query strings); a missing token reaches the consumer
too, which closes with 4401. The agents' feed checks the Origin header (it
authenticates with the session cookie).
"""

from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from callcenter.streaming.consumers import AgentFeedConsumer, PcmMediaConsumer, TwilioMediaConsumer

websocket_urlpatterns = [
    re_path(r"^ws/media/twilio(?:/(?P<token>[^/]*))?/?$", TwilioMediaConsumer.as_asgi()),
    re_path(r"^ws/media/pcm(?:/(?P<token>[^/]*))?/?$", PcmMediaConsumer.as_asgi()),
    re_path(r"^ws/agent/$", AllowedHostsOriginValidator(AgentFeedConsumer.as_asgi())),
]
