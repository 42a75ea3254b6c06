"""The demo call of the main command (``python -m callcenter.ops.run --demo``).

Once the system runs, the demo places a call the way a telephony integrator
would: it issues a token for the media line ``demo``, streams a synthetic
caller (asr_core's sentence generator and speech synthesizer, or a WAV file
of your own) through the Twilio Media Streams protocol at real-time pace,
and prints what an agent sees on the agents' feed (``/ws/agent/``, with a
staff session): the call going live, partial hypotheses, each final
transcript, and the call ending. Then it prints where the stored call is in
the admin.

``synthetic_call()`` is shared with the tests and the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

DEMO_LINE = "demo"
DEMO_CALLER = "+15550100001"
SAMPLE_RATE = 8000
GAP_S = 1.0  # quiet line between sentences: longer than the endpointer's silence


@dataclass(frozen=True)
class SyntheticCall:
    audio: np.ndarray  # (samples,) float32, 8 kHz
    sentences: list[str]
    spans: list[tuple[int, int]]  # (first, last + 1) sample of each sentence's rendering in ``audio``

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


# The demo caller: the most natural installed voice (festival's HTS voice, a
# statistical model of a recorded speaker), which the default recognizer
# (Whisper) handles well; espeak-ng voices ("en-us+m6") sound robotic to it.
DEMO_VOICE = "cmu_us_slt_arctic_hts"


def demo_speaker(voice: str = DEMO_VOICE):
    """The demo caller on a clean telephone line (mu-law): festival ``voice``,
    or an espeak-ng voice ("en-us+m6")."""
    from callcenter.asr import FESTIVAL_VOICES, Speaker

    if voice in FESTIVAL_VOICES:
        return Speaker(
            id="demo", split="test", engine="festival", voice=voice, rate=1.0, pitch=50, formant=1.0, pitch_cents=0,
            codec="ulaw", amr_mode=0, snr_db=25.0, gain_db=-3.0, band_low=300, band_high=3400,
        )  # fmt: skip
    return Speaker(
        id="demo", split="test", engine="espeak", voice=voice, rate=160.0, pitch=45, formant=1.05, pitch_cents=-80,
        codec="ulaw", amr_mode=0, snr_db=25.0, gain_db=-3.0, band_low=300, band_high=3400,
    )  # fmt: skip


def synthetic_call(*, seed: int = 7, sentences: int = 4, voice: str = DEMO_VOICE) -> SyntheticCall:
    """A caller saying ``sentences`` customer-service sentences, with a
    second of quiet line before, between and after them."""
    from callcenter.asr import synthesize as render
    from callcenter.asr import synthetic_sentences as make_sentences

    texts = make_sentences(random.Random(seed), sentences)
    rng = np.random.default_rng(seed)
    speaker = demo_speaker(voice)

    def line_noise() -> np.ndarray:
        return (rng.normal(size=int(GAP_S * SAMPLE_RATE)) * 3e-4).astype(np.float32)

    parts, spans, at = [line_noise()], [], int(GAP_S * SAMPLE_RATE)
    for i, text in enumerate(texts):
        spoken = render(speaker, text, seed * 100 + i).astype(np.float32)
        parts += [spoken, line_noise()]
        spans.append((at, at + len(spoken)))
        at += len(spoken) + int(GAP_S * SAMPLE_RATE)
    return SyntheticCall(audio=np.concatenate(parts), sentences=texts, spans=spans)


# --- the agent's view --------------------------------------------------------


def staff_session_cookie() -> str:
    """A session for the first superuser, as the admin login would make it:
    the demo watches the agents' feed as that user."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connections

    try:
        user = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if user is None:
            raise RuntimeError("no superuser to watch the agents' feed as")
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"
    finally:
        connections.close_all()


def demo_line_token() -> str:
    """A fresh token for the media line ``demo`` (created on first use)."""
    from django.db import connections

    from callcenter.calls import services
    from callcenter.calls.models import Line

    try:
        line = Line.objects.filter(name=DEMO_LINE).first()
        if line is None:
            return services.line_create(name=DEMO_LINE)[1]
        if not line.enabled:
            Line.objects.filter(pk=line.pk).update(enabled=True)
        return services.line_token_rotate(line_id=line.pk)[1]
    finally:
        connections.close_all()


def _segment_count(call_id: int) -> int:
    from django.db import connections

    from callcenter.calls.models import Segment

    try:
        return Segment.objects.filter(call_id=call_id).count()
    finally:
        connections.close_all()


@dataclass
class AgentView:
    """What the agents' feed showed for one call."""

    call_id: int | None = None
    partials: list[dict] = field(default_factory=list)
    finals: dict[int, dict] = field(default_factory=dict)  # index -> final
    ended: bool = False

    def transcript(self) -> list[str]:
        return [self.finals[i]["text"] for i in sorted(self.finals)]


def format_message(message: dict) -> str | None:
    kind = message.get("type")
    if kind == "call":
        caller = message.get("caller") or "an unknown number"
        if message["status"] == "live":
            return f"call #{message['call']} from {caller} is live"
        return f"call #{message['call']} {message['status']}"
    if kind == "partial":
        return f"  partial #{message['index']}: {message['text']}"
    if kind == "final":
        latency = ""
        if message.get("endpoint_at") and message.get("recognized_at"):
            latency = f", {1000 * (time.time() - message['endpoint_at']):.0f} ms after the endpoint"
        if message.get("status") == "failed":
            return f"  FINAL   #{message['index']}: (recognition failed: {message.get('error')})"
        conf = "?" if message.get("conf") is None else f"{message['conf']:.2f}"
        return f"  FINAL   #{message['index']}: {message['text']}   (conf {conf}{latency})"
    if kind == "dtmf":
        return f"  dtmf: {message['digit']}"
    return None


async def watch_call_while(
    agent_url: str,
    cookie: str,
    origin: str,
    stream: Callable[[], asyncio.Future],
    *,
    say: Callable[[str], None],
    finals_timeout: float = 60.0,
) -> AgentView:
    """Open the agents' feed, run ``stream()`` (which places the call), print
    what the feed shows, and return once the call ended and every segment
    has its final (or ``finals_timeout`` passed)."""
    import websockets
    from asgiref.sync import sync_to_async

    view = AgentView()
    headers = {"Cookie": cookie, "Origin": origin}
    async with websockets.connect(agent_url, additional_headers=headers, open_timeout=20) as feed:
        hello = json.loads(await asyncio.wait_for(feed.recv(), timeout=20))
        if hello.get("type") != "hello":
            raise RuntimeError(f"the agents' feed refused the demo: {hello}")
        expected: int | None = None

        async def read() -> None:
            nonlocal expected
            async for raw in feed:
                message = json.loads(raw)
                if message.get("type") == "call" and view.call_id is None and message.get("status") == "live":
                    view.call_id = message["call"]
                if view.call_id is None or message.get("call") != view.call_id:
                    continue
                line = format_message(message)
                if line:
                    say(f" agent | {line}")
                if message.get("type") == "partial":
                    view.partials.append(message)
                elif message.get("type") == "final":
                    view.finals[message["index"]] = message
                elif message.get("type") == "call" and message.get("status") != "live":
                    view.ended = True
                    expected = await sync_to_async(_segment_count)(view.call_id)
                if view.ended and expected is not None and len(view.finals) >= expected:
                    return

        reader = asyncio.ensure_future(read())
        try:
            await stream()
            deadline = time.monotonic() + finals_timeout
            while not reader.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            if not reader.done():
                reader.cancel()
            else:
                reader.result()
    return view


# --- the demo, start to end --------------------------------------------------


@dataclass(frozen=True)
class DemoOutcome:
    call_id: int | None
    call_admin_url: str | None
    spoken: list[str]
    recognized: list[str]
    wer: float | None


def run_demo_call(
    *,
    http_url: str,
    admin_url: str,
    say: Callable[[str], None],
    watchdog: Callable[[], None],
    wav: str | None = None,
    seed: int = 7,
) -> DemoOutcome:
    """Place the demo call against the running system and print it as an
    agent sees it. ``watchdog()`` is called every few tenths of a second and
    may raise to abandon the call (Ctrl-C, a child process died)."""
    from callcenter.asr import load_audio
    from callcenter.asr import word_error_rate as wer
    from callcenter.tools.client import stream_twilio

    if wav:
        audio, spoken = load_audio(wav, SAMPLE_RATE).numpy(), []
        say(f"Demo call: streaming {wav} ({len(audio) / SAMPLE_RATE:.1f} s) over the Twilio protocol, in real time.")
    else:
        call = synthetic_call(seed=seed)
        audio, spoken = call.audio, call.sentences
        say(f"Demo call: a synthetic caller ({DEMO_CALLER}) says {len(spoken)} sentences ({call.seconds:.1f} s) "
            "over the Twilio protocol, in real time:")  # fmt: skip
        for i, text in enumerate(spoken, start=1):
            say(f"  {i}. {text}")
    ws_base = http_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    token, cookie = demo_line_token(), staff_session_cookie()

    async def place_call() -> AgentView:
        async def guard() -> None:
            while True:
                watchdog()
                await asyncio.sleep(0.3)

        watching = asyncio.ensure_future(
            watch_call_while(
                f"{ws_base}/ws/agent/",
                cookie,
                http_url,
                lambda: stream_twilio(f"{ws_base}/ws/media/twilio/{token}", audio, caller=DEMO_CALLER),
                say=say,
            )
        )
        guarding = asyncio.ensure_future(guard())
        done, _ = await asyncio.wait({watching, guarding}, return_when=asyncio.FIRST_COMPLETED)
        for task in (watching, guarding):
            task.cancel()
        return done.pop().result()

    view = asyncio.run(place_call())
    recognized = view.transcript()
    score = wer([(" ".join(spoken), " ".join(recognized))]) if spoken else None
    call_admin_url = f"{admin_url}calls/call/{view.call_id}/change/" if view.call_id else None
    return DemoOutcome(view.call_id, call_admin_url, spoken, recognized, score)
