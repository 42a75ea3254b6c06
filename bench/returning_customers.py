"""Returning-customers benchmark: synthetic callers (unseen voices and
telephone lines) each make 3 calls through the Twilio protocol into the
whole running system (Daphne, Redis, Celery worker, database); after calls
1 and 2 the caller's profile is adapted, and call 3 is recognized with it
from its first segment. Prints figures; it is not a test.

    .venv/bin/python bench/returning_customers.py                      # 4 callers x 2 conditions
    .venv/bin/python bench/returning_customers.py --callers 6 --sentences 6 \\
        --database-url postgres://callcenter:callcenter@127.0.0.1:5432/callcenter_bench
    .venv/bin/python bench/returning_customers.py --final-backbone whisper-tiny   # Whisper finals

Two conditions per synthetic voice, as two customers (different numbers,
same voice, same sentences):

- ``unverified``: nobody verifies; the adaptation after each hangup (if the
  product's adaptation mode allows one without verified text) uses the
  recognizer's confident hypotheses.
- ``verified``: after each call a supervisor verifies every segment with the
  true transcript (``services.segment_verify``) and asks for a re-adaptation
  (the admin's action), so adaptation is supervised.

Per caller and condition it prints the word error rate of calls 1, 2 and 3
(each call over all its segments, stored text against the spoken
sentences), call 3 recognized by the base model without a profile (the same
audio, in this process, with the worker's decoder) and the relative changes
call 1 -> call 3 and base -> adapted on call 3 (same audio). Then the
totals (pooled WER) and the adaptation times (seconds of each run, from the
stored run metrics).

With ``--real-manifest`` the caller is the real speaker of the real-speech
development set instead (only the prompts ``make_dev_manifest.py`` lists; make
the phone-line copy with ``python -m asr_core phone-line``): call 1 and call 2
are its 30 ``adapt`` prompts (15 each), call 3 its 67 ``test`` prompts, each
prompt followed by a second of quiet line. The supervisor of the ``verified``
customer types the true prompt of every segment that holds whole prompts:

    .venv/bin/python bench/returning_customers.py --real-manifest data/real-dev-hard/manifest.tsv \
        --database-url postgres://callcenter:callcenter@127.0.0.1:5432/callcenter_bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from live_calls import _free_port, start_system  # noqa: E402

SAMPLE_RATE = 8000
GAP_S = 1.0


def make_callers(n: int, seed: int, accented: bool = False):
    """``n`` unseen synthetic callers: held-out espeak variants and lines, or (accented) espeak-ng
    voices of languages never used in training reading English."""
    from asr_core.corpus.speakers import make_accented_speaker, make_speaker

    rng = random.Random(seed)
    callers = []
    while len(callers) < n:
        if accented:
            callers.append(make_accented_speaker(rng, f"rc{len(callers)}", "test"))
            continue
        speaker = make_speaker(rng, f"rc{len(callers)}", "test")
        if speaker.engine == "espeak":  # the other engines have a handful of voices, seen in training
            callers.append(speaker)
    return callers


def render_call(speaker, *, seed: int, sentences: int) -> tuple[np.ndarray, list[str], list]:
    """A call: ``sentences`` customer-service sentences with quiet line between."""
    from asr_core.corpus.sentences import sentences as make_sentences
    from asr_core.corpus.synth import render

    texts = make_sentences(random.Random(seed), sentences)
    clips = [render(speaker, text, seed * 100 + i) for i, text in enumerate(texts)]
    return assemble_call(clips, texts, seed)


def assemble_call(clips: list[np.ndarray], texts: list[str], seed: int) -> tuple[np.ndarray, list[str], list]:
    """The clips with a second of quiet line before each and after the last; also each clip's
    (start, end) in ms."""
    noise = np.random.default_rng(seed)

    def line() -> np.ndarray:
        return (noise.normal(size=int(GAP_S * SAMPLE_RATE)) * 3e-4).astype(np.float32)

    parts, spans, at = [line()], [], GAP_S * SAMPLE_RATE
    for clip in clips:
        spans.append((int(at * 1000 / SAMPLE_RATE), int((at + len(clip)) * 1000 / SAMPLE_RATE)))
        parts += [clip.astype(np.float32), line()]
        at += len(clip) + GAP_S * SAMPLE_RATE
    return np.concatenate(parts), texts, spans


def real_speech_calls(manifest: str) -> tuple[str, list]:
    """The real speaker's three calls: its ``adapt`` prompts split in two, then its ``test`` prompts."""
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest

    adapt, test = read_manifest(manifest, ("adapt",)), read_manifest(manifest, ("test",))
    if len(adapt) < 2 or not test or len({u.speaker for u in adapt + test}) != 1:
        raise SystemExit(f"error: {manifest} must hold one speaker's adapt (>= 2) and test prompts")

    def call(rows, seed):
        clips = [load_audio(u.audio, SAMPLE_RATE).numpy() for u in rows]
        return assemble_call(clips, [u.text for u in rows], seed)

    half = len(adapt) // 2
    return adapt[0].speaker, [call(adapt[:half], 1), call(adapt[half:], 2), call(test, 3)]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


def call_settled(call_id: int) -> bool:
    from callcenter.calls.models import Call, Segment

    call = Call.objects.get(pk=call_id)
    return call.status != "live" and not Segment.objects.filter(call_id=call_id, status="pending").exists()


def runs_finished(customer_id: int) -> bool:
    from callcenter.calls.models import AdaptationRun

    return not AdaptationRun.objects.filter(customer_id=customer_id, status__in=["queued", "running"]).exists()


def call_transcript(call_id: int) -> str:
    from callcenter.calls.models import Segment

    return " ".join(s.text for s in Segment.objects.filter(call_id=call_id).order_by("index") if s.text)


def stream_call(ws_url: str, token: str, audio: np.ndarray, caller: str) -> int:
    """Place one call; returns its id once it ended and every segment is recognized."""
    from callcenter.calls.models import Call
    from callcenter.tools.client import stream_twilio

    run = asyncio.run(stream_twilio(f"{ws_url}/ws/media/twilio/{token}", audio, caller=caller, realtime=False))
    calls = Call.objects.filter(protocol="twilio", external_id=run.stream_sid)
    wait_for(calls.exists, 60, f"the call of stream {run.stream_sid} to be stored")
    call_id = calls.get().pk
    wait_for(lambda: call_settled(call_id), 180, f"call #{call_id} to be recognized")
    return call_id


def base_model_transcript(rec, call_id: int) -> str:
    """Call ``call_id``'s stored segment audio recognized without any profile."""
    from asr_core.audio import load_audio
    from callcenter.calls.models import Segment

    texts = []
    for segment in Segment.objects.filter(call_id=call_id).order_by("index"):
        with segment.audio.open("rb") as f:
            audio = load_audio(f.read(), rec.sample_rate)
        texts.append(rec.transcribe(audio, rec.sample_rate).text)
    return " ".join(t for t in texts if t)


def call_wer(ref: list[str], hyp: str) -> float:
    from asr_core.metrics import wer
    from asr_core.text import normalize

    return wer([(normalize(" ".join(ref)), hyp)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--callers", type=int, default=4, help="synthetic voices (default 4); each runs both conditions")
    ap.add_argument("--sentences", type=int, default=5, help="sentences per call (default 5)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--accented", action="store_true",
                    help="accented callers (other languages' voices, held out from training) instead of plain ones")
    ap.add_argument("--database-url", help="default: DATABASE_URL, else SQLite in a fresh runtime folder")
    ap.add_argument("--final-backbone", choices=["small", "whisper-tiny", "whisper-base"], default=None,
                    help="ASR_FINAL_BACKBONE of the system (default: the product's)")
    ap.add_argument("--real-manifest", help="the real speaker of this real-speech manifest (adapt and test "
                    "prompts, e.g. through a phone line) instead of synthetic callers")
    args = ap.parse_args()
    if args.callers < 1 or args.sentences < 2:
        ap.error("--callers must be >= 1 and --sentences >= 2")
    if args.real_manifest and not os.path.isfile(args.real_manifest):
        ap.error(f"--real-manifest: no such file {args.real_manifest}")

    var_dir = Path(tempfile.mkdtemp(prefix="cc-returning-"))
    # calls are streamed as fast as the server takes them: its rate limit (4x real time, 15 s ahead)
    # would cut the real speaker's minute-long calls
    env = dict(os.environ, CALLCENTER_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1", TRAINING_INTERVAL_S="0",
               STREAM_MAX_SPEED="100")
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    if args.final_backbone is not None:
        env["ASR_FINAL_BACKBONE"] = args.final_backbone
    os.environ.update({k: v for k, v in env.items() if k in ("CALLCENTER_VAR_DIR", "DATABASE_URL")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callcenter.settings")

    if args.real_manifest:
        speaker_id, real_calls = real_speech_calls(args.real_manifest)
        speakers = [_RealCaller(speaker_id, voice=f"real:{speaker_id}", line=os.path.basename(
            os.path.dirname(os.path.abspath(args.real_manifest))))]
        calls = {speaker_id: real_calls}
    else:
        speakers = make_callers(args.callers, args.seed, accented=args.accented)
        print(f"rendering {len(speakers)} callers x 3 calls x {args.sentences} sentences ...", flush=True)
        calls = {
            sp.id: [render_call(sp, seed=args.seed * 1000 + i * 10 + k, sentences=args.sentences) for k in range(3)]
            for i, sp in enumerate(speakers)
        }
    port = _free_port()
    process, _pids = start_system(env, port, 1)
    ws_url = f"ws://127.0.0.1:{port}"
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Permission

        from asr_core.small.recognizer import Recognizer
        from callcenter.calls import services
        from callcenter.calls.models import AdaptationRun, Customer

        token = services.line_create(name=f"returning-{os.getpid()}")[1]
        supervisor, _ = get_user_model().objects.get_or_create(username=f"bench-qa-{os.getpid()}", is_staff=True)
        supervisor.user_permissions.add(*Permission.objects.filter(codename__in=["verify_segment", "adapt_customer"]))
        supervisor = get_user_model().objects.get(pk=supervisor.pk)
        backbone = env.get("ASR_FINAL_BACKBONE", settings.ASR_FINAL_BACKBONE)
        if backbone == "small":
            base = Recognizer.load(settings.ASR_CHECKPOINT, decoder=settings.ASR_DECODER)
        else:  # the worker's Whisper final pass, without any caller's profile
            from callcenter import asr

            wait_for(lambda: os.path.isfile(asr.whisper_checkpoint(backbone)), 120,
                     "the worker to convert the Whisper weights")  # fmt: skip
            base = asr.backbone_recognizer(backbone=backbone)

        rows = []
        for i, sp in enumerate(speakers):
            for condition in ("unverified", "verified"):
                phone = f"+1555{args.seed:02d}{i:02d}{0 if condition == 'unverified' else 1}{os.getpid() % 1000:03d}"
                wers, call_ids = [], []
                for k, (audio, texts, spans) in enumerate(calls[sp.id]):
                    call_id = stream_call(ws_url, token, audio, phone)
                    call_ids.append(call_id)
                    wers.append(call_wer(texts, call_transcript(call_id)))
                    customer = Customer.objects.get(phone=phone)
                    if k < 2:
                        if condition == "verified":
                            _verify_call(services, supervisor, call_id, texts, spans)
                            wait_for(lambda c=customer.pk: runs_finished(c), 300, "the adaptation after the call")
                            services.adaptation_request(customer_id=customer.pk, user=supervisor)
                        wait_for(lambda c=customer.pk: runs_finished(c), 300, "the adaptation")
                base3 = call_wer(calls[sp.id][2][1], base_model_transcript(base, call_ids[2]))
                runs = list(AdaptationRun.objects.filter(customer=customer).order_by("created"))
                row = {
                    "caller": sp.id, "voice": sp.voice, "line": _line(sp), "condition": condition,
                    "wer1": wers[0], "wer2": wers[1], "wer3": wers[2], "wer3_base": base3,
                    "runs": [f"{r.status}:{r.mode}:{r.metrics.get('seconds', '-')}s" for r in runs],
                    "adapt_seconds": [r.metrics.get("seconds") for r in runs if r.metrics.get("seconds") is not None],
                }  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
        _report(rows)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    return 0


def _verify_call(services, user, call_id: int, texts: list[str], spans: list[tuple[int, int]]) -> None:
    """A supervisor types the true transcript of each segment that holds whole sentences: each
    spoken sentence goes to the segment it overlaps most; a segment is verified with its sentences
    when each of them lies at least 80 % inside it (a sentence the endpointer cut in two leaves its
    segments unverified)."""
    from callcenter.calls.models import Segment

    segments = list(Segment.objects.filter(call_id=call_id).order_by("index"))
    held: dict[int, list[int]] = {}
    for i, (start, end) in enumerate(spans):
        overlaps = [max(0, min(end, s.end_ms) - max(start, s.start_ms)) for s in segments]
        if overlaps and max(overlaps) > 0:
            held.setdefault(int(np.argmax(overlaps)), []).append(i)
    verified = 0
    for k, sentences in held.items():
        if all(_overlap(spans[i], segments[k]) >= 0.8 * (spans[i][1] - spans[i][0]) for i in sentences):
            services.segment_verify(segment_id=segments[k].pk, text=" ".join(texts[i] for i in sentences), user=user)
            verified += 1
    print(f"  call #{call_id}: verified {verified} of {len(segments)} segments ({len(texts)} sentences)", flush=True)


def _overlap(span: tuple[int, int], segment) -> int:
    return max(0, min(span[1], segment.end_ms) - max(span[0], segment.start_ms))


class _RealCaller:
    def __init__(self, speaker: str, *, voice: str, line: str):
        self.id, self.voice, self.line = speaker, voice, line


def _line(sp) -> str:
    return sp.line if isinstance(sp, _RealCaller) else f"{sp.codec} {sp.snr_db:.0f} dB"


def _rel(a: float, b: float) -> str:
    return "n/a" if a == 0 else f"{(b - a) / a * 100:+.0f}%"


def _report(rows: list[dict]) -> None:
    print()
    print(f"{'caller':7} {'voice':22} {'line':10} {'condition':10} {'call1':>6} {'call2':>6} {'call3':>6} "
          f"{'1->3':>6} {'base3':>6} {'base->3':>7}  adaptation s")  # fmt: skip
    for r in rows:
        print(f"{r['caller']:7} {r['voice'][:22]:22} {r['line']:10} {r['condition']:10} {r['wer1']:6.3f} "
              f"{r['wer2']:6.3f} {r['wer3']:6.3f} {_rel(r['wer1'], r['wer3']):>6} {r['wer3_base']:6.3f} "
              f"{_rel(r['wer3_base'], r['wer3']):>7}  {' '.join(f'{s:.1f}' for s in r['adapt_seconds'])}")  # fmt: skip
    print()
    for condition in ("unverified", "verified"):
        sel = [r for r in rows if r["condition"] == condition]
        if not sel:
            continue
        w1, w3, b3 = (float(np.mean([r[k] for r in sel])) for k in ("wer1", "wer3", "wer3_base"))
        secs = [s for r in sel for s in r["adapt_seconds"]]
        print(f"{condition:10}: mean WER call 1 {w1:.3f} -> call 3 {w3:.3f} ({_rel(w1, w3)}); "
              f"call 3 base model {b3:.3f} -> with profile {w3:.3f} ({_rel(b3, w3)}); "
              f"adaptation {np.mean(secs) if secs else 0:.1f} s mean, {max(secs) if secs else 0:.1f} s max "
              f"over {len(secs)} runs")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
