"""Soak: 20 concurrent calls, back to back, for 10 minutes, through the
whole system (Daphne, Redis, Celery worker, database), as on this machine.
Prints figures and checks the memory bound; it is not a test.

    .venv/bin/python bench/soak.py                                   # 20 calls, 10 minutes
    .venv/bin/python bench/soak.py --minutes 2 --calls 10            # shorter
    .venv/bin/python bench/soak.py --database-url postgres://callcenter:callcenter@127.0.0.1:5432/callcenter_soak

It starts ``python -m callcenter.ops.run`` in a fresh runtime folder (SQLite and a
private Redis unless ``--database-url``/``REDIS_URL`` say otherwise),
renders a pool of synthetic callers, warms the system up with one call, and
then keeps ``--calls`` Twilio calls streaming at real-time pace, each slot
starting its next call as soon as the last one ended, while listening on
the agents' feed. At the end it waits for the last finals and prints:

- final latency (the agent receives the final - the server detected the
  endpoint) and partial latency, p50/p90/p95/p99/max in ms, for the whole
  run and per minute;
- calls placed and closed, segments spoken, stored, recognized, failed,
  still pending, and lost (spoken sentences without a recognized segment);
- the resident memory (RSS) of every process of the system (web, worker
  main and pool processes, adaptation worker, Redis) after warm-up and at
  the end, and whether each grew less than ``--max-growth-mb`` (default
  60 MB): exit status 1 if a process grew more or a segment was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from live_calls import _free_port, _rss_mb, _tree, pct, start_system  # noqa: E402


def _name(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(part.decode(errors="replace") for part in cmdline if part)
    names = (("daphne", "web"), ("redis-server", "redis"), ("-Q adaptation", "adaptation"), ("celery", "worker"))
    for key, name in names:
        if key in text:
            return name
    return Path(cmdline[0].decode(errors="replace")).name


def _processes(roots: dict[str, int]) -> dict[int, str]:
    """pid -> name of every process of the system (the supervisor's children and theirs)."""
    out = {}
    for root in roots.values():
        for pid in _tree(root):
            out[pid] = _name(pid)
    return out


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    return "/".join([pct(values, q) for q in (50, 90, 95, 99)] + [f"{max(values):.0f}"])


async def soak(ws_url: str, token: str, headers: dict, audios: list, *, calls: int, seconds: float) -> dict:
    import websockets

    from callcenter.tools.client import stream_twilio

    stats = {"final_ms": [], "partial_ms": [], "per_minute": defaultdict(list), "call_ids": set(),
             "finals": set(), "placed": 0, "sentences": 0, "errors": 0}  # fmt: skip
    started = time.monotonic()
    stats["feed_reconnects"] = 0
    stop = asyncio.Event()

    async def messages():
        """The agents' feed, reconnecting as the agent page does when the
        server closes it (a starved web process's channel layer can)."""
        while not stop.is_set():
            try:
                async with websockets.connect(f"{ws_url}/ws/agent/", additional_headers=headers,
                                              max_size=2**22) as feed:  # fmt: skip
                    assert json.loads(await feed.recv())["type"] == "hello"
                    while not stop.is_set():
                        try:
                            yield await asyncio.wait_for(feed.recv(), timeout=0.5)
                        except asyncio.TimeoutError:
                            continue
            except (websockets.ConnectionClosed, OSError) as exc:
                stats["feed_reconnects"] += 1
                print(f"agents' feed closed ({exc}); reconnecting", flush=True)
                await asyncio.sleep(0.5)

    async def listen() -> None:
        async for raw in messages():
            now = time.time()
            m = json.loads(raw)
            if m.get("type") == "call" and m.get("status") == "live":
                stats["call_ids"].add(m["call"])
            elif m.get("type") == "final" and m.get("endpoint_at"):
                latency = 1000 * (now - m["endpoint_at"])
                stats["final_ms"].append(latency)
                stats["per_minute"][int((time.monotonic() - started) // 60)].append(latency)
                stats["finals"].add(m["segment"])
            elif m.get("type") == "partial":
                stats["partial_ms"].append(1000 * (now - m["audio_at"]))

    listener = asyncio.ensure_future(listen())

    async def slot(i: int) -> None:
        await asyncio.sleep(i * 0.7)  # spread the starts
        n = i
        while time.monotonic() - started < seconds:
            call = audios[n % len(audios)]
            stats["placed"] += 1
            stats["sentences"] += len(call.sentences)
            try:
                run = await stream_twilio(f"{ws_url}/ws/media/twilio/{token}", call.audio,
                                          caller=f"+1555030{i:02d}{n % 100:02d}")  # fmt: skip
                if run.close_code != 1000:
                    stats["errors"] += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                print(f"call in slot {i} failed: {type(exc).__name__}: {exc}", flush=True)
                stats["errors"] += 1
            n += calls

    await asyncio.gather(*(slot(i) for i in range(calls)))
    await asyncio.sleep(5)  # the last finals
    stop.set()
    await listener
    stats["wall_s"] = time.monotonic() - started
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20, help="concurrent calls (default 20)")
    ap.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    ap.add_argument("--sentences", type=int, default=4, help="sentences per call (default 4)")
    ap.add_argument("--max-growth-mb", type=float, default=60.0, help="memory bound per process (default 60)")
    ap.add_argument("--database-url", help="default: DATABASE_URL, else SQLite in the runtime folder")
    ap.add_argument("--no-adaptation", action="store_true",
                    help="ADAPTATION_AFTER_CALL=0: no caller adaptation task after each call")  # fmt: skip
    args = ap.parse_args()
    if args.calls < 1 or args.minutes <= 0:
        ap.error("--calls must be >= 1 and --minutes > 0")
    load_before = os.getloadavg()[0]

    var_dir = Path(tempfile.mkdtemp(prefix="cc-soak-"))
    env = dict(os.environ, CALLCENTER_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    if args.no_adaptation:
        env["ADAPTATION_AFTER_CALL"] = "0"
    os.environ.update({k: v for k, v in env.items() if k in ("CALLCENTER_VAR_DIR", "DATABASE_URL")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callcenter.settings")

    from callcenter.tools.demo import synthetic_call

    pool = min(args.calls, 20)
    print(f"rendering {pool} synthetic callers of {args.sentences} sentences ...", flush=True)
    voices = ["en-us+m6", "en-us+f3", "en-us+m3", "en-us+f4", "en+m2"]
    audios = [synthetic_call(seed=700 + i, sentences=args.sentences, voice=voices[i % len(voices)])
              for i in range(pool)]  # fmt: skip

    port = _free_port()
    process, pids = start_system(env, port, concurrency=1)
    http_url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    try:
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        from callcenter.calls import services
        from callcenter.calls.models import Call, Segment
        from callcenter.tools.demo import staff_session_cookie

        warmup_token = services.line_create(name=f"soak-warmup-{os.getpid()}")[1]
        line, token = services.line_create(name=f"soak-{os.getpid()}")
        if not get_user_model().objects.filter(is_superuser=True).exists():
            get_user_model().objects.create_superuser("soak", password=None)
        headers = {"Cookie": staff_session_cookie(), "Origin": http_url}
        roots = {k: v for k, v in pids.items()}
        print("warming up ...", flush=True)
        asyncio.run(soak(ws_url, warmup_token, headers, audios[:1], calls=1, seconds=1))
        before = {pid: (name, _rss_mb([pid])) for pid, name in _processes(roots).items()}
        print(f"soaking: {args.calls} concurrent calls for {args.minutes:g} min ...", flush=True)
        stats = asyncio.run(soak(ws_url, token, headers, audios, calls=args.calls, seconds=60 * args.minutes))
        after = {pid: (name, _rss_mb([pid])) for pid, name in _processes(roots).items()}
        deadline = time.monotonic() + 60
        ids = set(Call.objects.filter(line=line).values_list("pk", flat=True))
        while Segment.objects.filter(call_id__in=ids, status="pending").exists() and time.monotonic() < deadline:
            time.sleep(1)
        segments = list(Segment.objects.filter(call_id__in=ids).values_list("pk", "status", "audio"))
        closed = Call.objects.filter(pk__in=ids).exclude(status="live").count()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()

    recognized = sum(1 for _, status, _ in segments if status == "recognized")
    failed = sum(1 for _, status, _ in segments if status == "failed")
    pending = sum(1 for _, status, _ in segments if status == "pending")
    lost = max(0, stats["sentences"] - recognized)
    unseen = sum(1 for pk, status, _ in segments if status == "recognized" and pk not in stats["finals"])
    print()
    print(f"{args.calls} concurrent calls for {stats['wall_s'] / 60:.1f} min, {args.sentences} sentences each at "
          f"real-time pace; database {env.get('DATABASE_URL', 'SQLite (embedded)')}; {os.cpu_count()} CPUs, "
          f"load average before {load_before:.1f}, after {os.getloadavg()[0]:.1f}; adaptation after each call "
          f"{'off' if args.no_adaptation else 'as configured (on by default)'}")  # fmt: skip
    print(f"calls placed {stats['placed']}, stored {len(ids)}, closed {closed}, refused or broken {stats['errors']}; "
          f"agents' feed reconnects {stats['feed_reconnects']}")  # fmt: skip
    print(f"segments spoken {stats['sentences']}, stored {len(segments)}, recognized {recognized}, failed {failed}, "
          f"pending {pending}, lost {lost}; finals the agent never saw {unseen}")  # fmt: skip
    print(f"final latency ms p50/p90/p95/p99/max: {_percentiles(stats['final_ms'])} ({len(stats['final_ms'])} finals)")
    print(f"partial latency ms p50/p90/p95/p99/max: {_percentiles(stats['partial_ms'])}")
    for minute, values in sorted(stats["per_minute"].items()):
        print(f"  minute {minute + 1}: final p50/p90/p95/p99/max {_percentiles(values)} ({len(values)} finals)")
    print(f"memory (RSS MB) per process, after warm-up -> end (bound: +{args.max_growth_mb:g} MB):")
    over = []
    for pid, (name, start_mb) in sorted(before.items(), key=lambda item: item[1][0]):
        end_mb = after.get(pid, (name, float("nan")))[1]
        growth = end_mb - start_mb
        ok = growth <= args.max_growth_mb
        if not ok:
            over.append(name)
        print(f"  {name:8s} pid {pid:7d}: {start_mb:7.1f} -> {end_mb:7.1f} ({growth:+.1f}) {'ok' if ok else 'OVER'}")
    new = set(after) - set(before)
    if new:
        print(f"  processes started during the soak: {sorted((after[p][0], p) for p in new)}")
    return 1 if over or lost else 0


if __name__ == "__main__":
    sys.exit(main())
