"""Speculative finals: recognize a segment during the endpointer's hangover.

A segment ends after ``STREAM_SILENCE_MS`` (600 ms) of silence but keeps only
the first 300 ms of it (``tail_ms``). So 300 ms into a pause the audio the
segment will be stored with, if the silence lasts, is already known
(``SpeechPaused``). The web process then *offers* that audio: it records
its digest as the segment's live speculation and queues
``recognition.speculate`` with the audio itself. The worker recognizes it
exactly as the final pass would (same model version, the caller's profile,
the call's vocabulary) and keeps the transcript in Redis for a while.
Speculations wait behind every final in the queue (a lower priority): a
final whose endpoint has come waits behind no queued guess (at most behind
one the worker is already running).

When the endpoint comes, the segment's recognition task reads the stored
audio; where its digest, the model version and the profile equal the
speculation's, the kept transcript **is** the final (same input, same
recognizer: the same result), so it is stored and sent without recognizing
again. Anything else (speech came back, the segment was cut at its maximum
length, another model or profile, Redis down, the speculation not done yet)
recognizes the stored audio as always: a speculation can only save time,
never change a final.

Speech that comes back before the endpoint *withdraws* the offer (the
digest key is deleted); a queued speculation whose offer is gone is skipped
without recognizing.

Keys (all expire): ``speculation:<segment>`` -> the offered audio's digest;
``speculation-result:<segment>`` -> JSON {digest, model, profile, transcript}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging

import kombu.exceptions
import redis.exceptions

from callcenter.ops import metrics, redisconn

logger = logging.getLogger(__name__)

TASK = "recognition.speculate"
OFFER_KEY = redisconn.PREFIX + "speculation:"  # + segment id -> digest of the offered audio
RESULT_KEY = redisconn.PREFIX + "speculation-result:"  # + segment id -> JSON
TTL_S = 120
# Below the finals' (0, kombu's highest): a segment whose endpoint has come goes first, before
# any guess at one still in a pause. In FIFO order a speculation queued ahead of another call's
# endpoint delays that final by a whole recognition (measured: p95 676 -> 1103 ms at 10 calls).
PRIORITY = 9
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def digest(wav: bytes) -> str:
    """The identity of a segment's audio: SHA-256 of its WAV bytes (as stored)."""
    return hashlib.sha256(wav).hexdigest()


def offer(*, segment_id: int, wav: bytes) -> bool:
    """Web process (a sync thread): this audio is the segment's if the pause lasts; queue its
    recognition. False (logged) when Redis or the broker cannot take it: the final is then
    recognized at the endpoint as always."""
    from callcenter.celery import app

    try:
        redisconn.client().set(OFFER_KEY + str(segment_id), digest(wav), ex=TTL_S)
        app.send_task(
            TASK,
            kwargs={"segment_id": segment_id, "audio": base64.b64encode(wav).decode("ascii")},
            ignore_result=True,
            priority=PRIORITY,
        )
    except (*REDIS_ERRORS, kombu.exceptions.OperationalError) as exc:
        logger.warning("segment #%s: no speculative final (%s); it is recognized at its endpoint", segment_id, exc)
        return False
    metrics.SPECULATIONS.labels("offered").inc()
    return True


def withdraw(*, segment_id: int) -> None:
    """Web process: speech came back, the offered audio will not be the segment's."""
    try:
        redisconn.client().delete(OFFER_KEY + str(segment_id))
    except REDIS_ERRORS as exc:  # the worker computes a speculation nobody uses; harmless
        logger.warning("segment #%s: could not withdraw its speculation: %s", segment_id, exc)
    metrics.SPECULATIONS.labels("withdrawn").inc()


def offered(*, segment_id: int, audio: str) -> bytes | None:
    """Worker: the offered WAV bytes (from the task's base64) if they are still the segment's
    live offer, else None (withdrawn, replaced by a later offer, or expired)."""
    try:
        wav = base64.b64decode(audio, validate=True)
    except (ValueError, TypeError):
        return None
    if redisconn.client().get(OFFER_KEY + str(segment_id)) != digest(wav):
        return None
    return wav


def keep(*, segment_id: int, wav_digest: str, model: str, profile: int | None, transcript: dict) -> None:
    """Worker: the speculation's transcript, for the segment's final to take."""
    record = {"digest": wav_digest, "model": model, "profile": profile, "transcript": transcript}
    redisconn.client().set(RESULT_KEY + str(segment_id), json.dumps(record), ex=TTL_S)


def take(*, segment_id: int, wav_digest: str, model: str, profile: int | None) -> dict | None:
    """Worker, final pass: the kept transcript if it was made from exactly this audio with this
    model and profile, else None. Read once (the key is deleted); a Redis error is a miss."""
    try:
        pipe = redisconn.client().pipeline()
        pipe.get(RESULT_KEY + str(segment_id))
        pipe.delete(RESULT_KEY + str(segment_id), OFFER_KEY + str(segment_id))
        raw, _ = pipe.execute()
    except REDIS_ERRORS as exc:
        logger.warning("segment #%s: its speculation could not be read (%s); recognizing it", segment_id, exc)
        return None
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        hit = (record["digest"], record["model"], record["profile"]) == (wav_digest, model, profile)
        transcript = record["transcript"]
    except (ValueError, KeyError, TypeError):
        logger.warning("segment #%s: its speculation record is unreadable; recognizing it", segment_id)
        return None
    metrics.SPECULATIONS.labels("used" if hit else "missed").inc()
    return transcript if hit else None
