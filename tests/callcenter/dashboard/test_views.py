"""The agent page and its JSON endpoints: login, who sees which call, the
caller's history, missed segments, taking a call, bad input."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from callcenter.calls import services
from callcenter.calls.models import AdaptationRun, Agent, Call, ModelVersion, Segment, VoiceProfile
from callcenter.errors import Conflict

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password-1"


@pytest.fixture(autouse=True)
def quick_logins(settings):
    settings.LOGIN_RATE_LIMIT = 0  # the rate limiter has its own tests; these log in again and again
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # Django's advice for tests


@pytest.fixture
def people(django_user_model) -> dict:
    def agent(name: str) -> Agent:
        user = django_user_model.objects.create_user(name, password=PASSWORD)
        return Agent.objects.create(user=user, display_name=name.title())

    return {
        "alice": agent("alice"),
        "bob": agent("bob"),
        "supervisor": django_user_model.objects.create_user("sue", password=PASSWORD, is_staff=True),
        "nobody": django_user_model.objects.create_user("nobody", password=PASSWORD),
    }


@pytest.fixture
def calls(people) -> dict:
    customer = services.customer_create(phone="+15550101010", name="Ada Caller")
    earlier = services.call_start(protocol="twilio", external_id="MZ-earlier", customer_id=customer.pk,
                                  started_at=timezone.now() - dt.timedelta(days=2),
                                  agent_id=people["alice"].pk)  # fmt: skip
    services.call_end(call_id=earlier.pk, ended_at=earlier.started_at + dt.timedelta(minutes=3))
    seg = services.segment_create(call_id=earlier.pk, index=0, start_ms=0, end_ms=900, sample_rate=8000)
    Segment.objects.filter(pk=seg.pk).update(status="recognized", text="i would like a refund")
    queued = services.call_start(protocol="twilio", external_id="MZ-queued", customer_id=customer.pk)
    for i in range(3):
        s = services.segment_create(call_id=queued.pk, index=i, start_ms=1000 * i, end_ms=1000 * i + 800,
                                    sample_rate=8000)  # fmt: skip
        if i < 2:
            Segment.objects.filter(pk=s.pk).update(
                status="recognized", text=f"sentence {i}", confidence=0.8,
                words=[{"w": "sentence", "start": 0.1, "end": 0.4, "conf": 0.9},
                       {"w": str(i), "start": 0.5, "end": 0.7, "conf": 0.3}],
            )  # fmt: skip
    return {
        "earlier": earlier,
        "queued": queued,
        "alices": services.call_start(protocol="pcm", agent_id=people["alice"].pk),
        "bobs": services.call_start(protocol="pcm", agent_id=people["bob"].pk),
        "customer": customer,
    }


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ids(response) -> set[int]:
    return {c["id"] for c in response.json()["calls"]}


# --- the page and logging in ---


def test_the_page_sends_people_who_are_not_logged_in_to_the_login_form():
    response = Client().get("/agent/")

    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/agent/"
    assert Client().get("/")["Location"] == "/agent/"


def test_an_agent_logs_in_with_the_form_and_gets_the_page(people):
    client = Client()
    form = client.get("/accounts/login/?next=/agent/")
    assert b'<label for="id_username">Username</label>' in form.content

    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD, "next": "/agent/"})

    assert response.status_code == 302 and response["Location"] == "/agent/"
    page = client.get("/agent/")
    assert page.status_code == 200
    assert b'id="transcript"' in page.content and b'aria-live="polite"' in page.content
    assert b"agent.js" in page.content and "csrftoken" in page.cookies


def test_a_wrong_password_shows_an_error_and_no_session(people):
    client = Client()

    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})

    assert response.status_code == 200 and b'role="alert"' in response.content
    assert client.get("/agent/").status_code == 302


def test_a_user_who_is_not_an_agent_is_refused_the_page_and_the_api(people):
    client = client_for(people["nobody"])

    page = client.get("/agent/")
    api = client.get("/agent/api/calls")

    assert page.status_code == 403 and b"is not an agent" in page.content
    assert api.status_code == 403 and api.json()["error"]["code"] == "forbidden"


def test_the_api_answers_401_in_json_without_a_login(calls):
    for url in ["/agent/api/calls", f"/agent/api/calls/{calls['queued'].pk}",
                f"/agent/api/calls/{calls['queued'].pk}/segments?after=0"]:  # fmt: skip
        response = Client().get(url)
        assert response.status_code == 401 and response.json()["error"]["code"] == "login_required", url


# --- who sees which calls ---


def test_an_agent_sees_their_calls_and_the_queue_but_not_another_agents(people, calls):
    response = client_for(people["alice"].user).get("/agent/api/calls")

    assert response.status_code == 200
    assert ids(response) == {calls["queued"].pk, calls["alices"].pk}
    listed = {c["id"]: c for c in response.json()["calls"]}
    assert listed[calls["alices"].pk]["mine"] is True and listed[calls["alices"].pk]["agent"] == "alice"
    assert listed[calls["queued"].pk]["agent"] is None and listed[calls["queued"].pk]["caller"] == "Ada Caller"
    assert response.json()["viewer"] == {"user": "alice", "agent": True, "supervisor": False}


def test_a_supervisor_sees_every_live_call(people, calls):
    response = client_for(people["supervisor"]).get("/agent/api/calls")

    assert ids(response) == {calls["queued"].pk, calls["alices"].pk, calls["bobs"].pk}


def test_the_view_call_permission_makes_a_supervisor(people, calls):
    from django.contrib.auth.models import Permission

    people["nobody"].user_permissions.add(Permission.objects.get(codename="view_call"))

    response = client_for(people["nobody"]).get("/agent/api/calls")

    assert ids(response) == {calls["queued"].pk, calls["alices"].pk, calls["bobs"].pk}


def test_ended_calls_stay_listed_for_half_an_hour(people, calls):
    services.call_end(call_id=calls["alices"].pk)
    client = client_for(people["alice"].user)

    listed = {c["id"]: c for c in client.get("/agent/api/calls").json()["calls"]}

    assert listed[calls["alices"].pk]["status"] == "ended" and calls["earlier"].pk not in listed
    assert [c["status"] for c in listed.values()] == ["live", "ended"], "live calls first"


def test_an_agent_cannot_open_another_agents_call(people, calls):
    client = client_for(people["alice"].user)

    detail = client.get(f"/agent/api/calls/{calls['bobs'].pk}")
    missed = client.get(f"/agent/api/calls/{calls['bobs'].pk}/segments?after=0")

    assert detail.status_code == 403 and detail.json()["error"]["code"] == "forbidden"
    assert missed.status_code == 403
    assert client.get("/agent/api/calls/999999").status_code == 404


def _ended_call(customer, *, ago: dt.timedelta, agent=None, said: str) -> Call:
    call = services.call_start(protocol="twilio", external_id=f"MZ-{said[:12]}", customer_id=customer.pk,
                               agent_id=agent.pk if agent else None, started_at=timezone.now() - ago)  # fmt: skip
    services.call_end(call_id=call.pk, ended_at=call.started_at + dt.timedelta(minutes=2))
    segment = services.segment_create(call_id=call.pk, index=0, start_ms=0, end_ms=900, sample_rate=8000)
    Segment.objects.filter(pk=segment.pk).update(status="recognized", text=said)
    return call


def test_an_agent_cannot_open_an_unassigned_call_long_after_it_left_the_queue(people, calls):
    old = _ended_call(calls["customer"], ago=dt.timedelta(days=3), said="nobody took this call")
    recent = _ended_call(calls["customer"], ago=dt.timedelta(minutes=12), said="a call just missed")
    alice, sue = client_for(people["alice"].user), client_for(people["supervisor"])

    detail = alice.get(f"/agent/api/calls/{old.pk}")
    missed = alice.get(f"/agent/api/calls/{old.pk}/segments")

    assert detail.status_code == 403 and "left the queue" in detail.json()["error"]["message"]
    assert missed.status_code == 403 and b"nobody took this call" not in missed.content
    assert alice.get(f"/agent/api/calls/{recent.pk}").status_code == 200, "still in the queue window"
    assert alice.get(f"/agent/api/calls/{calls['earlier'].pk}").status_code == 200, "her own call, however old"
    assert sue.get(f"/agent/api/calls/{old.pk}").status_code == 200, "a supervisor sees every call"


# --- one call: transcript and the caller's history ---


def test_opening_a_call_gives_its_segments_and_the_callers_earlier_calls(people, calls):
    body = client_for(people["alice"].user).get(f"/agent/api/calls/{calls['queued'].pk}").json()

    assert [(s["type"], s["index"], s["text"]) for s in body["segments"]] == [
        ("final", 0, "sentence 0"), ("final", 1, "sentence 1"), ("pending", 2, "")]  # fmt: skip
    assert body["segments"][0]["words"][1] == {"w": "0", "start": 0.5, "end": 0.7, "conf": 0.3}
    history = body["history"]
    assert history["customer"] == {"id": calls["customer"].pk, "name": "Ada Caller", "phone": "+15550101010"}
    assert [(c["id"], c["summary"], c["duration_s"]) for c in history["earlier_calls"]] == [
        (calls["earlier"].pk, "i would like a refund", 180.0)]  # fmt: skip
    assert history["profile"] is None


def test_the_callers_history_shows_an_agent_only_the_calls_they_may_open(people, calls):
    customer = calls["customer"]
    bobs = _ended_call(customer, ago=dt.timedelta(days=1), agent=people["bob"], said="bob heard my account number")
    old = _ended_call(customer, ago=dt.timedelta(days=3), said="nobody took this call")
    recent = _ended_call(customer, ago=dt.timedelta(minutes=12), said="a call just missed")
    url = f"/agent/api/calls/{calls['queued'].pk}"

    alice = client_for(people["alice"].user).get(url)
    sue = client_for(people["supervisor"]).get(url).json()["history"]["earlier_calls"]

    history = alice.json()["history"]["earlier_calls"]
    assert [(c["id"], c["agent"], c["summary"]) for c in history] == [
        (recent.pk, None, "a call just missed"), (calls["earlier"].pk, "alice", "i would like a refund")]  # fmt: skip
    assert b"bob heard my account number" not in alice.content and b'"bob"' not in alice.content
    assert b"nobody took this call" not in alice.content
    assert [c["id"] for c in sue] == [recent.pk, bobs.pk, calls["earlier"].pk, old.pk]
    assert [c["agent"] for c in sue] == [None, "bob", "alice", None]


def test_the_history_shows_the_callers_profile_and_how_much_adaptation_improved(people, calls):
    model = ModelVersion.objects.create(name="base", checkpoint="base.pt", sha256="a" * 64, is_active=True,
                                        promoted_at=timezone.now())  # fmt: skip
    profile = VoiceProfile.objects.create(customer=calls["customer"], model_version=model, version=2, state=b"x")
    AdaptationRun.objects.create(customer=calls["customer"], model_version=model, trigger="call_ended",
                                 status="accepted", profile=profile, metrics={"wer_before": 0.2, "wer_after": 0.15})

    body = client_for(people["alice"].user).get(f"/agent/api/calls/{calls['queued'].pk}").json()

    profile = body["history"]["profile"]
    # Ending the earlier call may have scheduled an adaptation run of its own.
    assert (profile["version"], profile["model"], profile["improvement"]) == (2, "base", -0.25)
    assert profile["adaptations"] == AdaptationRun.objects.filter(customer=calls["customer"]).count()


def test_malformed_adaptation_metrics_do_not_hide_the_call(people, calls):
    model = ModelVersion.objects.create(name="base", checkpoint="base.pt", sha256="b" * 64, is_active=True,
                                        promoted_at=timezone.now())  # fmt: skip
    profile = VoiceProfile.objects.create(customer=calls["customer"], model_version=model, version=1, state=b"x")
    AdaptationRun.objects.create(customer=calls["customer"], model_version=model, trigger="manual",
                                 status="accepted", profile=profile, metrics={"wer_before": "n/a", "wer_after": []})

    response = client_for(people["alice"].user).get(f"/agent/api/calls/{calls['queued'].pk}")

    assert response.status_code == 200
    assert response.json()["history"]["profile"] == {"version": 1, "model": None, "adaptations": None,
                                                     "improvement": None}  # fmt: skip
    assert len(response.json()["segments"]) == 3


def test_a_call_without_a_known_caller_has_no_history(people, calls):
    body = client_for(people["alice"].user).get(f"/agent/api/calls/{calls['alices'].pk}").json()

    assert body["history"] == {"customer": None, "calls_total": None, "earlier_calls": [], "profile": None}
    assert body["call"]["caller"] is None and body["segments"] == []


# --- missed segments after a reconnect ---


def test_segments_after_an_id_are_what_a_reconnecting_page_missed(people, calls):
    segments = list(Segment.objects.filter(call=calls["queued"]).order_by("index"))
    client = client_for(people["alice"].user)

    after_first = client.get(f"/agent/api/calls/{calls['queued'].pk}/segments?after={segments[0].pk}").json()
    everything = client.get(f"/agent/api/calls/{calls['queued'].pk}/segments").json()

    assert [s["segment"] for s in after_first["segments"]] == [s.pk for s in segments[1:]]
    assert [s["segment"] for s in everything["segments"]] == [s.pk for s in segments]


@pytest.mark.parametrize("after", ["abc", "-1", "1.5", "", "9" * 30, "１"])
def test_a_bad_after_is_a_400_with_a_reason(people, calls, after):
    response = client_for(people["alice"].user).get(f"/agent/api/calls/{calls['queued'].pk}/segments",
                                                    {"after": after})  # fmt: skip

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid" and "after must be an id" in response.json()["error"]["message"]


@pytest.mark.parametrize("call_id", ["abc", "-1", "1.5", "9" * 25, "１", "%20"])
def test_a_malformed_call_id_is_a_400_in_json_everywhere(people, calls, call_id):
    client = client_for(people["alice"].user)

    answers = [client.get(f"/agent/api/calls/{call_id}"), client.get(f"/agent/api/calls/{call_id}/segments"),
               client.post(f"/agent/api/calls/{call_id}/take")]  # fmt: skip

    for response in answers:
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid", response.content
        assert "call must be an id" in response.json()["error"]["message"]
    assert not Call.objects.filter(agent=people["alice"]).exclude(pk__in=[calls["alices"].pk, calls["earlier"].pk]).exists()


def test_the_api_refuses_other_methods(people, calls):
    client = client_for(people["alice"].user)

    assert client.post("/agent/api/calls").status_code == 405
    response = client.get(f"/agent/api/calls/{calls['queued'].pk}/take")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert Call.objects.get(pk=calls["queued"].pk).agent_id is None


# --- taking a call ---


def test_an_agent_takes_a_call_from_the_queue_and_the_other_agent_loses_it(people, calls):
    alice, bob = client_for(people["alice"].user), client_for(people["bob"].user)

    response = alice.post(f"/agent/api/calls/{calls['queued'].pk}/take")

    assert response.status_code == 200 and response.json()["call"]["mine"] is True
    assert Call.objects.get(pk=calls["queued"].pk).agent == people["alice"]
    assert calls["queued"].pk not in ids(bob.get("/agent/api/calls"))
    assert bob.get(f"/agent/api/calls/{calls['queued'].pk}").status_code == 403
    again = alice.post(f"/agent/api/calls/{calls['queued'].pk}/take")
    assert again.status_code == 200, "taking one's own call again changes nothing"


def test_a_call_taken_by_someone_else_or_ended_cannot_be_taken(people, calls):
    alice = client_for(people["alice"].user)
    services.call_end(call_id=calls["queued"].pk)

    taken = alice.post(f"/agent/api/calls/{calls['bobs'].pk}/take")
    ended = alice.post(f"/agent/api/calls/{calls['queued'].pk}/take")
    missing = alice.post("/agent/api/calls/999999/take")

    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conflict"
    assert ended.status_code == 409 and ended.json()["error"]["code"] == "invalid_state"
    assert missing.status_code == 404
    assert Call.objects.get(pk=calls["bobs"].pk).agent == people["bob"]
    assert Call.objects.get(pk=calls["queued"].pk).agent_id is None


def test_a_call_taken_first_by_one_agent_stays_theirs(people, calls):
    services.call_assign_agent(call_id=calls["queued"].pk, agent_id=people["bob"].pk)

    with pytest.raises(Conflict, match="already taken"):
        services.call_assign_agent(call_id=calls["queued"].pk, agent_id=people["alice"].pk)

    assert Call.objects.get(pk=calls["queued"].pk).agent == people["bob"]


def test_a_supervisor_who_is_not_an_agent_cannot_take_calls(people, calls):
    response = client_for(people["supervisor"]).post(f"/agent/api/calls/{calls['queued'].pk}/take")

    assert response.status_code == 403 and "not an agent" in response.json()["error"]["message"]
    assert Call.objects.get(pk=calls["queued"].pk).agent_id is None


def test_taking_a_call_needs_the_csrf_token(people, calls):
    client = Client(enforce_csrf_checks=True)
    client.force_login(people["alice"].user)

    refused = client.post(f"/agent/api/calls/{calls['queued'].pk}/take")
    client.get("/agent/")
    accepted = client.post(f"/agent/api/calls/{calls['queued'].pk}/take",
                           headers={"X-CSRFToken": client.cookies["csrftoken"].value})  # fmt: skip

    assert refused.status_code == 403 and accepted.status_code == 200
