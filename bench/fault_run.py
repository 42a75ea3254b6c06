"""Fault run: 20 calls through the whole system while it is being broken,
counting what is sent, stored, recognized and lost. Prints figures; it is
not a test (tests/faults/ checks each fault on its own).

    .venv/bin/python bench/fault_run.py --database-url postgres://callcenter:callcenter@127.0.0.1:5432/callcenter_faultrun

It migrates that database, starts a private redis-server (own port, nothing
persisted), Daphne and a Celery worker with beat (the sweeper every second)
and places the calls in waves of concurrent Twilio calls at real-time pace
(``--calls 20 --waves 4``), with marks and reconnection as a resilient
telephony client would. Each wave gets one fault while its calls speak:

1. the Celery worker is SIGKILLed (pool child too) and restarted;
2. Redis is SIGKILLed and restarted empty 5 s later;
3. every database connection of the web and worker processes is terminated
   (pg_terminate_backend), three times;
4. the web process is SIGKILLed and a new one started on the same port.

Then it waits for the sweeper and the worker to finish and reports, per
wave and in total: calls placed, streams (calls stored), segments spoken,
segments stored with audio, recognized, segments without audio (failed),
lost (spoken sentences not recognized in any stream), and the WER of the
recognized text against what was spoken.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAULTS = ["worker SIGKILL", "Redis restart", "PostgreSQL connections dropped", "web SIGKILL"]
ENV = {"SEGMENT_SWEEP_INTERVAL_S": "1", "SEGMENT_STUCK_AFTER_S": "3", "STREAM_HEARTBEAT_S": "1",
       "STREAM_PARTIAL_INTERVAL_MS": "0"}  # fmt: skip
# Recognized with the small model, as the tests' plumbing stacks do: the faults are the same with any backbone.
SMALL_MODEL = {"ASR_FINAL_BACKBONE": "small", "ASR_PARTIAL_BACKBONE": "small"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database-url", required=True, help="a PostgreSQL database for this run (migrated here)")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--waves", type=int, default=4, help="one fault per wave, in the order above (default 4)")
    ap.add_argument("--sentences", type=int, default=3)
    args = ap.parse_args()
    if args.calls < args.waves or not 1 <= args.waves <= len(FAULTS):
        ap.error(f"--waves must be 1..{len(FAULTS)} and at most --calls")

    tmp = Path(tempfile.mkdtemp(prefix="cc-faults-"))
    os.environ.update(DATABASE_URL=args.database_url, CALLCENTER_VAR_DIR=str(tmp / "var"),
                      DJANGO_SETTINGS_MODULE="callcenter.settings")  # fmt: skip
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from asr_core.metrics import wer
    from callcenter.calls import services
    from callcenter.calls.models import Call, Segment
    from callcenter.tools.client import stream_twilio
    from callcenter.tools.demo import synthetic_call
    from callcenter.tools.processes import (
        daphne_service, redis_service, service_env, wait_http, wait_redis, worker_service,
    )  # fmt: skip

    call_command("migrate", verbosity=0)
    print(f"rendering {args.calls} calls of {args.sentences} sentences ...", flush=True)
    voices = ["en-us+m6", "en-us+f3", "en-us+m3", "en-us+f4", "en+m2"]
    calls = [synthetic_call(seed=500 + i, sentences=args.sentences, voice=voices[i % len(voices)])
             for i in range(args.calls)]  # fmt: skip

    redis_proc, redis_url = redis_service(tmp)
    env = service_env(var_dir=tmp / "var", redis_url=redis_url, **SMALL_MODEL, **ENV)
    web, port = daphne_service(env, tmp)
    workers = [worker_service(env, tmp, "faultrun-1", beat=True)]
    redis_proc.start()
    wait_redis(redis_url)
    web.start()
    wait_http(f"http://127.0.0.1:{port}/healthz", web)
    workers[0].start().wait_for("ready.")
    print(f"logs: {tmp}", flush=True)
    token = services.line_create(name=f"faultrun-{os.getpid()}")[1]
    url = f"ws://127.0.0.1:{port}/ws/media/twilio/{token}"
    services_now = {"web": web}
    with connection.cursor() as cursor:  # this script's own connection is not the one to drop
        cursor.execute("SELECT pg_backend_pid()")
        main_connection = cursor.fetchone()[0]

    def inject(fault: str) -> None:
        try:
            if fault == "worker SIGKILL":
                time.sleep(5)
                workers[-1].kill(signal.SIGKILL)
                time.sleep(2)
                workers.append(worker_service(env, tmp, f"faultrun-{len(workers) + 1}", beat=True))
                workers[-1].start().wait_for("ready.")
            elif fault == "Redis restart":
                time.sleep(4)
                redis_proc.kill(signal.SIGKILL)
                time.sleep(5)
                redis_proc.start()
                wait_redis(redis_url)
            elif fault == "PostgreSQL connections dropped":
                for _ in range(3):
                    time.sleep(3)
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
                            [main_connection],
                        )
            elif fault == "web SIGKILL":
                time.sleep(5)
                services_now["web"].kill(signal.SIGKILL)
                restarted, _ = daphne_service(env, tmp, port=port, name=f"web-{time.monotonic_ns()}")
                restarted.start()
                wait_http(f"http://127.0.0.1:{port}/healthz", restarted)
                services_now["web"] = restarted
        finally:
            connections.close_all()

    async def wave(audios: list, base: int) -> list:
        async def one(i: int, audio):
            await asyncio.sleep(i * 0.3)
            return await stream_twilio(url, audio, caller=f"+1555020{base + i:04d}", marks=True, reconnect_s=120)

        return await asyncio.gather(*(one(i, a) for i, a in enumerate(audios)), return_exceptions=True)

    per_wave = -(-args.calls // args.waves)
    results = []
    try:
        for w in range(args.waves):
            batch = calls[w * per_wave : (w + 1) * per_wave]
            fault = FAULTS[w]
            print(f"wave {w + 1}: {len(batch)} calls, fault: {fault}", flush=True)
            injector = threading.Thread(target=inject, args=(fault,))
            injector.start()
            runs = asyncio.run(wave([c.audio for c in batch], base=w * 100))
            injector.join()
            results.append((fault, batch, runs))
        print("waiting for the sweeper and the worker ...", flush=True)
        sids = [sid for _, _, runs in results for r in runs if not isinstance(r, BaseException) for sid in r.stream_sids]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (
            Call.objects.filter(external_id__in=sids, status="live").exists()
            or Segment.objects.filter(call__external_id__in=sids, status="pending").exists()
        ):
            time.sleep(1)
    finally:
        for service in [*workers, services_now["web"], web, redis_proc]:
            service.stop()

    rows = []
    for fault, batch, runs in results:
        row = {"fault": fault, "calls": len(batch), "streams": 0, "segments sent": 0, "stored": 0, "recognized": 0,
               "no audio": 0, "pending": 0, "lost": 0, "errors": 0}  # fmt: skip
        pairs = []
        for call, run in zip(batch, runs, strict=True):
            row["segments sent"] += len(call.sentences)
            if isinstance(run, BaseException):
                row["errors"] += 1
                row["lost"] += len(call.sentences)
                continue
            stored = Segment.objects.filter(call__external_id__in=run.stream_sids).order_by("call_id", "index")
            row["streams"] += Call.objects.filter(external_id__in=run.stream_sids).count()
            with_audio = [s for s in stored if s.audio]
            row["stored"] += len(with_audio)
            row["recognized"] += sum(1 for s in with_audio if s.status == "recognized")
            row["pending"] += sum(1 for s in stored if s.status == "pending")
            row["no audio"] += sum(1 for s in stored if not s.audio)
            row["lost"] += max(0, len(call.sentences) - sum(1 for s in with_audio if s.status == "recognized"))
            pairs.append((" ".join(call.sentences), " ".join(s.text for s in with_audio if s.text)))
        row["WER"] = f"{wer(pairs):.3f}" if pairs else "-"
        rows.append(row)
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("fault", "WER")}
    rows.append({"fault": "total", **total, "WER": "-"})
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print()
    print(f"{args.calls} calls of {args.sentences} sentences, {args.waves} waves, at real-time pace; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(" | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("\nlost = sentences spoken that no stream of the call stored and recognized; "
          "no audio = segments opened at speech onset whose audio died with a killed web process")  # fmt: skip
    return 0 if total["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
