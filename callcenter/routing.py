"""Websocket routes: the pipeline health check, the media endpoints and the
agents' feed. Any other path is refused at the handshake (Daphne answers 403),
not an internal error."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from callcenter.dashboard.routing import websocket_urlpatterns as dashboard_urlpatterns
from callcenter.ops.health import HealthConsumer
from callcenter.streaming.routing import websocket_urlpatterns as streaming_urlpatterns



class NoSuchSocket(AsyncWebsocketConsumer):
    """A websocket to a path that is none of the above: refused, never accepted."""

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns = [
    path("ws/health/", HealthConsumer.as_asgi()),
    *streaming_urlpatterns,
    *dashboard_urlpatterns,
    re_path(r"", NoSuchSocket.as_asgi()),  # last: every other path
]
