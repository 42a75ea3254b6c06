"""Plain PCM (vosk-server compatible) consumer: ``wss://host/ws/media/pcm/<line token>``."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping

from channels.db import database_sync_to_async

from callcenter.streaming import protocols
from callcenter.streaming.codecs import pcm16_to_float
from callcenter.streaming.consumers.base import MediaConsumer
from callcenter.streaming.endpointer import SegmentEnded
from callcenter.streaming.protocols import ProtocolError

logger = logging.getLogger(__name__)


def _segment_results(segment_ids: list[int]) -> list[dict]:
    from callcenter.calls import selectors

    return [
        {"segment": s.pk, "status": s.status, "text": s.text, "words": s.words, "start_ms": s.start_ms}
        for s in selectors.segments_by_id(segment_ids=segment_ids)
    ]


class PcmMediaConsumer(MediaConsumer):
    """Plain PCM, vosk-server compatible: ``wss://host/ws/media/pcm/<line token>``.

    Like vosk-server, it answers every audio frame with exactly one message
    (the next final result not yet delivered, else the current partial) and
    ``{"eof": 1}`` with one message: every result not yet delivered, joined,
    once the worker has recognized the last segments; then it closes.

    ``"channels": 2`` in the config: frames are interleaved stereo PCM16,
    channel 0 the customer, channel 1 the agent; each channel gets its own
    endpointer, and each result and word says its ``speaker``.
    """

    protocol = "pcm"
    answers_with_results = True
    start_event = "config"
    end_event = "eof"

    async def connect(self) -> None:
        self.config: protocols.PcmConfig | None = None
        self.eof = False
        self.partial_text = ""
        self.pending: deque[dict] = deque()  # finals not yet sent, in order
        self.done: dict[int, dict] = {}  # segment id -> its final
        self.delivered: set[int] = set()
        self._eof_deadline: asyncio.Task | None = None
        await super().connect()

    def error_frame(self, code: str, message: str) -> str:
        return protocols.pcm_error(code=code, message=message)

    async def on_frame(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if bytes_data is not None:
            channels = self.config.channels if self.config is not None else 1
            frame = protocols.pcm_check_audio(bytes_data, max_bytes=self.settings.max_frame_bytes, channels=channels)
            if self.eof:
                raise ProtocolError("frame_after_eof", "audio after eof")
            if self.session is None:
                raise ProtocolError("config_expected", "send the JSON config before audio")
            samples = pcm16_to_float(frame)
            events = []
            for channel, speaker in enumerate(self.session.speakers):
                # (samples,) interleaved -> this channel's (samples / channels,)
                events += await self.session.feed(samples[channel::channels], speaker=speaker)
            if any(isinstance(e, SegmentEnded) for e in events):
                self.partial_text = ""
            await self.send(self._reply())
            return
        message = protocols.pcm_parse_text(text_data, max_bytes=self.settings.max_frame_bytes)
        if self.eof:
            raise ProtocolError("frame_after_eof", "message after eof")
        if isinstance(message, protocols.PcmConfig):
            if self.session is not None:
                raise ProtocolError("duplicate_config", "the config is sent once, first")
            self.config = message
            await self._begin(
                sample_rate=message.sample_rate,
                external_id="",
                caller=message.caller,
                customer_id=message.customer_id,
                agent=message.agent,
                speakers=protocols.CHANNEL_SPEAKERS[: message.channels],
                vocabulary=message.phrase_list,
            )
            return
        if self.session is None:
            raise ProtocolError("config_expected", "send the JSON config first")
        await self._eof()

    async def on_partial(self, message: Mapping[str, object]) -> None:
        self.partial_text = str(message["text"])

    def _reply(self) -> str:
        if self.pending:
            final = self.pending.popleft()
            self.delivered.add(final["segment"])
            return self._result([final])
        return protocols.pcm_partial(text=self.partial_text)

    def _result(self, finals: list[Mapping]) -> str:
        two = self.config.channels == 2
        words = [
            {
                **w,
                "start": round(f["start_ms"] / 1000 + w["start"], 3),
                "end": round(f["start_ms"] / 1000 + w["end"], 3),
                **({"speaker": f.get("speaker", "customer")} if two else {}),
            }
            for f in finals
            for w in f["words"]
        ]
        text = " ".join(str(f["text"]) for f in finals if f["text"])
        speakers = {f.get("speaker", "customer") for f in finals}
        speaker = next(iter(speakers)) if two and len(speakers) == 1 else None
        return protocols.pcm_result(text=text, words=words, with_words=self.config.words, speaker=speaker)

    # --- eof: wait for the last finals, answer once, close ---

    async def _eof(self) -> None:
        self.eof = True
        await self.session.hangup()
        self._eof_deadline = self.later(self._expire_eof())
        await self._finish_eof_if_done()

    async def _finish_eof_if_done(self) -> None:
        if self.closing or not all(sid in self.done for sid in self.session.submitted):
            return
        await self._answer_eof()

    async def _expire_eof(self) -> None:
        await asyncio.sleep(self.settings.eof_wait_s)
        if self.closing:
            return
        missing = [sid for sid in self.session.submitted if sid not in self.done]
        logger.warning("call #%s: %d segment(s) not recognized %g s after eof", self.session.call_id, len(missing),
                       self.settings.eof_wait_s)  # fmt: skip
        # The database is the record: take what the worker stored meanwhile.
        for row in await database_sync_to_async(_segment_results)(missing):
            if row["status"] == "recognized":
                self.done[row["segment"]] = row
        await self._answer_eof()

    async def _answer_eof(self) -> None:
        self.closing = True
        if self._eof_deadline is not None and self._eof_deadline is not asyncio.current_task():
            self._eof_deadline.cancel()
        finals = [self.done[sid] for sid in self.session.submitted if sid in self.done and sid not in self.delivered]
        await self.send(self._result(finals))
        await self.close(code=protocols.CLOSE_NORMAL)

    # --- channel-layer handlers ---

    async def transcript_message(self, event: dict) -> None:
        message = event["message"]
        if message.get("type") != "final" or self.session is None or message.get("call") != self.session.call_id:
            return
        segment_id = message["segment"]
        if segment_id in self.done:
            return  # a re-run of the task: delivered once
        final = message if message.get("status") == "recognized" else {**message, "text": "", "words": []}
        self.done[segment_id] = final
        if self.eof:
            await self._finish_eof_if_done()
        else:
            self.pending.append(final)
