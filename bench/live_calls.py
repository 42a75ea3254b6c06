"""Live-call benchmark: N concurrent Twilio calls at real-time pace through
the whole system (Daphne, Redis, Celery worker, database), as on this
machine. Prints figures; it is not a test.

    .venv/bin/python bench/live_calls.py                         # N = 1, 5, 10, 20; embedded defaults
    .venv/bin/python bench/live_calls.py --calls 10 --database-url postgres://callcenter:callcenter@127.0.0.1:5432/callcenter_bench
    .venv/bin/python bench/live_calls.py --calls 1,5,10 --final-backbone whisper-tiny   # Whisper finals
    .venv/bin/python bench/live_calls.py --calls 10 --two-track --manifest data/real-dev/manifest.tsv  # 20 streams

``--dump-finals FILE``: every final the agents received, one JSON line each (with ``N`` and the
time it arrived, ``received_at``), to see which finals form the tail.

``--two-track``: each call is Twilio ``both_tracks`` (two streams: the
customer, real development prompts from ``--manifest``'s test split, a
different ``--sentences`` prompts per call; the agent, the demo's voice),
built by ``callcenter.tools.two_party.known_call`` with one deliberate
overlap; per N it also reports the analytics against the known truth
(worst talk-time error per party in %, worst overlap error in ms,
interruptions counted / expected).

It starts ``python -m callcenter.ops.run`` in a fresh runtime folder (SQLite and
a private Redis unless ``--database-url``/``REDIS_URL`` say otherwise),
creates a line and a staff session, renders synthetic callers (asr_core's
sentence generator and synthesizer, different seeds per call), then for
each N streams N calls at once (start times spread over a second) while
listening on the agents' feed. Per N it reports:

- final latency: agent receives the final - the server detected the endpoint
  (``endpoint_at`` in the message; same clock), p50/p95/p99 in ms;
- partial latency: agent receives a partial - the server received the newest
  audio in it (``audio_at``), p50/p95/p99;
- segments: stored, recognized, failed, still pending 30 s after the calls
  ended, and finals the agents never saw; finals recognized during the pause
  before their endpoint (``speculative``; ``STREAM_SPECULATIVE_FINALS=0`` in
  the environment turns that off for a side-by-side run);
- partials sent and dropped (the web process's /metrics), partials computed
  and the mean batch they were computed in, and the gap between consecutive
  partials of a segment seen by the agent (audio time between them; a
  partial whose text did not change is not sent), p50/p95;
- the partials thread: the share of the run it spent computing batches (wall)
  and its own CPU time in them (wall beyond CPU is waiting: for a core, at its
  low priority, or for the GIL);
- CPU of the web server, the worker processes and this script's simulated
  callers (% of one core) and of the whole machine (other jobs included),
  peak RSS of the web server and the worker, and the web server's extra
  memory per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- processes ---------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLK_TCK


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total / 2**20


def _machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Sampler:
    """Peak RSS of process trees, sampled every 0.2 s."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.peak = dict.fromkeys(roots, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.roots.items():
                self.peak[name] = max(self.peak[name], _rss_mb(_tree(pid)))
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- the system under test ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_system(env: dict[str, str], port: int, concurrency: int) -> tuple[subprocess.Popen, dict[str, int]]:
    env = dict(env, CELERY_WORKER_CONCURRENCY=str(concurrency))
    process = subprocess.Popen(
        [sys.executable, "-m", "callcenter.ops.run", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    pids: dict[str, int] = {}
    lines: list[str] = []
    deadline = time.monotonic() + 180
    for line in process.stdout:
        lines.append(line)
        if m := re.search(r"started (\w+) \(pid (\d+)\)", line):
            pids[m.group(1)] = int(m.group(2))
        if "Press Ctrl-C to stop" in line:
            break
        if time.monotonic() > deadline or process.poll() is not None:
            sys.exit("the system did not start:\n" + "".join(lines[-40:]))
    log_path = Path(env["CALLCENTER_VAR_DIR"]) / "system.log"

    def keep_log() -> None:
        with open(log_path, "w") as log:
            log.writelines(lines)
            for line in process.stdout:
                log.write(line)

    threading.Thread(target=keep_log, daemon=True).start()
    print(f"system log: {log_path}", flush=True)
    return process, pids


def _metric(http_url: str, name: str, labels: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"{http_url}/metrics", timeout=10).read().decode()
    pattern = rf"^{name}{{{labels}}} ([0-9.e+]+)$" if labels else rf"^{name} ([0-9.e+]+)$"
    m = re.search(pattern, text, flags=re.MULTILINE)
    return float(m.group(1)) if m else 0.0


# --- one round of N calls ----------------------------------------------------------


@dataclass
class Round:
    calls: int
    final_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)  # endpoint -> task started
    task_ms: list[float] = field(default_factory=list)  # task started -> result stored
    delivery_ms: list[float] = field(default_factory=list)  # result stored -> agent received
    partial_ms: list[float] = field(default_factory=list)
    partial_audio_at: dict[int, list[float]] = field(default_factory=dict)  # segment -> its partials' audio_at
    finals_seen: set[int] = field(default_factory=set)
    speculative: int = 0  # finals recognized during the pause before their endpoint
    finals: list[dict] = field(default_factory=list)  # each final as received (--dump-finals)
    last_final_at: float = 0.0
    call_ids: set[int] = field(default_factory=set)
    wall_s: float = 0.0


async def run_round(ws_url: str, token: str, headers: dict, audios: list, caller_base: int) -> Round:
    """``audios``: one float array per call, or (customer, agent) pairs for two-track calls."""
    import websockets

    from callcenter.tools.client import stream_twilio
    from callcenter.tools.two_party import stream_twilio_two_track

    result = Round(calls=len(audios))
    async with websockets.connect(f"{ws_url}/ws/agent/", additional_headers=headers, max_size=2**22) as feed:
        assert json.loads(await feed.recv())["type"] == "hello"
        stop = asyncio.Event()

        async def listen() -> None:
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(feed.recv(), timeout=0.5)
                except asyncio.TimeoutError:
                    continue
                now = time.time()
                m = json.loads(raw)
                if m.get("type") == "call" and m.get("status") == "live":
                    result.call_ids.add(m["call"])
                elif m.get("type") == "final" and m.get("endpoint_at"):
                    result.final_ms.append(1000 * (now - m["endpoint_at"]))
                    if m.get("started_at"):
                        result.queue_ms.append(1000 * (m["started_at"] - m["endpoint_at"]))
                        result.task_ms.append(1000 * (m["recognized_at"] - m["started_at"]))
                    result.delivery_ms.append(1000 * (now - m["recognized_at"]))
                    result.finals_seen.add(m["segment"])
                    result.speculative += bool(m.get("speculative"))
                    result.finals.append(dict(m, received_at=now))
                    result.last_final_at = now
                elif m.get("type") == "partial":
                    result.partial_ms.append(1000 * (now - m["audio_at"]))
                    result.partial_audio_at.setdefault(m["segment"], []).append(m["audio_at"])

        listener = asyncio.ensure_future(listen())

        async def one(i: int, audio) -> None:
            await asyncio.sleep(i / max(1, len(audios)))  # spread the starts over a second
            url, caller = f"{ws_url}/ws/media/twilio/{token}", f"+1555{caller_base + i:07d}"
            if isinstance(audio, tuple):
                await stream_twilio_two_track(url, *audio, caller=caller)
            else:
                await stream_twilio(url, audio, caller=caller)

        started = time.monotonic()
        await asyncio.gather(*(one(i, a) for i, a in enumerate(audios)))
        result.wall_s = time.monotonic() - started
        # Let the last finals arrive: listen until 5 s pass without one (at most 30 s; a queue
        # behind the calls delivers its finals for a while after the last hangup).
        ended, until = time.time(), time.monotonic() + 30
        while time.monotonic() < until and time.time() - max(result.last_final_at, ended) < 5:
            await asyncio.sleep(0.5)
        stop.set()
        await listener
    return result


def two_track_calls(count: int, turns: int, manifest: str) -> list:
    """``count`` known two-party calls: each a different ``turns`` test prompts of the real-speech
    development set for the customer, the agent's lines (rendered once) for the agent."""
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from callcenter.tools.two_party import agent_utterances, known_call

    prompts = read_manifest(manifest, ("test",))
    if len(prompts) < turns:
        sys.exit(f"{manifest}: {len(prompts)} test prompts, need {turns}")
    agent = agent_utterances(turns)
    calls = []
    for i in range(count):
        chosen = [prompts[(i * turns + k) % len(prompts)] for k in range(turns)]
        calls.append(known_call([(load_audio(u.audio, 8000).numpy(), u.text) for u in chosen], agent, seed=i))
    return calls


def analytics_accuracy(call_ids: set[int], known: list, caller_base: int, timeout: float = 120) -> dict[str, str]:
    """The stored analytics of a round's two-track calls against their truth."""
    from callcenter.analytics.models import CallAnalytics

    deadline = time.monotonic() + timeout
    while CallAnalytics.objects.filter(call_id__in=call_ids).count() < len(call_ids) and time.monotonic() < deadline:
        time.sleep(0.5)
    talk_err, overlap_err, interruptions = [], [], 0
    rows = CallAnalytics.objects.filter(call_id__in=call_ids).select_related("call__customer")
    for a in rows:
        k = known[int(a.call.customer.phone[5:]) - caller_base]
        for party, measured in (("customer", a.talk_ms_customer), ("agent", a.talk_ms_agent)):
            talk_err.append(100 * abs(measured - k.talk_ms(party)) / k.talk_ms(party))
        overlap_err.append(abs(a.overlap_ms - k.overlap_ms))
        interruptions += (a.interruptions_agent, a.interruptions_customer) == (1, 0)
    return {
        "analytics": f"{len(rows)}/{len(call_ids)}",
        "talk err max %": f"{max(talk_err, default=float('nan')):.1f}",
        "overlap err max ms": f"{max(overlap_err, default=float('nan')):.0f}",
        "interruption counted": f"{interruptions}/{len(rows)}",
    }


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", default="1,5,10,20", help="comma-separated N (default 1,5,10,20)")
    ap.add_argument("--sentences", type=int, default=4, help="sentences per call (default 4)")
    ap.add_argument("--database-url", help="default: DATABASE_URL, else SQLite in the runtime folder")
    ap.add_argument("--worker-concurrency", type=int, default=1, help="Celery worker processes (default 1)")
    ap.add_argument("--partial-interval-ms", type=int, default=None, help="STREAM_PARTIAL_INTERVAL_MS")
    ap.add_argument("--final-backbone", choices=["small", "whisper-tiny", "whisper-base"], default=None,
                    help="ASR_FINAL_BACKBONE: which model gives the finals (default: the setting's, small)")
    ap.add_argument("--dump-finals", help="write every final the agents received (JSON lines, N per line) here")
    ap.add_argument("--two-track", action="store_true",
                    help="two-track calls (Twilio both_tracks): customer and agent, 2 streams per call")
    ap.add_argument("--manifest", default="data/real-dev/manifest.tsv",
                    help="with --two-track: the customers' prompts (test split; make_dev_manifest.py builds it)")
    args = ap.parse_args()
    counts = [int(n) for n in args.calls.split(",")]
    load_before = os.getloadavg()[0]

    var_dir = Path(tempfile.mkdtemp(prefix="cc-bench-"))
    env = dict(os.environ, CALLCENTER_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    if args.partial_interval_ms is not None:
        env["STREAM_PARTIAL_INTERVAL_MS"] = str(args.partial_interval_ms)
    if args.final_backbone is not None:
        env["ASR_FINAL_BACKBONE"] = args.final_backbone
    os.environ.update({k: v for k, v in env.items() if k in ("CALLCENTER_VAR_DIR", "DATABASE_URL")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callcenter.settings")

    if args.two_track:
        print(f"building {max(counts)} two-track calls of {args.sentences} turns per party ...", flush=True)
        known = two_track_calls(max(counts), args.sentences, args.manifest)
        audios_all = [(k.customer, k.agent) for k in known]
        spoken_segments = 2 * args.sentences
    else:
        print(f"rendering {max(counts)} synthetic calls of {args.sentences} sentences ...", flush=True)
        from callcenter.tools.demo import synthetic_call

        voices = ["en-us+m6", "en-us+f3", "en-us+m3", "en-us+f4", "en+m2"]
        audios_all = [synthetic_call(seed=100 + i, sentences=args.sentences, voice=voices[i % len(voices)]).audio
                      for i in range(max(counts))]  # fmt: skip
        spoken_segments = args.sentences

    port = _free_port()
    process, pids = start_system(env, port, args.worker_concurrency)
    http_url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    try:
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        from callcenter.calls import services
        from callcenter.calls.models import Segment
        from callcenter.tools.demo import staff_session_cookie

        token = services.line_create(name=f"bench-{os.getpid()}")[1]
        if not get_user_model().objects.filter(is_superuser=True).exists():
            get_user_model().objects.create_superuser("bench", password=None)
        headers = {"Cookie": staff_session_cookie(), "Origin": http_url}
        roots = {"web": pids["web"], "worker": pids["worker"]}
        # Warm up (models load in the web process and the worker on first use), then the web's baseline memory.
        first = audios_all[0]
        warm = tuple(a[: 8000 * 6] for a in first) if isinstance(first, tuple) else first[: 8000 * 6]
        asyncio.run(run_round(ws_url, token, headers, [warm], caller_base=999_000))
        web_idle_mb = _rss_mb(_tree(pids["web"]))

        rows = []
        for n in counts:
            audios = audios_all[:n]
            dropped0 = _metric(http_url, "callcenter_partials_total", 'outcome="dropped"')
            sent0 = _metric(http_url, "callcenter_partials_total", 'outcome="sent"')
            computed0 = _metric(http_url, "callcenter_partial_batch_size_sum", "")
            batches0 = _metric(http_url, "callcenter_partial_batch_size_count", "")
            thread0 = {c: _metric(http_url, "callcenter_partial_thread_seconds_total", f'clock="{c}"') for c in ("wall", "cpu")}
            cpu0 = {k: _cpu_seconds(_tree(p)) for k, p in roots.items()}
            busy0, total0 = _machine_busy()
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            with Sampler(roots) as sampler:
                rnd = asyncio.run(run_round(ws_url, token, headers, audios, caller_base=1000 * n))
            wall = time.monotonic() - t0
            cpu = {k: 100 * (_cpu_seconds(_tree(p)) - cpu0[k]) / wall for k, p in roots.items()}
            usage1 = resource.getrusage(resource.RUSAGE_SELF)
            client = 100 * (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime) / wall
            busy1, total1 = _machine_busy()
            machine = 100 * os.cpu_count() * (busy1 - busy0) / max(1, total1 - total0)
            deadline = time.monotonic() + 30
            while Segment.objects.filter(call_id__in=rnd.call_ids, status="pending").exists() and (
                time.monotonic() < deadline
            ):
                time.sleep(0.5)
            segments = list(Segment.objects.filter(call_id__in=rnd.call_ids).values_list("pk", "status"))
            stored = len(segments)
            failed = sum(1 for _, s in segments if s == "failed")
            pending = sum(1 for _, s in segments if s == "pending")
            unseen = sum(1 for pk, _ in segments if pk not in rnd.finals_seen)
            dropped = _metric(http_url, "callcenter_partials_total", 'outcome="dropped"') - dropped0
            sent = _metric(http_url, "callcenter_partials_total", 'outcome="sent"') - sent0
            computed = _metric(http_url, "callcenter_partial_batch_size_sum", "") - computed0
            batches = _metric(http_url, "callcenter_partial_batch_size_count", "") - batches0
            thread = {c: _metric(http_url, "callcenter_partial_thread_seconds_total", f'clock="{c}"') - thread0[c]
                      for c in ("wall", "cpu")}
            # Speech between consecutive partials of a segment that the agent saw (a partial whose
            # text did not change is computed but not sent).
            gaps = [1000 * (b - a) for times in rnd.partial_audio_at.values() for a, b in zip(times, times[1:])]
            rows.append({
                "N": n, "segments": f"{stored}/{n * spoken_segments}", "failed": failed, "pending": pending,
                "unseen": unseen, "speculative": rnd.speculative,
                "final p50/p95/p99 ms": f"{pct(rnd.final_ms, 50)}/{pct(rnd.final_ms, 95)}/{pct(rnd.final_ms, 99)}",
                "final p95: queue/task/delivery ms":
                    f"{pct(rnd.queue_ms, 95)}/{pct(rnd.task_ms, 95)}/{pct(rnd.delivery_ms, 95)}",
                "partial p50/p95/p99 ms":
                    f"{pct(rnd.partial_ms, 50)}/{pct(rnd.partial_ms, 95)}/{pct(rnd.partial_ms, 99)}",
                "partials sent/dropped": f"{sent:.0f}/{dropped:.0f}",
                "partials computed/mean batch": f"{computed:.0f}/{computed / max(1, batches):.1f}",
                "partial gap p50/p95 ms": f"{pct(gaps, 50)}/{pct(gaps, 95)}",
                # the partials thread: share of the run spent in batches (wall), and its own CPU in them
                "partials thread wall/cpu %": f"{100 * thread['wall'] / wall:.0f}/{100 * thread['cpu'] / wall:.0f}",
                "cpu web/worker/clients/machine %":
                    f"{cpu['web']:.0f}/{cpu['worker']:.0f}/{client:.0f}/{machine:.0f}",
                "rss web/worker MB": f"{sampler.peak['web']:.0f}/{sampler.peak['worker']:.0f}",
                "web MB/call": f"{max(0.0, sampler.peak['web'] - web_idle_mb) / n:.1f}",
            })  # fmt: skip
            if args.two_track:
                rows[-1].update(analytics_accuracy(rnd.call_ids, known, caller_base=1000 * n))
            print(json.dumps(rows[-1]), flush=True)
            if args.dump_finals:
                with open(args.dump_finals, "a") as f:
                    for m in rnd.finals:
                        f.write(json.dumps({"N": n, **m}) + "\n")
            time.sleep(2)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()

    print()
    kind = "two-track (customer + agent) calls" if args.two_track else "calls"
    print(f"{max(counts)} {kind} max, {args.sentences} sentences each at real-time pace; worker concurrency "
          f"{args.worker_concurrency}; database {env.get('DATABASE_URL', 'SQLite (embedded)')}; "
          f"{os.cpu_count()} CPUs, load average before: {load_before:.1f}")  # fmt: skip
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print(" | ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
