"""The agents' feed as the agent page uses it, through Channels' communicator
(the real ASGI application with its session and Origin checks, the real
database and Redis channel layer): who may connect, and which messages each
viewer gets."""

from __future__ import annotations

import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from callcenter.ops import metrics
from callcenter.asgi import application
from callcenter.calls import services
from callcenter.calls.models import Agent, Call
from callcenter.dashboard import services as dashboard_services
from callcenter.dashboard.access import viewer_for_user
from callcenter.live import messages
from tests.callcenter.streaming.test_consumers import STOP, exchange, media_frames, quiet, speech, start_frame

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture(autouse=True)
def no_partials(settings, shared_var_dir):
    settings.STREAM_PARTIAL_INTERVAL_MS = 0  # no model in these tests


@pytest.fixture
def people(django_user_model) -> dict:
    alice = Agent.objects.create(user=django_user_model.objects.create_user("alice"))
    bob = Agent.objects.create(user=django_user_model.objects.create_user("bob"))
    return {
        "alice": alice,
        "bob": bob,
        "supervisor": django_user_model.objects.create_user("sue", is_staff=True),
        "nobody": django_user_model.objects.create_user("nobody"),
    }


def cookie(user, origin: tuple[bytes, bytes] | None = ORIGIN) -> list[tuple[bytes, bytes]]:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    headers = [(b"cookie", f"sessionid={session.session_key}".encode())]
    return headers + [origin] if origin else headers


async def _connect(headers, path: str = "/ws/agent/") -> tuple[WebsocketCommunicator, dict]:
    feed = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await feed.connect(timeout=10)
    assert connected
    return feed, await feed.receive_json_from(timeout=10)


async def _close_code(feed: WebsocketCommunicator) -> int:
    output = await feed.receive_output(timeout=10)
    assert output["type"] == "websocket.close"
    return output["code"]


async def _drain(feed: WebsocketCommunicator, timeout: float = 0.5) -> list[dict]:
    seen = []
    while not await feed.receive_nothing(timeout=timeout):
        seen.append(await feed.receive_json_from(timeout=5))
    return seen


async def _publish(call: Call, message: dict) -> None:
    layer = get_channel_layer()
    for group in messages.groups_for_call(call.pk):
        await layer.group_send(group, messages.layer_event(message))


def call_message(call: Call, status: str = "live") -> dict:
    agent = call.agent.user.username if call.agent_id else None
    return messages.call_message(call_id=call.pk, status=status, protocol=call.protocol, customer_id=None,
                                 caller="+15550100000", agent=agent)  # fmt: skip


def partial(call: Call, text: str) -> dict:
    return messages.partial_message(call_id=call.pk, segment_id=1, index=0, text=text, words=[], audio_at=0.0)


# --- who may connect ---


@pytest.mark.parametrize(
    ("who", "code", "close_code"),
    [("anonymous", "login_required", 4401), ("nobody", "forbidden", 4403)],
)
def test_the_feed_closes_sockets_without_an_agent_or_supervisor_session(people, who, code, close_code):
    headers = [ORIGIN] if who == "anonymous" else cookie(people[who])
    refused_before = metrics.AGENT_SOCKETS_REFUSED.labels(code)._value.get()

    async def scenario():
        feed, first = await _connect(headers)
        return first, await _close_code(feed)

    first, closed = async_to_sync(scenario)()

    assert first["type"] == "error" and first["code"] == code and closed == close_code
    assert metrics.AGENT_SOCKETS_REFUSED.labels(code)._value.get() == refused_before + 1


def test_a_session_cookie_from_another_origin_is_refused_at_the_handshake(people):
    attempts = [cookie(people["alice"].user, origin) for origin in [(b"origin", b"http://evil.example"), None]]

    async def scenario():
        refused = []
        for headers in attempts:
            feed = WebsocketCommunicator(application, "/ws/agent/", headers=headers)
            connected, _ = await feed.connect(timeout=10)
            refused.append(not connected)
            await feed.disconnect()
        return refused

    assert async_to_sync(scenario)() == [True, True]


def test_a_logged_out_session_no_longer_opens_the_feed(people):
    headers = cookie(people["alice"].user)
    SessionStore(session_key=headers[0][1].decode().split("=")[1]).delete()

    async def scenario():
        feed, first = await _connect(headers)
        return first, await _close_code(feed)

    first, closed = async_to_sync(scenario)()

    assert first["code"] == "login_required" and closed == 4401


@pytest.mark.parametrize(
    ("query", "code", "close_code"),
    [("abc", "invalid", 4400), ("1e3", "invalid", 4400), ("99999999", "not_found", 4400), ("bobs", "forbidden", 4403),
     ("left_the_queue", "forbidden", 4403)],
)
def test_one_call_feeds_are_checked(people, query, code, close_code):
    bobs = services.call_start(protocol="pcm", agent_id=people["bob"].pk)
    old = services.call_start(protocol="pcm", started_at=timezone.now() - dt.timedelta(days=2))
    services.call_end(call_id=old.pk, ended_at=old.started_at + dt.timedelta(minutes=5))
    query = {"bobs": str(bobs.pk), "left_the_queue": str(old.pk)}.get(query, query)
    headers = cookie(people["alice"].user)

    async def scenario():
        feed, first = await _connect(headers, f"/ws/agent/?call={query}")
        return first, await _close_code(feed)

    first, closed = async_to_sync(scenario)()

    assert (first["code"], closed) == (code, close_code)


def test_one_call_feeds_open_for_the_queue_window_and_for_a_supervisor_always(people):
    def ended(ago: dt.timedelta) -> Call:
        call = services.call_start(protocol="pcm", started_at=timezone.now() - ago)
        return services.call_end(call_id=call.pk, ended_at=call.started_at + dt.timedelta(minutes=5))

    recent, old = ended(dt.timedelta(minutes=20)), ended(dt.timedelta(days=2))
    alice_headers, sue_headers = cookie(people["alice"].user), cookie(people["supervisor"])

    async def scenario():
        opened = []
        for headers, call in [(alice_headers, recent), (sue_headers, old)]:
            feed, first = await _connect(headers, f"/ws/agent/?call={call.pk}")
            opened.append((first["type"], await feed.receive_nothing(timeout=0.3)))
            await feed.disconnect()
        return opened

    assert async_to_sync(scenario)() == [("hello", True), ("hello", True)]


def test_an_agent_gets_no_messages_of_an_unassigned_call_that_left_the_queue(people):
    old = services.call_start(protocol="pcm", started_at=timezone.now() - dt.timedelta(days=2))
    services.call_end(call_id=old.pk, ended_at=old.started_at + dt.timedelta(minutes=5))
    live = services.call_start(protocol="pcm")
    alice_headers = cookie(people["alice"].user)

    async def scenario():
        alice, _ = await _connect(alice_headers)
        await _publish(old, partial(old, "said long ago"))  # e.g. a segment queued again by hand
        await _publish(live, partial(live, "said now"))
        seen = await _drain(alice)
        await alice.disconnect()
        return seen

    assert [m["text"] for m in async_to_sync(scenario)()] == ["said now"]


# --- which messages each viewer gets ---


def test_an_agent_gets_their_calls_and_the_queue_and_a_supervisor_gets_everything(people):
    queued = services.call_start(protocol="pcm")
    alices = services.call_start(protocol="pcm", agent_id=people["alice"].pk)
    bobs = services.call_start(protocol="pcm", agent_id=people["bob"].pk)

    alice_headers, sue_headers = cookie(people["alice"].user), cookie(people["supervisor"])
    published = [(call, m) for call in (queued, alices, bobs)
                 for m in (call_message(call), partial(call, f"words of call {call.pk}"))]  # fmt: skip

    async def scenario():
        alice, hello = await _connect(alice_headers)
        sue, _ = await _connect(sue_headers)
        for call, message in published:
            await _publish(call, message)
        seen = await _drain(alice), await _drain(sue)
        await alice.disconnect()
        await sue.disconnect()
        return hello, seen

    hello, (alice_saw, sue_saw) = async_to_sync(scenario)()

    assert hello == {"type": "hello", "user": "alice", "supervisor": False}
    assert [(m["type"], m["call"]) for m in alice_saw if m["type"] != "withdrawn"] == [
        ("call", queued.pk), ("partial", queued.pk), ("call", alices.pk), ("partial", alices.pk)]  # fmt: skip
    assert all(m.get("text") != f"words of call {bobs.pk}" for m in alice_saw)
    assert [m for m in alice_saw if m["type"] == "withdrawn"] == [{"type": "withdrawn", "call": bobs.pk}]
    assert {(m["type"], m["call"]) for m in sue_saw} == {(t, c.pk) for t in ("call", "partial")
                                                         for c in (queued, alices, bobs)}  # fmt: skip


def test_when_an_agent_takes_a_call_the_other_agent_gets_withdrawn_and_nothing_more(people):
    queued = services.call_start(protocol="pcm")

    bob_headers, alice_headers = cookie(people["bob"].user), cookie(people["alice"].user)

    async def scenario():
        bob, _ = await _connect(bob_headers)
        alice, _ = await _connect(alice_headers)
        await _publish(queued, partial(queued, "before"))
        before = await _drain(bob), await _drain(alice)
        viewer = await _viewer(people["alice"].user)
        await _take(viewer, queued.pk)
        await _publish(queued, partial(queued, "after"))
        after = await _drain(bob), await _drain(alice)
        await bob.disconnect()
        await alice.disconnect()
        return before, after

    (bob_before, alice_before), (bob_after, alice_after) = async_to_sync(scenario)()

    assert [m["text"] for m in bob_before] == ["before"] and [m["text"] for m in alice_before] == ["before"]
    assert bob_after == [{"type": "withdrawn", "call": queued.pk}]
    assert [(m["type"], m.get("agent"), m.get("text")) for m in alice_after] == [
        ("call", "alice", None), ("partial", None, "after")]  # fmt: skip


async def _viewer(user):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(viewer_for_user)(user)


async def _take(viewer, call_id: int):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(dashboard_services.call_take)(viewer=viewer, call_id=call_id)


# --- a call gets its agent from the stream ---


@pytest.mark.parametrize(("agent", "expected"), [("alice", "alice"), ("mallory", None)])
def test_the_twilio_agent_parameter_assigns_the_call(people, agent, expected):
    token = services.line_create(name="trunk-agents")[1]
    audio = __import__("numpy").concatenate([quiet(300), speech(800), quiet(900)])

    bob_headers = cookie(people["bob"].user)

    async def scenario():
        bob, _ = await _connect(bob_headers)
        await _exchange_async(f"/ws/media/twilio/{token}", [start_frame(caller="+15551230003", agent=agent),
                                                              *media_frames(audio), STOP])  # fmt: skip
        seen = await _drain(bob)
        await bob.disconnect()
        return seen

    bob_saw = async_to_sync(scenario)()

    call = Call.objects.get()
    assert (call.agent.user.username if call.agent else None) == expected
    if expected:
        assert bob_saw == [{"type": "withdrawn", "call": call.pk}], "bob never sees alice's call"
    else:
        # (A worker left running by other tests may add the segment's final: it is visible too.)
        assert [(m["status"], m["agent"]) for m in bob_saw if m["type"] == "call"] == [("live", None), ("ended", None)]


def test_the_pcm_config_takes_an_agent_too(people):
    token = services.line_create(name="pcm-agents")[1]

    result = exchange(f"/ws/media/pcm/{token}", ['{"config": {"sample_rate": 8000, "agent": "bob"}}', '{"eof": 1}'])
    bad = exchange(f"/ws/media/pcm/{token}", ['{"config": {"sample_rate": 8000, "agent": ["bob"]}}'])

    assert result["close"] == 1000 and Call.objects.get().agent == people["bob"]
    assert bad["close"] == 4400 and bad["sent"][-1]["code"] == "invalid_message" and Call.objects.count() == 1


async def _exchange_async(path, frames):
    from tests.callcenter.streaming.test_consumers import _exchange

    return await _exchange(path, frames)


# --- logging out ---


def test_logging_out_closes_that_sessions_feed_but_not_another_sessions(people):
    from channels.db import database_sync_to_async
    from django.test import Client

    browser, other = Client(), Client()
    for client in (browser, other):
        client.force_login(people["alice"].user)
    headers = [(b"cookie", f"sessionid={c.cookies['sessionid'].value}".encode()) for c in (browser, other)]

    async def scenario():
        mine, _ = await _connect([headers[0], ORIGIN])
        elsewhere, _ = await _connect([headers[1], ORIGIN])
        response = await database_sync_to_async(browser.post)("/accounts/logout/")
        first = await mine.receive_json_from(timeout=10)
        closed = await _close_code(mine)
        still_open = await elsewhere.receive_nothing(timeout=0.5)
        await elsewhere.disconnect()
        return response.status_code, first, closed, still_open

    status, first, closed, still_open = async_to_sync(scenario)()

    assert status == 302
    assert first == {"type": "error", "code": "logged_out", "message": "logged out"} and closed == 4401
    assert still_open, "alice's other login keeps its feed"


# --- a user deactivated or given a new password ---


def _session_key(headers) -> str:
    return headers[0][1].decode().split("=")[1]


def test_deactivating_a_user_closes_every_feed_socket_of_theirs_and_no_one_elses(people):
    from channels.db import database_sync_to_async

    alice = people["alice"].user
    alice_here, alice_there, bob_headers = cookie(alice), cookie(alice), cookie(people["bob"].user)

    def rename():
        alice.first_name = "Alice"
        alice.save()  # a change that ends no login

    def deactivate():
        alice.is_active = False
        alice.save(update_fields=["is_active"])

    async def scenario():
        feeds = [(await _connect(h))[0] for h in (alice_here, alice_there, bob_headers)]
        await database_sync_to_async(rename)()
        kept = [await feed.receive_nothing(timeout=0.5) for feed in feeds]
        await database_sync_to_async(deactivate)()
        closed = [(await feed.receive_json_from(timeout=10), await _close_code(feed)) for feed in feeds[:2]]
        bob_open = await feeds[2].receive_nothing(timeout=0.5)
        await feeds[2].disconnect()
        return kept, closed, bob_open

    kept, closed, bob_open = async_to_sync(scenario)()

    assert kept == [True, True, True]
    assert [(m["type"], m["code"], code) for m, code in closed] == [("error", "session_ended", 4401)] * 2
    assert bob_open, "bob's feed stays open"


def test_a_new_password_closes_the_users_feeds_except_a_login_that_kept_its_session(people, settings):
    from channels.db import database_sync_to_async

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # Django's advice for tests
    alice = people["alice"].user
    other, keeper, bob_headers = cookie(alice), cookie(alice), cookie(people["bob"].user)

    def change_password():
        alice.set_password("a-new-long-password-2")
        alice.save()
        # What update_session_auth_hash does for the login that changed it: its session gets the new hash.
        session = SessionStore(session_key=_session_key(keeper))
        session[HASH_SESSION_KEY] = alice.get_session_auth_hash()
        session.save()

    async def scenario():
        feeds = [(await _connect(h))[0] for h in (other, keeper, bob_headers)]
        await database_sync_to_async(change_password)()
        first, code = await feeds[0].receive_json_from(timeout=10), await _close_code(feeds[0])
        still_open = [await feed.receive_nothing(timeout=0.5) for feed in feeds[1:]]
        for feed in feeds[1:]:
            await feed.disconnect()
        return first, code, still_open

    first, code, still_open = async_to_sync(scenario)()

    assert (first["code"], code) == ("session_ended", 4401) and "password" in first["message"]
    assert still_open == [True, True], "the login that kept its session, and bob's, stay open"


def test_a_user_whose_password_changed_cannot_open_the_feed_with_an_old_session(people, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    alice = people["alice"].user
    headers = cookie(alice)
    alice.set_password("a-new-long-password-3")
    alice.save()

    async def scenario():
        feed, first = await _connect(headers)
        return first, await _close_code(feed)

    first, closed = async_to_sync(scenario)()

    assert first["code"] == "login_required" and closed == 4401
