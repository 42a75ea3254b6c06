"""A two-party call built from known audio, and clients that stream it as two tracks.

``known_call()`` lays the customer's and the agent's utterances on two
8 kHz tracks, turn by turn, with known voiced start and end times and one
deliberate overlap (the agent starts ``overlap_ms`` before the customer's
second turn ends: an interruption). The truth is measured on the audio
itself (each utterance's first and last 10 ms frame within 35 dB of its
loudest and 12 dB over its own background), not with the server's endpointer.

``stream_twilio_two_track`` streams the two tracks as Twilio Media Streams
does with ``<Stream track="both_tracks">`` (each 20 ms, an ``inbound`` and
an ``outbound`` media frame); ``stream_pcm_stereo`` as the PCM protocol's
``"channels": 2`` (interleaved PCM16, channel 0 the customer). The tests of
issue 20 and ``bench/live_calls.py --two-track`` use them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import websockets

from callcenter.tools.client import TWILIO_FRAME_MS, StreamRun, _close_info, _paced, _twilio_sid

SAMPLE_RATE = 8000
AGENT_LINES = (
    "Thank you for calling, my name is Sam, how can I help you today?",
    "I see, let me look at your account for a moment.",
    "I understand, I can change that for you right now.",
    "Is there anything else I can help you with today?",
    "Thank you for your patience, have a good day.",
)


@dataclass(frozen=True)
class KnownTurn:
    speaker: str  # customer | agent
    start_ms: int  # voiced start, ms from the start of the call
    end_ms: int  # voiced end
    text: str


@dataclass(frozen=True)
class KnownCall:
    customer: np.ndarray  # (samples,) float32, 8 kHz: the customer's track
    agent: np.ndarray  # (samples,) float32, 8 kHz: the agent's track, as long
    turns: list[KnownTurn]
    overlap_ms: int  # the deliberate overlap (the agent interrupts)

    @property
    def seconds(self) -> float:
        return len(self.customer) / SAMPLE_RATE

    def talk_ms(self, speaker: str) -> int:
        return sum(t.end_ms - t.start_ms for t in self.turns if t.speaker == speaker)

    def text(self, speaker: str) -> str:
        return " ".join(t.text for t in self.turns if t.speaker == speaker)


def voiced_bounds(
    audio: np.ndarray, *, below_peak_db: float = 35.0, over_floor_db: float = 12.0, frame_ms: int = 10
) -> tuple[int, int]:
    """(first, last + 1) sample of the 10 ms frames within ``below_peak_db`` of
    the loudest frame and ``over_floor_db`` over the clip's background (its
    10th-percentile frame)."""
    n = SAMPLE_RATE * frame_ms // 1000
    frames = audio[: len(audio) // n * n].reshape(-1, n).astype(np.float64)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)  # (frames,)
    threshold = max(energy.max() - below_peak_db, np.percentile(energy, 10) + over_floor_db)
    loud = np.flatnonzero(energy >= threshold)
    return int(loud[0] * n), int((loud[-1] + 1) * n)


def known_call(
    customer_utterances: Sequence[tuple[np.ndarray, str]],
    agent_utterances: Sequence[tuple[np.ndarray, str]],
    *,
    gap_ms: int = 900,
    overlap_ms: int = 1000,
    seed: int = 0,
) -> KnownCall:
    """Agent and customer take turns (agent first), ``gap_ms`` of quiet line
    between the end of one party's voiced audio and the start of the other's,
    except that the agent's turn after the customer's second starts
    ``overlap_ms`` before that turn ends."""
    if len(customer_utterances) < 2 or len(agent_utterances) < len(customer_utterances):
        raise ValueError("need at least 2 customer utterances and as many agent utterances")
    rng = np.random.default_rng(seed)
    ms = SAMPLE_RATE // 1000
    order = []
    for i, customer in enumerate(customer_utterances):
        order += [("agent", agent_utterances[i]), ("customer", customer)]
    placed = []  # (speaker, clip, offset in samples, text, voiced start, voiced end)
    at = 500 * ms  # the first voiced sample
    for position, (speaker, (clip, text)) in enumerate(order):
        clip = np.asarray(clip, dtype=np.float32)
        first, last = voiced_bounds(clip)
        if position == 4:  # the agent's turn after the customer's second: it interrupts
            at -= gap_ms * ms + overlap_ms * ms
        offset = at - first
        if offset < 0:
            clip, first, last, offset = clip[-offset:], first + offset, last + offset, 0
        placed.append((speaker, clip, offset, text, offset + first, offset + last))
        at = offset + last + gap_ms * ms
    length = max(p[2] + len(p[1]) for p in placed) + 500 * ms
    tracks = {s: (rng.normal(size=length) * 3e-4).astype(np.float32) for s in ("customer", "agent")}
    turns = []
    for speaker, clip, offset, text, start, end in placed:
        tracks[speaker][offset : offset + len(clip)] += clip
        turns.append(KnownTurn(speaker=speaker, start_ms=start // ms, end_ms=end // ms, text=text))
    for track in tracks.values():
        np.clip(track, -1.0, 1.0, out=track)
    return KnownCall(customer=tracks["customer"], agent=tracks["agent"], turns=turns, overlap_ms=overlap_ms)


def agent_utterances(count: int, *, seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """The agent's lines spoken by the demo's voice (festival HTS) over a clean mu-law line."""
    import dataclasses

    from callcenter.asr import synthesize as render
    from callcenter.tools.demo import demo_speaker

    speaker = dataclasses.replace(demo_speaker(), id="agent", snr_db=50.0)
    return [(render(speaker, text, seed * 100 + i), text) for i, text in enumerate(AGENT_LINES[:count])]


# --- clients ---------------------------------------------------------------------


def _mulaw_tracks(customer: np.ndarray, agent: np.ndarray) -> dict[str, bytes]:
    """Twilio's track name -> that party's audio as mu-law bytes."""
    import torch

    from callcenter.asr import mulaw_encode

    return {
        track: mulaw_encode(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
        for track, audio in (("inbound", customer), ("outbound", agent))
    }


def _twilio_two_track_start(stream_sid: str, call_sid: str, sequence: int, parameters: dict[str, str]) -> str:
    return json.dumps({
        "event": "start", "sequenceNumber": str(sequence), "streamSid": stream_sid,
        "start": {"streamSid": stream_sid, "callSid": call_sid, "accountSid": _twilio_sid("AC"),
                  "tracks": ["inbound", "outbound"], "customParameters": parameters,
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    })  # fmt: skip


def _twilio_media(stream_sid: str, sequence: int, track: str, chunk: int, piece: bytes) -> str:
    """The media frame of 20 ms chunk number `chunk` (from 0) of one track."""
    return json.dumps({
        "event": "media", "sequenceNumber": str(sequence), "streamSid": stream_sid,
        "media": {"track": track, "chunk": str(chunk + 1), "timestamp": str(chunk * TWILIO_FRAME_MS),
                  "payload": base64.b64encode(piece).decode("ascii")},
    })  # fmt: skip


async def stream_twilio_two_track(
    url: str,
    customer: np.ndarray,
    agent: np.ndarray,
    *,
    caller: str | None = None,
    realtime: bool = True,
    extra_parameters: dict[str, str] | None = None,
    on_message: Callable[[dict], None] | None = None,
) -> StreamRun:
    """Stream two 8 kHz float tracks as Twilio's ``both_tracks``: ``inbound``
    (the customer) and ``outbound`` (the agent), 20 ms frames of each, in step."""
    run = StreamRun(stream_sid=_twilio_sid("MZ"))
    call_sid = _twilio_sid("CA")
    parameters = dict(extra_parameters or {})
    if caller:
        parameters["caller"] = caller
    payloads = _mulaw_tracks(customer, agent)
    frame_bytes = SAMPLE_RATE * TWILIO_FRAME_MS // 1000
    frames = max(len(p) for p in payloads.values()) // frame_bytes
    sequence = iter(range(1, 1 << 40))
    started = time.monotonic()
    async with websockets.connect(url, max_size=2**22, open_timeout=20) as ws:

        async def reader() -> None:
            async for raw in ws:
                message = json.loads(raw)
                run.messages.append(message)
                if on_message:
                    on_message(message)

        reading = asyncio.ensure_future(reader())
        try:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(_twilio_two_track_start(run.stream_sid, call_sid, next(sequence), parameters))
            for chunk in range(frames):
                await _paced(chunk, TWILIO_FRAME_MS / 1000, started, realtime)
                for track, payload in payloads.items():
                    piece = payload[chunk * frame_bytes : (chunk + 1) * frame_bytes]
                    await ws.send(_twilio_media(run.stream_sid, next(sequence), track, chunk, piece))
                run.frames_sent += 1
            await ws.send(json.dumps({"event": "stop", "sequenceNumber": str(next(sequence)),
                                      "streamSid": run.stream_sid, "stop": {"callSid": call_sid}}))  # fmt: skip
        except websockets.ConnectionClosed:
            pass
        await ws.close()
        try:
            await asyncio.wait_for(reading, timeout=10)
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            reading.cancel()
        run.close_code, run.close_reason = _close_info(ws)
    run.seconds = time.monotonic() - started
    return run


async def stream_pcm_stereo(
    url: str,
    customer: np.ndarray,
    agent: np.ndarray,
    *,
    caller: str | None = None,
    chunk_ms: int = 200,
    realtime: bool = True,
    phrase_list: Sequence[str] = (),
    eof_timeout: float = 60.0,
) -> StreamRun:
    """Stream two 8 kHz float tracks as one PCM stream with ``"channels": 2``
    (interleaved; channel 0 the customer), reading one answer per frame as a
    vosk client does."""
    length = min(len(customer), len(agent))
    stereo = np.stack([customer[:length], agent[:length]], axis=1)  # (samples, 2)
    pcm = (np.clip(stereo, -1.0, 1.0) * 32767).round().astype("<i2").tobytes()  # interleaved
    frame_bytes = SAMPLE_RATE * chunk_ms // 1000 * 4
    config: dict[str, object] = {"sample_rate": SAMPLE_RATE, "channels": 2}
    if caller:
        config["caller"] = caller
    if phrase_list:
        config["phrase_list"] = list(phrase_list)
    run = StreamRun()
    started = time.monotonic()
    async with websockets.connect(url, max_size=2**22, open_timeout=20) as ws:
        try:
            await ws.send(json.dumps({"config": config}))
            for index, offset in enumerate(range(0, len(pcm), frame_bytes)):
                await _paced(index, chunk_ms / 1000, started, realtime)
                await ws.send(pcm[offset : offset + frame_bytes])
                run.frames_sent += 1
                run.messages.append(json.loads(await ws.recv()))
            await ws.send('{"eof": 1}')
            run.messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=eof_timeout)))
            await asyncio.wait_for(ws.wait_closed(), timeout=10)
        except websockets.ConnectionClosed:
            pass
    run.close_code, run.close_reason = _close_info(ws)
    run.seconds = time.monotonic() - started
    return run
