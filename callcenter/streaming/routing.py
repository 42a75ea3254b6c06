"""Websocket routes of the media endpoints.

They take the line token as the last path segment (Twilio cannot send
headers or query strings); a missing token reaches the consumer too, which
closes with 4401. Telephony clients send no Origin header, so none is
checked here.
"""

from django.urls import re_path

from callcenter.streaming.consumers.pcm import PcmMediaConsumer
from callcenter.streaming.consumers.twilio import TwilioMediaConsumer

websocket_urlpatterns = [
    re_path(r"^ws/media/twilio(?:/(?P<token>[^/]*))?/?$", TwilioMediaConsumer.as_asgi()),
    re_path(r"^ws/media/pcm(?:/(?P<token>[^/]*))?/?$", PcmMediaConsumer.as_asgi()),
]
