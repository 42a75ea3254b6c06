"""Health checks of the running system.

- ``GET /healthz``: the web process answers and its database does
  (liveness: restart the process when this fails). Public, so it says
  ``{"status": "ok"}`` or ``{"status": "error"}`` (503) and nothing else.
- ``GET /readyz``: this deployment can take calls: the database answers,
  the broker (Redis) answers, and at least one worker process has the
  recognizer loaded (its heartbeat key, ``tasks/maintenance.py``). 503 with
  what is missing otherwise (readiness: keep traffic away meanwhile).
- ``GET /metrics``: Prometheus metrics: this web process's own
  (``callcenter.ops.metrics``) and the system's, computed at scrape
  (``callcenter.ops.clustermetrics``).
- ``ws /ws/health/``: the whole pipeline. On connect the consumer enqueues
  ``system.ping`` with its own channel name; the worker answers through the
  channel layer, and the client receives ``{"type": "pong", ...}``. That is the
  path every live transcript takes: web -> Redis queue -> worker -> channel
  layer -> web -> websocket.

The last three tell model hashes, worker hosts and counters: they answer
operators only (``ops_access_allowed``): a request that sends
``Authorization: Bearer <OPS_TOKEN>`` (the websocket may send ``?token=``),
comes from ``OPS_ALLOWED_NETWORKS`` (loopback by default: the main command's
and the compose file's own probes), or carries a staff user's session.
Anyone else gets 403 (the socket: an error message, then close code 4403).
A browser's socket from a foreign ``Origin`` is refused whatever it carries.

The pipeline check queues on the recognition queue, which admission of new
calls watches, so the pings are gated per web process (``PingGate``): at
most one in flight and one per ``PING_INTERVAL_S``; a socket that connects
meanwhile gets the answer of the ping in flight (or of one answered less
than ``PING_INTERVAL_S`` ago) without queueing another.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import is_same_domain
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callcenter.celery import app as celery_app
from callcenter.ops import clustermetrics, redisconn

logger = logging.getLogger(__name__)

FORBIDDEN_MESSAGE = (
    "operators only: send Authorization: Bearer <OPS_TOKEN>, connect from OPS_ALLOWED_NETWORKS "
    "or log in as a staff user"
)
CLOSE_FORBIDDEN = 4403
# One system.ping per web process at most this often; a ping not answered
# within PING_TIMEOUT_S is given up (its sockets get an error).
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 30.0


# --- who is an operator ------------------------------------------------------


def _in_networks(address: str | None, networks: Iterable) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:  # a server bound to :: sees ::ffff:10.0.0.1
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def ops_access_allowed(*, address: str | None, token: str | None, user: object | None) -> bool:
    """Whether a client may see the operations endpoints: it sent the right
    ``OPS_TOKEN``, comes from ``OPS_ALLOWED_NETWORKS``, or is a staff user."""
    expected = settings.OPS_TOKEN
    if expected and token and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected.encode()):
        return True
    if _in_networks(address, settings.OPS_ALLOWED_NETWORKS):
        return True
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def operators_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 (plain text) for a request that is not an operator's."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not ops_access_allowed(
            address=request.META.get("REMOTE_ADDR"),
            token=_bearer(request.headers.get("Authorization", "")),
            user=getattr(request, "user", None),
        ):
            return HttpResponse(FORBIDDEN_MESSAGE + "\n", status=403, content_type="text/plain")
        return view(request, *args, **kwargs)

    return wrapper


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("health check: database unavailable: %s", exc)
        return False
    return True


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    if not _database_ok():
        return JsonResponse({"status": "error"}, status=503)
    return JsonResponse({"status": "ok"})


@require_GET
@operators_only
def readyz(request: HttpRequest) -> JsonResponse:
    body: dict[str, object] = {"database": "ok" if _database_ok() else "unavailable"}
    workers: dict[str, str] = {}
    try:
        redisconn.client().ping()
        body["broker"] = "ok"
        workers = redisconn.workers_ready()
    except Exception as exc:  # noqa: BLE001 - any Redis failure means not ready
        logger.warning("readiness check: Redis unavailable: %s", exc)
        body["broker"] = "unavailable"
    body["workers"] = len(workers)
    body["models"] = sorted(set(workers.values()))
    if body["broker"] == "ok" and not workers:
        body["worker"] = "no worker has the model loaded"
    ready = body["database"] == "ok" and body["broker"] == "ok" and bool(workers)
    body["status"] = "ready" if ready else "not_ready"
    return JsonResponse(body, status=200 if ready else 503)


@require_GET
@operators_only
def metrics_view(request: HttpRequest) -> HttpResponse:
    clustermetrics.register()
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


# --- the pipeline check -------------------------------------------------------


def _enqueue_ping(reply_channel: str) -> None:
    celery_app.send_task("system.ping", kwargs={"reply_channel": reply_channel})


class PingGate:
    """At most one ``system.ping`` in flight per event loop (a web process),
    and at most one sent per ``interval_s``. Sockets share a ping through an
    ``asyncio.Future`` whose result is the worker's answer
    (``{"worker": ...}``), ``{"error": ...}`` when it could not be queued, or
    None when the socket that sent it closed before the answer (whose
    sharers then join again)."""

    def __init__(self, *, interval_s: float, timeout_s: float) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._future: asyncio.Future | None = None
        self._sent_at = float("-inf")
        self._answered_at = float("-inf")

    def _shareable(self, now: float) -> bool:
        future = self._future
        if future is None or future.get_loop() is not asyncio.get_running_loop():
            return False
        if future.done():
            # an answer stays fresh for the interval after it came (a slow worker's answer too);
            # its done-callback not run yet: it came in this turn of the loop
            answered = self._answered_at if self._answered_at >= self._sent_at else now
            return future.result() is not None and now - answered < self.interval_s
        return now - self._sent_at < self.timeout_s

    def _answered(self, future: asyncio.Future) -> None:
        if future is self._future:
            self._answered_at = future.get_loop().time()

    async def join(self) -> tuple[asyncio.Future, bool]:
        """The ping to wait for, and whether the caller must send it."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self._shareable(now):
                return self._future, False
            wait = self._sent_at + self.interval_s - now
            if wait <= 0 or self._future is None or self._future.get_loop() is not loop:
                self._future, self._sent_at = loop.create_future(), now
                self._future.add_done_callback(self._answered)
                return self._future, True
            await asyncio.sleep(wait)


PING_GATE = PingGate(interval_s=PING_INTERVAL_S, timeout_s=PING_TIMEOUT_S)


def _headers(scope: dict) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


def _scope_token(scope: dict) -> str | None:
    header = _headers(scope).get(b"authorization")
    if header is not None:
        return _bearer(header.decode("latin-1"))
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return query.get("token", [None])[0]


def _foreign_origin(scope: dict) -> bool:
    """A browser's socket from a page of another site (non-browser clients send no Origin)."""
    origin = _headers(scope).get(b"origin")
    if origin is None:
        return False
    host = urlsplit(origin.decode("latin-1")).hostname or ""
    host = f"[{host}]" if ":" in host else host
    return not any(pattern == "*" or is_same_domain(host, pattern) for pattern in settings.ALLOWED_HOSTS)


class HealthConsumer(AsyncJsonWebsocketConsumer):
    # --- lifecycle ---
    async def connect(self) -> None:
        self.ping: asyncio.Future | None = None  # the ping this socket sent
        self.check: asyncio.Task | None = None
        client = self.scope.get("client")
        allowed = not _foreign_origin(self.scope) and ops_access_allowed(
            address=client[0] if client else None, token=_scope_token(self.scope), user=self.scope.get("user")
        )
        await self.accept()
        if not allowed:
            logger.info("health socket refused: not an operator (client %s)", client[0] if client else "-")
            await self.send_json({"type": "error", "code": "forbidden", "message": FORBIDDEN_MESSAGE})
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.send_json({"type": "hello"})
        self.check = asyncio.create_task(self._check())

    async def disconnect(self, code: int) -> None:
        if self.check is not None:
            self.check.cancel()
        if self.ping is not None and not self.ping.done():
            self.ping.set_result(None)  # its answer would come to this closed socket: sharers ask again

    async def _check(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PING_TIMEOUT_S
        answer = None
        while answer is None and loop.time() < deadline:
            ping, mine = await PING_GATE.join()
            if mine:
                self.ping = ping
                try:
                    # Publishing to the broker is blocking network I/O: not on the loop.
                    await sync_to_async(_enqueue_ping, thread_sensitive=False)(self.channel_name)
                except Exception as exc:  # noqa: BLE001 - any broker failure is this check's answer
                    logger.warning("health check: system.ping not queued: %s", exc)
                    if not ping.done():
                        ping.set_result({"error": "broker_unavailable"})
            try:
                answer = await asyncio.wait_for(asyncio.shield(ping), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
        if answer is None:
            message = f"no worker answered system.ping within {PING_TIMEOUT_S:.0f} s"
            await self.send_json({"type": "error", "code": "no_pong", "message": message})
        elif "error" in answer:
            message = "system.ping could not be queued: the broker (Redis) is unavailable"
            await self.send_json({"type": "error", "code": answer["error"], "message": message})
        else:
            await self.send_json({"type": "pong", "worker": answer["worker"]})

    # --- incoming frames: none expected ---
    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        # Any frame, JSON or not, text or binary, gets the same answer (the JSON consumer's own
        # decoding would raise on the others and close the socket with an internal error).
        await self.send_json({"type": "error", "code": "unexpected_message"})

    # --- channel-layer handlers ---
    async def system_pong(self, event: dict) -> None:
        if self.ping is not None and not self.ping.done():
            self.ping.set_result({"worker": event["worker"]})
