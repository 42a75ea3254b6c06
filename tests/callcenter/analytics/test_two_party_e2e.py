"""Both sides of a call, end to end: a two-track call built from known audio
(the customer: a real speaker's development prompts; the agent: the demo's
synthetic voice; turns with known voiced start and end, one deliberate
overlap) streamed over Twilio's both_tracks into the real stack (Daphne,
Redis, a Celery worker with the product's default recognizers). What the
agent's feed shows live (speaker labels, a category alert), the analytics
stored when the call ends against the truth, and each party's WER against
single-track recognition of the same audio."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import numpy as np
import pytest
import websockets
from asgiref.sync import async_to_sync

from asr_core import defaults
from asr_core.audio import load_audio
from asr_core.manifest import read_manifest
from asr_core.metrics import wer
from callcenter.analytics import services as analytics_services
from callcenter.analytics.models import CallAnalytics
from callcenter.calls import services
from callcenter.calls.models import Call
from callcenter.tools.client import stream_twilio
from callcenter.tools.two_party import agent_utterances, known_call, stream_pcm_stereo, stream_twilio_two_track
from tests.fixtures.calls import session_cookie, wait_ended, wait_recognized
from tests.fixtures.services import app_stack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

TURNS = 4  # per party: about 27 s of call
CALLER, CUSTOMER_ALONE, AGENT_ALONE = "+15550102001", "+15550102002", "+15550102003"


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory, shared_var_dir):
    with app_stack(tmp_path_factory.mktemp("stack"), shared_var_dir, ASR_FINAL_BACKBONE=defaults.FINAL_BACKBONE,
                   ASR_PARTIAL_BACKBONE=defaults.PARTIAL_BACKBONE) as (http_url, ws_url, _worker):  # fmt: skip
        yield http_url, ws_url


def _analytics(call: Call, timeout: float = 120) -> CallAnalytics:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = CallAnalytics.objects.filter(call=call).first()
        if found is not None:
            return found
        time.sleep(0.5)
    pytest.fail(f"no analytics for call #{call.pk} after {timeout} s")


def test_a_two_track_call_gets_both_parties_transcribed_its_analytics_and_a_live_alert(
    default_stack, real_dev, django_user_model
):
    http_url, ws_url = default_stack
    cookie = session_cookie(django_user_model.objects.create_user("sup-2p", is_staff=True, is_superuser=True))
    headers = {"Cookie": cookie, "Origin": http_url}
    prompts = read_manifest(str(real_dev), ("test",))[:TURNS]
    call_audio = known_call([(load_audio(u.audio, 8000).numpy(), u.text) for u in prompts], agent_utterances(TURNS))
    analytics_services.category_rule_create(name="Monkeys", phrases="monkeys", party="customer")
    analytics_services.category_rule_create(name="Monkeys said by the agent", phrases="monkeys", party="agent")
    analytics_services.category_rule_create(name="No greeting", phrases="thank you for calling", match="absent",
                                            party="agent", window_end_s=10)  # fmt: skip
    token = services.line_create(name="two-party-e2e")[1]
    media_url = f"{ws_url}/ws/media/twilio/{token}"

    async def scenario() -> list[dict]:
        seen: list[dict] = []
        async with websockets.connect(f"{ws_url}/ws/agent/", additional_headers=headers) as feed:
            assert json.loads(await feed.recv())["type"] == "hello"

            async def read() -> None:
                while not any(m["type"] == "analytics" for m in seen):
                    try:
                        seen.append(json.loads(await asyncio.wait_for(feed.recv(), 1.0)))
                    except TimeoutError:
                        pass

            reader = asyncio.ensure_future(read())
            run = await stream_twilio_two_track(media_url, call_audio.customer, call_audio.agent, caller=CALLER)
            assert run.close_code == 1000
            await asyncio.wait_for(reader, timeout=180)
            # The same audio, one party per single-track call (both at once, as fast as the server's
            # speed limit lets them: the segments are cut on the audio's own clock).
            alone = await asyncio.gather(stream_twilio(media_url, call_audio.customer, caller=CUSTOMER_ALONE,
                                                       realtime=False),
                                         stream_twilio(media_url, call_audio.agent, caller=AGENT_ALONE,
                                                       realtime=False))  # fmt: skip
            assert [r.close_code for r in alone] == [1000, 1000]
        return seen

    seen = async_to_sync(scenario)()

    call = wait_ended(customer__phone=CALLER)
    segments = wait_recognized(call, timeout=120)
    assert {s.speaker for s in segments} == {"customer", "agent"}
    assert all(s.status == "recognized" for s in segments), [s.failure_reason for s in segments]
    # Live: finals labelled with their speaker, the customer's category raised as an alert, no other.
    finals = {m["segment"]: m["speaker"] for m in seen if m["type"] == "final" and m["call"] == call.pk}
    assert finals == {s.pk: s.speaker for s in segments}
    alerts = [m for m in seen if m["type"] == "alert" and m["call"] == call.pk]
    assert [(a["category"], a["speaker"]) for a in alerts] == [("Monkeys", "customer")]

    analytics = _analytics(call)
    truth_talk = {p: call_audio.talk_ms(p) for p in ("customer", "agent")}
    measured = {"customer": analytics.talk_ms_customer, "agent": analytics.talk_ms_agent}
    print(f"talk ms measured {measured} truth {truth_talk}; overlap ms measured {analytics.overlap_ms} truth "
          f"{call_audio.overlap_ms}; interruptions customer/agent {analytics.interruptions_customer}/"
          f"{analytics.interruptions_agent}")
    for party in truth_talk:
        assert abs(measured[party] - truth_talk[party]) <= 0.05 * truth_talk[party], (party, measured, truth_talk)
    assert abs(analytics.overlap_ms - call_audio.overlap_ms) <= 200, analytics.overlap_ms
    assert (analytics.interruptions_agent, analytics.interruptions_customer) == (1, 0)
    assert analytics.wpm_customer > 0 and analytics.wpm_agent > 0
    assert analytics.sentiment_customer is not None and analytics.sentiment_agent is not None

    # Each party's WER on the two-track call is no worse than on a single-track call of the same audio.
    def party_wer(the_call: Call, speaker: str, reference: str) -> float:
        texts = [s.text for s in wait_recognized(the_call, timeout=120) if s.speaker == speaker]
        return wer([(reference, " ".join(texts))])

    for party, alone_caller in (("customer", CUSTOMER_ALONE), ("agent", AGENT_ALONE)):
        reference = call_audio.text(party)
        two_track = party_wer(call, party, reference)
        single = party_wer(wait_ended(customer__phone=alone_caller), "customer", reference)
        print(f"{party}: WER two-track {two_track:.3f}, single-track {single:.3f}")
        assert two_track <= single + 1e-9, (party, two_track, single)

    # The supervisors' JSON of the call.
    request = urllib.request.Request(f"{http_url}/supervisor/api/calls/{call.pk}", headers={"Cookie": cookie})
    exported = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert exported["analytics"]["talk_ms"] == measured and exported["analytics"]["categories"] == ["Monkeys"]
    assert [s["speaker"] for s in exported["segments"]] == [s.speaker for s in sorted(segments, key=lambda s: s.start_ms)]
    np.testing.assert_equal(len(exported["segments"]), len(segments))


def test_a_two_channel_pcm_call_with_a_vocabulary_spells_the_product_name_and_labels_each_result(default_stack):
    """PCM ``"channels": 2`` with a ``phrase_list``: the line's vocabulary and the stream's are stored
    on the call, the worker gives them to Whisper as a prompt, each result says its speaker."""
    import dataclasses

    from asr_core.corpus.synth import render
    from callcenter.calls.models import Line
    from callcenter.tools.demo import demo_speaker

    _, ws_url = default_stack
    token = services.line_create(name="two-party-pcm")[1]
    Line.objects.filter(name="two-party-pcm").update(vocabulary="Zentrix\nFlexPay, Quorvo")
    voice = dataclasses.replace(demo_speaker(), snr_db=40.0)
    said = render(voice, "can you move my Velmora subscription to next month", 502)
    (greeting, _), = agent_utterances(1)
    rng = np.random.default_rng(1)
    length = 8000 * 3 + len(greeting) + len(said)
    customer, agent = ((rng.normal(size=length) * 3e-4).astype(np.float32) for _ in range(2))
    agent[4000 : 4000 + len(greeting)] += greeting
    customer[length - len(said) - 8000 : length - 8000] += said

    run = async_to_sync(stream_pcm_stereo)(f"{ws_url}/ws/media/pcm/{token}", customer, agent,
                                           caller="+15550102004", phrase_list=["Velmora", "Quorvo"])  # fmt: skip

    assert run.close_code == 1000
    call = wait_ended(customer__phone="+15550102004")
    assert call.vocabulary == ["Zentrix", "FlexPay", "Quorvo", "Velmora"]
    segments = wait_recognized(call, timeout=120)
    assert [s.speaker for s in segments] == ["agent", "customer"]
    assert "Velmora" in segments[1].text, segments[1].text
    results = [m for m in run.messages if "result" in m and m["result"]]
    assert results and all(w["speaker"] in ("customer", "agent") for m in results for w in m["result"])
    assert {w["speaker"] for m in results for w in m["result"]} == {"customer", "agent"}
