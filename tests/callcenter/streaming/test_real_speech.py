"""Real speech through the real system: a real speaker's telephone prompts (the development set,
``../shared/real-speech/``) streamed in real time over the Twilio protocol into Daphne, recognized by
a Celery worker, both with the product's default recognizers (asr_core/defaults.py: Whisper for
partials and finals), in a stack of their own; what the agent sees live and what is stored."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import websockets
from asgiref.sync import async_to_sync

from asr_core import defaults
from asr_core.audio import load_audio
from asr_core.manifest import read_manifest
from asr_core.metrics import wer, word_errors
from callcenter.calls import services
from callcenter.calls.models import Call
from callcenter.tools.client import stream_twilio
from tests.fixtures.calls import session_cookie, wait_ended, wait_recognized
from tests.fixtures.services import app_stack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(400)]

PROMPTS = 10  # the first test prompts (about 30 s of speech) with a second of line noise between them
# Stored finals on this clean line (the product's default recognizer: 4.5 % WER on all 67 test prompts).
MAX_WER = 0.10
# The last partial of each segment against its final.
MAX_PARTIAL_WER = 0.35


@pytest.fixture
def default_stack(tmp_path, shared_var_dir):
    """Private Redis, web server and worker with the product's default recognizers."""
    with app_stack(tmp_path, shared_var_dir, ASR_FINAL_BACKBONE=defaults.FINAL_BACKBONE,
                   ASR_PARTIAL_BACKBONE=defaults.PARTIAL_BACKBONE) as (http_url, ws_url, _worker):
        yield http_url, ws_url


@pytest.fixture
def staff_cookie(django_user_model) -> str:
    return session_cookie(django_user_model.objects.create_user("supervisor-real", is_staff=True, is_superuser=True))


def test_a_real_speakers_call_gets_accurate_finals_and_partials_that_converge(default_stack, staff_cookie, real_dev):
    http_url, ws_url = default_stack
    headers = {"Cookie": staff_cookie, "Origin": http_url}
    prompts = read_manifest(str(real_dev), ("test",))[:PROMPTS]
    rng = np.random.default_rng(0)
    gap = lambda: (rng.normal(size=8000) * 3e-4).astype(np.float32)  # noqa: E731
    audio = np.concatenate([gap()] + [part for u in prompts for part in (load_audio(u.audio, 8000).numpy(), gap())])
    token = services.line_create(name="real-speech")[1]

    async def scenario() -> list[dict]:
        seen: list[dict] = []
        async with websockets.connect(f"{ws_url}/ws/agent/", additional_headers=headers) as feed:
            assert json.loads(await feed.recv())["type"] == "hello"

            def all_final() -> bool:
                """The call ended and the agent has the final of each of its segments."""
                call = Call.objects.filter(status="ended", customer__phone="+15550108080").first()
                finals = {m["segment"] for m in seen if m["type"] == "final"}
                return call is not None and set(call.segments.values_list("pk", flat=True)) <= finals

            async def read() -> None:
                while True:
                    try:
                        seen.append(json.loads(await asyncio.wait_for(feed.recv(), 1.0)))
                    except TimeoutError:
                        pass
                    if any(m["type"] == "call" and m["status"] == "ended" for m in seen) and \
                            await asyncio.to_thread(all_final):
                        return

            # A first short call, as a server that has taken calls before: the web process loads the
            # partials' model when its first call comes in.
            warm = await stream_twilio(f"{ws_url}/ws/media/twilio/{token}", audio[:8000], caller="+15550108081")
            assert warm.close_code == 1000
            await asyncio.sleep(3)
            reader = asyncio.ensure_future(read())
            run = await stream_twilio(f"{ws_url}/ws/media/twilio/{token}", audio, caller="+15550108080")
            assert run.close_code == 1000
            await asyncio.wait_for(reader, timeout=120)
        return seen

    seen = async_to_sync(scenario)()

    call = wait_ended(customer__phone="+15550108080")
    segments = wait_recognized(call, timeout=120)
    assert all(s.status == "recognized" for s in segments)
    reference = " ".join(u.text for u in prompts)
    stored = " ".join(s.text for s in segments)
    assert wer([(reference, stored)]) <= MAX_WER, stored
    # Most finals were recognized during the pause before their endpoint (speculative finals: a
    # segment's audio is known 300 ms into a pause), and each is its segment's stored text.
    finals = {m["segment"]: m for m in seen if m["type"] == "final"}
    assert sum(bool(m.get("speculative")) for m in finals.values()) >= len(segments) / 2, list(finals.values())
    assert all(finals[s.pk]["text"] == s.text for s in segments)
    # Live: partials while each segment was spoken, the last one close to its final.
    errors = words = 0
    for segment in segments:
        if not segment.text:
            continue
        final_at = next(i for i, m in enumerate(seen) if m["type"] == "final" and m["segment"] == segment.pk)
        partials = [m["text"] for m in seen[:final_at] if m["type"] == "partial" and m["segment"] == segment.pk]
        assert partials, f"no partial before the final of segment #{segment.index}"
        e, n = word_errors(segment.text, partials[-1])
        errors, words = errors + e, words + n
    assert errors / words <= MAX_PARTIAL_WER
