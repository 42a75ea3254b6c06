"""A media client that speaks each protocol as the real peer does.

    python -m callcenter.tools.client twilio call.wav --url ws://127.0.0.1:8000/ws/media/twilio/<token> --caller +15551230000
    python -m callcenter.tools.client pcm call.wav --url ws://127.0.0.1:8000/ws/media/pcm/<token> --sample-rate 16000

``twilio`` behaves like Twilio Media Streams: ``connected``, ``start``
(stream and call sids, ``inbound`` track, ``audio/x-mulaw`` 8000 Hz, custom
parameters), 20 ms ``media`` frames of base64 mu-law at real-time pace with
sequence numbers, chunks and timestamps, echoes each ``mark`` it gets back
(as Twilio does once the audio before it has played; this client plays
none), then ``stop`` and closes the socket.

``pcm`` behaves like a vosk-server client: the JSON config, PCM16 frames
(0.2 s by default) each followed by reading the server's one answer
(``partial`` or ``result``), then ``{"eof": 1}`` and the last answer.

Without ``--fast`` the audio goes at real-time pace, as from a phone line.
The functions ``stream_twilio`` and ``stream_pcm`` are what the demo, the
tests and the benchmark use.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import websockets

TWILIO_FRAME_MS = 20


@dataclass
class StreamRun:
    """What a client saw: the server's messages and how the socket closed."""

    messages: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    stream_sid: str = ""
    frames_sent: int = 0
    seconds: float = 0.0
    # With reconnect_s: the streams it took (one per connection) and how many
    # frames the server confirmed stored (audio up to the last mark).
    stream_sids: list[str] = field(default_factory=list)
    reconnects: int = 0
    frames_confirmed: int = 0

    def results(self) -> list[dict]:
        return [m for m in self.messages if "result" in m or ("text" in m and "partial" not in m)]


def _twilio_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


async def _paced(index: int, frame_s: float, started: float, realtime: bool) -> None:
    if realtime:
        delay = started + index * frame_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    elif index % 50 == 0:
        await asyncio.sleep(0)


def _close_info(ws) -> tuple[int | None, str]:
    rcvd = getattr(ws, "close_rcvd", None)
    if rcvd is not None:
        return rcvd.code, rcvd.reason
    return getattr(ws, "close_code", None), getattr(ws, "close_reason", "") or ""


async def stream_twilio(
    url: str,
    audio: np.ndarray,
    *,
    caller: str | None = None,
    customer_id: str | None = None,
    marks: bool = False,
    realtime: bool = True,
    stream_sid: str | None = None,
    send_stop: bool = True,
    abort: bool = False,
    on_message: Callable[[dict], None] | None = None,
    extra_parameters: dict[str, str] | None = None,
    reconnect_s: float = 0.0,
) -> StreamRun:
    """Stream 8 kHz float audio as Twilio Media Streams would. ``abort``
    drops the connection at the end without a close handshake (a network
    failure).

    ``reconnect_s`` > 0: when the connection is lost before the audio is all
    sent (the web server restarted), connect again (retrying for up to that
    many seconds) and go on in a new stream with the rest of the audio. With
    ``marks`` the rest starts where the server last confirmed a segment
    stored (its last ``mark``), so audio the old server held in memory is
    sent again, not lost; without marks it starts after the last frame sent."""
    if reconnect_s > 0:
        return await _stream_twilio_reconnecting(
            url, audio, caller=caller, customer_id=customer_id, marks=marks, realtime=realtime,
            on_message=on_message, extra_parameters=extra_parameters, reconnect_s=reconnect_s,
        )  # fmt: skip
    return await _stream_twilio_once(
        url, audio, caller=caller, customer_id=customer_id, marks=marks, realtime=realtime, stream_sid=stream_sid,
        send_stop=send_stop, abort=abort, on_message=on_message, extra_parameters=extra_parameters,
    )  # fmt: skip


async def _stream_twilio_reconnecting(
    url: str, audio: np.ndarray, *, marks: bool, reconnect_s: float, on_message, **kwargs
) -> StreamRun:
    total = StreamRun()
    frame_samples = 8000 * TWILIO_FRAME_MS // 1000
    offset = 0  # frames of ``audio`` the current stream starts at
    started = time.monotonic()
    while True:
        attempt = StreamRun(stream_sid=_twilio_sid("MZ"))

        def seen(message: dict, attempt: StreamRun = attempt, base: int = offset) -> None:
            if message.get("event") == "mark":
                total.frames_confirmed = max(total.frames_confirmed, base + attempt.frames_sent)
            if on_message:
                on_message(message)

        deadline = time.monotonic() + reconnect_s
        while True:
            try:
                run = await _stream_twilio_once(
                    url, audio[offset * frame_samples :], marks=marks, on_message=seen, run=attempt, **kwargs
                )
                break
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed):
                if attempt.frames_sent or time.monotonic() > deadline:
                    if attempt.frames_sent:
                        run = attempt
                        break
                    raise
                await asyncio.sleep(0.5)
        total.stream_sids.append(run.stream_sid)
        total.stream_sid = run.stream_sid
        total.messages.extend(run.messages)
        total.close_code, total.close_reason = run.close_code, run.close_reason
        sent_until = offset + run.frames_sent
        total.frames_sent = max(total.frames_sent, sent_until)
        remaining = len(audio) - sent_until * frame_samples
        if run.close_code == 1000 or remaining <= 0:
            break
        # Lost mid-stream: go on in a new stream.
        total.reconnects += 1
        offset = total.frames_confirmed if marks else sent_until
    total.seconds = time.monotonic() - started
    return total


async def _stream_twilio_once(
    url: str,
    audio: np.ndarray,
    *,
    caller: str | None = None,
    customer_id: str | None = None,
    marks: bool = False,
    realtime: bool = True,
    stream_sid: str | None = None,
    send_stop: bool = True,
    abort: bool = False,
    on_message: Callable[[dict], None] | None = None,
    extra_parameters: dict[str, str] | None = None,
    run: StreamRun | None = None,
) -> StreamRun:
    import torch

    from callcenter.asr import mulaw_encode

    run = run or StreamRun(stream_sid=stream_sid or _twilio_sid("MZ"))
    call = _TwilioCall(
        run=run,
        call_sid=_twilio_sid("CA"),
        account_sid=_twilio_sid("AC"),
        parameters=_twilio_parameters(caller, customer_id, marks, extra_parameters),
        seq=itertools.count(1).__next__,
    )
    payload = mulaw_encode(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
    started = time.monotonic()
    async with websockets.connect(url, max_size=2**22, open_timeout=20) as ws:
        reading = asyncio.ensure_future(_twilio_read(ws, call, on_message))
        try:
            await _twilio_send(ws, call, payload, started=started, realtime=realtime, send_stop=send_stop)
        except websockets.ConnectionClosed:
            pass
        await _hang_up(ws, reading, abort=abort)
        run.close_code, run.close_reason = _close_info(ws)
    run.seconds = time.monotonic() - started
    return run


@dataclass
class _TwilioCall:
    """One Twilio media stream as it is being sent: ids, custom parameters,
    and the sequence numbers of its messages (shared by sender and reader)."""

    run: StreamRun
    call_sid: str
    account_sid: str
    parameters: dict[str, str]
    seq: Callable[[], int]


def _twilio_parameters(
    caller: str | None, customer_id: str | None, marks: bool, extra: dict[str, str] | None
) -> dict[str, str]:
    parameters = dict(extra or {})
    if caller:
        parameters["caller"] = caller
    if customer_id:
        parameters["customer_id"] = customer_id
    if marks:
        parameters["marks"] = "true"
    return parameters


async def _twilio_read(ws, call: _TwilioCall, on_message: Callable[[dict], None] | None) -> None:
    """Collect the server's messages; echo each mark, as Twilio does once
    the audio sent before it has played."""
    async for raw in ws:
        message = json.loads(raw)
        call.run.messages.append(message)
        if on_message:
            on_message(message)
        if message.get("event") == "mark":
            await ws.send(json.dumps({
                "event": "mark", "sequenceNumber": str(call.seq()), "streamSid": call.run.stream_sid,
                "mark": message.get("mark", {}),
            }))  # fmt: skip


async def _twilio_send(ws, call: _TwilioCall, payload: bytes, *, started: float, realtime: bool, send_stop: bool) -> None:
    """``connected``, ``start``, the audio as 20 ms ``media`` frames (paced
    in real time when ``realtime``), then ``stop`` when ``send_stop``."""
    run, frame_bytes = call.run, 8000 * TWILIO_FRAME_MS // 1000
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(json.dumps({
        "event": "start", "sequenceNumber": str(call.seq()), "streamSid": run.stream_sid,
        "start": {
            "accountSid": call.account_sid, "streamSid": run.stream_sid, "callSid": call.call_sid,
            "tracks": ["inbound"], "customParameters": call.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }))  # fmt: skip
    for chunk, offset in enumerate(range(0, len(payload), frame_bytes), start=1):
        await _paced(chunk - 1, TWILIO_FRAME_MS / 1000, started, realtime)
        await ws.send(json.dumps({
            "event": "media", "sequenceNumber": str(call.seq()), "streamSid": run.stream_sid,
            "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * TWILIO_FRAME_MS),
                      "payload": base64.b64encode(payload[offset:offset + frame_bytes]).decode("ascii")},
        }))  # fmt: skip
        run.frames_sent += 1
    if send_stop:
        await ws.send(json.dumps({
            "event": "stop", "sequenceNumber": str(call.seq()), "streamSid": run.stream_sid,
            "stop": {"accountSid": call.account_sid, "callSid": call.call_sid},
        }))  # fmt: skip


async def _hang_up(ws, reading: asyncio.Future, *, abort: bool) -> None:
    """Drop the connection (``abort``: as a lost network would), or close
    it as Twilio does after ``stop`` and wait for the server's last messages."""
    if abort:
        ws.transport.abort()
        reading.cancel()
        return
    await ws.close()
    try:
        await asyncio.wait_for(reading, timeout=10)
    except (asyncio.TimeoutError, websockets.ConnectionClosed):
        reading.cancel()


async def stream_pcm(
    url: str,
    audio: np.ndarray,
    *,
    sample_rate: int = 8000,
    chunk_ms: int = 200,
    caller: str | None = None,
    customer_id: str | None = None,
    words: bool = True,
    realtime: bool = True,
    on_message: Callable[[dict], None] | None = None,
    eof_timeout: float = 60.0,
) -> StreamRun:
    """Stream float audio at ``sample_rate`` as a vosk-server client would:
    one answer read after each frame, one after eof."""
    import torch

    from callcenter.asr import pcm16_encode

    run = StreamRun()
    pcm = pcm16_encode(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
    frame_bytes = sample_rate * chunk_ms // 1000 * 2
    config: dict[str, object] = {"sample_rate": sample_rate, "words": int(words)}
    if caller:
        config["caller"] = caller
    if customer_id:
        config["customer_id"] = customer_id
    started = time.monotonic()

    def keep(raw: str | bytes) -> None:
        message = json.loads(raw)
        run.messages.append(message)
        if on_message:
            on_message(message)

    async with websockets.connect(url, max_size=2**22, open_timeout=20) as ws:
        try:
            await ws.send(json.dumps({"config": config}))
            for index, offset in enumerate(range(0, len(pcm), frame_bytes)):
                await _paced(index, chunk_ms / 1000, started, realtime)
                await ws.send(pcm[offset : offset + frame_bytes])
                run.frames_sent += 1
                keep(await ws.recv())
            await ws.send('{"eof" : 1}')
            keep(await asyncio.wait_for(ws.recv(), timeout=eof_timeout))
            await asyncio.wait_for(ws.wait_closed(), timeout=10)
        except websockets.ConnectionClosed:
            pass
    run.close_code, run.close_reason = _close_info(ws)
    run.seconds = time.monotonic() - started
    return run


def _print_message(protocol: str, message: dict) -> None:
    if protocol == "pcm" and "partial" in message:
        if message["partial"]:
            print(f"  partial: {message['partial']}", flush=True)
    elif protocol == "pcm" and "text" in message:
        print(f"  result:  {message['text']}", flush=True)
    else:
        print(f"  server:  {json.dumps(message)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m callcenter.tools.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", choices=["twilio", "pcm"])
    parser.add_argument("wav", help="audio file (WAV/FLAC/OGG; resampled as needed)")
    parser.add_argument("--url", required=True, help="ws://HOST:PORT/ws/media/<protocol>/<line token>")
    parser.add_argument("--caller", help="caller's number, E.164 (+15551230000)")
    parser.add_argument("--customer-id", help="the customer's id on the telephony side")
    parser.add_argument("--sample-rate", type=int, default=8000, choices=[8000, 16000], help="pcm only")
    parser.add_argument("--chunk-ms", type=int, default=200, help="pcm only: audio per frame (default 200)")
    parser.add_argument("--marks", action="store_true", help="twilio only: ask for mark/clear (bidirectional)")
    parser.add_argument("--fast", action="store_true", help="send as fast as possible, not at real-time pace")
    args = parser.parse_args(argv)

    from callcenter.asr import AudioError, load_audio

    rate = 8000 if args.protocol == "twilio" else args.sample_rate
    try:
        audio = load_audio(args.wav, rate).numpy()
    except AudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"streaming {len(audio) / rate:.1f} s of {args.wav} over {args.protocol} to {args.url}", flush=True)
    common = {"caller": args.caller, "customer_id": args.customer_id, "realtime": not args.fast,
              "on_message": lambda m: _print_message(args.protocol, m)}  # fmt: skip
    try:
        if args.protocol == "twilio":
            run = asyncio.run(stream_twilio(args.url, audio, marks=args.marks, **common))
        else:
            run = asyncio.run(stream_pcm(args.url, audio, sample_rate=rate, chunk_ms=args.chunk_ms, **common))
    except (OSError, websockets.InvalidURI, websockets.InvalidHandshake, asyncio.TimeoutError) as exc:
        print(f"error: cannot stream to {args.url}: {exc}", file=sys.stderr)
        return 1
    print(
        f"done: {run.frames_sent} frames in {run.seconds:.1f} s; socket closed with code {run.close_code}", flush=True
    )
    return 0 if run.close_code == 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
