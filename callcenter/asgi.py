"""ASGI entry point: ``daphne callcenter.asgi:application``.

HTTP goes to Django (static files included, so the admin works without a
separate file server); websockets go to the Channels routes. Origin checks
are per route: telephony clients send no Origin header.
"""

from __future__ import annotations

from callcenter.entry import setup_django

setup_django()

from callcenter.logs import redact_access_log  # noqa: E402

redact_access_log()  # media URLs carry line tokens

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

from callcenter.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(get_asgi_application()),
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
