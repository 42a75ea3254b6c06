"""Websocket routes. The streaming app adds the media endpoints and the agent
feed here."""

from django.urls import path

from callcenter.health import HealthConsumer

websocket_urlpatterns = [
    path("ws/health/", HealthConsumer.as_asgi()),
]
