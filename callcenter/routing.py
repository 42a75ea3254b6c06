"""Websocket routes: the pipeline health check, the media endpoints and the
agents' feed."""

from django.urls import path

from callcenter.dashboard.routing import websocket_urlpatterns as dashboard_urlpatterns
from callcenter.ops.health import HealthConsumer
from callcenter.streaming.routing import websocket_urlpatterns as streaming_urlpatterns

websocket_urlpatterns = [
    path("ws/health/", HealthConsumer.as_asgi()),
    *streaming_urlpatterns,
    *dashboard_urlpatterns,
]
